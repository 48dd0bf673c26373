"""Tests for kvideo.export: round trips of every format, input layouts and ranges, atomic writes, bad input."""
from __future__ import annotations

import importlib.util

import av
import numpy as np
import pytest
import torch
from PIL import Image

import kvideo.export as export
from kvideo.export import frames_to_uint8, write_video
from kvideo.video_io import VideoInfo, read_frames, video_info

HAS_DECORD = importlib.util.find_spec("decord") is not None
NEEDS_DECORD = pytest.mark.skipif(not HAS_DECORD, reason="decord is not installed")
FPS = 8  # medium mode's nominal rate; GIF stores it as delays 13, 12, 13, ... (1/100 s)


def make_frames(num_frames: int = 6, height: int = 37, width: int = 50) -> np.ndarray:
    """Odd-sized smooth frames with a moving bright square: lossy codecs keep them close."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((num_frames, height, width, 3), dtype=np.float32)
    for i in range(num_frames):
        frames[i, ..., 0] = 40 + 3 * x
        frames[i, ..., 1] = 60 + 3 * y
        frames[i, ..., 2] = 20 * i
        frames[i, 5:15, 4 + 4 * i : 14 + 4 * i] = 240
    return frames.clip(0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def pyav_read(path):
    """Frames and stream facts straight from PyAV, without kvideo.video_io."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        rate = stream.guessed_rate if container.format.name == "gif" else stream.average_rate
        return frames, float(rate)


def read_png_folder(folder):
    names = sorted(folder.iterdir())
    assert [p.name for p in names] == [f"{i:06d}.png" for i in range(len(names))]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in names])


# -- round trips ---------------------------------------------------------------------------------
# (suffix, minimum PSNR in dB, size as read back for 37x50 frames). mp4 pads odd sizes by one
# row/column copied from the bottom/right edge; VP9 and GIF keep odd sizes.
# Measured at crf 18: mp4 37.9 dB, webm 38.1 dB (4:2:0 chroma alone costs ~39.5 dB here), gif 30.4 dB.
ROUND_TRIPS = [(".mp4", 36.0, (38, 50)), (".webm", 36.0, (37, 50)), (".gif", 28.0, (37, 50))]


@pytest.mark.parametrize("suffix,min_psnr,size", ROUND_TRIPS)
def test_round_trip_with_pyav(tmp_path, suffix, min_psnr, size):
    frames = make_frames()
    path = write_video(tmp_path / f"clip{suffix}", frames, FPS, progress=False)
    decoded, fps = pyav_read(path)
    assert decoded.shape == (6, *size, 3)
    assert fps == pytest.approx(FPS)
    assert psnr(decoded[:, :37, :50], frames) > min_psnr
    assert video_info(path, backend="pyav") == VideoInfo(6, pytest.approx(FPS), *size)


@NEEDS_DECORD
@pytest.mark.parametrize("suffix,min_psnr,size", ROUND_TRIPS[:2])  # decord cannot read GIFs
def test_round_trip_with_decord(tmp_path, suffix, min_psnr, size):
    frames = make_frames()
    path = write_video(tmp_path / f"clip{suffix}", frames, FPS, progress=False)
    assert video_info(path, backend="decord") == VideoInfo(6, pytest.approx(FPS), *size)
    decoded = read_frames(path, backend="decord")
    assert psnr(decoded[:, :37, :50], frames) > min_psnr


def test_mp4_is_h264_yuv420p_and_padding_copies_the_edge(tmp_path):
    frames = make_frames()
    path = write_video(tmp_path / "clip.mp4", frames, FPS, crf=0, preset="ultrafast", progress=False)
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.name, ctx.pix_fmt) == ("h264", "yuv420p")
    decoded, _ = pyav_read(path)
    # crf 0 is lossless: all that is lost is the RGB -> yuv420p conversion of the edge-padded frames
    padded = np.concatenate([frames, frames[:, -1:]], axis=1)
    expected = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray(format="rgb24") for f in padded]
    assert np.array_equal(decoded, np.stack(expected))


def test_crf_trades_size_for_quality(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    sizes = {crf: write_video(tmp_path / f"q{crf}.mp4", frames, FPS, crf=crf, progress=False).stat().st_size for crf in (10, 40)}
    assert sizes[10] > 2 * sizes[40]


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_encodes_give_the_same_bytes_by_default(tmp_path, suffix):
    from kvideo.shapes.render import RenderSettings, clip_params, render_clip

    settings = RenderSettings.from_size(32, 24.0, 0.5)
    for index in (2, 3, 4, 5):  # clips whose H.264 bytes varied from call to call with x264's assembly
        frames = render_clip(clip_params(4, index, settings), settings)
        outputs = {write_video(tmp_path / f"{index}-{i}{suffix}", frames, 24.0, progress=False).read_bytes()
                   for i in range(8)}
        assert len(outputs) == 1


def test_every_video_is_encoded_with_the_reproducible_options_unless_asked_otherwise(tmp_path):
    """The default is the reproducible encoder (x264 without its assembly), whose bytes differ from the fast one's."""
    frames = make_frames()
    default = write_video(tmp_path / "default.mp4", frames, FPS, progress=False).read_bytes()
    assert default == write_video(tmp_path / "same.mp4", frames, FPS, progress=False, reproducible=True).read_bytes()
    assert default != write_video(tmp_path / "fast.mp4", frames, FPS, progress=False,
                                  reproducible=False).read_bytes()


def test_png_folder_is_exact(tmp_path):
    frames = make_frames()
    for path in (tmp_path / "frames", str(tmp_path / "slash") + "/"):
        folder = write_video(path, frames, FPS, progress=False)
        assert np.array_equal(read_png_folder(folder), frames)
    explicit = write_video(tmp_path / "x.png", frames, FPS, format="png", progress=False)
    assert explicit.is_dir() and np.array_equal(read_png_folder(explicit), frames)
    # PyAV reads the folder back too (image2 demuxer), with the same count and size
    with av.open(str(tmp_path / "frames" / "%06d.png"), format="image2") as container:
        assert np.array_equal(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]), frames)


# -- input layouts and value ranges --------------------------------------------------------------
def test_layouts_and_ranges_give_the_same_pixels(tmp_path):
    frames = make_frames(num_frames=3)
    unit = torch.from_numpy(frames).float() / 255  # (f, h, w, 3) in [0, 1]
    inputs = {
        "channels_first": np.ascontiguousarray(frames.transpose(0, 3, 1, 2)),
        "unit_float": (unit, (0, 1)),
        "signed_float": ((unit * 2 - 1).numpy(), (-1, 1)),
        "kvideo_bcfhw": (unit.permute(3, 0, 1, 2)[None] * 2 - 1, (-1, 1)),
        "list_of_frames": list(frames),
        "half": (unit.half(), (0, 1)),
    }
    for name, value in inputs.items():
        frames_in, value_range = value if isinstance(value, tuple) else (value, None)
        folder = write_video(tmp_path / name, frames_in, FPS, value_range=value_range, progress=False)
        assert np.abs(read_png_folder(folder).astype(int) - frames).max() <= (1 if name == "half" else 0), name


def test_frames_to_uint8_keeps_type_and_rounds():
    signed = torch.tensor([-1.0, 0.0, 1.0, -0.999])
    assert frames_to_uint8(signed, (-1, 1)).tolist() == [0, 128, 255, 0]
    unit = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    out = frames_to_uint8(unit, (0, 1))
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.tolist() == [0, 128, 255]
    raw = np.arange(4, dtype=np.uint8)
    assert frames_to_uint8(raw, None) is raw


@pytest.mark.parametrize(
    "values,value_range,match",
    [
        (np.full((2, 8, 8, 3), 1.5, np.float32), (0, 1), r"outside the stated value_range \(0, 1\)"),
        (np.full((2, 8, 8, 3), -0.5, np.float32), (0, 1), "clamp first"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), (-1, 1), "outside"),
        (np.zeros((2, 8, 8, 3), np.float32), None, "need value_range"),
        (np.zeros((2, 8, 8, 3), np.float32), (0, 255), "value_range must be one of"),
        (np.zeros((2, 8, 8, 3), np.uint8), (0, 1), "uint8 frames are taken as is"),
        (np.zeros((2, 8, 8, 3), np.int64), None, "uint8 or floating point"),
    ],
)
def test_bad_values(tmp_path, values, value_range, match):
    with pytest.raises(ValueError, match=match):
        write_video(tmp_path / "v.mp4", values, FPS, value_range=value_range)
    assert list(tmp_path.iterdir()) == []


# -- errors before any work ----------------------------------------------------------------------
GOOD = np.zeros((2, 8, 8, 3), np.uint8)


@pytest.mark.parametrize(
    "name,frames,kwargs,error,match",
    [
        ("v.avi", GOOD, {}, ValueError, r"unknown extension '\.avi'"),
        ("v.mp4", GOOD, {"format": "gif"}, ValueError, r"needs a path ending in '\.gif'"),
        ("v.mp4", GOOD, {"format": "mkv"}, ValueError, "unknown video format 'mkv'"),
        ("v.mp4", GOOD[:0], {}, ValueError, "no frames to write"),
        ("v.mp4", np.zeros((2, 8, 8, 4), np.uint8), {}, ValueError, "need 3 .RGB. channels"),
        ("v.mp4", np.zeros((2, 8, 8), np.uint8), {}, ValueError, "got shape"),
        ("v.mp4", np.zeros((2, 3, 2, 8, 8), np.uint8), {}, ValueError, "b == 1"),
        ("v.mp4", GOOD, {"fps": 0}, ValueError, "fps must be a positive number, got 0"),
        ("v.mp4", GOOD, {"fps": float("nan")}, ValueError, "fps must be a positive number"),
        ("v.mp4", GOOD, {"preset": "quick"}, ValueError, "unknown preset 'quick'"),
        ("v.mp4", GOOD, {"crf": 60}, ValueError, "crf 60 is above libx264's maximum 51"),
        ("v.mp4", GOOD, {"codec": "libvpx-vp9"}, ValueError, "cannot be written to mp4"),
        ("missing/v.mp4", GOOD, {}, FileNotFoundError, "output folder .*missing.* does not exist"),
        ("missing/frames/", GOOD, {}, FileNotFoundError, "does not exist"),
        ("v.mp4", "not frames", {}, ValueError, "numpy array or torch tensor"),
    ],
)
def test_bad_input_fails_before_writing(tmp_path, name, frames, kwargs, error, match):
    kwargs = {"fps": FPS, **kwargs}
    with pytest.raises(error, match=match):
        write_video(tmp_path / name if not name.endswith("/") else str(tmp_path / name), frames, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_missing_encoder_is_named(tmp_path, monkeypatch):
    real_codec = av.Codec

    def no_x264(name, mode="r"):
        if name == "libx264":
            raise av.codec.codec.UnknownCodecError(name)
        return real_codec(name, mode)

    monkeypatch.setattr(av, "Codec", no_x264)
    with pytest.raises(ValueError, match="no 'libx264' encoder"):
        write_video(tmp_path / "v.mp4", GOOD, FPS)
    assert list(tmp_path.iterdir()) == []


def test_this_pyav_build_has_the_default_encoders():
    for codec in ("libx264", "libvpx-vp9", "gif"):
        assert av.Codec(codec, "w").is_encoder, codec


# -- overwriting and atomicity -------------------------------------------------------------------
def test_overwrite_rules(tmp_path):
    path = tmp_path / "v.gif"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_video(path, GOOD, FPS, overwrite=False)
    assert path.read_bytes() == b"old"
    write_video(path, GOOD, FPS, progress=False)
    assert video_info(path).num_frames == 2
    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a folder of PNG frames"):
        write_video(other, GOOD, FPS)
    folder = write_video(tmp_path / "frames", make_frames(5), FPS, progress=False)
    write_video(folder, GOOD, FPS, progress=False)  # a frame folder is replaced whole
    assert read_png_folder(folder).shape == (2, 8, 8, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "notes", "v.gif"]


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif"])
def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch, suffix):
    real_frames = export._video_frames

    def two_then_fail(*args, **kwargs):
        for i, frame in enumerate(real_frames(*args, **kwargs)):
            if i == 2:
                raise Boom("encoder died")
            yield frame

    monkeypatch.setattr(export, "_video_frames", two_then_fail)
    old = tmp_path / f"old{suffix}"
    old.write_bytes(b"previous")
    for path in (tmp_path / f"new{suffix}", old):
        with pytest.raises(Boom):
            write_video(path, make_frames(), FPS, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [old.name]
    assert old.read_bytes() == b"previous"


def test_png_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    real_save = Image.Image.save
    calls = []

    def save_twice_then_fail(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise Boom("disk full")
        return real_save(self, *args, **kwargs)

    old = write_video(tmp_path / "frames", make_frames(3), FPS, progress=False)
    monkeypatch.setattr(Image.Image, "save", save_twice_then_fail)
    for path in (tmp_path / "new_frames", old):
        calls.clear()
        with pytest.raises(Boom):
            write_video(path, make_frames(), FPS, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    assert np.array_equal(read_png_folder(old), make_frames(3))


def test_outputs_get_the_usual_file_modes(tmp_path):
    import os

    mask = os.umask(0)
    os.umask(mask)
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    write_video(tmp_path / "clip.mp4", frames, 2, progress=False)
    write_video(tmp_path / "frames", frames, 2, progress=False)
    assert (tmp_path / "clip.mp4").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "frames").stat().st_mode & 0o777 == 0o777 & ~mask
