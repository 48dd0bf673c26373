"""Regenerate docs/gallery.png: frames 0..16 of a few clips of the built-in shapes model, one row a prompt.

    python docs/make_gallery.py            # about 30 s on 2 CPU cores; writes docs/gallery.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PROMPTS = (
    "a red circle moving right on a white background",
    "a blue triangle moving up on a gray background",
    "a green square moving left on a black background",
    "a yellow circle moving down on a gray background",
)
LABEL_HEIGHT = 14  # pixels above each row for its prompt


def generate(prompts: tuple[str, ...], seed: int) -> list[np.ndarray]:
    """One clip (f, h, w, 3) uint8 a prompt, from the built-in model with its card's settings."""
    from kvideo import KVideoPipeline

    pipe = KVideoPipeline.from_pretrained("shapes", progress=False)
    return [video.frames for video in pipe(list(prompts), seed=[seed] * len(prompts))]


def strip(clips: list[np.ndarray], prompts: tuple[str, ...], frames: int):
    """A PIL image: per prompt, its text and then frames 0..frames-1 side by side."""
    from PIL import Image, ImageDraw

    height, width = clips[0].shape[1:3]
    sheet = Image.new("RGB", (frames * width, len(clips) * (height + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (clip, prompt) in enumerate(zip(clips, prompts)):
        top = row * (height + LABEL_HEIGHT)
        draw.text((2, top + 1), prompt, fill="black")
        sheet.paste(Image.fromarray(np.concatenate(list(clip[:frames]), axis=1)), (0, top + LABEL_HEIGHT))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(Path(__file__).with_name("gallery.png")),
                        help="PNG to write (default: docs/gallery.png)")
    parser.add_argument("--frames", type=int, default=17, help="frames shown per clip, from 0 (default: 17)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every clip (default: 0)")
    args = parser.parse_args()
    from kvideo.threads import set_threads

    set_threads()
    strip(generate(PROMPTS, args.seed), PROMPTS, args.frames).save(args.output, optimize=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
