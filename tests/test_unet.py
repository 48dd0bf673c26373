"""UNet family: configs, temporal-parts API, inflation, layouts, checkpoints and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from golden_dir import golden_path
from kvideo import attention
from kvideo.checkpoint import CheckpointError
from kvideo.models.layers import TemporalAttentionBlock
from kvideo.models.unet import UNet, UNetConfig
from kvideo.shapes import presets as shapes_presets  # noqa: F401  registers the shapes-* presets

ROOT = Path(__file__).resolve().parents[1]


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values everywhere, zero-initialised layers and merge weights included."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def tiny(kind: str, seed: int = 0, **overrides) -> UNet:
    torch.manual_seed(seed)
    return UNet(UNetConfig.preset(f"tiny-{kind}", **overrides)).eval()


def inputs(cfg: UNetConfig, b=2, f=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.num_channels, f, size, size, generator=g)
    time = torch.randint(0, 1000, (b,), generator=g)
    context = torch.randn(b, 5, cfg.context_dim, generator=g)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])[:b]
    return x, time, context, mask


# -- configs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", UNetConfig.presets())
def test_config_json_round_trip(name):
    cfg = UNetConfig.preset(name)
    assert UNetConfig.from_json(cfg.to_json()) == cfg


def test_shapes_presets_are_the_shapes_models_own():
    assert {"shapes-image", "shapes-keyframe", "shapes-interpolation"} <= set(UNetConfig.presets())
    assert UNetConfig.preset("shapes-interpolation").init_channels == 64


@pytest.mark.parametrize("change, needle", [
    (dict(groups=5), "groups=5"),
    (dict(head_dim=48), "head_dim=48"),
    (dict(kind="3d"), "kind='3d'"),
    (dict(num_blocks=(3, 3)), "num_blocks"),
    (dict(kind="interpolation"), "num_channels=4"),
    (dict(num_frames=0), "num_frames=0"),
    (dict(prediction="x0"), "prediction='x0'"),
    (dict(frame_conditioning="every"), "frame_conditioning='every'"),
    (dict(kind="image", frame_conditioning="all"), "needs kind='keyframe'"),
])
def test_config_validation_names_the_bad_value(change, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        UNetConfig.preset("tiny-keyframe", **change)


def test_prediction_type_defaults_to_the_release_and_can_be_v():
    assert UNetConfig.preset("tiny-keyframe").predicts == "eps" and UNetConfig.preset("tiny-image").predicts == "eps"
    assert UNetConfig.preset("tiny-interpolation").predicts == "v"
    assert UNetConfig.preset("tiny-keyframe", prediction="v").predicts == "v"
    assert UNetConfig.preset("shapes-image").predicts == UNetConfig.preset("shapes-keyframe").predicts == "v"
    with pytest.raises(ValueError, match="interpolation UNets predict v"):
        UNetConfig.preset("tiny-interpolation", prediction="eps")
    old = {k: v for k, v in UNetConfig.preset("tiny-keyframe").to_dict().items() if k != "prediction"}
    assert UNetConfig.from_dict(old).predicts == "eps"  # weights written before the field read as the release


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown field"):
        UNetConfig.from_dict({"model_channel": 3})


# -- official sizes -----------------------------------------------------------------------------
@pytest.mark.parametrize("preset, key, params", [
    ("official-keyframe", "kandinsky_video.pt:unet", 4_143_739_012),
    ("official-interpolation", "kandinsky_video_interpolation.pt:unet", 3_872_572_046),
])
def test_official_size_keys_and_shapes(preset, key, params):
    official = json.loads(golden_path("official_checkpoints.json").read_text())
    with torch.device("meta"):
        model = UNet(UNetConfig.preset(preset))
    ours = {k: list(v.shape) for k, v in model.official_state_dict().items()}
    assert ours == official[key]
    assert sum(p.numel() for p in model.parameters()) == params
    assert UNetConfig.from_reference(official["configs"][key]) == UNetConfig.preset(preset)


# -- layouts and parity -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["keyframe", "interpolation"])
def test_video_layout_equals_folded_layout(kind):
    model = randomize(tiny(kind))
    x, time, context, mask = inputs(model.config)
    b, f = x.shape[0], x.shape[2]
    extra = dict(skip_frames=torch.tensor([3, 1])) if kind == "interpolation" else {}
    positions = torch.arange(f) * 12
    with torch.no_grad():
        video = model(x, time, context, mask, frame_positions=positions if kind == "keyframe" else None, **extra)
        per_row = {k: v.repeat_interleave(f) for k, v in extra.items()}
        folded = model.forward_folded(
            x.permute(0, 2, 1, 3, 4).flatten(0, 1), time.repeat_interleave(f),
            context.repeat_interleave(f, 0), mask.repeat_interleave(f, 0), num_frames=f,
            frame_positions=positions.repeat(b) if kind == "keyframe" else None, **per_row,
        )
    assert torch.allclose(video.permute(0, 2, 1, 3, 4).flatten(0, 1), folded, atol=1e-5)


def test_num_frames_comes_from_the_input():
    model = randomize(tiny("keyframe"))
    for f in (1, 2, 7):
        x, time, context, mask = inputs(model.config, f=f)
        with torch.no_grad():
            assert model(x, time, context, mask).shape == (2, 4, f, 16, 16)


def test_attention_backends_agree():
    model = randomize(tiny("keyframe"))
    args = inputs(model.config)
    with torch.no_grad():
        with attention.backend("math"):
            reference = model(*args)
        fast = model(*args)
    assert torch.allclose(reference, fast, atol=1e-5)


def test_temporal_layers_mix_frames_and_frame_positions_matter():
    model = randomize(tiny("keyframe"))
    x, time, context, mask = inputs(model.config)
    with torch.no_grad():
        base = model(x, time, context, mask)
        x2 = x.clone()
        x2[:, :, 0] += 1.0
        changed = model(x2, time, context, mask)
        shifted = model(x, time, context, mask, frame_positions=torch.arange(3) * 12 + 5)
    assert (changed[:, :, 1:] - base[:, :, 1:]).abs().max() > 1e-3  # frame 0 influences other frames
    assert (shifted - base).abs().max() > 1e-4


@pytest.mark.parametrize("conditioning, reaches", [("", False), ("all", True)])
def test_frame_conditioning_all_feeds_positions_past_the_attention(conditioning, reaches):
    """With the attention branch of every temporal attention block cut, a release 1.0 keyframe UNet no
    longer sees frame positions; with frame_conditioning="all" its temporal ResNets and feed-forwards do."""
    model = randomize(tiny("keyframe", frame_conditioning=conditioning))
    for block in model.modules():
        if isinstance(block, TemporalAttentionBlock):
            torch.nn.init.zeros_(block.temporal_attention.output_layer.weight)
    x, time, context, mask = inputs(model.config)
    with torch.no_grad():
        base = model(x, time, context, mask)
        shifted = model(x, time, context, mask, frame_positions=torch.arange(3) * 12 + 5)
    assert ((shifted - base).abs().max() > 1e-4) == reaches


def test_interpolation_groups_are_coupled_by_temporal_convs():
    model = randomize(tiny("interpolation"))
    x, time, context, mask = inputs(model.config)
    skip = torch.tensor([3, 3])
    with torch.no_grad():
        base = model(x, time, context, mask, skip_frames=skip)
        x2 = x.clone()
        x2[:, :, 0] += 1.0
        changed = model(x2, time, context, mask, skip_frames=skip)
        other_skip = model(x, time, context, mask, skip_frames=torch.tensor([1, 1]))
    assert (changed[:, :, 1:] - base[:, :, 1:]).abs().max() > 1e-3
    assert (other_skip - base).abs().max() > 1e-4


# -- temporal parts API and inflation -----------------------------------------------------------
def test_temporal_parts_are_selected_by_structure():
    model = tiny("keyframe")
    names = set(model.temporal_state_dict())
    assert names and all(("temporal" in n) for n in names)
    spatial = set(UNet(UNetConfig.preset("tiny-image")).state_dict())
    assert names.isdisjoint(spatial) and names | spatial == set(model.state_dict())
    interp = set(tiny("interpolation").temporal_state_dict())
    assert any(".temporal.conv." in n for n in interp) and any("interpolation_embed" in n for n in interp)


def test_freeze_spatial_trains_only_temporal_parameters():
    model = tiny("keyframe").freeze_spatial()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.temporal_parameters()}
    assert 0 < len(trainable) < len(list(model.parameters()))


def test_temporal_state_dict_round_trip_and_strictness():
    source, target = randomize(tiny("keyframe"), 1), tiny("keyframe")
    target.load_temporal_state_dict(source.temporal_state_dict())
    state = target.state_dict()
    assert all(torch.equal(state[k], v) for k, v in source.temporal_state_dict().items())
    with pytest.raises(CheckpointError, match="missing"):
        target.load_temporal_state_dict(dict(list(source.temporal_state_dict().items())[1:]))


@pytest.mark.parametrize("conditioning", ["", "all"])
def test_inflated_model_equals_2d_model_frame_by_frame(conditioning):
    image = randomize(tiny("image"), 3)
    video = UNet.inflate(image.state_dict(), UNetConfig.preset("tiny-keyframe", frame_conditioning=conditioning))
    video.eval()
    x, time, context, mask = inputs(video.config, f=4)
    with torch.no_grad():
        ours = video(x, time, context, mask)
        frames = [image(x[:, :, i], time, context, mask) for i in range(x.shape[2])]
    assert torch.allclose(ours, torch.stack(frames, dim=2), atol=1e-5)


def test_inflate_rejects_a_state_that_is_not_2d():
    keyframe = tiny("keyframe").state_dict()
    with pytest.raises(CheckpointError, match="unexpected keys"):
        UNet.inflate(keyframe, UNetConfig.preset("tiny-keyframe"))


# -- training helpers ---------------------------------------------------------------------------
def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for enabled in (False, True):
        model = randomize(tiny("keyframe")).train()
        model.set_gradient_checkpointing(enabled)
        x, time, context, mask = inputs(model.config)
        model(x, time, context, mask).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


# -- checkpoints --------------------------------------------------------------------------------
def test_save_and_load_pretrained_round_trip(tmp_path):
    model = randomize(tiny("interpolation"))
    null = torch.randn(model.config.context_dim)
    model.save_pretrained(tmp_path / "interp.safetensors", extras={"null_embedding": null})
    loaded = UNet.from_pretrained(tmp_path / "interp.safetensors")
    assert loaded.config == model.config
    assert_same_state(loaded, model)
    checkpoint = UNet.read_checkpoint(tmp_path / "interp.safetensors")
    assert torch.equal(checkpoint.extras["null_embedding"], null)


def test_official_pickle_loads_with_renames(tmp_path):
    model = randomize(tiny("interpolation"))
    null = torch.randn(24)
    torch.save({"unet": model.official_state_dict(), "null_embedding": null}, tmp_path / "interp.pt")
    assert any("temporal_projection" in k for k in model.official_state_dict())
    loaded = UNet.from_pretrained(tmp_path / "interp.pt", model.config)
    assert_same_state(loaded, model)


def test_wrong_model_checkpoint_is_a_clear_error(tmp_path):
    keyframe = tiny("keyframe")
    torch.save({"unet": keyframe.official_state_dict()}, tmp_path / "keyframe.pt")
    with pytest.raises(CheckpointError, match="keyframe UNet checkpoint") as error:
        UNet.from_pretrained(tmp_path / "keyframe.pt", UNetConfig.preset("tiny-interpolation"))
    assert "missing keys" in str(error.value) and "unexpected keys" in str(error.value)
    torch.save({"encoder.conv_in.weight": torch.zeros(1), "decoder.conv_out.weight": torch.zeros(1)},
               tmp_path / "movq.pt")
    with pytest.raises(CheckpointError, match="'unet' entry"):
        UNet.from_pretrained(tmp_path / "movq.pt", UNetConfig.preset("tiny-keyframe"))


def test_kvideo_file_of_another_model_type_is_refused(tmp_path):
    from kvideo.checkpoint import save_safetensors

    save_safetensors(tmp_path / "other.safetensors", {"w": torch.zeros(1)}, {"model_type": "movq", "config": "{}"})
    with pytest.raises(CheckpointError, match="movq checkpoint, not a unet"):
        UNet.from_pretrained(tmp_path / "other.safetensors")


def test_missing_checkpoint_file():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        UNet.from_pretrained("no/such/file.pt", UNetConfig.preset("tiny-keyframe"))


# -- bad input ----------------------------------------------------------------------------------
def test_bad_inputs_are_clear_errors():
    model = tiny("keyframe")
    x, time, context, mask = inputs(model.config)
    with pytest.raises(ValueError, match="has 3 channels; this keyframe UNet expects 4"):
        model(x[:, :3], time, context, mask)
    with pytest.raises(ValueError, match=r"not divisible by 8.*multiples of 64"):
        model(x[..., :12, :12], time, context, mask)
    with pytest.raises(ValueError, match=r"\(b, c, f, h, w\)"):
        model(x[:, :, 0], time, context, mask)
    with pytest.raises(ValueError, match="context has dim 7"):
        model(x, time, torch.randn(2, 5, 7), mask)
    interp = tiny("interpolation")
    xi, time, context, mask = inputs(interp.config)
    with pytest.raises(ValueError, match="needs skip_frames"):
        interp(xi, time, context, mask)
    with pytest.raises(ValueError, match="expects 20"):
        interp(x, time, context, mask, skip_frames=torch.tensor([3, 3]))


@pytest.mark.parametrize("name", [n for n in UNetConfig.presets() if n.startswith("shapes")])
def test_first_level_bottleneck_can_carry_the_input(name):
    """The input passes the full-resolution in_layer, then a first level downsampled before its skip,
    so the input channels must fit `init_channels` and each 2x2 block of them (4 x num_channels values)
    the half-resolution features: otherwise the model cannot see the noise it is to remove (the shapes
    interpolation UNet with 32 channels at both never learned to denoise)."""
    cfg = UNetConfig.preset(name)
    assert cfg.init_channels >= cfg.num_channels, (name, cfg.init_channels, cfg.num_channels)
    assert cfg.level_channels[0] >= 4 * cfg.num_channels, (name, cfg.level_channels[0], cfg.num_channels)
