"""`kvideo convert` / `kvideo info`: official pickles to safetensors with the config in metadata."""
from __future__ import annotations

import torch

from kvideo.checkpoint import read_metadata
from kvideo.cli import main
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
    # without --config the official preset is used: the tiny weights must be refused clearly
    code = main(["convert", str(tmp_path / "interp.pt"), "-o", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and "shape mismatches" in err and "interpolation UNet checkpoint" in err
    assert not (tmp_path / "x.safetensors").exists()


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
