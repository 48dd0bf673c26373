"""Release 1.1 UNets: the keyframe UNet's image and video modes, the interpolation UNet's temporal mask, key names."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from golden_dir import golden_path
from kvideo.models.unet import UNet, UNetConfig


def random_unet(preset: str, seed: int = 0) -> UNet:
    model = UNet(UNetConfig.preset(preset)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model


def keyframe_inputs(b=2, f=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 9, f, 16, 16, generator=g)
    return x, torch.tensor([500, 300])[:b], torch.randn(b, 5, 24, generator=g), torch.ones(b, 5, dtype=torch.bool)


@pytest.fixture(scope="module")
def keyframe():
    return random_unet("tiny-kv11-keyframe")


def video(model, x, time, context, mask, **kwargs):
    kwargs = {"noise_aug_time": torch.tensor([20, 20]), "motion_score": torch.tensor([50, 50]), **kwargs}
    with torch.no_grad():
        return model(x, time, context, mask, mode="video", **kwargs)


# -- keyframe UNet: modes ------------------------------------------------------------------------
def test_image_mode_runs_frames_independently_through_the_image_in_layer(keyframe):
    x, time, context, mask = keyframe_inputs()
    with torch.no_grad():
        images = keyframe(x, time, context, mask, mode="image")  # (b, c, f, h, w): f independent images
        single = keyframe(x[:, :, 1], time, context, mask, mode="image")  # (b, c, h, w)
    torch.testing.assert_close(images[:, :, 1], single, atol=1e-5, rtol=1e-5)
    changed = keyframe.image_in_layer.weight.detach().clone()
    with torch.no_grad():
        keyframe.image_in_layer.weight.mul_(1.5)
        assert not torch.allclose(keyframe(x[:, :, 1], time, context, mask, mode="image"), single, atol=1e-4)
        assert torch.allclose(video(keyframe, x, time, context, mask),
                              video(keyframe, x, time, context, mask), atol=0)
        keyframe.image_in_layer.weight.copy_(changed)


def test_mode_is_the_callers_choice_not_the_batch_size(keyframe):
    x, time, context, mask = keyframe_inputs(b=2, f=1)  # a batch of 2 single frames: the reference would pick images
    with torch.no_grad():
        image = keyframe(x, time, context, mask, mode="image")
    as_video = video(keyframe, x, time, context, mask)
    assert image.shape == as_video.shape == (2, 4, 1, 16, 16)
    assert not torch.allclose(image, as_video, atol=1e-4)


@pytest.mark.parametrize("name, other", [("motion_score", torch.tensor([1, 100])),
                                         ("noise_aug_time", torch.tensor([0, 400])),
                                         ("frame_positions", torch.tensor([3, 7, 9]))])
def test_temporal_layers_see_motion_augmentation_and_positions(keyframe, name, other):
    x, time, context, mask = keyframe_inputs()
    base = video(keyframe, x, time, context, mask)
    assert not torch.allclose(base, video(keyframe, x, time, context, mask, **{name: other}), atol=1e-4)


def test_default_positions_are_0_to_t_minus_1(keyframe):
    x, time, context, mask = keyframe_inputs()
    torch.testing.assert_close(video(keyframe, x, time, context, mask),
                               video(keyframe, x, time, context, mask, frame_positions=torch.arange(3)))


@pytest.mark.parametrize("missing", ["noise_aug_time", "motion_score"])
def test_video_mode_needs_augmentation_and_motion(keyframe, missing):
    x, time, context, mask = keyframe_inputs()
    kwargs = {"noise_aug_time": torch.tensor([20, 20]), "motion_score": torch.tensor([50, 50])}
    del kwargs[missing]
    with pytest.raises(ValueError, match=missing):
        keyframe(x, time, context, mask, mode="video", **kwargs)


def test_bad_modes_are_refused(keyframe):
    x, time, context, mask = keyframe_inputs()
    with pytest.raises(ValueError, match="mode='clip'"):
        keyframe(x, time, context, mask, mode="clip")
    interpolation = UNet(UNetConfig.preset("tiny-kv11-interpolation"))
    with pytest.raises(ValueError, match="no image mode"):
        interpolation(torch.zeros(1, 20, 2, 16, 16), torch.tensor([3]), mode="image")


def test_fresh_temporal_layers_are_the_identity():
    """A fresh 1.1 keyframe UNet in video mode equals its spatial path frame by frame."""
    model = UNet(UNetConfig.preset("tiny-kv11-keyframe")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "temporal" not in name and "image_in_layer" not in name:
                p.add_(torch.randn_like(p) * 0.1)
        model.image_in_layer.load_state_dict(model.in_layer.state_dict())
    x, time, context, mask = keyframe_inputs()
    with torch.no_grad():
        frames = model(x, time, context, mask, mode="image")
    torch.testing.assert_close(video(model, x, time, context, mask), frames, atol=1e-5, rtol=1e-5)


# -- interpolation UNet: temporal mask -------------------------------------------------------------
def test_temporal_mask_zero_switches_every_temporal_merge_off():
    model = random_unet("tiny-kv11-interpolation")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 20, 3, 16, 16, generator=g)  # 2 samples x 3 temporal groups
    context, mask = torch.randn(2, 4, 24, generator=g), torch.ones(2, 4, dtype=torch.bool)
    moved = x.clone()
    moved[:, :, 2] += 1.0  # change the last group only
    kwargs = dict(skip_frames=torch.tensor([3, 3]), temporal_mask=torch.tensor([1.0, 0.0]))
    with torch.no_grad():
        a = model(x, torch.tensor([400, 400]), context, mask, **kwargs)
        b = model(moved, torch.tensor([400, 400]), context, mask, **kwargs)
    assert not torch.allclose(a[0, :, 0], b[0, :, 0], atol=1e-4)  # mask 1: the groups talk to each other
    torch.testing.assert_close(a[1, :, :2], b[1, :, :2])  # mask 0: each group on its own


def test_interpolation_uses_the_text():
    model = random_unet("tiny-kv11-interpolation")
    x = torch.randn(1, 20, 2, 16, 16)
    context = torch.randn(2, 4, 24)
    with torch.no_grad():
        a, b = (model(x, torch.tensor([400]), c[None], torch.ones(1, 4, dtype=torch.bool), skip_frames=3)
                for c in context)
    assert not torch.allclose(a, b, atol=1e-4)


# -- configs and checkpoints -----------------------------------------------------------------------
@pytest.mark.parametrize("name, kind", [("kv11_keyframe_unet", "keyframe"),
                                        ("kv11_interpolation_unet", "interpolation")])
def test_presets_have_the_release_key_names_and_shapes(name, kind):
    """The tiny 1.1 presets are the golden files' reference configs; their official key names and
    shapes are exactly the golden state dicts' (the official-size presets share the structure)."""
    with safe_open(str(golden_path(f"{name}.safetensors")), "pt") as handle:
        config = json.loads(handle.metadata()["config"])
        expected = {k.removeprefix("state."): list(handle.get_slice(k).get_shape())
                    for k in handle.keys() if k.startswith("state.")}
    assert UNetConfig.from_reference(config, release="1.1", kind=kind) == UNetConfig.preset(f"tiny-kv11-{kind}")
    model = UNet(UNetConfig.preset(f"tiny-kv11-{kind}"))
    assert {k: list(v.shape) for k, v in model.official_state_dict().items()} == expected
    with torch.device("meta"):  # official sizes: init_channels != model_channels adds shortcut projections
        official = UNet(UNetConfig.preset(f"official-kv11-{kind}"))
        narrow = UNet(UNetConfig.preset(f"tiny-kv11-{kind}", init_channels=8))
    assert set(official.official_state_dict()) == set(narrow.official_state_dict())


def test_official_keyframe_keys_are_the_1_0_keys_plus_the_1_1_parts():
    official_10 = json.loads(golden_path("official_checkpoints.json").read_text())["kandinsky_video.pt:unet"]
    renamed = {k.replace("temporal_attention_block.in_norm", "temporal_attention_block.temporal_norm")
               .replace("temporal_attention_block.out_norm", "temporal_attention_block.ff_norm"): v
               for k, v in official_10.items()}
    renamed["in_layer.weight"] = renamed["image_in_layer.weight"] = [192, 9, 3, 3]
    renamed["image_in_layer.bias"] = [192]
    for name in ("temporal_noise_aug_time_encoding", "temporal_motion_score_encoding"):
        renamed.update({f"{name}.1.weight": [1536, 192], f"{name}.1.bias": [1536],
                        f"{name}.3.weight": [1536, 1536], f"{name}.3.bias": [1536]})
    with torch.device("meta"):
        model = UNet(UNetConfig.preset("official-kv11-keyframe"))
    assert {k: list(v.shape) for k, v in model.official_state_dict().items()} == renamed


def test_official_pickle_round_trip(tmp_path):
    for kind in ("keyframe", "interpolation"):
        model = random_unet(f"tiny-kv11-{kind}", seed=3)
        path = tmp_path / f"{kind}.pt"
        torch.save({"unet": model.official_state_dict(), "null_embedding": torch.zeros(24)}, path)
        loaded = UNet.from_pretrained(path, model.config)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_reference_config_checks():
    with pytest.raises(ValueError, match="kind='keyframe' or 'interpolation'"):
        UNetConfig.from_reference({"model_channels": 16}, release="1.1")
    with pytest.raises(ValueError, match="add_new_temporal_params=True"):
        UNetConfig.from_reference({"model_channels": 16, "add_new_temporal_params": True}, release="1.1",
                                  kind="interpolation")
    with pytest.raises(ValueError, match="motion_score=True needs"):
        UNetConfig.preset("tiny-keyframe", motion_score=True)


def test_conditions_a_model_cannot_use_are_refused():
    model = UNet(UNetConfig.preset("tiny-keyframe"))  # release 1.0: no motion or augmentation embedding
    x, time, context, mask = keyframe_inputs()
    with pytest.raises(ValueError, match="motion_score was given"):
        model(x[:, :4], time, context, mask, motion_score=torch.tensor([50, 50]))
    with pytest.raises(ValueError, match="temporal_mask was given"):
        model(x[:, :4], time, context, mask, temporal_mask=torch.ones(2))
