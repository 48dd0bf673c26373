"""Video-text data: caption lists, fps-aware clip sampling, resize + center crop, unreadable files skipped."""
from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from kvideo.errors import BadDataError
from kvideo.train.config import ClipConfig
from kvideo.train.seeding import seeded_generator
from kvideo.video_io import VideoInfo, VideoReadError, read_frames, video_info

PATH_COLUMNS = ("path", "video", "file", "videoid")
CAPTION_COLUMNS = ("caption", "text", "name")
VIDEO_SUFFIX = ".mp4"  # WebVid lists name videos by id; the file is `<page_dir>/<videoid>.mp4`


@dataclass(frozen=True)
class VideoRecord:
    """One captioned video that can be read, with what the sampler needs to know about it."""

    path: Path
    caption: str
    num_frames: int
    fps: float


# -- caption lists --------------------------------------------------------------------------------
def read_caption_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV (with a header) or JSONL caption list; a file that is not UTF-8, or a JSONL line that is
    not a JSON object, is an error naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption list {str(path)!r} does not exist")
    text = _utf8_text(path)
    if path.suffix in (".jsonl", ".json"):
        return [_json_row(path, number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _utf8_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise BadDataError(f"{str(path)!r} line {line}: not valid UTF-8 (byte 0x{data[error.start]:02x} at column "
                           f"{column}); save the list as UTF-8") from None


def _json_row(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise BadDataError(f"{str(path)!r} line {number} is not JSON ({error})") from None
    if not isinstance(row, dict):
        raise BadDataError(f"{str(path)!r} line {number} holds a {type(row).__name__}, not an object with a path "
                           "and a caption")
    return row


def _pick(row: dict[str, Any], names: tuple[str, ...], what: str, source: Path) -> tuple[str, str]:
    for name in names:
        if row.get(name) not in (None, ""):
            return name, str(row[name])
    raise ValueError(f"{str(source)!r}: a row has no {what} column (one of {names}); row: {row}")


def resolve_video_path(row: dict[str, Any], root: Path, source: Path) -> Path:
    column, value = _pick(row, PATH_COLUMNS, "video path", source)
    relative = Path(row.get("page_dir") or "") / value
    if column == "videoid" and not relative.suffix:
        relative = relative.with_suffix(VIDEO_SUFFIX)
    return root / relative


def read_captions(captions: str | Path, root: str | Path | None = None) -> list[tuple[Path, str]]:
    """(video path, caption) pairs; paths are relative to `root` (default: the list's folder).

    Raises ValueError when captioned videos do not exist, naming them.
    """
    captions = Path(captions)
    root = Path(root) if root else captions.parent
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {str(root)!r} does not exist")
    pairs = [
        (resolve_video_path(row, root, captions), _pick(row, CAPTION_COLUMNS, "caption", captions)[1])
        for row in read_caption_rows(captions)
    ]
    missing = [str(p) for p, _ in pairs if not p.is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(pairs)} videos in {str(captions)!r} do not exist under {str(root)!r}, "
            f"e.g. {missing[:3]}; fix the paths (or the folder) or remove those rows"
        )
    if not pairs:
        raise ValueError(f"caption list {str(captions)!r} has no rows")
    return pairs


# -- fps-aware clip sampling ----------------------------------------------------------------------
def source_step(step: int, fps: float, clip: ClipConfig) -> float:
    """Distance in source frames of `step` reference frames (12 at 24 fps = 0.5 s)."""
    return step * fps / clip.reference_fps


def clip_span(step: int, fps: float, clip: ClipConfig) -> float:
    """Source frames between the first and the last frame of a clip."""
    return (clip.clip_frames - 1) * source_step(step, fps, clip)


def feasible_steps(num_frames: int, fps: float, clip: ClipConfig) -> list[int]:
    return [s for s in clip.steps if round(clip_span(s, fps, clip)) <= num_frames - 1]


def clip_indices(num_frames: int, fps: float, clip: ClipConfig, generator: torch.Generator) -> tuple[list[int], int]:
    """Frame indices of one clip and its step (the skip for interpolation), random step and start."""
    steps = feasible_steps(num_frames, fps, clip)
    if not steps:
        raise ValueError(
            f"a clip of {clip.clip_frames} frames {clip.steps[0]} reference frames apart needs "
            f"{math.ceil(clip_span(clip.steps[0], fps, clip)) + 1} frames at {fps:g} fps; the video has {num_frames}"
        )
    step = steps[int(torch.randint(len(steps), (1,), generator=generator))]
    span = clip_span(step, fps, clip)
    start = int(torch.randint(int(num_frames - 1 - round(span)) + 1, (1,), generator=generator))
    stride = source_step(step, fps, clip)
    return [min(round(start + k * stride), num_frames - 1) for k in range(clip.clip_frames)], step


# -- pixels ---------------------------------------------------------------------------------------
def cover_crop_frames(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 (f, h, w, 3) -> float (3, f, height, width) in [-1, 1]: cover-resize, then center crop."""
    video = rearrange(torch.from_numpy(np.ascontiguousarray(frames)), "f h w c -> f c h w").float()
    scale = max(height / video.shape[-2], width / video.shape[-1])
    size = (max(height, round(video.shape[-2] * scale)), max(width, round(video.shape[-1] * scale)))
    if size != tuple(video.shape[-2:]):
        video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    video = video[..., top:top + height, left:left + width]
    return rearrange(video / 127.5 - 1, "f c h w -> c f h w").clamp(-1, 1)


# -- scanning ---------------------------------------------------------------------------------------
def scan_videos(pairs: Iterable[tuple[Path, str]], clip: ClipConfig, *, progress: bool = False
                ) -> tuple[list[VideoRecord], list[tuple[str, str]]]:
    """Probe every video: readable ones become records; unreadable ones are skipped with the reason.

    Raises ValueError when no video is readable, or when readable videos are too short for a clip.
    """
    pairs = list(pairs)
    records, skipped, short = [], [], []
    for path, caption in tqdm(pairs, desc="probing videos", disable=not progress):
        try:
            info = video_info(path)
        except VideoReadError as error:
            skipped.append((str(path), str(error)))
            continue
        (records if _long_enough(info, clip) else short).append(VideoRecord(path, caption, info.num_frames, info.fps))
    if not records and not short:
        raise ValueError(f"none of the {len(pairs)} videos can be read ({len(skipped)} skipped), e.g. {skipped[:2]}")
    if short:
        raise ValueError(_too_short_message(short, clip))
    return records, skipped


def _long_enough(info: VideoInfo, clip: ClipConfig) -> bool:
    return info.num_frames > 0 and info.fps > 0 and bool(feasible_steps(info.num_frames, info.fps, clip))


def _too_short_message(short: list[VideoRecord], clip: ClipConfig) -> str:
    first = short[0]
    need = math.ceil(clip_span(min(clip.steps), first.fps or clip.reference_fps, clip)) + 1
    return (
        f"{len(short)} videos are shorter than one clip ({clip.clip_frames} frames, {min(clip.steps)} reference "
        f"frames apart at {clip.reference_fps:g} fps), e.g. {str(first.path)!r} has {first.num_frames} frames at "
        f"{first.fps:g} fps and needs {need}; shorten the clip (keyframes / steps) or drop those videos"
    )


# -- dataset ----------------------------------------------------------------------------------------
class VideoTextDataset(torch.utils.data.Dataset):
    """Clips of captioned videos: `{"frames": (3, f, H, W) in [-1, 1], "caption", "step", "index"}`.

    Each item's clip (step and start) is drawn from a generator seeded by (seed, epoch, index),
    so an epoch is reproducible. A video that fails to decode gives `{"error": ..., "index"}`;
    `collate_clips` drops it and reports it under `skipped`.
    """

    def __init__(self, records: list[VideoRecord], clip: ClipConfig, *, seed: int = 0,
                 skipped: list[tuple[str, str]] | None = None) -> None:
        if not records:
            raise ValueError("VideoTextDataset needs at least one readable video")
        self.records, self.clip, self.seed, self.epoch = list(records), clip, seed, 0
        self.skipped = list(skipped or [])  # (path, reason) of videos left out when probing

    @classmethod
    def from_captions(cls, captions: str | Path, root: str | Path | None, clip: ClipConfig, *, seed: int = 0,
                      progress: bool = False) -> "VideoTextDataset":
        records, skipped = scan_videos(read_captions(captions, root), clip, progress=progress)
        return cls(records, clip, seed=seed, skipped=skipped)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def captions(self) -> list[str]:
        return [record.caption for record in self.records]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def sample(self, index: int, draw: int = 0) -> dict[str, Any]:
        """Clip number `draw` of video `index` (independent of the epoch: caches use this)."""
        record = self.records[index]
        generator = seeded_generator(self.seed, draw, index)
        indices, step = clip_indices(record.num_frames, record.fps, self.clip, generator)
        try:
            frames = read_frames(record.path, indices)
        except (VideoReadError, IndexError) as error:
            return {"error": str(error), "index": index, "path": str(record.path)}
        return {
            "frames": cover_crop_frames(frames, self.clip.height, self.clip.width),
            "caption": record.caption, "step": step, "index": index, "path": str(record.path),
        }

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """`dataset[i]` (clip of the current epoch) or `dataset[i, epoch]` (what the trainer asks)."""
        index, draw = key if isinstance(key, tuple) else (key, self.epoch)
        return self.sample(index, draw=draw)


class CaptionSubset(torch.utils.data.Dataset):
    """The samples of `dataset` (anything with a `captions` list) whose caption matches `pattern`, a
    regular expression (re.search); keys as the dataset's own (`i` or the trainer's `(i, epoch)`)."""

    def __init__(self, dataset: torch.utils.data.Dataset, pattern: str) -> None:
        captions = dataset.captions
        regex = re.compile(pattern)
        self.dataset, self.pattern = dataset, pattern
        self.indices = [i for i, caption in enumerate(captions) if regex.search(caption)]
        if not self.indices:
            examples = "; ".join(repr(c) for c in sorted(set(captions))[:3])
            raise ValueError(f"caption_pattern={pattern!r} matches none of the {len(captions)} samples' captions "
                             f"(e.g. {examples})")

    @property
    def captions(self) -> list[str]:
        captions = self.dataset.captions
        return [captions[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            return self.dataset[(self.indices[key[0]], *key[1:])]
        return self.dataset[self.indices[key]]


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable clips; failed ones are listed under `skipped`."""
    good = [item for item in items if "error" not in item]
    batch: dict[str, Any] = {"skipped": [item["path"] for item in items if "error" in item]}
    if good:
        batch["frames"] = torch.stack([item["frames"] for item in good])  # (b, 3, f, H, W)
        batch["step"] = torch.tensor([item["step"] for item in good])
        batch["caption"] = [item["caption"] for item in good]
        batch["index"] = [item["index"] for item in good]
        batch["path"] = [item["path"] for item in good]
    return batch


# -- sampling order -------------------------------------------------------------------------------------
class StreamSampler:
    """Batch keys `(index, epoch)` for one rank, from micro-batch `start` on, forever.

    The global stream is the concatenation of per-epoch permutations (seeded by seed and epoch);
    micro-batch m of rank r takes stream positions m·B·W + r·B ... + B - 1 (B per-rank batch, W ranks).
    The position is a pure function of m, so resuming at micro-batch m continues the same stream.
    """

    def __init__(self, num_samples: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start: int = 0) -> None:
        if num_samples < 1:
            raise ValueError("StreamSampler needs at least one sample")
        self.num_samples, self.batch_size, self.rank, self.world_size = num_samples, batch_size, rank, world_size
        self.seed, self.start = seed, start
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = torch.randperm(self.num_samples, generator=seeded_generator(self.seed, epoch))
            self._orders = {epoch: order.tolist()}  # one epoch at a time is all a rank needs
        return self._orders[epoch]

    def batch(self, micro: int) -> list[tuple[int, int]]:
        first = (micro * self.world_size + self.rank) * self.batch_size
        keys = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, self.num_samples)
            keys.append((self._order(epoch)[offset], epoch))
        return keys

    def __iter__(self):
        micro = self.start
        while True:
            yield self.batch(micro)
            micro += 1
