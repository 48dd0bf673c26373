"""Render captioned clips of one shape moving in a straight line, deterministic by (seed, index), anti-aliased."""
from __future__ import annotations

import contextlib
import csv
import json
import math
import numbers
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kvideo.checkpoint import atomic_path, check_replaceable, check_writable_folder
from kvideo.errors import BadInputError
from kvideo.export import write_video
from kvideo.shapes.grammar import BACKGROUNDS, COLORS, Caption, DIRECTION_VECTORS, all_captions

SUPERSAMPLE = 4  # samples per pixel along each axis; their mean is the pixel's coverage
# Side of the shape's bounding square over the frame's short side: larger shapes are told apart more often
# (benchmarks/README.md); 55 % is the most a 16-pixel frame allows with 30 % travel and the margin.
OBJECT_SIZE = (0.40, 0.55)
MIN_TRAVEL = 0.30  # distance travelled over the clip, as a fraction of the frame along the direction
MARGIN = 1.0  # pixels always kept between the shape and the frame's edge
MIN_SIZE = 16  # smallest frame side: smaller shapes are a few pixels and unrecognisable
CAPTION_KEY = 0x5A4E  # seeds the caption permutations apart from the per-clip streams [seed, index]
SETTINGS_FILE = "render.json"
FORMAT_VERSION = 3  # bump when the same settings would render different clips
CSV_COLUMNS = ("path", "caption", "color", "shape", "direction", "background", "object_size", "start_y", "start_x",
               "velocity_y", "velocity_x", "travel", "num_frames", "fps")


@dataclass(frozen=True)
class RenderSettings:
    """Frame size, frame rate and length of every clip of a set."""

    height: int = 128
    width: int = 128
    fps: float = 24.0
    seconds: float = 10.0

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < MIN_SIZE or value % 8:
                raise BadInputError(f"{name}={value!r}: frame sizes must be multiples of 8 and at least {MIN_SIZE} "
                                 f"(e.g. 64 or 128)")
        for name in ("fps", "seconds"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
                raise BadInputError(f"{name}={value!r} must be a positive number")
        if self.num_frames < 2:
            raise BadInputError(f"fps={self.fps} x seconds={self.seconds} gives {self.num_frames} frame(s): a clip needs "
                             f"at least 2 frames to travel {MIN_TRAVEL:.0%} of the frame; raise --fps or --seconds")

    @classmethod
    def from_size(cls, size: int | tuple[int, int], fps: float = 24.0, seconds: float = 10.0) -> "RenderSettings":
        """`size` is one side (square frames) or (height, width)."""
        height, width = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
        return cls(height, width, fps, seconds)

    @property
    def num_frames(self) -> int:
        return round(self.fps * self.seconds)


@dataclass(frozen=True)
class ClipParams:
    """Everything that decides one clip: its caption and the shape's size, start and constant velocity."""

    caption: Caption
    object_size: float  # pixels: side of the shape's bounding square
    start: tuple[float, float]  # (y, x) of the shape's centre in the first frame, pixels
    velocity: tuple[float, float]  # (dy, dx) pixels per frame
    num_frames: int

    def centers(self) -> np.ndarray:
        """(num_frames, 2) centre (y, x) of the shape in every frame."""
        t = np.arange(self.num_frames, dtype=np.float64)[:, None]
        return np.asarray(self.start) + t * np.asarray(self.velocity)


# -- what each clip shows ------------------------------------------------------------------------
def clip_caption(seed: int, index: int) -> Caption:
    """Clip `index`'s caption: every 216 consecutive clips (0-215, 216-431, ...) hold each caption once."""
    captions = all_captions()
    cycle, position = divmod(index, len(captions))
    order = np.random.default_rng([seed, CAPTION_KEY, cycle]).permutation(len(captions))
    return captions[order[position]]


def clip_params(seed: int, index: int, settings: RenderSettings) -> ClipParams:
    """Random size, start and speed of clip `index`, from its own stream `default_rng([seed, index])`."""
    caption = clip_caption(seed, index)
    rng = np.random.default_rng([seed, index])
    size = rng.uniform(*OBJECT_SIZE) * min(settings.height, settings.width)
    extents = np.array([settings.height, settings.width], dtype=np.float64)
    low, high = size / 2 + MARGIN, extents - size / 2 - MARGIN  # where the centre may be: fully visible
    direction = np.array(DIRECTION_VECTORS[caption.direction])
    axis = int(np.argmax(np.abs(direction)))
    travel = rng.uniform(MIN_TRAVEL * extents[axis], high[axis] - low)
    start = rng.uniform(low, high)  # the cross axis keeps this; the motion axis is redrawn below
    first = rng.uniform(low, high[axis] - travel)
    start[axis] = first if direction[axis] > 0 else first + travel
    velocity = direction * travel / (settings.num_frames - 1)
    return ClipParams(caption, float(size), (float(start[0]), float(start[1])),
                      (float(velocity[0]), float(velocity[1])), settings.num_frames)


# -- drawing -------------------------------------------------------------------------------------
def inside(shape: str, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Whether points (v, u) = (dy, dx) / half-size from the centre lie in the shape (triangle: apex up)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == "triangle":
        return (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2)
    raise BadInputError(f"unknown shape {shape!r}; choose one of circle, square, triangle")


def coverage(shape: str, size: float, center: tuple[float, float], rows: slice, cols: slice) -> np.ndarray:
    """Fraction of each pixel of the window (rows, cols) that the shape covers, from SUPERSAMPLE^2 samples."""
    s = SUPERSAMPLE
    ys = (np.arange(rows.start * s, rows.stop * s) + 0.5) / s
    xs = (np.arange(cols.start * s, cols.stop * s) + 0.5) / s
    half = size / 2
    hits = inside(shape, (ys[:, None] - center[0]) / half, (xs[None, :] - center[1]) / half)
    return hits.reshape(len(ys) // s, s, len(xs) // s, s).mean(axis=(1, 3))


def _window(center: float, half: float, limit: int) -> slice:
    """Pixels that may touch [center - half, center + half], clipped to the frame."""
    return slice(max(int(math.floor(center - half)) - 1, 0), min(int(math.ceil(center + half)) + 1, limit))


def render_clip(params: ClipParams, settings: RenderSettings) -> np.ndarray:
    """The clip as uint8 (f, h, w, 3): the background everywhere, the shape blended by its coverage."""
    background = np.array(BACKGROUNDS[params.caption.background], dtype=np.float64)
    color = np.array(COLORS[params.caption.color], dtype=np.float64)
    frames = np.empty((params.num_frames, settings.height, settings.width, 3), dtype=np.uint8)
    frames[:] = background.astype(np.uint8)
    half = params.object_size / 2
    for frame, (cy, cx) in zip(frames, params.centers()):
        rows, cols = _window(cy, half, settings.height), _window(cx, half, settings.width)
        alpha = coverage(params.caption.shape, params.object_size, (cy, cx), rows, cols)[..., None]
        frame[rows, cols] = np.rint(background + alpha * (color - background)).astype(np.uint8)
    return frames


# -- a captioned set on disk ---------------------------------------------------------------------
def render_dataset(out: str | Path, num_videos: int, seed: int = 0, size: int | tuple[int, int] = 128,
                   fps: float = 24.0, seconds: float = 10.0, *, progress: bool = True) -> Path:
    """Write `out/videos/{index:05d}.mp4` and `out/captions.csv`; returns the captions file.

    Clips already in `out` (written atomically, so complete) are kept: an interrupted run resumes,
    and a larger `num_videos` with the same settings adds clips (the first N are the same set).
    """
    settings = RenderSettings.from_size(size, fps, seconds)
    _check_counts(num_videos, seed)
    check_memory(settings)
    out = Path(out)
    check_folder(out, seed, settings)  # before anything is written
    check_writable(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    _claim_folder(out, seed, settings)
    rows = []
    for index in tqdm(range(num_videos), desc="rendering shapes", unit="clip", disable=not progress):
        params = clip_params(seed, index, settings)
        relative = f"videos/{index:05d}.mp4"
        if not (out / relative).is_file():
            write_video(out / relative, render_clip(params, settings), settings.fps, progress=False)
        rows.append(_csv_row(relative, params, settings))
    return _write_captions(out / "captions.csv", rows)


def _check_counts(num_videos: int, seed: int) -> None:
    if not isinstance(num_videos, numbers.Integral) or num_videos < 1:
        raise BadInputError(f"videos={num_videos!r}: render at least 1 video")
    if not isinstance(seed, numbers.Integral) or seed < 0:
        raise BadInputError(f"seed={seed!r} must be a non-negative integer")


def clip_memory(settings: RenderSettings) -> int:
    """Bytes one clip takes while it is rendered and encoded: its uint8 frames, twice (the encoder's copy)."""
    return 2 * settings.num_frames * settings.height * settings.width * 3


def memory_limit() -> int | None:
    """The most memory this process may use: physical memory, the address-space and cgroup limits (None: unknown)."""
    import resource  # Unix only: a missing module must not stop rendering elsewhere

    limits = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for kind in ("RLIMIT_AS", "RLIMIT_DATA"):
        soft = resource.getrlimit(getattr(resource, kind))[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    with contextlib.suppress(OSError, ValueError):
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text != "max":
            limits.append(int(text))
    return min(limits) if limits else None


def check_memory(settings: RenderSettings) -> None:
    """Refuse, before anything is written, clips that would not fit in this machine's memory."""
    need, limit = clip_memory(settings), memory_limit()
    if limit is not None and need > limit:
        raise BadInputError(f"{settings.height}x{settings.width} frames at {settings.fps:g} fps for "
                            f"{settings.seconds:g} s: a clip of {settings.num_frames} frames needs about "
                            f"{need / 2**30:.1f} GiB while it is rendered, more than the {limit / 2**30:.1f} GiB "
                            "this process may use; lower --size, --fps or --seconds")


def _wanted_settings(seed: int, settings: RenderSettings) -> dict:
    return {"version": FORMAT_VERSION, "seed": int(seed), **asdict(settings)}


def check_folder(out: Path, seed: int, settings: RenderSettings) -> None:
    """Refuse, before anything is written, a folder the renderer would write into but did not make: one
    without `render.json` that holds anything (a data set of the user's own: its captions.csv would be
    replaced and its videos adopted), or one whose `render.json` records other settings (its clips differ)."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{str(out)!r} is a file, not a folder; render into a new or empty folder")
    path = out / SETTINGS_FILE
    if not path.exists():
        foreign = _foreign_entry(out)
        if foreign is not None:
            raise BadInputError(f"{str(foreign)!r} was not written by kvideo data shapes ({str(out)!r} has no "
                                f"{SETTINGS_FILE}); render into a new or empty folder, nothing was changed")
        return
    found = _read_settings(path)
    wanted = _wanted_settings(seed, settings)
    if found != wanted:
        raise BadInputError(f"{str(out)!r} holds clips rendered with {found}, not {wanted}; "
                            f"render into another folder (or empty this one)")


def check_writable(out: Path) -> None:
    """Refuse, before any clip is rendered, a set whose folders or captions file could not be written (read-only,
    immutable): the failure would otherwise come after the work."""
    check_writable_folder(out, what="output folder")
    check_writable_folder(out / "videos", what="videos folder")
    check_replaceable(out / "captions.csv", what="captions file")


def _foreign_entry(out: Path) -> Path | None:
    """The first thing in `out` (a folder without render.json) other than an empty `videos/` folder."""
    if not out.is_dir():
        return None
    for entry in sorted(out.iterdir()):
        if entry.name == "videos" and entry.is_dir() and not entry.is_symlink():
            inside = sorted(entry.iterdir())
            if inside:
                return inside[0]
            continue
        return entry
    return None


def _read_settings(path: Path) -> dict:
    """The settings a folder's render.json records, or a one-line error naming the file."""
    try:
        found = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInputError(f"{str(path)!r} is not a kvideo render settings file ({error}); render into a new "
                            "folder") from None
    if not isinstance(found, dict):
        raise BadInputError(f"{str(path)!r} is not a kvideo render settings file (it holds a "
                            f"{type(found).__name__}); render into a new folder")
    return found


def _claim_folder(out: Path, seed: int, settings: RenderSettings) -> None:
    """Record the set's settings in `out` (checked by `check_folder` first)."""
    check_folder(out, seed, settings)
    path = out / SETTINGS_FILE
    if path.is_file():
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_wanted_settings(seed, settings), indent=1) + "\n")


def _csv_row(relative: str, params: ClipParams, settings: RenderSettings) -> list:
    caption = params.caption
    axis = 0 if caption.direction in ("up", "down") else 1
    extent = (settings.height, settings.width)[axis]
    travel = abs(params.velocity[axis]) * (params.num_frames - 1) / extent
    values = (params.object_size, *params.start, *params.velocity, travel)
    return [relative, caption.text, caption.color, caption.shape, caption.direction, caption.background,
            *(f"{value:.6g}" for value in values), params.num_frames, f"{settings.fps:g}"]


def _write_captions(path: Path, rows: list[list]) -> Path:
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)
    return path
