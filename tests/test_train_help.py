"""`kvideo train STEP --help` lists the flags that step reads, names paths PATH and offers --quiet."""
from __future__ import annotations

import pytest

from kvideo.cli import build_parser
from kvideo.train.cli import train_config


def step_help(step: str) -> dict[str, str]:
    """flag -> metavar of the flags `kvideo train STEP --help` shows."""
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    sub = train._subparsers._group_actions[0].choices[step]
    return {flag: action.metavar for action in sub._actions if action.help != "==SUPPRESS=="
            for flag in action.option_strings}


@pytest.mark.parametrize("step, shown, left_out", [
    ("keyframe", ["--snr-gamma", "--uncond-prob", "--detail-weight"],
     ["--crop-size", "--teacher", "--clip.height", "--latent-noise", "--captions", "--progress"]),
    ("decoder", ["--clip.height", "--latent-noise", "--decoder-loss", "--captions"],
     ["--snr-gamma", "--teacher", "--crop-size", "--uncond-prob"]),
    ("movq", ["--crop-size", "--clip.width", "--captions"], ["--teacher", "--max-perturbation"]),
    ("distill", ["--teacher", "--student-steps", "--snr-gamma"], ["--clip.height", "--uncond-prob"]),
    ("interpolation", ["--max-perturbation"], ["--crop-size", "--clip.height"]),
])
def test_each_step_shows_the_flags_it_reads(step, shown, left_out):
    flags = step_help(step)
    assert all(flag in flags for flag in shown), [f for f in shown if f not in flags]
    assert not any(flag in flags for flag in left_out), [f for f in left_out if f in flags]
    assert "--quiet" in flags and flags["--data"] == "PATH" and flags["--output-dir"] == "PATH"
    assert flags["--config"] == "PATH" and flags["--resume"] == "latest|PATH"


def test_flags_left_out_of_help_still_parse_and_quiet_turns_progress_off():
    args = build_parser().parse_args(["train", "keyframe", "--output-dir", "run", "--clip.reference_fps", "30",
                                      "--quiet"])
    config = train_config(args)
    assert config.clip.reference_fps == 30 and config.progress is False
    args = build_parser().parse_args(["train", "keyframe", "--output-dir", "run", "--progress", "false"])
    assert train_config(args).progress is False
    assert train_config(build_parser().parse_args(["train", "keyframe", "--output-dir", "run"])).progress is True


def test_cache_shows_paths_and_quiet():
    flags = step_help("cache")
    assert flags["--videos"] == flags["--output"] == flags["--movq"] == "PATH" and "--quiet" in flags
    assert "--progress" not in flags
