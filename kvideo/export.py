"""Write frames as mp4 (H.264), webm (VP9), gif or a folder of PNGs, atomically, with the format from the path."""
from __future__ import annotations

import math
import numbers
import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from tqdm.auto import tqdm

from kvideo.checkpoint import atomic_path, current_umask, temp_prefix

VIDEO_FORMATS = {".mp4": "mp4", ".webm": "webm", ".gif": "gif"}
FORMATS = ("mp4", "webm", "gif", "png")
CODECS = {"mp4": ("libx264", "libx265"), "webm": ("libvpx-vp9",), "gif": ("gif",)}
VALUE_RANGES = ((0, 1), (-1, 1))
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
VP9_SPEED = dict(zip(X264_PRESETS, (5, 5, 5, 4, 4, 3, 2, 1, 0)))  # libvpx "cpu-used" for each preset
CRF_LIMITS = {"libx264": 51, "libx265": 51, "libvpx-vp9": 63}
FRAME_NAME = "{:06d}.png"
PNG_COMPRESSION = 3  # zlib level: about twice as fast as PIL's default 6 for ~20 % larger files
GIF_PALETTE_SAMPLES = 16  # frames looked at to build the GIF's one shared palette


# -- public API --------------------------------------------------------------------------------
def write_video(
    path: str | Path,
    frames: Any,
    fps: float,
    *,
    crf: int = 18,
    preset: str = "medium",
    codec: str | None = None,
    overwrite: bool = True,
    format: str | None = None,
    value_range: tuple[float, float] | None = None,
    progress: bool = True,
    reproducible: bool = True,
) -> Path:
    """Write `frames` to `path` atomically and return the path written.

    The format comes from the extension (.mp4: H.264 yuv420p, .webm: VP9, .gif) or is a folder
    of PNG frames `000000.png, ...` (a path without extension, ending in '/', or `format="png"`).
    `frames`: uint8 `(f, h, w, 3)` or `(f, 3, h, w)` taken as is, kvideo's `(1, 3, f, h, w)`, or a
    float array/tensor with its `value_range` stated ((0, 1) or (-1, 1)). `crf` and `preset` set
    the quality and speed of H.264/H.265 (VP9: crf, and the preset picks libvpx's speed). H.264
    needs even sizes: an odd height or width gets one extra row/column copied from the edge
    (bottom/right), never a rescale. GIF stores delays in 1/100 s, so other rates are averaged.
    `reproducible` (the default, for every video kvideo writes): the same frames always give the same bytes
    (H.264 is encoded without x264's assembly, about 2-3x slower to encode: its assembly gave other bytes now
    and then for the same frames); `reproducible=False` encodes faster where that does not matter.
    """
    path_text = str(path)
    fmt = _resolve_format(path_text, format)
    path = Path(path_text)
    _check_settings(fmt, fps, crf, preset)
    codec = None if fmt == "png" else _check_codec(fmt, codec, crf)
    _check_destination(path, fmt, overwrite)
    frames = _as_frame_array(frames, value_range)
    if fmt == "png":
        return _write_png_folder(path, frames, progress)
    with atomic_path(path) as tmp:
        _encode(tmp, frames, fps, fmt=fmt, codec=codec, crf=crf, preset=preset, progress=progress,
                reproducible=reproducible)
    return path


def check_output_path(path: str | Path, *, format: str | None = None, overwrite: bool = True) -> str:
    """Validate an output path before any work (extension, folder, existing file); returns the format."""
    fmt = _resolve_format(str(path), format)
    _check_destination(Path(path), fmt, overwrite)
    return fmt


def frames_to_uint8(tensor: Any, value_range: tuple[float, float] | None) -> Any:
    """Map float values in `value_range` ((0, 1) or (-1, 1)) to uint8 0..255, keeping shape and type.

    uint8 input is returned as is. Values outside the stated range (or NaN) raise ValueError:
    clamp first if that is what you mean. Torch tensors stay tensors on their device.
    """
    dtype = tensor.dtype
    if dtype in (np.uint8, torch.uint8):
        if value_range not in (None, (0, 255)):
            raise ValueError(f"uint8 frames are taken as is (0..255); drop value_range={value_range}")
        return tensor
    if not _is_float(tensor):
        raise ValueError(f"frames must be uint8 or floating point, got dtype {dtype}")
    low, high = _check_value_range(value_range)
    _check_values_in_range(tensor, low, high)
    if isinstance(tensor, torch.Tensor):
        scaled = (tensor.float() - low) * (255 / (high - low))
        return scaled.round_().to(torch.uint8)
    scaled = (np.asarray(tensor, dtype=np.float32) - low) * (255 / (high - low))
    return np.rint(scaled).astype(np.uint8)


# -- checks before any work ----------------------------------------------------------------------
def _resolve_format(path_text: str, format: str | None) -> str:
    suffix = Path(path_text).suffix.lower()
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"unknown video format {format!r}; choose one of {FORMATS}")
        if format != "png" and suffix != f".{format}":
            raise ValueError(f"format={format!r} needs a path ending in '.{format}', got {path_text!r}")
        return format
    if path_text.endswith(("/", os.sep)) or not suffix:
        return "png"
    if suffix not in VIDEO_FORMATS:
        raise ValueError(
            f"cannot write {path_text!r}: unknown extension {suffix!r}; use one of "
            f"{tuple(VIDEO_FORMATS)} or a folder path (no extension) for PNG frames"
        )
    return VIDEO_FORMATS[suffix]


def _check_settings(fmt: str, fps: float, crf: int, preset: str) -> None:
    if not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if fmt in ("mp4", "webm") and preset not in X264_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {X264_PRESETS}")
    if fmt in ("mp4", "webm") and not (isinstance(crf, int) and 0 <= crf <= 63):
        raise ValueError(f"crf must be an integer in 0..51 (H.264) or 0..63 (VP9), got {crf!r}")


def _check_destination(path: Path, fmt: str, overwrite: bool) -> None:
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist; create it first")
    if not path.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{str(path)!r} already exists; pass overwrite=True to replace it")
    if fmt == "png" and not _is_frame_folder(path):
        raise FileExistsError(f"{str(path)!r} exists and is not a folder of PNG frames; kvideo will not replace it")
    if fmt != "png" and path.is_dir():
        raise FileExistsError(f"{str(path)!r} is a folder; cannot replace it with a {fmt} file")


def _is_frame_folder(path: Path) -> bool:
    """A folder holding only frame PNGs (what this module writes), so replacing it loses nothing else."""
    return path.is_dir() and all(p.is_file() and p.suffix == ".png" and p.stem.isdigit() for p in path.iterdir())


def _check_codec(fmt: str, codec: str | None, crf: int) -> str:
    import av  # PyAV loads FFmpeg's libraries: only when a video is written

    codec = codec or CODECS[fmt][0]
    if codec not in CODECS[fmt]:
        raise ValueError(f"codec {codec!r} cannot be written to {fmt}; choose one of {CODECS[fmt]}")
    try:
        av.Codec(codec, "w")
    except ValueError as error:  # PyAV's UnknownCodecError
        raise ValueError(
            f"this PyAV build has no {codec!r} encoder, needed for {fmt}; install a PyAV wheel that has it "
            f"(`pip install --force-reinstall av`) or write another format"
        ) from error
    if codec in CRF_LIMITS and crf > CRF_LIMITS[codec]:
        raise ValueError(f"crf {crf} is above {codec}'s maximum {CRF_LIMITS[codec]}")
    return codec


def _check_value_range(value_range) -> tuple[float, float]:
    if value_range is None:
        raise ValueError(f"float frames need value_range= one of {VALUE_RANGES} (what the floats mean)")
    if tuple(value_range) not in VALUE_RANGES:
        raise ValueError(f"value_range must be one of {VALUE_RANGES}, got {value_range!r}")
    return tuple(value_range)


def _check_values_in_range(tensor: Any, low: float, high: float) -> None:
    if isinstance(tensor, torch.Tensor):
        smallest, largest = tensor.min().item(), tensor.max().item()
    else:
        smallest, largest = float(np.min(tensor)), float(np.max(tensor))
    if not (low <= smallest and largest <= high):  # NaN fails too
        raise ValueError(
            f"frame values span [{smallest:.4g}, {largest:.4g}], outside the stated value_range "
            f"({low}, {high}); clamp first (x.clamp({low}, {high})) or state the right range"
        )


def _is_float(tensor: Any) -> bool:
    if isinstance(tensor, torch.Tensor):
        return tensor.is_floating_point()
    return np.issubdtype(tensor.dtype, np.floating)


# -- frame layouts -------------------------------------------------------------------------------
def _as_frame_array(frames: Any, value_range) -> np.ndarray:
    """Any accepted input as a contiguous uint8 numpy array `(f, h, w, 3)`."""
    if isinstance(frames, (list, tuple)):
        frames = torch.stack(list(frames)) if frames and isinstance(frames[0], torch.Tensor) else np.stack(frames)
    if not isinstance(frames, (np.ndarray, torch.Tensor)):
        raise ValueError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    frames = _channels_last(frames)
    if frames.shape[0] == 0 or 0 in frames.shape[1:3]:
        raise ValueError(f"no frames to write: shape {tuple(frames.shape)}")
    frames = frames_to_uint8(frames, value_range)
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    return np.ascontiguousarray(frames)


def _channels_last(frames: Any) -> Any:
    """(1, 3, f, h, w) / (f, 3, h, w) / (f, h, w, 3) -> (f, h, w, 3); channels-last wins a tie."""
    shape = tuple(frames.shape)
    if len(shape) == 5:
        if shape[0] != 1 or shape[1] != 3:
            raise ValueError(f"a (b, c, f, h, w) video needs b == 1 and c == 3 (write one video per call), got {shape}")
        return rearrange(frames, "1 c f h w -> f h w c")
    if len(shape) != 4:
        raise ValueError(f"frames must be (f, h, w, 3), (f, 3, h, w) or (1, 3, f, h, w), got shape {shape}")
    if shape[3] == 3:
        return frames
    if shape[1] == 3:
        return rearrange(frames, "f c h w -> f h w c")
    raise ValueError(f"frames need 3 (RGB) channels in (f, h, w, 3) or (f, 3, h, w), got shape {shape}")


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Copy the last row/column once where the height/width is odd (H.264 4:2:0 needs even sizes)."""
    _, height, width, _ = frames.shape
    pad = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))
    return np.pad(frames, pad, mode="edge") if height % 2 or width % 2 else frames


# -- encoding ------------------------------------------------------------------------------------
def _encode(path: Path, frames: np.ndarray, fps: float, *, fmt, codec, crf, preset, progress,
            reproducible=False) -> None:
    import av  # PyAV loads FFmpeg's libraries: only when a video is written

    if codec in ("libx264", "libx265"):
        frames = _pad_to_even(frames)
    with av.open(str(path), "w", format=fmt, options=_container_options(fmt)) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "pal8" if codec == "gif" else "yuv420p"
        stream.options = _codec_options(codec, crf, preset, reproducible)
        for frame in _video_frames(frames, codec, progress):
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush the encoder


def _container_options(fmt: str) -> dict[str, str]:
    if fmt == "mp4":
        return {"movflags": "+faststart"}
    return {"fflags": "+bitexact"} if fmt == "webm" else {}  # no random segment UID: same frames, same bytes


def _codec_options(codec: str, crf: int, preset: str, reproducible: bool = False) -> dict[str, str]:
    """Encoder settings; one encoder thread (the thread count changes x264's decisions and is written
    into the stream); `reproducible`: x264 without its assembly, whose output varied from call to call
    for the same frames (PyAV 18, 64x64 frames: 2 distinct outputs in 10 encodes of some clips)."""
    if codec in ("libx264", "libx265"):
        options = {"crf": str(crf), "preset": preset, "threads": "1"}
        if reproducible and codec == "libx264":
            options["x264-params"] = "asm=0"
        return options
    if codec == "libvpx-vp9":  # constant quality: crf with no bitrate target
        return {"crf": str(crf), "b": "0", "deadline": "good", "cpu-used": str(VP9_SPEED[preset]), "row-mt": "0",
                "threads": "1"}
    return {}


def _video_frames(frames: np.ndarray, codec: str, progress: bool):
    """PyAV frames to encode: RGB for the YUV codecs, palette images for GIF."""
    import av  # PyAV loads FFmpeg's libraries: only when a video is written

    palette = _gif_palette(frames) if codec == "gif" else None
    for image in tqdm(frames, desc=f"writing {codec}", unit="frame", disable=not progress, delay=1, leave=False):
        if palette is None:
            yield av.VideoFrame.from_ndarray(image, format="rgb24")
        else:
            yield av.VideoFrame.from_ndarray(_palette_indices(image, palette), format="pal8")


def _gif_palette(frames: np.ndarray):
    """One 256-colour palette (median cut over a sample of frames) shared by every frame: no flicker."""
    from PIL import Image  # Pillow is an optional extra (kvideo[eval]): only GIF and PNG outputs need it

    sample = frames[np.linspace(0, len(frames) - 1, min(len(frames), GIF_PALETTE_SAMPLES)).astype(int)]
    montage = rearrange(sample, "f h w c -> (f h) w c")
    return Image.fromarray(montage).quantize(colors=256, method=Image.Quantize.MEDIANCUT)


def _palette_indices(image: np.ndarray, palette) -> tuple[np.ndarray, np.ndarray]:
    """(indices (h, w), palette (256, 4) ARGB) for PyAV's pal8 frames."""
    from PIL import Image  # Pillow is an optional extra (kvideo[eval]): only GIF and PNG outputs need it

    indices = np.asarray(Image.fromarray(image).quantize(palette=palette, dither=Image.Dither.NONE))
    rgb = np.zeros((256, 3), dtype=np.uint8)
    colours = np.asarray(palette.getpalette(), dtype=np.uint8).reshape(-1, 3)[:256]
    rgb[: len(colours)] = colours
    argb = np.concatenate([np.full((256, 1), 255, dtype=np.uint8), rgb], axis=1)
    return indices, argb


def _write_png_folder(path: Path, frames: np.ndarray, progress: bool) -> Path:
    """Write PNGs into a temporary folder beside `path`, then move it into place."""
    from PIL import Image  # Pillow is an optional extra (kvideo[eval]): only GIF and PNG outputs need it

    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path, ".tmp"), suffix=".tmp"))
    try:
        for i, image in enumerate(tqdm(frames, desc="writing png", unit="frame", disable=not progress, delay=1, leave=False)):
            Image.fromarray(image).save(tmp / FRAME_NAME.format(i), compress_level=PNG_COMPRESSION)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700 folders; outputs get the usual mode
        _replace_folder(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def _replace_folder(new: Path, path: Path) -> None:
    """Rename `new` to `path`; an old frame folder there is moved aside first and then deleted."""
    if not path.exists():
        os.replace(new, path)
        return
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path, ".old"), suffix=".old"))
    os.replace(path, old / "frames")
    try:
        os.replace(new, path)
    except OSError:
        os.replace(old / "frames", path)  # put the old frames back
        raise
    finally:
        shutil.rmtree(old)
