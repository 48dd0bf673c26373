"""A tiny synthetic video-text set (moving squares) for the training tests (no tests here)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}


def moving_square(num_frames: int, height: int, width: int, color: tuple[int, int, int],
                  direction: tuple[int, int], speed: float = 1.0) -> np.ndarray:
    """uint8 (f, h, w, 3): a square crossing a gray background; speed in pixels per frame."""
    frames = np.full((num_frames, height, width, 3), 110, dtype=np.uint8)
    side = max(2, min(height, width) // 4)
    for i in range(num_frames):
        top = int((height - side) / 2 + direction[0] * speed * i) % (height - side)
        left = int((width - side) / 2 + direction[1] * speed * i) % (width - side)
        frames[i, top:top + side, left:left + side] = color
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """uint8 (f, h, w, 3) RGB -> an H.264 mp4 (sizes rounded up to even by padding)."""
    import av

    f, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_synthetic_set(folder: str | Path, num_videos: int = 8, *, num_frames: int = 48, fps: float = 24,
                        height: int = 72, width: int = 96, caption_format: str = "csv") -> Path:
    """Videos `video-000.mp4`, ... and a caption list (`captions.csv` or `.jsonl`); returns the list's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_videos):
        color = list(COLORS)[i % len(COLORS)]
        direction = list(DIRECTIONS)[(i // len(COLORS)) % len(DIRECTIONS)]
        name = f"video-{i:03d}.mp4"
        write_video(folder / name, moving_square(num_frames, height, width, COLORS[color], DIRECTIONS[direction]), fps)
        rows.append({"path": name, "caption": f"a {color} square moving {direction}"})
    return _write_captions(folder, rows, caption_format)


def _write_captions(folder: Path, rows: list[dict[str, str]], caption_format: str) -> Path:
    if caption_format == "jsonl":
        import json

        path = folder / "captions.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path
    path = folder / "captions.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return path
