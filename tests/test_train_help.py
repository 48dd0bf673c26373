"""`kvideo train STEP --help` lists the flags that step reads (each config field declares its help and steps),
names paths PATH and offers --quiet."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from kvideo.cli import build_parser
from kvideo.flags import add_config_flags, config_flags, flag_name, given_settings, setting
from kvideo.train import cli as train_cli
from kvideo.train import config
from kvideo.train.cli import train_config
from kvideo.train.config import TASKS, CacheConfig, ClipConfig, TrainConfig


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


# -- the flags come from the config fields' own metadata ------------------------------------------------------
def step_helps(step: str) -> dict[str, str]:
    """flag -> help of the config flags `kvideo train STEP --help` shows."""
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    sub = train._subparsers._group_actions[0].choices[step]
    group = next(g for g in sub._action_groups if g.title.startswith("config values"))
    return {action.option_strings[0]: action.help for action in group._group_actions
            if action.help != argparse.SUPPRESS}


@pytest.mark.parametrize("cls", [TrainConfig, CacheConfig, ClipConfig])
def test_every_config_field_declares_its_help_beside_its_default(cls):
    fields = list(config_flags(cls))
    assert len(fields) >= len(dataclasses.fields(cls))
    for name, meta, _ in fields:
        assert meta.help.strip() and "(default" not in meta.help, name  # the builder adds the default
    assert not hasattr(config, "FIELD_HELP") and not hasattr(train_cli, "STEP_FIELDS")  # no second table


@pytest.mark.parametrize("step", TASKS)
def test_a_step_s_help_lists_the_fields_that_declare_that_step(step):
    declared = {flag_name(name): meta for name, meta, _ in config_flags(TrainConfig)
                if name not in ("task", "clip.task") and not meta.hidden and (not meta.stages or step in meta.stages)}
    helps = step_helps(step)
    assert set(helps) == set(declared)
    assert all(helps[flag].startswith(meta.help + " (default: ") for flag, meta in declared.items())


@dataclasses.dataclass(frozen=True)
class Inner:
    size: int = setting(8, "clip size")


@dataclasses.dataclass(frozen=True)
class Options:
    rate: float = setting(0.5, "a rate")
    out_dir: str = setting("", "where to write", metavar="PATH", stages=("b",))
    inner: Inner = setting(Inner(), "nested", stages=("a",))


@dataclasses.dataclass(frozen=True)
class Bare:
    rate: float = 0.5


def shown_flags(stage: str) -> tuple[dict[str, tuple], argparse.ArgumentParser]:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Options(), stage=stage)
    return {flag: (action.metavar, action.help) for action in parser._actions for flag in action.option_strings
            if action.help != argparse.SUPPRESS and action.dest != "help"}, parser


def test_a_setting_s_help_and_stages_make_its_flag():
    """A new field is one `setting` line: its flag, help, default and the steps that show it follow from it."""
    flags, parser = shown_flags("a")
    assert flags == {"--rate": ("X", "a rate (default: 0.5)"), "--inner.size": ("N", "clip size (default: 8)")}
    assert shown_flags("b")[0] == {"--rate": ("X", "a rate (default: 0.5)"),
                                   "--out-dir": ("PATH", "where to write (default: none)")}
    args = parser.parse_args(["--out_dir", "x", "--inner.size", "4"])  # hidden and underscore spellings parse
    assert given_settings(args) == {"out_dir": "x", "inner.size": 4}
    with pytest.raises(TypeError, match=r"Bare.rate declares no help"):
        add_config_flags(argparse.ArgumentParser(), Bare())
