"""Frame geometry of the evaluation protocols: each published resize / crop, applied alike to real and generated clips."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

# name -> what it does (written into every report)
GEOMETRIES = {
    "lanczos-crop": "PIL Lanczos resize of the shorter side to `size` (longer side rounded), then a center crop "
                    "(offsets floored), uint8 frames (StyleGAN-V's dataset preparation)",
    "bilinear-crop": "bilinear resize (half-pixel, no antialias) of the shorter side to `size` (longer side rounded "
                     "up), then a center crop (offsets floored) (VideoGPT's preprocess)",
    "bilinear-squash": "bilinear resize (half-pixel, no antialias) of the whole frame to size x size, no crop "
                       "(content-debiased FVD's preprocess_videomae)",
    "tf1-bilinear": "TensorFlow 1 `resize_bilinear` of the whole frame to size x size (corner-anchored, no "
                    "half-pixel centers, no crop) (the original TensorFlow FVD)",
}


def _pil():
    try:  # Pillow is an optional extra (kvideo[eval]): only the protocols that resize with it need it
        from PIL import Image
    except ImportError as error:
        raise ImportError("this protocol resizes frames with Pillow: pip install 'kvideo[eval]' (or pip install pillow)") from error
    return Image


def shorter_side_size(h: int, w: int, size: int, rounding) -> tuple[int, int]:
    """(h, w) with the shorter side `size` and the longer one scaled by `rounding` (round or ceil)."""
    if h <= w:
        return size, int(rounding(w * size / h))
    return int(rounding(h * size / w)), size


def center_crop_offsets(h: int, w: int, size: int) -> tuple[int, int]:
    """(top, left) of a size x size crop, floored (StyleGAN-V and VideoGPT)."""
    return (h - size) // 2, (w - size) // 2


def lanczos_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (f, h, w, 3) -> uint8 (f, size, size, 3): Lanczos shorter side to `size`, center crop."""
    image_cls = _pil()
    h, w = frames.shape[1:3]
    new_h, new_w = shorter_side_size(h, w, size, round)
    top, left = center_crop_offsets(new_h, new_w, size)
    out = []
    for frame in frames:
        image = image_cls.fromarray(frame).resize((new_w, new_h), image_cls.LANCZOS)
        out.append(np.asarray(image.crop((left, top, left + size, top + size))))
    return np.stack(out)


def bilinear_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """float (f, c, h, w) -> (f, c, size, size): bilinear shorter side to `size` (ceil), center crop."""
    h, w = frames.shape[-2:]
    new_h, new_w = shorter_side_size(h, w, size, math.ceil)
    resized = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = center_crop_offsets(new_h, new_w, size)
    return resized[..., top:top + size, left:left + size]


def _tf1_axis(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of TF1's legacy bilinear resize along one axis."""
    source = torch.arange(out_size, dtype=torch.float64) * (in_size / out_size)
    lower = source.floor().long().clamp(max=in_size - 1)
    upper = (lower + 1).clamp(max=in_size - 1)
    return lower, upper, (source - lower).to(torch.float32)


def tf1_bilinear(frames: torch.Tensor, size: int) -> torch.Tensor:
    """float (f, c, h, w) -> (f, c, size, size) as TF1's `tf.image.resize_bilinear` (align_corners=False)."""
    h, w = frames.shape[-2:]
    (y0, y1, wy), (x0, x1, wx) = _tf1_axis(h, size), _tf1_axis(w, size)
    rows = frames[..., y0, :] * (1 - wy[:, None]) + frames[..., y1, :] * wy[:, None]  # (f, c, size, w)
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def prepare_clip(frames: np.ndarray, geometry: str, size: int) -> torch.Tensor:
    """uint8 (f, h, w, 3) -> (3, f, size, size) in [0, 255]: uint8 for lanczos-crop, float32 otherwise."""
    if geometry == "lanczos-crop":
        return rearrange(torch.from_numpy(lanczos_crop(frames, size)), "f h w c -> c f h w")
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown frame geometry {geometry!r}; choose one of {sorted(GEOMETRIES)}")
    x = rearrange(torch.from_numpy(np.ascontiguousarray(frames)).float(), "f h w c -> f c h w")
    if geometry == "bilinear-crop":
        x = bilinear_crop(x, size)
    elif geometry == "bilinear-squash":
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    else:
        x = tf1_bilinear(x, size)
    return rearrange(x, "f c h w -> c f h w").contiguous()


# -- CLIP --------------------------------------------------------------------------------------
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(frames: np.ndarray, size: int = 224, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> torch.Tensor:
    """uint8 (f, h, w, 3) -> float (f, 3, size, size) exactly as OpenAI CLIP's `_transform`.

    Resize(size, bicubic): the shorter side to `size`, the longer one int(size·long/short) (floored);
    CenterCrop(size): offsets int(round((side - size) / 2)) (Python rounding); ToTensor; Normalize.
    """
    image_cls = _pil()
    h, w = frames.shape[1:3]
    new_h, new_w = shorter_side_size(h, w, size, int)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    out = []
    for frame in frames:
        image = image_cls.fromarray(frame).resize((new_w, new_h), image_cls.BICUBIC)
        out.append(np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0)
    x = rearrange(torch.from_numpy(np.stack(out)), "f h w c -> f c h w")
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
