"""`kvideo generate`'s file names for --prompts-file and the per-release numbers its help states."""
from __future__ import annotations

import json

import pytest

from kvideo.generate_cli import slug


@pytest.mark.parametrize("text, expected", [
    ("a red circle moving right on a white background", "a-red-circle-moving-right-on-a-white"),
    ("A Cat!", "a-cat"),
    ("  ", "video"),
    ("x" * 50, "x" * 40),
    ("abc " + "y" * 45, "abc"),
    ("a" * 40 + " b", "a" * 40),
    ("one two", "one-two"),
])
def test_slug_cuts_at_a_word_boundary(text, expected):
    assert slug(text) == expected


def test_slug_never_ends_in_a_dash_and_keeps_whole_words():
    text = "an orange square moving down on a black background, slowly, twice"
    words = text.replace(",", "").split()
    for length in range(2, 70):
        name = slug(text, length)
        assert len(name) <= length and not name.endswith("-")
        parts = name.split("-")
        assert parts == words[:len(parts)], (length, name)


def generate_help() -> dict[str, str]:
    """flag -> its help text, from `kvideo generate`'s parser."""
    from kvideo.cli import build_parser

    parser = build_parser()
    generate = parser._subparsers._group_actions[0].choices["generate"]
    return {flag: action.help for action in generate._actions for flag in action.option_strings}


def frame_counts(keyframes: int) -> str:
    """'low / medium / high' frame counts: each interpolation pass makes T frames 4T - 3."""
    from kvideo.generation import FPS_MODES

    counts = [keyframes]
    for _ in range(len(FPS_MODES["high"])):
        counts.append(4 * counts[-1] - 3)
    return " / ".join(map(str, counts))


def test_help_states_each_release_s_frame_counts():
    from kvideo.models.unet import UNetConfig
    from kvideo.generation import NOMINAL_FPS, resolve_weights
    from kvideo.checkpoint import read_metadata

    shapes = json.loads(read_metadata(resolve_weights("shapes") / "keyframe_unet.safetensors")["config"])
    release10 = UNetConfig.preset("official-keyframe").num_frames
    release11 = UNetConfig.preset("official-kv11-keyframe").num_frames
    assert shapes["num_frames"] == release10  # the help states the two together
    text = generate_help()
    assert f"{frame_counts(release10)} with release 1.0 and the shapes model" in text["--fps"]
    assert f"{frame_counts(release11)} with release 1.1" in text["--fps"]
    assert "nominal " + " / ".join(str(NOMINAL_FPS[m]) for m in ("low", "medium", "high")) in text["--fps"]
    assert f"{release10} for release 1.0 and the shapes model, {release11} for release 1.1" in text["--frames"]


def test_help_states_each_model_s_step_defaults():
    from kvideo.generation import GenerationOptions, model_card, resolve_options

    card, tiny = model_card("shapes")["generation"], model_card("tiny")["generation"]
    text = generate_help()
    official = GenerationOptions()
    assert resolve_options("1.1").steps == official.steps
    assert f"{official.steps} official (1.0 and 1.1), {card['steps']} shapes, {tiny['steps']} tiny" in text["--steps"]
    release11 = resolve_options("1.1").interpolation_steps
    assert f"{card['interpolation_steps']} shapes, {release11} release 1.1" in text["--interpolation-steps"]
    assert "interpolation_steps" not in tiny  # official 1.0 and tiny: --steps
    assert official.interpolation_steps == official.steps
    assert f"--steps: {official.steps} official 1.0, {tiny['steps']} tiny" in text["--interpolation-steps"]
