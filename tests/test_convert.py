"""`kvideo convert` / `kvideo info`: official pickles to safetensors with the config in metadata."""
from __future__ import annotations

import re

import pytest
import torch

from kvideo.checkpoint import read_metadata, save_safetensors
from kvideo.cli import main
from kvideo.convert import info
from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.temporal import temporal_state_dict
from kvideo.models.unet import UNet, UNetConfig


def write_official_interpolation(path):
    torch.manual_seed(0)
    model = UNet(UNetConfig.preset("tiny-interpolation"))
    null = torch.randn(24)
    torch.save({"unet": model.official_state_dict(), "null_embedding": null}, path)
    return model, null


def test_convert_and_load_without_pickle(tmp_path, capsys):
    model, null = write_official_interpolation(tmp_path / "interp.pt")
    config = tmp_path / "config.json"
    config.write_text(model.config.to_json())
    out = tmp_path / "interp.safetensors"
    assert main(["convert", str(tmp_path / "interp.pt"), "-o", str(out), "--config", str(config)]) == 0
    meta = read_metadata(out)
    assert meta["model_type"] == "unet" and meta["model"] == "interpolation"
    loaded = UNet.from_pretrained(out)  # config from metadata, no pickle involved
    assert loaded.config == model.config
    state, ours = loaded.state_dict(), model.state_dict()
    assert all(torch.equal(state[k], ours[k]) for k in ours)
    assert torch.equal(UNet.read_checkpoint(out).extras["null_embedding"], null)
    assert main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "temporal parameters" in printed and f"{sum(p.numel() for p in model.parameters()):,}" in printed


def test_convert_detects_the_model_and_checks_it(tmp_path, capsys):
    write_official_interpolation(tmp_path / "interp.pt")
    # without --config the official preset is used: the tiny weights are refused, briefly, with the fix
    code = main(["convert", str(tmp_path / "interp.pt"), "-o", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err.strip().replace(str(tmp_path / "interp.pt"), "interp.pt")
    assert code == 2 and err.startswith("kvideo convert: error: ") and "\n" not in err
    assert len(err) <= 300, err  # three terminal lines at most
    assert "does not fit preset 'official-interpolation' (the default)" in err and "differ in shape" in err
    assert "its shapes are preset 'tiny-interpolation': add --model-preset tiny-interpolation" in err
    assert "--config FILE" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_convert_with_the_model_preset_the_error_named(tmp_path, capsys):
    model, _ = write_official_interpolation(tmp_path / "interp.pt")
    out = tmp_path / "interp.safetensors"
    assert main(["convert", str(tmp_path / "interp.pt"), "-o", str(out), "--model-preset", "tiny-interpolation"]) == 0
    assert UNet.from_pretrained(out).config == model.config
    assert main(["convert", str(tmp_path / "interp.pt"), "-o", str(out), "--model-preset", "tiny-keyframe"]) == 2
    assert "'tiny-keyframe' is not one of the interpolation presets" in capsys.readouterr().err
    config = tmp_path / "config.json"
    config.write_text(model.config.to_json())
    args = ["convert", str(tmp_path / "interp.pt"), "-o", str(out), "--model-preset", "tiny-interpolation"]
    assert main([*args, "--config", str(config)]) == 2
    assert "either --config or --model-preset" in capsys.readouterr().err


def test_convert_of_a_size_no_preset_has_asks_for_its_config(tmp_path, capsys):
    write_official_keyframe(tmp_path / "wide.pt", model_channels=32, init_channels=32)
    assert main(["convert", str(tmp_path / "wide.pt"), "-o", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip().replace(str(tmp_path / "wide.pt"), "wide.pt")
    assert "its shapes fit no keyframe preset: add --config FILE" in err and len(err) <= 300, err


def write_official_keyframe(path, **changes):
    torch.manual_seed(1)
    model = UNet(UNetConfig.preset("tiny-keyframe", **changes))
    torch.save({"unet": model.official_state_dict(), "null_embedding": torch.randn(24)}, path)
    return model


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_info_reports_the_config_the_shapes_imply(tmp_path):
    model, _ = write_official_interpolation(tmp_path / "interp.pt")
    summary = info(tmp_path / "interp.pt")
    assert summary.config == UNetConfig.preset("tiny-interpolation").to_dict()
    assert summary.parameters == parameters(model)
    temporal = sum(v.numel() for v in temporal_state_dict(model).values())
    assert summary.temporal_parameters == temporal and 0 < temporal < summary.parameters
    text = summary.format()
    assert "unet (interpolation)" in text and "preset 'tiny-interpolation', the one its tensor shapes fit" in text
    assert f"(spatial {parameters(model) - temporal:,})" in text
    assert not re.search(r"-\d", text.split("\n", 1)[1])  # no negative count


def test_info_reports_a_video_movq_size_too(tmp_path):
    movq = MoVQ(MoVQConfig.preset("tiny-video"))
    torch.save(movq.official_state_dict(), tmp_path / "video_movq.pt")
    summary = info(tmp_path / "video_movq.pt")
    assert summary.model == "video-movq" and summary.config == MoVQConfig.preset("tiny-video").to_dict()
    assert summary.parameters == parameters(movq) and 0 < summary.temporal_parameters < summary.parameters


def test_info_says_when_it_cannot_tell_the_size(tmp_path):
    model = write_official_keyframe(tmp_path / "wide.pt", model_channels=32, init_channels=32)
    summary = info(tmp_path / "wide.pt")
    assert summary.config is None and summary.temporal_parameters is None
    assert summary.parameters == parameters(model)
    text = summary.format()
    assert "cannot tell: the tensor shapes fit no keyframe preset" in text and "temporal" not in text
    assert not re.search(r"-\d", text.split("\n", 1)[1])  # no negative count


def test_info_warns_when_a_kvideo_file_does_not_fit_its_own_config(tmp_path):
    model = UNet(UNetConfig.preset("tiny-keyframe"))
    other = UNetConfig.preset("tiny-keyframe", model_channels=32, init_channels=32)
    save_safetensors(tmp_path / "odd.safetensors", dict(model.state_dict()),
                     {"model_type": "unet", "config": other.to_json()})
    summary = info(tmp_path / "odd.safetensors")
    assert summary.warning.startswith("the file's tensors do not fit this config: ")
    assert 0 <= summary.temporal_parameters <= summary.parameters == parameters(model)
    assert "warning: the file's tensors do not fit" in summary.format()
    model.save_pretrained(tmp_path / "good.safetensors")
    good = info(tmp_path / "good.safetensors")
    assert not good.warning and "config (from the file's metadata)" in good.format()


@pytest.mark.parametrize("command", ["info", "convert"])
def test_info_and_convert_of_a_folder_say_so(tmp_path, capsys, command):
    folder = tmp_path / "weights"
    folder.mkdir()
    write_official_keyframe(folder / "kandinsky_video.pt")
    args = [command, str(folder)] + (["-o", str(tmp_path / "x.safetensors")] if command == "convert" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert f"kvideo {command}: error: {str(folder)!r} is a folder: this command" in err
    assert "checkpoint file" in err and err.endswith("it holds kandinsky_video.pt")


def test_convert_bad_paths(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    write_official_interpolation(tmp_path / "interp.pt")
    assert main(["convert", str(tmp_path / "interp.pt"), "-o", str(tmp_path / "x.bin")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


def test_atomic_outputs_get_the_usual_file_mode(tmp_path):
    import os

    from kvideo.checkpoint import atomic_path

    with atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
