"""Property: any argument list, with bad files among the values, ends in exit status 0 or 2 with a one-line
error, never a traceback, and writes nothing when it fails (the heavy work itself is stood in for)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from kvideo import generate_cli
from kvideo.cli import main
from kvideo.train import trainer


class ReachedWork(Exception):
    """Raised where the real work (loading models, training) would start: the arguments were all accepted."""


def _reached(*args, **kwargs):
    raise ReachedWork


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("files")
    (folder / "random.pt").write_bytes(random.Random(0).randbytes(500))
    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "state.pt").write_bytes(random.Random(1).randbytes(100))
    torch.save([1, 2, 3], folder / "list.pt")
    (folder / "prompts.txt").write_bytes(b"a cat\n\xff\n")
    (folder / "config.json").write_text('{"lr": NaN, "steps": 2}')
    (folder / "bad.json").write_text("{not json")
    (folder / "folder.mp4").mkdir()
    (folder / "run").mkdir()
    (folder / "run" / "config.json").write_text("{}")  # a folder that holds a run
    return folder


VALUES = ["nan", "inf", "-inf", "-1", "0", "1", "2.5", "1e309", "abc", "", "64x64", "100x7", "latest", "true",
          "maybe", "a cat", "ddpm", "none", "@F/random.pt", "@F/empty.safetensors", "@F/list.pt", "@F/prompts.txt",
          "@F/config.json", "@F/bad.json", "@F/folder.mp4", "@F/run", "@F/missing/x.mp4", "@F/state.pt", "@O/out.mp4",
          "@O/out.safetensors", "@O/dir"]
FLAGS = {
    "generate": ["-o", "--prompts-file", "--weights", "--fps", "--size", "--frames", "--steps", "--guidance",
                 "--interpolation-guidance", "--sampler", "--seed", "--dtype", "--decode-window",
                 "--temporal-weights", "--negative", "--quiet"],
    "train keyframe": ["--config", "--preset", "--model", "--data", "--output-dir", "--output_dir", "--lr", "--steps",
                       "--clip.height", "--clip.reference_fps", "--ema-decay", "--resume", "--overwrite",
                       "--adam-betas", "--progress", "--tensorboard", "--keep-checkpoints"],
    "train cache": ["--config", "--videos", "--captions", "--output", "--movq", "--batch-size", "--dtype"],
    "info": [],
    "convert": ["-o", "--model", "--config"],
}


@st.composite
def argument_lists(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(FLAGS)))
    args = command.split()
    if command in ("info", "convert", "generate"):
        args.append(draw(st.sampled_from(VALUES)))
    for _ in range(draw(st.integers(0, 6))):
        if FLAGS[command] and draw(st.booleans()):
            args.append(draw(st.sampled_from(FLAGS[command])))
        args.append(draw(st.sampled_from(VALUES)))
    return args


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=argument_lists())
def test_the_cli_never_shows_a_traceback_and_writes_nothing_on_failure(argv, files, tmp_path_factory, monkeypatch,
                                                                       capsys):
    monkeypatch.setattr(generate_cli, "load_pipeline", _reached)
    monkeypatch.setattr(trainer.Trainer, "run", _reached)
    out = tmp_path_factory.mktemp("out")
    argv = [a.replace("@F", str(files)).replace("@O", str(out)) for a in argv]
    before = snapshot(files), snapshot(out)
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse: --help (0) or a usage error (2)
        code = exit.code
    except ReachedWork:
        return  # every argument was accepted: what the work writes is not this test's business
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err
    if code == 2:
        assert err.strip().splitlines()[-1].startswith("kvideo") and ": error: " in err, (argv, err)
        assert (snapshot(files), snapshot(out)) == before, argv
