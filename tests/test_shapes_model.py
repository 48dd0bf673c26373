"""The shipped shapes model end to end: `kvideo generate` with no --weights, scored by `kvideo eval shapes`."""
from __future__ import annotations

import pytest

from kvideo.cli import main
from kvideo.pipeline import builtin_model_dir

pytestmark = pytest.mark.skipif(not (builtin_model_dir("shapes") / "model.json").is_file(),
                                reason="the built-in shapes model is not in this installation")


def test_generate_without_weights_uses_the_shipped_model_and_follows_the_prompt(tmp_path, monkeypatch, capsys):
    from kvideo.shapes.score import score_folder

    monkeypatch.delenv("KVIDEO_WEIGHTS", raising=False)  # conftest pins the tiny preset for other tests
    prompt = "a yellow square moving right on a gray background"
    out = tmp_path / "clips"
    out.mkdir()
    assert main(["generate", prompt, "-o", str(out / "clip.mp4"), "--steps", "12", "--interpolation-steps", "4",
                 "--fps", "low", "--seed", "0", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "model 'shapes'" in err and "a {color} {shape} moving" in err and "RANDOM" not in err
    (out / "captions.csv").write_text(f"path,caption\nclip.mp4,{prompt}\n")
    report = score_folder(out, out / "captions.csv")
    matches = report["clips"][0]["matches"]
    assert matches["background"] and matches["object_color"], report["clips"][0]
