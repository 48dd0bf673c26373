"""A training run never loses data: refusing another run's folder, --overwrite moves it aside, rotation by step
number keeps `latest`, `--resume latest` skips checkpoints that do not load, temp files of a killed run go."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kvideo.checkpoint import UnreadableCheckpointError
from kvideo.errors import BadInputError, OutputError
from kvideo.train import checkpointing as ckpt
from kvideo.train.distributed import DistEnv
from kvideo.train.trainer import Trainer
from test_train_helpers import keyframe_setup, one_thread, train_config, videos  # noqa: F401 (fixtures)


def run(cfg, **kwargs) -> Trainer:
    trainer = Trainer(cfg, DistEnv(), **kwargs)
    trainer.run()
    return trainer


def files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_run(keyframe_setup, tmp_path):
    """(config values, output folder) of a finished 4-step run with checkpoints at steps 2 and 4."""
    cache, unet_path = keyframe_setup
    values = dict(model=str(unet_path), data=str(cache), steps=4, save_every=2, ema_decay=0.5)
    trainer = run(train_config(tmp_path, **values))
    return values, trainer.output_dir


def test_a_folder_holding_a_run_is_refused_and_left_as_it_was(finished_run, tmp_path):
    values, folder = finished_run
    before = files(folder)
    with pytest.raises(BadInputError, match="already holds a training run; pass --resume latest"):
        Trainer(train_config(tmp_path, **values), DistEnv())
    assert files(folder) == before


def test_overwrite_moves_the_old_run_aside(finished_run, tmp_path, monkeypatch):
    values, folder = finished_run
    before = files(folder)
    run(train_config(tmp_path, **(values | {"steps": 2})), overwrite=True)
    assert files(tmp_path / "run.old-1") == before
    assert ckpt.latest_folder(folder).name == "step-00000002" and ckpt.latest_folder(folder).is_dir()
    with pytest.raises(BadInputError, match="contradict"):
        Trainer(train_config(tmp_path, resume="latest", **values), DistEnv(), overwrite=True)
    monkeypatch.chdir(folder)
    with pytest.raises(BadInputError, match="while it holds the current folder"):
        Trainer(train_config(tmp_path, **(values | {"output_dir": "."})), DistEnv(), overwrite=True)


def test_output_dir_that_is_a_file_or_read_only_is_refused_before_work(keyframe_setup, tmp_path, monkeypatch):
    from kvideo import checkpoint

    cache, unet_path = keyframe_setup
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        Trainer(train_config(tmp_path, output_dir=str(tmp_path / "file"), model=str(unet_path), data=str(cache)),
                DistEnv())
    real_access = os.access
    monkeypatch.setattr(checkpoint.os, "access",  # as a non-root user sees a read-only folder
                        lambda path, mode: False if Path(path) == tmp_path else real_access(path, mode))
    with pytest.raises(OutputError, match="cannot be written"):
        Trainer(train_config(tmp_path, model=str(unet_path), data=str(cache)), DistEnv())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("values", [dict(lr=float("inf")), dict(weight_decay=float("nan")),
                                    dict(adam_betas=(0.9, float("nan")))])
def test_non_finite_numbers_are_refused_before_work(tmp_path, values):
    with pytest.raises(BadInputError, match="must be a finite number"):
        Trainer(train_config(tmp_path, **values), DistEnv())
    assert not any(tmp_path.iterdir())


def test_rotation_orders_by_step_number_and_keeps_latest(tmp_path):
    for step in (5, 30, 200):  # names that sort differently by text (step-5 > step-200) than by number
        (tmp_path / ckpt.CHECKPOINTS / f"step-{step}").mkdir(parents=True)
    assert [p.name for p in ckpt.step_folders(tmp_path)] == ["step-5", "step-30", "step-200"]
    tmp = ckpt.begin_checkpoint(tmp_path, 7)  # a resumed run saving below the highest step
    final = ckpt.commit_checkpoint(tmp_path, tmp, 7, keep=2)
    assert sorted(p.name for p in ckpt.step_folders(tmp_path)) == sorted(["step-30", "step-200", final.name])
    assert ckpt.latest_folder(tmp_path) == final and final.is_dir()


def test_resuming_a_finished_run_reports_its_last_logged_loss(finished_run, tmp_path):
    """No step runs, yet the result's loss is the run's, not nan (recipes record it as the stage's final loss)."""
    from kvideo.train.tracking import read_log

    values, folder = finished_run
    trainer = Trainer(train_config(tmp_path, resume="latest", **values), DistEnv())
    result = trainer.run()
    assert result.step == 4 and result.last_loss == read_log(folder)[-1]["loss"]


def test_resume_latest_skips_a_corrupt_checkpoint_and_says_so(finished_run, tmp_path, capsys):
    values, folder = finished_run
    (folder / "checkpoints/step-00000004" / ckpt.STATE_FILE).write_bytes(os.urandom(300))
    trainer = Trainer(train_config(tmp_path, resume="latest", **values), DistEnv())
    err = capsys.readouterr().err
    assert trainer.step == 2
    assert "skipped checkpoint" in err and "step-00000004" in err
    assert "state.pt' is damaged: its bytes do not match the checksum" in err  # checked before unpickling
    assert "resuming from" in err and "step-00000002" in err


def test_resume_latest_when_no_checkpoint_loads_names_each_one(finished_run, tmp_path):
    values, folder = finished_run
    (folder / "checkpoints/step-00000004" / ckpt.WEIGHTS_FILE).write_bytes(b"")
    data = (folder / "checkpoints/step-00000002" / ckpt.STATE_FILE).read_bytes()
    (folder / "checkpoints/step-00000002" / ckpt.STATE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableCheckpointError, match="no checkpoint in .* loads: step-00000004: .*step-00000002"):
        Trainer(train_config(tmp_path, resume="latest", **values), DistEnv())


def test_an_explicit_corrupt_resume_folder_is_an_error_naming_the_file(finished_run, tmp_path):
    values, folder = finished_run
    step = folder / "checkpoints/step-00000004"
    torch.save({"not": "a state"}, step / ckpt.STATE_FILE)
    with pytest.raises(UnreadableCheckpointError, match="state.pt' is damaged: its bytes do not match the checksum"):
        Trainer(train_config(tmp_path, resume=str(step), **values), DistEnv())
    state, extras, info = ckpt.read_weights(step / ckpt.WEIGHTS_FILE)  # the new state's checksum recorded
    ckpt.save_weights(step / ckpt.WEIGHTS_FILE, state, info, extras,
                      more_metadata={ckpt.STATE_CHECKSUM_KEY: ckpt.file_checksum(step / ckpt.STATE_FILE)})
    with pytest.raises(UnreadableCheckpointError, match="state.pt' is not a kvideo training state"):
        Trainer(train_config(tmp_path, resume=str(step), **values), DistEnv())


def test_temp_files_of_a_killed_run_are_removed_by_the_next_run(finished_run, tmp_path):
    values, folder = finished_run
    leftovers = [folder / "checkpoints/.step-00000006.tmp", folder / ".config.json.abc123.tmp.json",
                 folder / "checkpoints/.latest.x1.tmp"]
    leftovers[0].mkdir()
    (leftovers[0] / ckpt.WEIGHTS_FILE).write_bytes(b"half")
    for path in leftovers[1:]:
        path.write_text("half")
    run(train_config(tmp_path, resume="latest", **(values | {"steps": 5})))
    assert not any(path.exists() for path in leftovers)
    assert ckpt.latest_folder(folder).name == "step-00000005"


def train_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvideo", "train", "keyframe", *args], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def test_cli_refuses_a_folder_holding_a_run_with_one_line(finished_run, tmp_path):
    values, folder = finished_run
    before = files(folder)
    result = train_cli("--preset", "tiny-keyframe", "--model", values["model"], "--data", values["data"],
                       "--output-dir", str(folder), "--progress", "false")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"kvideo train keyframe: error: {str(folder)!r} already holds a training run; pass --resume latest to "
        "continue it, --overwrite to move it aside and start again, or choose another --output-dir"]
    assert files(folder) == before


def test_cli_resume_latest_falls_back_past_a_corrupt_checkpoint(finished_run):
    values, folder = finished_run
    (folder / "checkpoints/step-00000004" / ckpt.STATE_FILE).write_bytes(b"\x00" * 64)
    result = train_cli("--preset", "tiny-keyframe", "--model", values["model"], "--data", values["data"],
                       "--output-dir", str(folder), "--resume", "latest", "--steps", "4", "--save-every", "2",
                       "--ema-decay", "0.5", "--progress", "false", "--tensorboard", "false")
    assert result.returncode == 0, result.stderr
    assert "kvideo train: skipped checkpoint" in result.stderr and "step-00000004" in result.stderr
    assert "resuming from" in result.stderr and "trained 4 steps" in result.stdout
    assert ckpt.load_state(folder / "checkpoints/step-00000004" / ckpt.STATE_FILE)["step"] == 4


def test_cache_output_that_is_a_file_is_refused_before_work(tmp_path, capsys):
    from kvideo.cli import main

    (tmp_path / "cache").write_text("x")
    assert main(["train", "cache", "--output", str(tmp_path / "cache"), "--videos", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"kvideo train cache: error: --output {str(tmp_path / 'cache')!r} is a file, not a folder")
