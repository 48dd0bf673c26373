"""Score clips against their shapes captions: background, object colour, shape and direction read from the pixels.

Each step is a pure function of frames (uint8 `(f, h, w, 3)` RGB): the border's median colour names the
background; pixels far from it are the object; the median of its core names its colour; its coverage map
gives the shape (profile skewness, fill ratio of its box) and its centroid, whose net motion gives the direction.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm.auto import tqdm

from kvideo.checkpoint import atomic_path
from kvideo.shapes.frames import DEFAULT_KEYFRAME_STRIDE, keyframe_flicker, keyframe_mask, motion_evenness, roughness
from kvideo.shapes.grammar import BACKGROUNDS, COLORS, Caption, parse_caption
from kvideo.train.data import CAPTION_COLUMNS, read_caption_rows, resolve_video_path
from kvideo.video_io import VideoReadError, read_frames

OBJECT_DISTANCE = 48.0  # RGB distance from the background beyond which a pixel is the object's
MIN_OBJECT_FRACTION = 0.004  # fewer object pixels than this fraction of the frame: not found there
CORE_FRACTION = 0.8  # object pixels this close to its most distinct ones (90th percentile) give its colour
WINDOW_MARGIN = 3  # pixels around the object's (opened) mask in which its coverage is measured
TRIANGLE_SKEW = 0.25  # |skewness| of the row or column coverage profile: triangle 0.57, circle and square 0
SQUARE_FILL = 0.9  # fill ratio of the bounding box: circle pi/4 = 0.79 < square 1
MIN_MOTION = 0.1  # net motion under this fraction of the frame (along the dominant axis) is "none"
ATTRIBUTES = ("background", "object_color", "shape", "direction")


# -- one step each ---------------------------------------------------------------------------------
def nearest_name(rgb: np.ndarray, palette: Mapping[str, tuple[int, int, int]]) -> str:
    """The name of the palette colour nearest to `rgb` (Euclidean distance in RGB)."""
    names = list(palette)
    distances = np.linalg.norm(np.array([palette[n] for n in names], dtype=np.float64) - rgb, axis=1)
    return names[int(np.argmin(distances))]


def border_color(frames: np.ndarray) -> np.ndarray:
    """Median RGB of the one-pixel border of every frame."""
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)
    return np.median(border.reshape(-1, 3), axis=0)


def distance_from(frame: np.ndarray, color: np.ndarray) -> np.ndarray:
    """(h, w) RGB distance of every pixel from `color`."""
    return np.linalg.norm(frame.astype(np.float64) - color, axis=-1)


def max3(array: np.ndarray) -> np.ndarray:
    """Maximum over each element's 3x3 neighbourhood (outside the array counts as 0 / False)."""
    padded = np.pad(array, 1)
    rows = np.maximum(np.maximum(padded[:-2], padded[1:-1]), padded[2:])
    return np.maximum(np.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def open_mask(mask: np.ndarray) -> np.ndarray:
    """Morphological opening with a 3x3 square: removes specks and one-pixel lines, keeps solid blobs."""
    return max3(~max3(~mask))


def largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of a non-empty `mask`: labels spread to their neighbours until settled."""
    rows, cols = bounding_box(mask, margin=0)
    inside = mask[rows, cols]
    labels = np.where(inside, np.arange(1, inside.size + 1).reshape(inside.shape), 0)
    while True:
        spread = np.where(inside, max3(labels), 0)
        if np.array_equal(spread, labels):
            break
        labels = spread
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    blob = np.zeros_like(mask)
    blob[rows, cols] = labels == np.argmax(counts)
    return blob


def object_mask(frame: np.ndarray, background: np.ndarray) -> np.ndarray | None:
    """The object's pixels (the largest blob far from the background, opened), or None when it is too small."""
    mask = open_mask(distance_from(frame, background) > OBJECT_DISTANCE)
    if mask.sum() < MIN_OBJECT_FRACTION * mask.size:
        return None
    blob = largest_blob(mask)
    return blob if blob.sum() >= MIN_OBJECT_FRACTION * mask.size else None


def core_color(frame: np.ndarray, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median RGB of the object's core: its pixels nearly as far from the background as any (not its edges)."""
    distance = distance_from(frame, background)[mask]
    core = distance >= CORE_FRACTION * np.percentile(distance, 90)
    return np.median(frame[mask][core].astype(np.float64), axis=0)


def coverage_map(frame: np.ndarray, background: np.ndarray, color: np.ndarray) -> np.ndarray:
    """(h, w) fraction of each pixel the object covers: the pixel projected on background -> object colour."""
    axis = color - background
    alpha = (frame.astype(np.float64) - background) @ axis / max(float(axis @ axis), 1e-6)
    return np.clip(alpha, 0.0, 1.0)


def bounding_box(mask: np.ndarray, margin: int = WINDOW_MARGIN) -> tuple[slice, slice]:
    """The rows and columns of a non-empty mask's bounding box, grown by `margin` pixels (within the frame)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(cols[0] - margin, 0), cols[-1] + margin + 1))


def fill_ratio(alpha: np.ndarray) -> float:
    """Covered area over its bounding box, the box's sides measured as the longest row and column of
    coverage (sums, so sub-pixel and little changed by blur): square 1, circle pi/4, triangle ~0.5."""
    height, width = alpha.sum(axis=0).max(), alpha.sum(axis=1).max()
    return float(alpha.sum() / max(height * width, 1e-6))


def profile_skew(alpha: np.ndarray) -> float:
    """Skewness of the coverage's row or column profile, whichever is larger in size.

    A triangle's width grows linearly from apex to base, so its profile has skewness 2*sqrt(2)/5 = 0.57
    in size; circles and squares are symmetric (0). Unlike outlines, this survives blur and H.264's
    half-resolution colour (an object as bright as the background is seen only at half resolution).
    """
    def skew(profile: np.ndarray) -> float:
        positions = np.arange(len(profile)) + 0.5
        weights = profile / max(profile.sum(), 1e-6)
        mean = weights @ positions
        variance = weights @ (positions - mean) ** 2
        return float(weights @ (positions - mean) ** 3 / max(variance, 1e-6) ** 1.5)

    return max(skew(alpha.sum(axis=1)), skew(alpha.sum(axis=0)), key=abs)


def classify_shape(fill: float, skew: float) -> str:
    """triangle when the profile is skewed, else square or circle by how much of its box the object fills."""
    if abs(skew) >= TRIANGLE_SKEW:
        return "triangle"
    return "square" if fill > SQUARE_FILL else "circle"


def centroid(alpha: np.ndarray) -> np.ndarray:
    """(y, x) coverage-weighted centre of `alpha`, in its own pixel coordinates (pixel centres at +0.5)."""
    ys, xs = np.arange(alpha.shape[0]) + 0.5, np.arange(alpha.shape[1]) + 0.5
    total = alpha.sum()
    return np.array([alpha.sum(axis=1) @ ys / total, alpha.sum(axis=0) @ xs / total])


def net_motion(times: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(dy, dx) from the first to the last time on the least-squares line through the centres."""
    if len(times) < 2:
        return np.zeros(2)
    slope = np.polyfit(times.astype(np.float64), centers, deg=1)[0]
    return slope * (times[-1] - times[0])


def classify_direction(motion: np.ndarray, height: int, width: int) -> str:
    """left / right / up / down from the dominant axis of `motion` (pixels), "none" when it is too small."""
    fraction = motion / np.array([height, width])
    axis = int(np.argmax(np.abs(fraction)))
    if abs(fraction[axis]) < MIN_MOTION:
        return "none"
    if axis == 0:
        return "down" if fraction[0] > 0 else "up"
    return "right" if fraction[1] > 0 else "left"


# -- every frame on its own ------------------------------------------------------------------------
def frame_attributes(frame: np.ndarray, background: np.ndarray, mask: np.ndarray) -> tuple[str, str, np.ndarray]:
    """(colour name, shape name, (y, x) centre) of the object `mask` marks in one frame, from that frame alone."""
    rgb = core_color(frame, background, mask)
    rows, cols = bounding_box(mask)
    alpha = coverage_map(frame[rows, cols], background, rgb)
    if not alpha.sum() > 0:
        alpha = mask[rows, cols].astype(np.float64)
    ys, xs = np.nonzero(mask)
    return nearest_name(rgb, COLORS), classify_shape(fill_ratio(alpha), profile_skew(alpha)), \
        np.array([ys.mean() + 0.5, xs.mean() + 0.5])


@dataclass(frozen=True)
class FrameScore:
    """Frame-level measures of one clip (`kvideo.shapes.frames`; None where one does not apply). The colour
    and shape shares are over all keyframes, or all frames between, a frame without the object a miss."""

    keyframe_stride: int
    roughness_keyframes: float
    roughness_between: float | None
    flicker: float | None
    evenness: float | None
    color_keyframes: float | None
    color_between: float | None
    shape_keyframes: float | None
    shape_between: float | None
    # RGB distance between the keyframes' and the frames between's mean border colour: a background that
    # brightens at every keyframe (which roughness does not see); None without frames between
    background_shift: float | None = None


def score_frames(frames: np.ndarray, background: np.ndarray, found: Mapping[int, np.ndarray],
                 expected: Caption | None, stride: int = DEFAULT_KEYFRAME_STRIDE) -> FrameScore:
    """The frame-level measures of uint8 `frames` (f, h, w, 3) from the border colour and the object masks of
    the frames where it was found (as `score_clip` computes them)."""
    num_frames, height, width, _ = frames.shape
    keys = keyframe_mask(num_frames, stride)
    rough = roughness(frames)
    named = {t: frame_attributes(frames[t], background, mask) for t, mask in found.items()}

    def share(index: int, word: str | None, on_keys: bool) -> float | None:
        chosen = np.flatnonzero(keys == on_keys)
        if word is None or not len(chosen):
            return None
        return float(np.mean([t in named and named[t][index] == word for t in chosen]))

    color, shape = (expected.color, expected.shape) if expected else (None, None)
    return FrameScore(
        keyframe_stride=stride, roughness_keyframes=float(rough[keys].mean()),
        roughness_between=None if keys.all() else float(rough[~keys].mean()),
        flicker=keyframe_flicker(rough, stride),
        evenness=motion_evenness({t: c for t, (_, _, c) in named.items()}, num_frames, (height, width), stride),
        color_keyframes=share(0, color, True), color_between=share(0, color, False),
        shape_keyframes=share(1, shape, True), shape_between=share(1, shape, False),
        background_shift=None if keys.all() else float(np.linalg.norm(
            border_color(frames[keys]) - border_color(frames[~keys]))))


# -- one clip ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipScore:
    """What a clip shows, what its caption says, and whether they match (None: caption outside the grammar)."""

    caption: str
    expected: Caption | None
    background: str
    object_color: str | None  # None: the object was found in no frame
    shape: str | None
    direction: str  # left / right / up / down / none
    found: float  # fraction of frames where the object was found
    fill_ratio: float | None  # median over the frames where the object is found
    skew: float | None  # median profile skewness, same frames
    motion: tuple[float, float]  # net (dy, dx) as fractions of the frame's height and width
    frames: FrameScore | None = None  # every frame on its own: roughness, flicker, evenness, per-frame attributes
    matches: dict[str, bool] | None = field(init=False)

    def __post_init__(self) -> None:
        if self.expected is None:
            object.__setattr__(self, "matches", None)
            return
        object.__setattr__(self, "matches", {
            "background": self.background == self.expected.background,
            "object_color": self.object_color == self.expected.color,
            "shape": self.shape == self.expected.shape,
            "direction": self.direction == self.expected.direction,
        })

    @property
    def all_match(self) -> bool | None:
        return None if self.matches is None else all(self.matches.values())

    def to_dict(self) -> dict[str, Any]:
        return {"caption": self.caption, "in_grammar": self.expected is not None,
                "predicted": {"background": self.background, "object_color": self.object_color,
                              "shape": self.shape, "direction": self.direction},
                "matches": self.matches, "all": self.all_match, "found": self.found,
                "fill_ratio": self.fill_ratio, "skew": self.skew, "motion": list(self.motion),
                "frames": None if self.frames is None else asdict(self.frames)}


def score_clip(frames: np.ndarray, caption: str | Caption, keyframe_stride: int = DEFAULT_KEYFRAME_STRIDE) -> ClipScore:
    """Read background, object colour, shape and direction from uint8 `(f, h, w, 3)` frames; compare to `caption`.
    `keyframe_stride`: every how many frames a keyframe stands (4 at fps medium, 1 at fps low), for the
    frame-level measures (`score_frames`)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 (f, h, w, 3) with f >= 1, got {frames.dtype} {frames.shape}")
    text = caption.text if isinstance(caption, Caption) else str(caption)
    num_frames, height, width, _ = frames.shape
    background = border_color(frames)
    found = _find_object(frames, background)
    motion = np.zeros(2)
    color = shape = fill = skew = None
    if found:
        times = np.array(sorted(found))
        object_rgb = np.median([core_color(frames[t], background, found[t]) for t in times], axis=0)
        fills, skews, centers = _track(frames, background, object_rgb, found)
        color, fill, skew = nearest_name(object_rgb, COLORS), float(np.median(fills)), float(np.median(skews))
        shape = classify_shape(fill, skew)
        motion = net_motion(times, centers)
    expected = parse_caption(text)
    return ClipScore(text, expected, nearest_name(background, BACKGROUNDS), color, shape,
                     classify_direction(motion, height, width), len(found) / num_frames, fill, skew,
                     (float(motion[0] / height), float(motion[1] / width)),
                     score_frames(frames, background, found, expected, keyframe_stride))


def _find_object(frames: np.ndarray, background: np.ndarray) -> dict[int, np.ndarray]:
    """Frame index -> object mask, for the frames where the object is found."""
    masks = {t: object_mask(frame, background) for t, frame in enumerate(frames)}
    return {t: mask for t, mask in masks.items() if mask is not None}


def _track(frames, background, object_rgb, found) -> tuple[list[float], list[float], np.ndarray]:
    """Fill ratio, profile skewness and centroid (frame coordinates) of the object where it is found."""
    fills, skews, centers = [], [], []
    for t in sorted(found):
        rows, cols = bounding_box(found[t])
        alpha = coverage_map(frames[t][rows, cols], background, object_rgb)
        if not alpha.sum() > 0:  # a blob of another colour than the clip's object: the mask stands in for it
            alpha = found[t][rows, cols].astype(np.float64)
        fills.append(fill_ratio(alpha))
        skews.append(profile_skew(alpha))
        centers.append(centroid(alpha) + [rows.start, cols.start])
    return fills, skews, np.array(centers)


# -- a folder ------------------------------------------------------------------------------------------
def read_scoring_list(videos: str | Path, captions: str | Path | None = None) -> list[tuple[Path, str]]:
    """(video, caption) pairs of a captions CSV/JSONL; a path is taken relative to the list's folder,
    else to `videos`. Missing videos are an error naming them; a missing caption is an empty one."""
    videos = Path(videos)
    if not videos.is_dir():
        raise FileNotFoundError(f"video folder {str(videos)!r} does not exist")
    captions = Path(captions) if captions else videos / "captions.csv"
    pairs = []
    for row in read_caption_rows(captions):
        path = resolve_video_path(row, captions.parent, captions)
        path = path if path.is_file() else resolve_video_path(row, videos, captions)
        pairs.append((path, next((str(row[c]) for c in CAPTION_COLUMNS if row.get(c)), "")))
    missing = [str(p) for p, _ in pairs if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(pairs)} videos in {str(captions)!r} exist neither beside it "
                                f"nor under {str(videos)!r}, e.g. {missing[:3]}; fix the paths or --videos")
    if not pairs:
        raise ValueError(f"caption list {str(captions)!r} has no rows")
    return pairs


def score_folder(videos: str | Path, captions: str | Path | None = None, *, progress: bool = True,
                 keyframe_stride: int = DEFAULT_KEYFRAME_STRIDE) -> dict[str, Any]:
    """Score every clip of a captions list; the report holds each clip's result and the totals.

    Clips whose caption is outside the grammar are counted (`unparseable`) and left out of the
    accuracies; an unreadable clip counts as wrong on every attribute with nothing found.
    """
    clips = []
    for path, caption in tqdm(read_scoring_list(videos, captions), desc="scoring shapes", unit="clip",
                              disable=not progress):
        clips.append({"path": str(path), **_score_file(path, caption, keyframe_stride)})
    return {"videos": str(videos), "captions": str(captions or Path(videos) / "captions.csv"),
            "totals": summarize(clips), "clips": clips}


def _score_file(path: Path, caption: str, keyframe_stride: int) -> dict[str, Any]:
    try:
        frames = read_frames(path)
    except VideoReadError as error:
        expected = parse_caption(caption)
        matches = None if expected is None else dict.fromkeys(ATTRIBUTES, False)
        return {"caption": caption, "in_grammar": expected is not None, "error": str(error), "matches": matches,
                "all": None if expected is None else False, "found": 0.0}
    return score_clip(frames, caption, keyframe_stride).to_dict()


def summarize(clips: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy of each attribute and of all four, mean found fraction, over the clips in the grammar."""
    scored = [c for c in clips if c["in_grammar"]]
    totals: dict[str, Any] = {"clips": len(clips), "scored": len(scored), "unparseable": len(clips) - len(scored),
                              "unreadable": sum("error" in c for c in clips)}
    for name in ATTRIBUTES:
        totals[name] = _mean([c["matches"][name] for c in scored])
    totals["all"] = _mean([c["all"] for c in scored])
    totals["found"] = _mean([c["found"] for c in scored])
    totals.update(summarize_frames([c["frames"] for c in scored if c.get("frames")]))
    return totals


FRAME_TOTALS = {  # total -> (the FrameScore field it summarises, statistic over clips)
    "color_keyframes": ("color_keyframes", np.mean), "color_between": ("color_between", np.mean),
    "shape_keyframes": ("shape_keyframes", np.mean), "shape_between": ("shape_between", np.mean),
    "roughness_keyframes": ("roughness_keyframes", np.mean), "roughness_between": ("roughness_between", np.mean),
    "flicker": ("flicker", np.mean), "flicker_worst": ("flicker", np.max), "evenness": ("evenness", np.median),
    "background_shift": ("background_shift", np.mean),
}


def summarize_frames(frames: list[Mapping[str, Any]]) -> dict[str, float | None]:
    """Frame-level totals over clips: mean shares and roughness, mean and worst flicker, median evenness."""
    totals = {}
    for name, (key, statistic) in FRAME_TOTALS.items():
        values = [f[key] for f in frames if f.get(key) is not None]
        totals[name] = float(statistic(values)) if values else None
    return totals


def _mean(values: list) -> float | None:
    return float(np.mean(values)) if values else None


def write_report(path: str | Path, report: Mapping[str, Any]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    return path


def format_table(report: Mapping[str, Any]) -> str:
    """The totals as a short table (percentages)."""
    totals = report["totals"]
    lines = [f"{totals['scored']} clips scored ({totals['unparseable']} captions outside the grammar, "
             f"{totals['unreadable']} unreadable)", f"{'attribute':<16}{'accuracy':>9}"]
    labels = {"background": "background", "object_color": "object color", "shape": "shape",
              "direction": "direction", "all": "all four", "found": "object found"}
    for key, label in labels.items():
        value = totals[key]
        lines.append(f"{label:<16}{'n/a' if value is None else f'{100 * value:.1f} %':>9}")
    lines.append(f"{'frames':<16}{'keyframes':>10}{'between':>10}")
    for key, label, percent in (("color", "colour right", True), ("shape", "shape right", True),
                                ("roughness", "roughness", False)):
        cells = [totals.get(f"{key}_{kind}") for kind in ("keyframes", "between")]
        lines.append(f"{label:<16}" + "".join(f"{_cell(v, percent):>10}" for v in cells))
    worst = _cell(totals.get("flicker_worst"), False)
    lines.append(f"keyframe flicker {_cell(totals.get('flicker'), False)} (worst {worst}; "
                 f"1.00 = none), motion evenness {_cell(totals.get('evenness'), False)} (0 = constant speed), "
                 f"background shift at keyframes {_cell(totals.get('background_shift'), False)} (RGB, 0 = none)")
    return "\n".join(lines)


def _cell(value: float | None, percent: bool) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f} %" if percent else f"{value:.2f}"


def format_failures(report: Mapping[str, Any], limit: int = 5) -> str:
    """A count and one line for each of the first `limit` clips that miss an attribute or cannot be
    scored; empty when every clip matches its caption."""
    failed = [c for c in report["clips"] if c["all"] is not True]
    if not failed:
        return ""
    lines = [f"{len(failed)} of {len(report['clips'])} clips miss at least one attribute or are not scored"]
    for clip in failed[:limit]:
        if not clip["in_grammar"]:
            reason = "caption outside the grammar"
        elif "error" in clip:
            reason = clip["error"]
        else:
            reason = ", ".join(f"{name} {clip['predicted'][name]}" for name, ok in clip["matches"].items() if not ok)
        lines.append(f"  {clip['path']}: {reason} ({clip['caption']!r})")
    return "\n".join(lines)
