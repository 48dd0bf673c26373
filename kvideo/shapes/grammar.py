"""The shapes caption grammar (public API): its words, their RGB values and the caption template."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

# Object colours, name -> RGB (0..255). The scorer names a colour by the nearest of these.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (140, 60, 200),
    "orange": (240, 140, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
# Background colours, name -> RGB (0..255).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "white": (235, 235, 235),
}
TEMPLATE = "a {color} {shape} moving {direction} on a {background} background"
# Unit motion of each direction in image coordinates (dy, dx): y grows downwards.
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}


@dataclass(frozen=True)
class Caption:
    """One sentence of the grammar; `text` is exactly the template filled with the four words."""

    color: str
    shape: str
    direction: str
    background: str

    def __post_init__(self) -> None:
        for value, choices, what in ((self.color, COLORS, "color"), (self.shape, SHAPES, "shape"),
                                     (self.direction, DIRECTIONS, "direction"),
                                     (self.background, BACKGROUNDS, "background")):
            if value not in choices:
                raise ValueError(f"{what}={value!r} is not in the shapes grammar; choose one of {tuple(choices)}")

    @property
    def text(self) -> str:
        return TEMPLATE.format(color=self.color, shape=self.shape, direction=self.direction,
                               background=self.background)


def parse_caption(text: str) -> Caption | None:
    """The Caption that `text` spells (case and runs of spaces ignored), or None outside the grammar.

    Either article may be "an" before a word that starts with a vowel ("an orange square ...")."""
    if not isinstance(text, str):
        return None
    words = text.lower().split()
    if len(words) != 9:
        return None
    color, shape, direction, background = words[1], words[2], words[4], words[7]
    if (words[3], words[5], words[8]) != ("moving", "on", "background"):
        return None
    if not (_article_fits(words[0], color) and _article_fits(words[6], background)):
        return None
    if color not in COLORS or shape not in SHAPES or direction not in DIRECTIONS or background not in BACKGROUNDS:
        return None
    return Caption(color, shape, direction, background)


def _article_fits(article: str, word: str) -> bool:
    """"a" before any word (the template's own), "an" before a vowel."""
    return article == "a" or (article == "an" and word[:1] in "aeiou")


def all_captions() -> list[Caption]:
    """The 216 captions of the grammar, in a fixed order (color, shape, direction, background)."""
    return [Caption(*words) for words in itertools.product(COLORS, SHAPES, DIRECTIONS, BACKGROUNDS)]


def check_prompt_in_grammar(prompt: str) -> str | None:
    """None for a prompt of the grammar, else a one-line notice that describes the grammar."""
    if parse_caption(prompt) is not None:
        return None
    return (f"note: {prompt!r} is outside the shapes grammar the model was trained on: "
            f"'{TEMPLATE}' with color {'/'.join(COLORS)}, shape {'/'.join(SHAPES)}, "
            f"direction {'/'.join(DIRECTIONS)}, background {'/'.join(BACKGROUNDS)}")
