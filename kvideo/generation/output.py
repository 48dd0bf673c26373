"""Generated clips and their files: `VideoOutput`, the first frame of a 1.1 clip, finished and leftover outputs."""
from __future__ import annotations

import glob
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from kvideo.checkpoint import atomic_path, temp_prefix
from kvideo.export import write_video
from kvideo.video_io import VideoReadError, video_info


@dataclass
class VideoOutput:
    """A generated clip: uint8 frames (f, h, w, 3), their nominal fps and the latents."""

    frames: np.ndarray
    fps: int
    latents: torch.Tensor

    def save(self, path: str | Path, **kwargs) -> Path:
        write_video(path, self.frames, self.fps, **kwargs)
        return Path(path)


@dataclass
class Video11Output(VideoOutput):
    """A 1.1 clip plus the first frame that conditioned it: uint8 (H, W, 3), drawn or given."""

    first_frame: np.ndarray | None = None

    def save_first_frame(self, path: str | Path) -> Path:
        from PIL import Image  # pillow is optional (pip install pillow): only 1.1 clips have a first frame

        path = Path(path)
        with atomic_path(path) as tmp:
            Image.fromarray(self.first_frame).save(tmp, format=image_format(path))
        return path


def image_format(path: Path) -> str:
    """The PIL format of an image file name (.png, .jpg, ...), or a ValueError naming the choices."""
    from PIL import Image  # optional, as above

    Image.init()
    if path.suffix.lower() not in Image.EXTENSION:
        raise ValueError(f"{str(path)!r}: unknown image extension; use .png or .jpg")
    return Image.EXTENSION[path.suffix.lower()]


def is_finished(path: Path) -> bool:
    """An output from an earlier run that is complete: a non-empty video that reads, or a folder of frames."""
    if path.is_dir():
        return any(path.glob("*.png"))
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        return video_info(path).num_frames > 0
    except (VideoReadError, OSError):
        return False


def remove_leftovers(path: Path) -> None:
    """Delete the hidden temp files a killed run left for `path` (`.NAME.<random>.tmp.mp4`)."""
    prefix = glob.escape(temp_prefix(path, ".tmp" + path.suffix))
    for leftover in path.parent.glob(f"{prefix}*.tmp*") if path.parent.is_dir() else ():
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
