"""Property: any argument list, with bad files among the values, ends in exit status 0 or 2 with a one-line
error, never a traceback, and writes nothing when it fails (the heavy work itself is stood in for): generate,
train, info, convert and every `kvideo eval` subcommand (with tiny real datasets and detectors among the files)."""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_eval_support import make_generated, make_ucf101, tiny_c3d_file, tiny_i3d_file

from kvideo import generate_cli
from kvideo.cli import main
from kvideo.eval import cli as eval_cli
from kvideo.eval import protocol
from kvideo.eval.metrics import BY_NAME, METRICS
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
    make_ucf101(folder / "ucf", per_class=2, num_frames=4)
    make_generated(folder / "fake", num_videos=2, num_frames=2)
    tiny_i3d_file(folder / "i3d.safetensors")
    tiny_c3d_file(folder / "c3d.safetensors")
    return folder


VALUES = ["nan", "inf", "-inf", "-1", "0", "1", "2.5", "1e309", "abc", "", "64x64", "100x7", "latest", "true",
          "maybe", "a cat", "ddpm", "none", "@F/random.pt", "@F/empty.safetensors", "@F/list.pt", "@F/prompts.txt",
          "@F/config.json", "@F/bad.json", "@F/folder.mp4", "@F/run", "@F/missing/x.mp4", "@F/state.pt", "@O/out.mp4",
          "@O/out.safetensors", "@O/dir", "@F/ucf", "@F/fake", "@F/i3d.safetensors", "@F/c3d.safetensors",
          "@O/report.json", "@F/fake/manifest.json", "ucf101", "msrvtt", "folder", "generated", "fvd-styleganv",
          "fvd-videomae", "is-tganv2", "tiny", "-1,1", "0,0", "nan,1", "cpu", "cuda:7", "fp16", "1e-3"]
EVAL_INPUTS = ["--real", "--real-format", "--fake", "--fake-format", "--fake-captions", "--real-captions",
               "--split", "--fold", "--splits-dir", "--template", "--annotations", "--msrvtt-captions"]
EVAL_RUN = ["--batch-size", "--device", "--allow-fewer", "--quiet", "--report", "--num-videos", "--protocol",
            "--num_videos", "--trust-detector"]
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
    "eval generate": ["--benchmark", "--data", "--out", "--num-videos", "--seed", "--weights", "--preset", "--fps",
                      "--width", "--height", "--steps", "--dtype", "--device", "--quiet", "--split", "--fold"],
    "eval stats": [*EVAL_INPUTS, *EVAL_RUN, "--detector", "--out", "--num-frames", "--stride", "--seed",
                   "--detector-range=", "--detector-bn-eps"],
    "eval fvd": [*EVAL_INPUTS, *EVAL_RUN, "--detector", "--real-stats", "--num-frames", "--stride", "--seed",
                 "--detector-range=", "--detector-bn-eps"],
    "eval is": [*EVAL_INPUTS, *EVAL_RUN, "--detector", "--splits", "--runs"],
    "eval clipsim": [*EVAL_INPUTS, *EVAL_RUN, "--clip", "--max-frames"],
}
# Values that fit a flag (its choices, a file of the right kind), drawn half of the time for it.
POOLS = {
    "--benchmark": ["ucf101", "msrvtt"], "--preset": ["tiny"], "--fps": ["low", "medium"],
    "--real-format": ["ucf101", "folder", "msrvtt"], "--fake-format": ["auto", "folder", "generated"],
    "--data": ["@F/ucf", "@F/fake", "@F/run"], "--real": ["@F/ucf", "@F/fake", "@F/run", "@F/random.pt"],
    "--fake": ["@F/fake", "@F/ucf", "@F/run", "@F/missing/x.mp4"],
    "--detector": ["@F/i3d.safetensors", "@F/c3d.safetensors", "@F/random.pt", "@F/list.pt", "@F/empty.safetensors",
                   "@F/fake"],
    "--clip": ["@F/fake", "@F/run", "@F/config.json"], "--protocol": ["fvd-styleganv", "is-styleganv", "clipsim"],
    "--out": ["@O/dir", "@O/out.safetensors", "@F/run", "@F/random.pt", "@F/missing/x.mp4"],
    "--report": ["@O/report.json", "@F/run", "@F/missing/x.json", "@F/fake/manifest.json"],
    "--real-stats": ["@O/out.safetensors", "@F/random.pt", "@F/empty.safetensors", "@F/folder.mp4"],
    "--num-videos": ["1", "2", "0", "-1"], "--width": ["64", "100"], "--height": ["64", "0"], "--steps": ["1", "0"],
    "--msrvtt-captions": ["first", "all"], "--split": ["test", "train", "all"], "--fold": ["1", "4"],
    "--device": ["cpu", "cuda:7"], "--seed": ["0", "1"], "--num-frames": ["2", "16"], "--stride": ["1", "2"],
    "--splits": ["1", "2"], "--runs": ["1"], "--max-frames": ["1"], "--batch-size": ["1", "0"],
    "--detector-range=": ["-1,1", "0,1", "1,0", "-inf,inf"], "--detector-bn-eps": ["1e-3", "0"], "--dtype": ["fp32"],
    "--fake-captions": ["@F/config.json", "@F/prompts.txt"], "--real-captions": ["@F/bad.json"],
}
SWITCHES = {"--quiet", "--allow-fewer", "--trust-detector", "--overwrite"}  # flags that take no value
# Drawn for every example of a command, so that the argument lists get past argparse and reach the files.
REQUIRED = {
    "eval generate": ["--benchmark", "--data", "--out", "--preset"],
    "eval stats": ["--real", "--detector", "--out"],
    "eval fvd": ["--real", "--fake", "--detector"],
    "eval is": ["--fake", "--detector"],
    "eval clipsim": ["--fake", "--clip"],
}


@st.composite
def argument_lists(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(FLAGS)))
    args = command.split()
    if command in ("info", "convert", "generate"):
        args.append(draw(st.sampled_from(VALUES)))
    for flag in REQUIRED.get(command, ()):
        if draw(st.sampled_from([True] * 9 + [False])):  # now and then left out
            args += flag_and_value(draw, flag)
    for _ in range(draw(st.integers(0, 6))):
        if FLAGS[command] and draw(st.sampled_from([True, True, True, False])):
            args += flag_and_value(draw, draw(st.sampled_from(FLAGS[command])))
        else:
            args.append(draw(st.sampled_from(VALUES)))  # a stray value
    return args


def flag_and_value(draw, flag: str) -> list[str]:
    """`flag` with a value fitting it (3 times in 4, where there is a pool) or any value; `--flag=value` for
    flags spelled with '='; switches alone."""
    if flag in SWITCHES:
        return [flag]
    pool = POOLS.get(flag)
    value = draw(st.sampled_from(pool if pool and draw(st.sampled_from([True, True, True, False])) else VALUES))
    return [flag + value] if flag.endswith("=") else [flag, value]


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=argument_lists())
def test_the_cli_never_shows_a_traceback_and_writes_nothing_on_failure(argv, files, tmp_path_factory, monkeypatch,
                                                                       capsys):
    monkeypatch.setattr(generate_cli, "load_pipeline", _reached)
    monkeypatch.setattr(trainer.Trainer, "run", _reached)
    for metric in METRICS:  # the detectors and datasets are read for real
        monkeypatch.setitem(BY_NAME, metric.name, dataclasses.replace(metric, statistic=_reached))
    monkeypatch.setattr(protocol, "real_fvd_statistics", _reached)
    monkeypatch.setattr(eval_cli, "_pipeline", _reached)
    out = tmp_path_factory.mktemp("out")
    monkeypatch.chdir(out)  # relative paths among the values land here, not in the repository
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
