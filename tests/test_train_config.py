"""Training configs: presets, files (JSON / YAML), unknown keys, validation, and command-line overrides."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kvideo.errors import BadInputError
from kvideo.shapes import presets as shapes_presets  # noqa: F401  registers the shapes-* presets
from kvideo.train import cli
from kvideo.train.config import CacheConfig, ClipConfig, TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


@pytest.mark.parametrize("name", TrainConfig.presets())
def test_train_presets_round_trip_through_a_config_file(name, tmp_path):
    cfg = TrainConfig.preset(name)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    path = tmp_path / f"{name}.json"
    path.write_text(cfg.to_json(indent=2))
    assert load_config(TrainConfig, path) == cfg


@pytest.mark.parametrize("name", CacheConfig.presets())
def test_cache_presets_round_trip_through_a_config_file(name, tmp_path):
    path = tmp_path / f"cache-{name}.json"
    path.write_text(CacheConfig.preset(name).to_json(indent=2))
    assert load_config(CacheConfig, path) == CacheConfig.preset(name)


def test_the_shapes_presets_are_registered_by_the_shapes_package_alone():
    """The shapes model's presets live in kvideo.shapes.presets; the general modules know none of them."""
    code = ("import kvideo.models.unet, kvideo.models.movq, kvideo.train.config as t\n"
            "names = [n for c in (t.TrainConfig, t.CacheConfig, kvideo.models.unet.UNetConfig,\n"
            "         kvideo.models.movq.MoVQConfig) for n in c.presets() if n.startswith('shapes')]\n"
            "assert not names, names\n"
            "import kvideo.shapes.presets\n"
            "assert 'shapes-keyframe' in t.TrainConfig.presets() and 'shapes-video' in kvideo.models.movq.MoVQConfig.presets()\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_paper_recipe_defaults():
    cfg = TrainConfig.preset("keyframe")
    assert (cfg.lr, cfg.batch_size, cfg.grad_accum, cfg.train) == (1e-4, 1, 2, "temporal")
    assert (cfg.uncond_prob, cfg.zero) == (0.1, True)
    assert (cfg.clip.keyframes, cfg.clip.keyframe_step, cfg.clip.height) == (16, 12, 512)
    interp = TrainConfig.preset("interpolation")
    assert (interp.clip.clip_frames, interp.clip.steps, interp.max_perturbation) == (33, tuple(range(1, 13)), 250)
    assert TrainConfig.preset("decoder").clip.clip_frames == 8


def test_unknown_config_keys_are_errors(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"task": "keyframe", "learning_rate": 1e-4}))
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['learning_rate'\]"):
        load_config(TrainConfig, path)
    path.write_text(json.dumps({"clip": {"task": "keyframe", "fps": 2}}))
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['fps'\]"):
        load_config(TrainConfig, path)


@pytest.mark.parametrize("change, needle", [
    (dict(lr=0.0), "lr=0.0"),
    (dict(precision="fp16"), "precision='fp16'"),
    (dict(strategy="deepspeed"), "strategy='deepspeed'"),
    (dict(uncond_prob=1.5), "uncond_prob=1.5"),
    (dict(max_perturbation=1000), "max_perturbation=1000"),
    (dict(snr_gamma=-1.0), "snr_gamma=-1.0"),
    (dict(timestep_shift=0.0), "timestep_shift=0.0"),
    (dict(detail_weight=-1.0), "detail_weight=-1.0 must be >= 0"),
    (dict(caption_pattern="moving (left"), "caption_pattern='moving (left' is not a regular expression"),
    (dict(train="spatial"), "train='spatial'"),
    (dict(clip=dict(task="keyframe", height=500)), "height=500"),
    (dict(clip=dict(task="decoder")), "clip.task='decoder'"),
])
def test_bad_values_are_named(change, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.preset("tiny-keyframe", **change)


def test_detail_weight_is_refused_where_no_loss_reads_it():
    with pytest.raises(ValueError, match="task='interpolation' has none to weight"):
        TrainConfig.preset("tiny-interpolation", detail_weight=5.0)
    assert TrainConfig.preset("tiny-keyframe", detail_weight=5.0).detail_weight == 5.0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("cls, name, change", [
    (TrainConfig, "lr", lambda v: {"lr": v}),
    (TrainConfig, "ema_decay", lambda v: {"ema_decay": v}),
    (TrainConfig, "latent_noise", lambda v: {"latent_noise": v}),
    (TrainConfig, "adam_betas", lambda v: {"adam_betas": (0.9, v)}),
    (TrainConfig, "clip.reference_fps", lambda v: {"clip": ClipConfig(task="keyframe", reference_fps=v)}),
    (CacheConfig, "clip.reference_fps", lambda v: {"clip": ClipConfig(task="keyframe", reference_fps=v)}),
])
def test_configs_themselves_refuse_non_finite_numbers(cls, name, change, value):
    """Not only the command line: a config built in Python or read from a file refuses nan and inf, naming the field."""
    with pytest.raises(BadInputError, match=rf"^{name}=.*: must be a finite number$"):
        cls(**change(value))
    with pytest.raises(ValueError, match=rf"^{name}=.*: must be a finite number$"):
        cls.from_dict(cls().to_dict() | ({"clip": {"task": "keyframe", "reference_fps": value}}
                                         if name.startswith("clip.") else change(value)))


def test_yaml_files_are_read(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("task: interpolation\nlr: 0.0003\nclip:\n  task: interpolation\n  max_skip: 4\n")
    cfg = load_config(TrainConfig, path, preset="interpolation")
    assert (cfg.lr, cfg.clip.max_skip, cfg.clip.keyframes) == (3e-4, 4, 9)


def test_every_option_is_a_flag_and_flags_override_the_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"lr": 5e-5, "steps": 10, "clip": {"task": "keyframe", "height": 256}}))
    args = parse(["keyframe", "--config", str(path), "--lr", "2e-4", "--clip.width", "128", "--zero", "false",
                  "--adam_betas", "0.8,0.9", "--resume", "latest"])
    cfg = cli.train_config(args)
    assert (cfg.task, cfg.lr, cfg.steps, cfg.zero) == ("keyframe", 2e-4, 10, False)
    assert (cfg.adam_betas, cfg.resume) == ((0.8, 0.9), "latest")
    assert (cfg.clip.height, cfg.clip.width, cfg.clip.keyframes) == (256, 128, 16)  # file, flag, keyframe preset


def test_the_subcommand_picks_the_task_preset():
    cfg = cli.train_config(parse(["interpolation", "--steps", "3"]))
    assert (cfg.task, cfg.clip.task, cfg.clip.keyframes, cfg.steps) == ("interpolation", "interpolation", 9, 3)


def test_a_config_file_of_another_task_is_an_error(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"task": "decoder"}))
    with pytest.raises(ValueError, match="is a decoder config"):
        cli.train_config(parse(["keyframe", "--config", str(path)]))


def test_bad_flag_values_are_rejected(capsys):
    with pytest.raises(SystemExit):
        parse(["keyframe", "--gradient_checkpointing", "maybe"])
    assert "expected true or false" in capsys.readouterr().err


def test_cli_reports_input_errors_without_a_traceback(tmp_path, capsys):
    code = cli.main(["keyframe", "--preset", "tiny-keyframe", "--data", str(tmp_path / "nothing"),
                     "--output_dir", str(tmp_path / "run"), "--progress", "false"])
    assert code == 2 and "does not exist (or is not a folder); build a cache with `kvideo train cache" in \
        capsys.readouterr().err


@pytest.mark.parametrize("task, values, needle", [
    ("keyframe", dict(model="missing/image-all.safetensors"), "`kvideo train image` writes the text-to-image UNet"),
    ("image", dict(data="missing-cache"), "`kvideo train cache --clip.task keyframe"),
    ("interpolation", dict(data="missing-cache"), "`kvideo train cache --clip.task interpolation"),
    ("decoder", dict(model="missing/movq-all.safetensors"), "`kvideo train movq` writes the image MoVQ"),
    ("movq", dict(data="missing-videos"), "`kvideo data shapes DIR"),
])
def test_a_missing_input_is_named_with_the_command_that_makes_it(tmp_path, monkeypatch, task, values, needle):
    from kvideo.train.config import check_inputs
    from kvideo.train.trainer import train

    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(task=task, clip=dict(task=task), output_dir="run", **values)
    with pytest.raises(FileNotFoundError, match=re.escape(needle)):
        check_inputs(cfg)
    with pytest.raises(FileNotFoundError, match=re.escape(needle)):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_a_cache_without_its_movq_names_the_command_that_makes_it(tmp_path):
    from kvideo.train.cache import run_cache

    (tmp_path / "videos").mkdir()
    (tmp_path / "captions.csv").write_text("path,caption\n")
    cfg = CacheConfig(videos=str(tmp_path / "videos"), captions=str(tmp_path / "captions.csv"),
                      output=str(tmp_path / "cache"), movq=str(tmp_path / "movq-all.safetensors"),
                      clip=dict(task="interpolation"))
    with pytest.raises(FileNotFoundError, match=re.escape("`kvideo train movq` writes one")):
        run_cache(cfg)
    assert not (tmp_path / "cache").exists()
