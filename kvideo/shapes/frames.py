"""Frame-level measures of a shapes clip: roughness, keyframe flicker, motion evenness.

A clip's scores (`kvideo.shapes.score`) are medians over frames, so a clip whose keyframes show another
colour than the frames between them can still score 100 %. These measures read every frame:

- *roughness* of a frame: mean |discrete Laplacian| (4 f[y,x] - its 4 neighbours) over the inner pixels
  and RGB, in 0..255 units. Rendered 64x64 clips are about 6.8, their MoVQ round trip 6.7.
- *keyframe flicker*: mean roughness of the keyframes (frames 0, s, 2s, ... for a keyframe stride s; 4 at
  fps medium) over the mean roughness of the frames between them; 1 for a clip without flicker.
- *motion evenness*: for each pair of consecutive keyframes that moves the object at least 5 % of the
  frame, the fraction of the way each frame between has travelled along the pair's main axis, against
  the even k / s; the median of |fraction - k / s| over all of them (0: constant speed).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

MIN_PAIR_TRAVEL = 0.05  # keyframe pairs moving less than this fraction of the frame are left out of evenness
DEFAULT_KEYFRAME_STRIDE = 4  # fps medium: one keyframe, then 3 interpolated frames


def roughness(frames: np.ndarray) -> np.ndarray:
    """(f,) mean |discrete Laplacian| of each uint8 frame (f, h, w, 3) over its inner pixels and RGB (0..255)."""
    f = np.asarray(frames, dtype=np.float32)
    laplacian = (4 * f[:, 1:-1, 1:-1] - f[:, :-2, 1:-1] - f[:, 2:, 1:-1] - f[:, 1:-1, :-2] - f[:, 1:-1, 2:])
    return np.abs(laplacian).mean(axis=(1, 2, 3))


def keyframe_mask(num_frames: int, stride: int) -> np.ndarray:
    """(f,) bool: True at the keyframes 0, stride, 2 stride, ..."""
    if stride < 1:
        raise ValueError(f"keyframe stride {stride!r} must be >= 1")
    return np.arange(num_frames) % stride == 0


def keyframe_flicker(rough: np.ndarray, stride: int) -> float | None:
    """Mean roughness of the keyframes / that of the frames between (None without frames between)."""
    keys = keyframe_mask(len(rough), stride)
    if keys.all():
        return None
    return float(rough[keys].mean() / max(float(rough[~keys].mean()), 1e-6))


def motion_evenness(centers: Mapping[int, np.ndarray], num_frames: int, size: tuple[int, int],
                    stride: int) -> float | None:
    """Median |fraction travelled - k / stride| over the frames between keyframe pairs (see the module's
    docstring); `centers` maps frame -> (y, x) where the object was found. None when no pair qualifies."""
    if stride < 2:
        return None
    deviations = []
    for start in range(0, num_frames - stride, stride):
        end = start + stride
        if start not in centers or end not in centers:
            continue
        travel = (centers[end] - centers[start]) / np.asarray(size, dtype=np.float64)
        axis = int(np.argmax(np.abs(travel)))
        if abs(travel[axis]) < MIN_PAIR_TRAVEL:
            continue
        span = centers[end][axis] - centers[start][axis]
        deviations += [abs((centers[k][axis] - centers[start][axis]) / span - (k - start) / stride)
                       for k in range(start + 1, end) if k in centers]
    return float(np.median(deviations)) if deviations else None
