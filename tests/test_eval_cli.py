"""`kvideo eval` end to end on tiny random detectors and synthetic datasets, and a 2-process torchrun run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kvideo.cli import main
from kvideo.eval.stats import FeatureStats
from test_eval_support import (
    frames, make_generated, make_msrvtt, make_ucf101, tiny_c3d_file, tiny_clip_dir, tiny_i3d_file,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return SimpleNamespace(
        root=root,
        ucf=make_ucf101(root / "ucf"),
        msrvtt=make_msrvtt(root / "msrvtt"),
        fake=make_generated(root / "fake", num_videos=6, prompts=["red", "blue", "a cat", "a dog", "rain", "sun"]),
        i3d=tiny_i3d_file(root / "i3d.safetensors"),
        c3d=tiny_c3d_file(root / "c3d.safetensors"),
    )


def run(*args) -> int:
    return main(["eval", *map(str, args)])


def report(path: Path) -> dict:
    return json.loads(path.read_text())


def test_fvd_on_ucf101_with_cached_real_statistics(data, tmp_path, capsys):
    cache, out = tmp_path / "ucf_real.safetensors", tmp_path / "fvd.json"
    common = ["fvd", "--real", data.ucf, "--real-format", "ucf101", "--fake", data.fake, "--detector", data.i3d,
              "--num-videos", 6, "--real-stats", cache, "--quiet"]
    assert run(*common, "--report", out) == 0
    first = report(out)
    assert first["metric"] == "fvd" and first["protocol"]["name"] == "fvd-styleganv" and first["value"] > 0
    assert first["protocol"]["changed_from_preset"] == {"num_videos": 6} and first["protocol"]["covariance_ddof"] == 0
    assert first["comparability"]["comparable"] is False  # a tiny detector, and N = 6
    assert first["num_videos"] == {"real": 6, "fake": 6} and first["real"]["cached_statistics"] is False
    assert first["detector"]["sha256"] and first["real"]["split"] == "all"
    reasons = sorted(s["reason"].split(":")[0] for s in first["real"]["skipped"])
    assert first["real"]["used"] == 6 and set(reasons) <= {"too short", "unreadable"}
    captured = capsys.readouterr()
    assert "fvd-styleganv" in captured.out and "not comparable" in captured.err
    assert run(*common, "--report", out) == 0  # the real side now comes from the cache
    second = report(out)
    assert second["real"]["cached_statistics"] is True and second["value"] == pytest.approx(first["value"], rel=1e-9)
    assert run(*common, "--seed", 1, "--report", tmp_path / "other.json") == 2  # other settings: refused
    assert "other settings" in capsys.readouterr().err and not (tmp_path / "other.json").exists()


def test_fvd_on_msrvtt_counts_skips_and_refuses_a_smaller_n(data, tmp_path, capsys):
    args = ["fvd", "--real", data.msrvtt, "--real-format", "msrvtt", "--fake", data.fake, "--detector", data.i3d,
            "--quiet", "--num-videos", 6]
    assert run(*args, "--report", tmp_path / "refused.json") == 2
    assert "only 5 usable videos of the 6" in capsys.readouterr().err
    assert not (tmp_path / "refused.json").exists()
    assert run(*args, "--allow-fewer", "--report", tmp_path / "fvd.json") == 0
    result = report(tmp_path / "fvd.json")
    assert result["num_videos"] == {"real": 5, "fake": 6} and result["real"]["requested"] == 6
    assert [s["video"] for s in result["real"]["skipped"]] == ["video7012"]


def test_stats_of_identical_sets_give_zero_fvd(data, tmp_path):
    out = tmp_path / "same.json"
    assert run("fvd", "--real", data.fake, "--real-format", "folder", "--fake", data.fake, "--detector", data.i3d,
               "--num-videos", 6, "--num-frames", 9, "--seed", 0, "--quiet", "--report", out) == 0
    value = report(out)["value"]
    assert value > 0  # real clips start at random offsets, generated ones at frame 0
    assert run("fvd", "--real", data.fake, "--real-format", "folder", "--fake", data.fake, "--detector", data.i3d,
               "--num-videos", 6, "--quiet", "--report", out) == 0  # 16 of 16 frames: offsets are all 0
    assert abs(report(out)["value"]) < 1e-6 * value


def test_inception_score(data, tmp_path):
    out = tmp_path / "is.json"
    assert run("is", "--fake", data.fake, "--detector", data.c3d, "--num-videos", 6, "--splits", 2,
               "--quiet", "--report", out) == 0
    result = report(out)
    assert result["metric"] == "is" and 1.0 <= result["value"] <= 101 and result["std"] >= 0
    assert result["num_videos"] == {"fake": 6}


def test_clipsim_averages_frames_then_videos(data, tmp_path):
    from kvideo.eval.clipsim import ClipScorer
    from kvideo.video_io import read_frames

    clip_dir = tiny_clip_dir(tmp_path / "clip")
    out = tmp_path / "clipsim.json"
    assert run("clipsim", "--fake", data.fake, "--clip", clip_dir, "--max-frames", 3, "--quiet", "--report", out) == 0
    result = report(out)
    scorer = ClipScorer(clip_dir)
    manifest = json.loads((data.fake / "manifest.json").read_text())["videos"]
    per_video = [float((scorer.image_embeddings(read_frames(data.fake / v["file"], [0, 1, 2]))
                        @ scorer.text_embedding(v["prompt"])).mean()) for v in manifest]
    assert result["value"] == pytest.approx(np.mean(per_video), abs=1e-6) and result["num_videos"] == {"fake": 6}
    out_real = tmp_path / "clipsim_msrvtt.json"
    assert run("clipsim", "--fake", data.msrvtt, "--fake-format", "msrvtt", "--clip", clip_dir, "--quiet",
               "--num-videos", 5, "--report", out_real) == 0
    assert report(out_real)["fake"]["num_skipped"] == 1


def test_bad_inputs_are_explained(data, tmp_path, capsys):
    assert run("fvd", "--real", data.ucf, "--fake", data.fake, "--detector", tmp_path / "nope.pt", "--quiet") == 2
    assert "i3d_torchscript.pt" in capsys.readouterr().err
    assert run("fvd", "--real", data.msrvtt, "--real-format", "ucf101", "--fake", data.fake,
               "--detector", data.i3d, "--quiet") == 2
    assert "classInd.txt" in capsys.readouterr().err
    assert run("is", "--fake", data.fake, "--detector", data.i3d, "--quiet", "--num-videos", 6, "--splits", 2) == 2
    assert "C3D" in capsys.readouterr().err
    short = make_generated(tmp_path / "short", num_videos=3, num_frames=8)
    assert run("is", "--fake", short, "--detector", data.c3d, "--num-videos", 3, "--splits", 1, "--quiet") == 2
    assert "only 0 usable" in capsys.readouterr().err


class StandInPipeline:
    """Records prompts; returns a short clip like KVideoPipeline's output."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompt, *, seed, fps, **options):
        self.calls.append((prompt, seed, fps))
        return SimpleNamespace(frames=frames(seed, 4, (64, 64)), fps=2)


def test_generate_writes_a_manifest_and_resumes(data, tmp_path, monkeypatch, capsys):
    import kvideo.eval.cli as eval_cli

    pipe = StandInPipeline()
    monkeypatch.setattr(eval_cli, "_pipeline", lambda args, shard: pipe)
    args = ["generate", "--benchmark", "ucf101", "--data", data.ucf, "--split", "test", "--out", tmp_path / "gen",
            "--num-videos", 5, "--preset", "tiny", "--fps", "low", "--seed", 7, "--quiet"]
    assert run(*args) == 0
    manifest = json.loads((tmp_path / "gen" / "manifest.json").read_text())
    assert [v["file"] for v in manifest["videos"]] == [f"{i:05d}.mp4" for i in range(5)]
    assert [c[1] for c in pipe.calls] == list(range(7, 12)) and {c[2] for c in pipe.calls} == {"low"}
    assert {c[0] for c in pipe.calls} <= {"apply eye makeup", "handstand pushups", "yo yo"}
    (tmp_path / "gen" / "00003.mp4").unlink()
    assert run(*args) == 0 and len(pipe.calls) == 6 and pipe.calls[-1][1] == 10  # only the missing one
    other = list(args)
    other[other.index("--seed") + 1] = 8
    assert run(*other) == 2
    assert "another run" in capsys.readouterr().err
    msrvtt_out = tmp_path / "msr"
    assert run("generate", "--benchmark", "msrvtt", "--data", data.msrvtt, "--out", msrvtt_out,
               "--preset", "tiny", "--quiet") == 0
    assert pipe.calls[-1][0] == "caption 0 of video7015" and len(list(msrvtt_out.glob("*.mp4"))) == 6


@pytest.mark.distributed
def test_two_process_torchrun_gives_the_statistics_of_one_process(data, tmp_path):
    stats_args = ["eval", "stats", "--real", data.ucf, "--detector", data.i3d, "--num-videos", 6, "--quiet",
                  "--batch-size", 2]
    assert main([*map(str, stats_args), "--out", str(tmp_path / "one.safetensors")]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "kvideo", *map(str, stats_args), "--out", str(tmp_path / "two.safetensors")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (one, meta_one), (two, meta_two) = (FeatureStats.load(tmp_path / f"{n}.safetensors") for n in ("one", "two"))
    assert one.count == two.count == 6
    assert meta_one["extraction"] == meta_two["extraction"]  # the same videos used and skipped
    # equal up to float32 round-off of the detector (other batches, other thread counts)
    np.testing.assert_allclose(two.total, one.total, rtol=1e-4, atol=1e-5 * np.abs(one.total).max())
    np.testing.assert_allclose(two.outer, one.outer, rtol=1e-4, atol=1e-5 * np.abs(one.outer).max())


def test_generate_redoes_empty_outputs_and_removes_leftovers(data, tmp_path, monkeypatch, capsys):
    import kvideo.eval.cli as eval_cli

    pipe = StandInPipeline()
    monkeypatch.setattr(eval_cli, "_pipeline", lambda args, shard: pipe)
    out = tmp_path / "gen"
    args = ["generate", "--benchmark", "ucf101", "--data", data.ucf, "--split", "test", "--out", out,
            "--num-videos", 3, "--preset", "tiny", "--quiet"]
    assert run(*args) == 0 and len(pipe.calls) == 3
    (out / "00001.mp4").write_bytes(b"")  # a 0-byte file, e.g. from a full disk
    (out / "00002.mp4").write_bytes(b"not a video")
    (out / ".00000.mp4.abcd.tmp.mp4").write_bytes(b"half")  # a killed run's temp file
    assert run(*args) == 0
    assert [c[1] for c in pipe.calls[3:]] == [1, 2]  # made again, not skipped
    assert not list(out.glob(".*.tmp*"))
    from kvideo.eval.datasets import load_dataset

    (out / ".00000.mp4.efgh.tmp.mp4").write_bytes(b"half")
    assert [i.key for i in load_dataset("folder", out).items] == ["00000.mp4", "00001.mp4", "00002.mp4"]
    (tmp_path / "file").write_text("x")
    assert run("generate", "--benchmark", "ucf101", "--data", tmp_path / "no-data", "--out", tmp_path / "file",
               "--preset", "tiny", "--quiet") == 2  # refused before the (missing) dataset is read
    assert "--out" in capsys.readouterr().err


def test_eval_generate_uses_the_model_cards_size_and_steps(tmp_path, monkeypatch):
    """`eval generate --weights shapes` renders at the card's 64x64 with its steps (it rendered 512x512, 50 steps)."""
    import argparse

    import dataclasses

    from kvideo.eval.cli import generation_settings
    from kvideo.generation import GenerationOptions, model_card

    card = model_card("shapes")["generation"]
    defaults = generation_settings(argparse.Namespace(preset=None, weights="shapes"))
    assert (defaults["width"], defaults["height"]) == (64, 64)
    for key in ("steps", "interpolation_steps", "sampler", "guidance_scale", "threshold", "latent_range"):
        assert defaults[key] == (tuple(map(tuple, card[key])) if key == "latent_range" else card[key])
    official = tmp_path / "official"
    official.mkdir()  # a folder without a card: the release's defaults
    release = {f.name: getattr(GenerationOptions(), f.name) for f in dataclasses.fields(GenerationOptions)}
    assert generation_settings(argparse.Namespace(preset=None, weights=str(official))) == \
        {k: v for k, v in release.items() if k in defaults}
    assert generation_settings(argparse.Namespace(preset="tiny", weights=None))["width"] == 64


def test_eval_generate_with_shapes_renders_at_the_cards_size_and_takes_generate_flags(data, tmp_path, monkeypatch,
                                                                                       capsys):
    """`kvideo eval generate --weights shapes` gives the pipeline the card's 64x64 (its parser once defaulted to
    512x512), and takes kvideo generate's flags (--size, --guidance, ...), refusing what the release cannot do."""
    import kvideo.eval.cli as eval_cli
    from kvideo.generation import model_card

    options = []

    def recording(prompt, *, seed, **given):
        options.append(given)
        return SimpleNamespace(frames=frames(seed, 4, (64, 64)), fps=2)

    monkeypatch.setattr(eval_cli, "_pipeline", lambda args, shard: recording)
    common = ["generate", "--benchmark", "ucf101", "--data", data.ucf, "--split", "test", "--num-videos", 1,
              "--weights", "shapes", "--quiet"]
    assert run(*common, "--out", tmp_path / "a") == 0
    card = model_card("shapes")["generation"]
    assert (options[0]["width"], options[0]["height"], options[0]["steps"]) == (64, 64, card["steps"])
    assert options[0]["guidance_scale"] == card["guidance_scale"] and options[0]["fps"] == "medium"
    assert run(*common, "--out", tmp_path / "b", "--size", "128x64", "--guidance", "3", "--fps", "low") == 0
    assert (options[1]["width"], options[1]["height"], options[1]["guidance_scale"], options[1]["fps"]) == \
        (128, 64, 3.0, "low")
    assert run(*common, "--out", tmp_path / "c", "--motion", "high") == 2
    assert "--motion: release 1.0 has no image conditioning" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
