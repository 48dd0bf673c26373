"""Pictures for release 1.1: read (with a pixel limit), fit to the video size, and convert to and from tensors.

Pillow is an optional dependency (only pictures need it), so each function imports it where it is used.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAX_IMAGE_PIXELS = 64 * 2**20  # 64 M pixels (8192 x 8192): a picture is shrunk to the video size anyway


def open_picture(path: Path):
    """An image file as a PIL image, its size checked against MAX_IMAGE_PIXELS before its pixels are read."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist (or is not a file)")
    try:
        with _no_bomb_check(), Image.open(path) as opened:  # the header alone: our own limit, with its size
            check_pixels(path, *opened.size)
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"image {str(path)!r} is not a readable picture ({error}); give a PNG or JPEG") from None


@contextlib.contextmanager
def _no_bomb_check():
    """PIL's own size check off while a header is read (it would refuse before the size can be reported)."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def check_pixels(path: Path, width: int, height: int) -> None:
    """A picture within MAX_IMAGE_PIXELS, else a one-line error with the memory it would take."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"image {str(path)!r} is {width}x{height} ({width * height / 1e6:.0f} M pixels, about "
                         f"{width * height * 4 / 2**30:.1f} GiB to read); kvideo reads pictures up to "
                         f"{MAX_IMAGE_PIXELS // 2**20} M pixels: shrink it first")


def load_image(image: Any):
    """A PIL RGB image from a PIL image, a uint8 array (h, w), (h, w, 1|3|4) or an image file path.

    Pictures with alpha or one channel are converted to RGB (alpha dropped, as the release does)
    with a warning that says so.
    """
    from PIL import Image

    if isinstance(image, (str, Path)):
        image = open_picture(Path(image))
    elif isinstance(image, np.ndarray):
        image = _array_image(image)
    elif not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL image, a uint8 array or a file path; got {type(image).__name__}")
    if image.mode != "RGB":
        warnings.warn(f"the image has mode {image.mode!r} ({_describe_mode(image.mode)}); converted to RGB",
                      stacklevel=2)
        image = image.convert("RGB")
    return image


def _array_image(array: np.ndarray):
    from PIL import Image

    if array.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8 (0..255); got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"an image array must be (h, w), (h, w, 1), (h, w, 3) or (h, w, 4); got {array.shape}")
    return Image.fromarray(array)


def _describe_mode(mode: str) -> str:
    if "A" in mode or mode == "PA":
        return "it has an alpha channel, which is dropped"
    if mode in ("L", "1", "I", "F", "I;16"):
        return "one channel, repeated"
    return "not RGB"


def resize_center_crop(image, width: int, height: int, *, upscale: bool = False):
    """The release's fit: shrink by max(1, min(w0/W, h0/H)) (bicubic), then center-crop W x H.

    A picture smaller than W x H is not enlarged and the crop pads it with black, as the release
    does; `upscale=True` enlarges it first instead (kvideo's option, not the release's).
    """
    from PIL import Image

    w0, h0 = image.size
    factor = min(w0 / width, h0 / height)
    factor = factor if upscale else max(1.0, factor)
    image = image.resize((round(w0 / factor), round(h0 / factor)), Image.Resampling.BICUBIC)
    w1, h1 = image.size
    return image.crop(((w1 - width) / 2, (h1 - height) / 2, (w1 + width) / 2, (h1 + height) / 2))


def pixels_to_tensor(image) -> torch.Tensor:
    """PIL RGB (W x H) -> (1, 3, H, W) float in [-1, 1]."""
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # (H, W, 3)
    return (array.permute(2, 0, 1)[None].float() / 255.0) * 2.0 - 1.0


def tensor_to_pixels(image: torch.Tensor):
    """(1, 3, H, W) in [-1, 1] -> PIL RGB, truncating to uint8 as the release does."""
    from PIL import Image

    array = (((image[0].float() + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array.astype(np.uint8))
