"""Release 1.1 pipeline on the tiny 1.1 preset: fps modes, image-to-video, determinism, weights, CLI, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from kvideo.cli import main
from kvideo.convert import convert, info
from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.unet import UNet, UNetConfig
from kvideo.generation import MOTION_SCORES, KVideo11Pipeline, KVideoPipeline
from kvideo.generation.images import load_image, resize_center_crop
from kvideo.generation.weights import find_weights
from kvideo.text import write_tiny_t5
from kvideo.video_io import video_info

QUICK = dict(width=64, height=64, steps=2, first_frame_steps=2, interpolation_steps=2)


@pytest.fixture(scope="module")
def pipe():
    return KVideo11Pipeline.from_preset("tiny", seed=0, progress=False)


def picture(seed: int, size=(96, 80), channels=3) -> np.ndarray:
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, (size[1], size[0], channels), dtype=np.uint8)


@pytest.mark.parametrize("fps, frames, rate", [("low", 12, 2), ("medium", 45, 8), ("high", 177, 32)])
def test_fps_modes(pipe, fps, frames, rate):
    video = pipe("a red panda", fps=fps, seed=0, **{**QUICK, "steps": 1, "interpolation_steps": 1})
    assert video.frames.shape == (frames, 64, 64, 3) and video.frames.dtype == np.uint8
    assert video.latents.shape == (1, 4, frames, 8, 8) and video.fps == rate
    assert video.first_frame.shape == (64, 64, 3)


def test_same_seed_same_clip_and_seed_matters(pipe):
    a, b, c = (pipe("a cat", fps="low", seed=s, **QUICK) for s in (1, 1, 2))
    assert (a.frames == b.frames).all() and (a.first_frame == b.first_frame).all()
    assert not torch.equal(a.latents, c.latents)


def test_image_to_video(pipe):
    a = pipe("a cat", image=picture(0), fps="low", seed=1, **QUICK)
    again = pipe("a cat", image=Image.fromarray(picture(0)), fps="low", seed=1, **QUICK)
    other = pipe("a cat", image=picture(1), fps="low", seed=1, **QUICK)
    assert (a.frames == again.frames).all()  # the same picture and seed: the same clip
    assert not torch.equal(a.latents, other.latents)  # another picture: another clip
    expected = np.asarray(resize_center_crop(Image.fromarray(picture(0)), 64, 64))
    assert (a.first_frame == expected).all()  # the given picture, fitted, is the first frame


def test_motion_changes_the_clip():
    """Motion conditions the temporal layers, which a fresh model has as the identity: randomise them."""
    pipe = KVideo11Pipeline.from_preset("tiny", seed=0, progress=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pipe.unet.temporal_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    low = pipe("a cat", image=picture(0), motion="low", fps="low", seed=1, **QUICK)
    extreme = pipe("a cat", image=picture(0), motion="extreme", fps="low", seed=1, **QUICK)
    assert not torch.equal(low.latents, extreme.latents)


def test_interpolation_keeps_the_keyframes(pipe):
    low = pipe("a cat", fps="low", seed=3, **QUICK)
    medium = pipe("a cat", fps="medium", seed=3, **QUICK)
    assert torch.equal(medium.latents[:, :, ::4], low.latents)


def test_callback_sees_every_stage(pipe):
    seen = []
    pipe("a cat", fps="high", seed=0, callback=lambda stage, info: seen.append(stage), **QUICK)
    assert list(dict.fromkeys(seen)) == ["first frame", "keyframes", "interpolation (skip 3)",
                                         "interpolation (skip 1)"]
    assert len(seen) == 8


def test_resize_center_crop_is_the_release_fit():
    image = Image.fromarray(picture(0, size=(200, 100)))
    out = resize_center_crop(image, 64, 64)
    assert out.size == (64, 64)  # shrunk by min(200/64, 100/64), then cropped in the middle
    small = resize_center_crop(Image.fromarray(picture(0, size=(32, 32))), 64, 64)
    assert np.asarray(small)[:16].max() == 0  # not enlarged: the release pads with black
    assert np.asarray(resize_center_crop(Image.fromarray(picture(0, size=(32, 32))), 64, 64, upscale=True))[:16].any()


# -- bad input ---------------------------------------------------------------------------------------
def test_bad_images(pipe, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipe("a cat", image=tmp_path / "missing.png", **QUICK)
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(ValueError, match="not a readable picture"):
        pipe("a cat", image=tmp_path / "text.png", **QUICK)
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="PIL image, a uint8 array or a file path"):
        load_image(42)


@pytest.mark.parametrize("channels, needle", [(4, "alpha"), (1, "one channel")])
def test_alpha_and_gray_pictures_are_converted_and_said_so(channels, needle):
    array = picture(0, channels=channels)
    with pytest.warns(UserWarning, match=needle):
        image = load_image(array if channels == 4 else array[:, :, 0])
    assert image.mode == "RGB"


@pytest.mark.parametrize("options, needle", [
    (dict(motion="fast"), "motion='fast': choose one of \\['low', 'medium', 'high', 'extreme'\\]"),
    (dict(width=100), "multiples of 64"),
    (dict(fps="ultra"), "fps='ultra'"),
    (dict(num_frames=1), "at least 2 keyframes"),
    (dict(image_guidance_scale=float("nan")), "finite"),
])
def test_bad_options_fail_before_any_work(pipe, options, needle):
    def refuse(*args, **kwargs):
        raise AssertionError("the UNet ran")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipe.unet, "forward", refuse)
        with pytest.raises(ValueError, match=needle):
            pipe("a cat", image=picture(0), **{**QUICK, **options})


def test_the_release_motion_scores():
    assert MOTION_SCORES == {"low": 1, "medium": 10, "high": 50, "extreme": 100}


# -- weights folders -----------------------------------------------------------------------------------
REFERENCE_FIELDS = ("model_channels", "init_channels", "num_channels", "out_channels", "time_embed_dim",
                    "context_dim", "groups", "head_dim", "expansion_ratio", "compression_ratio", "dim_mult",
                    "num_blocks", "add_cross_attention", "add_self_attention")


def write_kv11_folder(folder, seed=0):
    """A 1.1 weights folder as the release ships it (official pickles + configs.json; MoVQs converted)."""
    torch.manual_seed(seed)
    write_tiny_t5(folder / "text_encoder", d_model=32)
    configs = {}
    for name, kind in (("t2v", "keyframe"), ("interpolation", "interpolation")):
        unet = UNet(UNetConfig.preset(f"tiny-kv11-{kind}"))
        torch.save({"unet": unet.official_state_dict(), "null_embedding": torch.randn(24)}, folder / f"{name}.pt")
        reference = {k: v for k, v in unet.config.to_dict().items() if k in REFERENCE_FIELDS}
        if kind == "keyframe":
            reference.update(noise_augmentation=True, motion_score=True)
        configs[name] = {"configs": reference}
    projection = {"0.weight": torch.randn(24, 32) * 0.1, "1.weight": torch.ones(24), "1.bias": torch.zeros(24)}
    torch.save({"projection_base": projection, "projection_interpolation": projection}, folder / "t5_projections.pt")
    (folder / "configs.json").write_text(json.dumps(configs))
    MoVQ(MoVQConfig.preset("tiny")).save_pretrained(folder / "movq.safetensors")
    MoVQ(MoVQConfig.preset("tiny-video")).save_pretrained(folder / "video_movq.safetensors")


def test_from_pretrained_recognises_a_1_1_folder(tmp_path):
    write_kv11_folder(tmp_path)
    pipe = KVideoPipeline.from_pretrained(tmp_path, progress=False)
    assert isinstance(pipe, KVideo11Pipeline)
    assert pipe.unet.config == UNetConfig.preset("tiny-kv11-keyframe")
    video = pipe("a cat", image=picture(0), fps="medium", seed=0, **QUICK)
    assert video.frames.shape == (45, 64, 64, 3)


def test_1_1_folder_problems(tmp_path):
    write_kv11_folder(tmp_path)
    (tmp_path / "configs.json").unlink()
    with pytest.raises(FileNotFoundError, match="configs.json"):
        KVideo11Pipeline.from_pretrained(tmp_path)
    (tmp_path / "t5_projections.pt").unlink()
    with pytest.raises(FileNotFoundError, match="t5_projections.pt"):
        find_weights(tmp_path, "1.1")


def test_convert_and_info_handle_1_1_files(tmp_path):
    write_kv11_folder(tmp_path)
    for name, kind in (("t2v", "keyframe"), ("interpolation", "interpolation")):
        config = tmp_path / f"{kind}.json"  # the tiny size (official files default to the official size)
        config.write_text(UNetConfig.preset(f"tiny-kv11-{kind}").to_json())
        assert convert(tmp_path / f"{name}.pt", tmp_path / f"{name}.safetensors", config_path=config) == f"kv11-{kind}"
    summary = info(tmp_path / "t2v.pt")  # an official file: the official-size config is assumed
    assert summary.config["release"] == "1.1" and "null_embedding" in summary.extras
    converted = UNet.from_pretrained(tmp_path / "t2v.safetensors")
    assert converted.config.release == "1.1" and converted.config.kind == "keyframe"
    with pytest.raises(ValueError, match="t5_projections.pt"):
        convert(tmp_path / "t5_projections.pt", tmp_path / "p.safetensors")


# -- command line ------------------------------------------------------------------------------------
def test_cli_image_to_video(tmp_path, capsys):
    Image.fromarray(picture(0, channels=4)).save(tmp_path / "photo.png")
    out, first = tmp_path / "clip.mp4", tmp_path / "first.png"
    assert main(["generate", "a cat", "--image", str(tmp_path / "photo.png"), "--motion", "high", "-o", str(out),
                 "--first-frame-out", str(first), "--fps", "low", "--steps", "1", "--quiet"]) == 0
    assert video_info(out).num_frames == 12
    assert Image.open(first).size == (64, 64)
    assert "alpha" in capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (["--image", "{tmp}/missing.png"], "does not exist"),
    (["--image", "{tmp}/text.png"], "not a readable picture"),
    (["--image", "{tmp}/photo.png", "--weights", "{tmp}/v10"], "holds no t2v.pt: a text-to-video model"),
    (["--motion", "low", "--weights", "shapes"], "--weights 'shapes' holds no t2v.pt"),
    (["--first-frame-out", "{tmp}/first.xyz"], "unknown image extension"),
    (["--image", "{tmp}/photo.png", "--sampler", "ddim"], "ddpm only"),
    (["--image", "{tmp}/photo.png", "--timestep-spacing", "trailing"], "release 1.1 keeps its own steps"),
])
def test_cli_bad_image_input_leaves_no_output(tmp_path, capsys, args, needle):
    Image.fromarray(picture(0)).save(tmp_path / "photo.png")
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "v10").mkdir()
    (tmp_path / "v10" / "kandinsky_video.pt").write_bytes(b"")
    before = set(tmp_path.rglob("*"))
    assert main(["generate", "a cat", "-o", str(tmp_path / "clip.mp4"), *[a.format(tmp=tmp_path) for a in args]]) == 2
    assert needle in capsys.readouterr().err
    assert set(tmp_path.rglob("*")) == before


def test_cli_unknown_motion_lists_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "a cat", "-o", str(tmp_path / "clip.mp4"), "--motion", "fast"])
    assert exit_.value.code == 2 and "choose from 'low', 'medium', 'high', 'extreme'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
