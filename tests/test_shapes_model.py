"""The shipped shapes model end to end: `kvideo generate` with no --weights, scored by `kvideo eval shapes`."""
from __future__ import annotations

import csv

from kvideo.cli import main
from kvideo.generation.weights import builtin_model_dir, resolve_weights

PROMPTS = ("a yellow square moving right on a gray background", "a blue circle moving up on a white background")


def test_the_shapes_model_is_shipped_in_the_package():
    folder = builtin_model_dir("shapes")
    assert resolve_weights("shapes") == folder
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {"model.json", "keyframe_unet.safetensors", "interpolation_unet.safetensors",
            "video_movq.safetensors"} <= {p.name for p in files}
    assert sum(p.stat().st_size for p in files) <= 80e6  # the budget


def test_from_pretrained_by_name_loads_fp16_files_and_the_cards_settings():
    from safetensors import safe_open

    from kvideo import KVideoPipeline

    pipe = KVideoPipeline.from_pretrained("shapes", progress=False)
    assert pipe.card["name"] == "shapes" and pipe.card["generation"]["threshold"] is None
    assert pipe.unet.config.predicts == "v" and pipe.decoder.config.downsample_factor == 4
    for name in ("keyframe_unet", "interpolation_unet", "video_movq"):
        with safe_open(builtin_model_dir("shapes") / f"{name}.safetensors", "pt") as file:
            assert {file.get_slice(k).get_dtype() for k in file.keys()} == {"F16"}, name


def test_generate_without_weights_uses_the_shipped_model_and_follows_the_prompt(tmp_path, monkeypatch, capsys):
    from kvideo.shapes.score import score_folder

    monkeypatch.delenv("KVIDEO_WEIGHTS", raising=False)  # conftest pins the tiny preset for other tests
    prompts, out = tmp_path / "prompts.txt", tmp_path / "clips"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    assert main(["generate", "--prompts-file", str(prompts), "-o", str(out), "--steps", "12",
                 "--interpolation-steps", "4", "--fps", "low", "--seed", "0", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "model 'shapes'" in err and "a {color} {shape} moving" in err and "RANDOM" not in err
    clips = sorted(out.glob("*.mp4"))
    assert len(clips) == len(PROMPTS)
    with (out / "captions.csv").open("w", newline="") as file:
        csv.writer(file).writerows([("path", "caption"), *((c.name, p) for c, p in zip(clips, PROMPTS))])
    for clip in score_folder(out, out / "captions.csv")["clips"]:
        assert clip["matches"]["background"] and clip["matches"]["object_color"], clip


def test_an_before_a_vowel_is_inside_the_built_in_models_grammar():
    import re

    from kvideo.generation.weights import builtin_model_dir, read_model_card

    pattern = read_model_card(builtin_model_dir("shapes"))["prompt_pattern"]
    assert re.fullmatch(pattern, "an orange square moving down on a black background")
    assert re.fullmatch(pattern, "a red circle moving right on a white background")
    assert not re.fullmatch(pattern, "the red circle moving right on a white background")
