"""Tests for kvideo.video_io: frame counts, fps, sizes, seeking reads and errors, on tiny generated videos."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from kvideo.video_io import (
    VideoInfo,
    VideoReadError,
    _runs_by_keyframe,
    choose_backend,
    iter_frames,
    read_frames,
    video_info,
)

HAS_DECORD = importlib.util.find_spec("decord") is not None
NEEDS_DECORD = pytest.mark.skipif(not HAS_DECORD, reason="decord is not installed")
BACKENDS = ["pyav", pytest.param("decord", marks=NEEDS_DECORD)]
# rgb8 is a fixed 3-3-2 bit palette: coarse, hence the looser GIF bound below
CODECS = {".mp4": ("libx264", "yuv420p"), ".webm": ("libvpx-vp9", "yuv420p"), ".gif": ("gif", "rgb8")}


def make_frames(num_frames: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth frames whose brightness encodes the frame number (easy to tell apart after lossy coding)."""
    ramp = np.linspace(0, 60, width, dtype=np.float32)[None, :, None]
    levels = np.arange(num_frames, dtype=np.float32)[:, None, None, None] * (150 / max(num_frames - 1, 1))
    frames = np.broadcast_to(levels + ramp, (num_frames, height, width, 3)).copy()
    frames[..., 1] = np.random.default_rng(seed).uniform(0, 40)  # a flat green level per video
    return frames.astype(np.uint8)


def write_test_video(path: Path, frames: np.ndarray, fps: int = 10, gop: int | None = None) -> Path:
    """Write frames with PyAV directly, independent of kvideo.export."""
    codec, pix_fmt = CODECS[path.suffix]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if gop:
            stream.codec_context.gop_size = gop
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    root = tmp_path_factory.mktemp("videos")
    frames = make_frames(12)
    return {suffix: (write_test_video(root / f"clip{suffix}", frames), frames) for suffix in CODECS}


# decord cannot read GIFs (choose_backend sends them to PyAV)
CASES = [(suffix, "pyav") for suffix in CODECS] + [
    pytest.param(suffix, "decord", marks=NEEDS_DECORD) for suffix in (".mp4", ".webm")
]


@pytest.mark.parametrize("suffix,backend", CASES)
def test_info_counts_frames_and_reads_fps_and_size(videos, suffix, backend):
    path, frames = videos[suffix]
    info = video_info(path, backend=backend)
    assert info == VideoInfo(num_frames=12, fps=pytest.approx(10.0), height=48, width=64)
    assert info.duration == pytest.approx(1.2)
    assert video_info(path, exact=True).num_frames == 12


@pytest.mark.parametrize("suffix,backend", CASES)
def test_read_all_matches_iteration_and_content(videos, suffix, backend):
    path, frames = videos[suffix]
    everything = read_frames(path, backend=backend)
    assert everything.shape == frames.shape and everything.dtype == np.uint8
    assert np.array_equal(np.stack(list(iter_frames(path, backend=backend))), everything)
    error = np.abs(everything.astype(np.float32) - frames).mean()
    assert error < (24 if suffix == ".gif" else 6), f"mean abs error {error:.2f} after {suffix} coding"
    assert np.all(np.diff(everything.mean(axis=(1, 2, 3))) > 0), "frames out of order"


@pytest.mark.parametrize("suffix,backend", CASES)
def test_read_indices_any_order_with_repeats(videos, suffix, backend):
    path, _ = videos[suffix]
    everything = read_frames(path, backend=backend)
    indices = [11, 0, 5, 5, 3]
    assert np.array_equal(read_frames(path, indices, backend=backend), everything[indices])
    assert read_frames(path, [], backend=backend).shape == (0, 48, 64, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeking_reads_equal_a_full_decode(tmp_path, backend):
    frames = make_frames(30, seed=1)
    path = write_test_video(tmp_path / "gop.webm", frames, gop=4)
    everything = read_frames(path, backend="pyav")
    rng = np.random.default_rng(0)
    for _ in range(4):
        indices = rng.integers(0, 30, size=5).tolist()
        assert np.array_equal(read_frames(path, indices, backend=backend), everything[indices]), indices


def test_runs_group_frames_by_their_keyframe():
    runs = _runs_by_keyframe([1, 2, 9, 10, 17, 30], keyframes=[0, 8, 16, 24])
    assert runs == [(0, [1, 2]), (8, [9, 10]), (16, [17]), (24, [30])]


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_file_counts_what_is_there_not_the_header(tmp_path, backend):
    path = write_test_video(tmp_path / "full.webm", make_frames(30, seed=2))
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # WebM headers carry no frame count
    cut = tmp_path / "cut.webm"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    with av.open(str(cut)) as container:
        header_frames = round(container.duration / 1e6 * 10)
    info = video_info(cut, backend=backend)
    assert header_frames == 30 and 0 < info.num_frames < 30
    assert read_frames(cut, backend=backend).shape[0] == info.num_frames
    with pytest.raises(IndexError, match="out of range"):
        read_frames(cut, [info.num_frames], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_garbage_file_raises_video_read_error_naming_it(tmp_path, backend):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"not a video at all " * 50)
    for call in (video_info, read_frames, lambda p, **kw: list(iter_frames(p, **kw))):
        with pytest.raises(VideoReadError, match="broken.mp4"):
            call(path, backend=backend)
    assert issubclass(VideoReadError, ValueError)


def test_missing_file_folder_and_audio_only(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        read_frames(tmp_path / "nothere.mp4")
    with pytest.raises(VideoReadError, match="not a file"):
        video_info(tmp_path)
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = np.zeros((1, 800), dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(VideoReadError, match="no video stream"):
        read_frames(audio, backend="pyav")


def test_backend_choice(videos, monkeypatch):
    path, _ = videos[".mp4"]
    with pytest.raises(ValueError, match="unknown video backend 'opencv'"):
        choose_backend(path, "opencv")
    assert choose_backend(videos[".gif"][0]) == "pyav"
    assert choose_backend(path) == "pyav"  # auto: PyAV, installed everywhere and robust to broken files
    monkeypatch.setitem(sys.modules, "decord", None)  # as if decord were not installed
    assert choose_backend(path) == "pyav"
    with pytest.raises(ImportError, match=r"pip install 'kvideo\[decord\]'"):
        read_frames(path, backend="decord")
