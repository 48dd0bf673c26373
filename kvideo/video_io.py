"""Read video files as uint8 RGB frames (PyAV, or decord when asked for), seeking where possible."""
from __future__ import annotations

import bisect
import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

BACKENDS = ("auto", "decord", "pyav")
DECORD_HINT = "install it with `pip install 'kvideo[decord]'` or use backend='pyav'"


class VideoReadError(ValueError):
    """A video file exists but cannot be read (corrupt, truncated, no video stream)."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a reader needs before decoding: frame count, frame rate and frame size."""

    num_frames: int
    fps: float
    height: int
    width: int

    @property
    def duration(self) -> float:
        """Length in seconds at the nominal frame rate."""
        return self.num_frames / self.fps if self.fps > 0 else 0.0


# -- public API --------------------------------------------------------------------------------
def choose_backend(path: str | Path, backend: str = "auto") -> str:
    """The backend that will read `path`: "auto" is PyAV (always installed; it was about 2x faster than
    decord on full reads here, decord aborted a worker process on a broken file instead of raising,
    and it fails on some narrow widths and on GIF timing); decord only when asked for."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    if backend == "decord":
        _import_decord()
        return "decord"
    return "pyav"


def video_info(path: str | Path, *, backend: str = "auto", exact: bool = False) -> VideoInfo:
    """Frame count, fps and size of a video.

    The frame count never trusts the container header (WebM and GIF have none, others can lie):
    PyAV counts the stream's packets (one per frame, no decoding) and decord its frame index.
    `exact=True` decodes every frame instead, so damaged packets that do not decode are not counted.
    """
    path = _require_video(path)
    if exact:
        return _pyav_info(path, exact=True)
    reader = _decord_info if choose_backend(path, backend) == "decord" else _pyav_info
    return reader(path)


def read_frames(
    path: str | Path, indices: Sequence[int] | None = None, *, backend: str = "auto"
) -> np.ndarray:
    """Frames `indices` (all when None, any order, repeats allowed) as uint8 `(f, h, w, 3)` RGB."""
    path = _require_video(path)
    if indices is not None and len(indices) == 0:
        info = video_info(path, backend=backend)
        return np.zeros((0, info.height, info.width, 3), dtype=np.uint8)
    if choose_backend(path, backend) == "decord":
        return _decord_read(path, indices)
    return _pyav_read(path, indices)


def iter_frames(path: str | Path, *, backend: str = "auto") -> Iterator[np.ndarray]:
    """Frames one by one as uint8 `(h, w, 3)` RGB, decoding lazily."""
    path = _require_video(path)
    if choose_backend(path, backend) == "decord":
        return _decord_iter(path)
    return _pyav_iter(path)


# -- checks ------------------------------------------------------------------------------------
def _require_video(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video {str(path)!r} does not exist")
    if not path.is_file():
        raise VideoReadError(f"video {str(path)!r} is not a file (a folder of frames? read the images instead)")
    return path


def _check_indices(indices: Sequence[int], num_frames: int, path: Path) -> list[int]:
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < num_frames]
    if bad:
        raise IndexError(f"frame indices {bad[:5]} are out of range for {str(path)!r} ({num_frames} frames)")
    return indices


def _import_decord():
    try:  # decord is an optional extra (kvideo[decord])
        import decord
    except ImportError as error:
        raise ImportError(f"the decord video backend is not installed: {DECORD_HINT}") from error
    return decord


# -- PyAV --------------------------------------------------------------------------------------
@contextmanager
def _pyav_open(path: Path):
    """The opened container and its first video stream; FFmpeg errors become VideoReadError."""
    import av  # PyAV loads FFmpeg's libraries: only when a video is read

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{str(path)!r} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            yield container, stream
    except av.FFmpegError as error:
        raise VideoReadError(f"cannot read video {str(path)!r}: {error}") from error


def _pyav_fps(container, stream) -> float:
    """The average frame rate; for GIF (delays in 1/100 s, so 8 fps is 13, 12, 13, ...) FFmpeg's guess."""
    if container.format.name == "gif":
        rate = stream.guessed_rate or stream.average_rate
    else:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _frame_pts(container, stream) -> tuple[list[int | None], list[int]]:
    """Presentation timestamps of every frame, in presentation order, and the keyframes' indices."""
    packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size > 0]
    if any(pts is None for pts, _ in packets):
        return [None] * len(packets), [0]
    packets.sort(key=lambda packet: packet[0])
    keyframes = [i for i, (_, key) in enumerate(packets) if key] or [0]
    return [pts for pts, _ in packets], keyframes


def _pyav_info(path: Path, exact: bool = False) -> VideoInfo:
    with _pyav_open(path) as (container, stream):
        if exact:
            num_frames = sum(1 for _ in container.decode(stream))
        else:
            num_frames = sum(1 for p in container.demux(stream) if p.size > 0)
        ctx = stream.codec_context
        return VideoInfo(num_frames=num_frames, fps=_pyav_fps(container, stream), height=ctx.height, width=ctx.width)


def _pyav_iter(path: Path) -> Iterator[np.ndarray]:
    with _pyav_open(path) as (container, stream):
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def _pyav_read(path: Path, indices: Sequence[int] | None) -> np.ndarray:
    if indices is None:
        return _stack(list(_pyav_iter(path)), path)
    with _pyav_open(path) as (container, stream):
        pts, keyframes = _frame_pts(container, stream)
        indices = _check_indices(indices, len(pts), path)
        wanted = sorted(set(indices))
        if None in pts:
            found = _decode_sequential(container, stream, wanted)
        else:
            found = _decode_seeking(container, stream, wanted, pts, keyframes)
    missing = [i for i in wanted if i not in found]
    if missing:
        raise VideoReadError(f"frames {missing[:5]} of {str(path)!r} could not be decoded (damaged file?)")
    return _stack([found[i] for i in indices], path)


def _decode_seeking(container, stream, wanted, pts, keyframes) -> dict[int, np.ndarray]:
    """Seek to the keyframe before each run of wanted frames and decode only up to its last one."""
    index_of = {value: i for i, value in enumerate(pts)}
    found: dict[int, np.ndarray] = {}
    for key, run in _runs_by_keyframe(wanted, keyframes):
        container.seek(pts[key], stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            i = index_of.get(frame.pts)
            if i is None or (i > run[0] and run[0] not in found):  # seek missed: decode from the start
                return _decode_sequential(container, stream, wanted)
            if i in run:
                found[i] = frame.to_ndarray(format="rgb24")
            if i >= run[-1]:
                break
    return found


def _runs_by_keyframe(wanted: list[int], keyframes: list[int]) -> list[tuple[int, list[int]]]:
    """Group sorted frame indices by the last keyframe at or before each of them."""
    runs: list[tuple[int, list[int]]] = []
    for i in wanted:
        key = keyframes[max(bisect.bisect_right(keyframes, i) - 1, 0)]
        if runs and runs[-1][0] == key:
            runs[-1][1].append(i)
        else:
            runs.append((key, [i]))
    return runs


def _decode_sequential(container, stream, wanted: list[int]) -> dict[int, np.ndarray]:
    """Decode from the first frame, counting, until the last wanted frame (no usable timestamps)."""
    container.seek(0, stream=stream, backward=True)
    targets, found = set(wanted), {}
    for i, frame in enumerate(container.decode(stream)):
        if i in targets:
            found[i] = frame.to_ndarray(format="rgb24")
        if i >= wanted[-1]:
            break
    return found


def _stack(frames: list[np.ndarray], path: Path) -> np.ndarray:
    if not frames:
        raise VideoReadError(f"{str(path)!r} has no decodable frames")
    return np.stack(frames)  # (f, h, w, 3)


# -- decord ------------------------------------------------------------------------------------
@contextmanager
def _decord_open(path: Path):
    decord = _import_decord()
    try:
        yield decord.VideoReader(str(path), ctx=decord.cpu(0))
    except (RuntimeError, decord.DECORDError) as error:
        raise VideoReadError(f"cannot read video {str(path)!r} with decord: {error}") from error


def _decord_info(path: Path) -> VideoInfo:
    with _decord_open(path) as reader:
        height, width = reader[0].shape[:2]
        return VideoInfo(num_frames=len(reader), fps=float(reader.get_avg_fps()), height=height, width=width)


def _decord_read(path: Path, indices: Sequence[int] | None) -> np.ndarray:
    with _decord_open(path) as reader:
        indices = range(len(reader)) if indices is None else _check_indices(indices, len(reader), path)
        return reader.get_batch(list(indices)).asnumpy()  # (f, h, w, 3)


def _decord_iter(path: Path) -> Iterator[np.ndarray]:
    with _decord_open(path) as reader:
        for i in range(len(reader)):
            yield reader[i].asnumpy()
