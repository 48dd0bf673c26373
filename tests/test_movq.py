"""MoVQ: configs, official layouts, windowed / tiled / batched decoding, bad input, checkpoints."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from golden_dir import golden_path
from kvideo.checkpoint import CheckpointError, save_safetensors
from kvideo.models.movq import (
    MoVQ,
    MoVQConfig,
    TemporalAttentionBlock,
    TemporalConvMix,
    convert_official,
    decode_tiled,
    official_config_for,
    reference_window,
    split_windows,
    tile_starts,
    to_uint8,
)
from kvideo.models.temporal import temporal_modules
from kvideo.shapes import presets as shapes_presets  # noqa: F401  registers the shapes-* presets

OFFICIAL_PARAMETERS = {"movq.pt": 270_603_567, "video_movq.pt": 666_131_275}


def randomized(model: MoVQ, seed: int = 0) -> MoVQ:
    """Every parameter random, the zero-initialised temporal parts and merge weights included."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.GroupNorm)):
            module.reset_parameters()
        if isinstance(module, torch.nn.GroupNorm):
            torch.nn.init.normal_(module.weight, 1.0, 0.2)
            torch.nn.init.normal_(module.bias, 0.0, 0.2)
        if isinstance(module, TemporalConvMix):
            torch.nn.init.uniform_(module.merge, 0.3, 0.9)
    return model.eval()


@pytest.fixture(scope="module")
def video_movq() -> MoVQ:
    return randomized(MoVQ(MoVQConfig.preset("tiny-video")))


@pytest.fixture(scope="module")
def image_movq() -> MoVQ:
    return randomized(MoVQ(MoVQConfig.preset("tiny")), seed=1)


def latents(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def official_layouts() -> dict:
    return json.loads(golden_path("official_checkpoints.json").read_text())


# -- configs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MoVQConfig.presets())
def test_presets_round_trip_through_json(name: str) -> None:
    config = MoVQConfig.preset(name)
    assert MoVQConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize("file, preset", [("movq.pt", "official"), ("video_movq.pt", "official-video")])
def test_reference_configs_are_the_official_presets(file: str, preset: str) -> None:
    assert MoVQConfig.from_reference(official_layouts()["configs"][file]) == MoVQConfig.preset(preset)


@pytest.mark.parametrize("changes, word", [
    (dict(attention_levels=(True,)), "attention_levels"),
    (dict(groups=3), "groups"),
    (dict(temporal_kernel_size=(2, 3, 3)), "temporal_kernel_size"),
    (dict(attention_latent="last"), "attention_latent"),
])
def test_config_rejects_bad_values(changes: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        MoVQConfig.preset("tiny", **changes)


def test_reference_config_with_unsupported_options_is_rejected() -> None:
    kwargs = dict(official_layouts()["configs"]["video_movq.pt"], temporal_blocks=True)
    with pytest.raises(ValueError, match="temporal_blocks"):
        MoVQConfig.from_reference(kwargs)


# -- official layouts --------------------------------------------------------------------------------------
@pytest.mark.parametrize("file", ["movq.pt", "video_movq.pt"])
def test_official_size_matches_the_official_checkpoint(file: str) -> None:
    layouts = official_layouts()
    with torch.device("meta"):
        model = MoVQ(MoVQConfig.from_reference(layouts["configs"][file]))
    ours = {k: list(v.shape) for k, v in model.official_state_dict().items()}
    assert ours == layouts[file]
    assert sum(math.prod(shape) for shape in ours.values()) == OFFICIAL_PARAMETERS[file]
    assert official_config_for(layouts[file]) == model.config


def test_temporal_parts_are_temporal_modules_with_official_names(video_movq: MoVQ) -> None:
    kinds = {type(module) for _, module in temporal_modules(video_movq)}
    assert kinds == {TemporalConvMix, TemporalAttentionBlock}
    official = [MoVQ.renames.to_official(k) for k in video_movq.temporal_state_dict()]
    assert all(".temporal_" in k for k in official), official[:4]
    assert not any(".temporal" in k for k in MoVQ(MoVQConfig.preset("tiny")).state_dict())


def test_freeze_spatial_trains_only_temporal_parts() -> None:
    model = MoVQ(MoVQConfig.preset("tiny-video")).freeze_spatial()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and trainable == set(model.temporal_state_dict())


# -- windows ---------------------------------------------------------------------------------------------
def test_default_windows_are_the_reference_chunks() -> None:
    for frames in range(4, 240):
        chunks = [len(c) for c in torch.arange(frames).chunk(frames // 4)]
        assert split_windows(frames) == chunks, frames
    assert split_windows(57) == [5] * 11 + [2]
    assert reference_window(3) == 3 and split_windows(3) == [3]
    assert split_windows(10, 4) == [4, 4, 2] and split_windows(3, 8) == [3]


def decode_one_by_one(model: MoVQ, clip: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """What the reference does: one decoder call per window."""
    outs, start = [], 0
    for length in split_windows(clip.shape[2], window):
        outs.append(model.decode(clip[:, :, start:start + length], window=length, clamp=False))
        start += length
    return torch.cat(outs, dim=2)


@torch.no_grad()
def test_57_frames_batched_windows_equal_windows_one_by_one(video_movq: MoVQ) -> None:
    clip = latents(1, 4, 57, 1, 2)
    batched = video_movq.decode(clip, clamp=False)
    assert batched.shape == (1, 3, 57, 8, 16)
    torch.testing.assert_close(batched, decode_one_by_one(video_movq, clip), rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_windows_per_batch_does_not_change_results_but_window_does(video_movq: MoVQ) -> None:
    clip = latents(1, 4, 7, 2, 2)
    batched = video_movq.decode(clip, window=2, clamp=False)
    torch.testing.assert_close(video_movq.decode(clip, window=2, windows_per_batch=1, clamp=False), batched,
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(decode_one_by_one(video_movq, clip, 2), batched, rtol=1e-4, atol=1e-5)
    # the windows matter: temporal layers see only their own window
    assert (video_movq.decode(clip, window=7, clamp=False) - batched).abs().max() > 1e-3


@torch.no_grad()
def test_decoding_halves_the_windows_per_pass_after_an_out_of_memory_error(video_movq: MoVQ, monkeypatch) -> None:
    clip = latents(1, 4, 9, 2, 2)
    whole = video_movq.decode(clip, window=1, clamp=False)
    passes = []
    real = MoVQ._decode_folded

    def tight(self, rows, num_frames):  # a "GPU" that holds at most 3 windows per pass
        passes.append(rows.shape[0])
        if rows.shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, rows, num_frames)

    monkeypatch.setattr(MoVQ, "_decode_folded", tight)
    torch.testing.assert_close(video_movq.decode(clip, window=1, clamp=False), whole, rtol=1e-4, atol=1e-5)
    assert passes == [9, 5, 3, 3, 3]  # halved until it fits, then kept

    # the default pass is bounded by DECODE_PIXELS_PER_PASS output pixels, whatever the memory
    import kvideo.models.movq as movq_module
    passes.clear()
    factor = video_movq.config.downsample_factor
    monkeypatch.setattr(movq_module, "DECODE_PIXELS_PER_PASS", 2 * (2 * factor) ** 2)  # two 1-frame windows
    torch.testing.assert_close(video_movq.decode(clip, window=1, clamp=False), whole, rtol=1e-4, atol=1e-5)
    assert passes == [2, 2, 2, 2, 1]

    def none_fits(self, rows, num_frames):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(MoVQ, "_decode_folded", none_fits)
    with pytest.raises(torch.OutOfMemoryError):
        video_movq.decode(clip, window=1)


@torch.no_grad()
@pytest.mark.parametrize("per_batch", [None, 1])
def test_decoding_progress_is_one_bar_over_all_windows_and_changes_nothing(video_movq: MoVQ, capsys,
                                                                           per_batch) -> None:
    clips = latents(2, 4, 7, 2, 2)  # windows of 3: two of 3 frames and one of 1 in each clip, 6 in all
    quiet = video_movq.decode(clips, window=3, windows_per_batch=per_batch)
    assert capsys.readouterr().err == ""
    shown = video_movq.decode(clips, window=3, windows_per_batch=per_batch, progress=True)
    bars = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if "decoding" in line]
    assert torch.equal(shown, quiet)  # bitwise
    assert bars and "6/6" in bars[-1] and all("/6 " in bar for bar in bars), bars


@torch.no_grad()
def test_clips_of_a_batch_are_decoded_independently(video_movq: MoVQ) -> None:
    clips = latents(2, 4, 4, 2, 3)
    both = video_movq.decode(clips, window=2, clamp=False)
    for index in range(2):
        alone = video_movq.decode(clips[index:index + 1], window=2, clamp=False)
        torch.testing.assert_close(both[index:index + 1], alone, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_window_first_latent_conditions_spatial_attention(video_movq: MoVQ) -> None:
    clip = latents(1, 4, 3, 2, 2)
    first = video_movq.decode(clip, window=3, clamp=False)
    changed = clip.clone()
    changed[:, :, 1:] = clip[:, :, 1:]  # same frames 1..3, different frame 0
    changed[:, :, 0] = latents(1, 4, 2, 2, seed=5)
    moved = video_movq.decode(changed, window=3, clamp=False)
    assert (moved[:, :, 1:] - first[:, :, 1:]).abs().max() > 1e-4


@torch.no_grad()
def test_image_latents_on_the_video_model_are_one_frame_windows(video_movq: MoVQ) -> None:
    images = latents(3, 4, 4, 4)
    clips = images[:, :, None]
    torch.testing.assert_close(video_movq.decode(images), video_movq.decode(clips)[:, :, 0])


@torch.no_grad()
def test_image_model_decodes_every_frame_alone(image_movq: MoVQ) -> None:
    clip = latents(2, 4, 3, 2, 3)
    video = image_movq.decode(clip, window=2, clamp=False)
    frames = [image_movq.decode(clip[:, :, i], clamp=False) for i in range(3)]
    torch.testing.assert_close(video, torch.stack(frames, dim=2), rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_fresh_video_decoder_equals_the_image_decoder(image_movq: MoVQ) -> None:
    config = MoVQConfig.preset("tiny-video", attention_latent="frame")
    video = MoVQ.inflate(image_movq.official_state_dict(), config).eval()
    clip = latents(1, 4, 4, 2, 3)
    torch.testing.assert_close(video.decode(clip, window=2), image_movq.decode(clip), rtol=1e-4, atol=1e-5)


# -- tiles -----------------------------------------------------------------------------------------------
def test_tile_starts_cover_the_size() -> None:
    assert tile_starts(10, 4, 1) == [0, 3, 6]
    assert tile_starts(11, 4, 2) == [0, 2, 4, 6, 7]
    assert tile_starts(4, 4, 2) == [0]


@pytest.mark.parametrize("size, tile, overlap", [((11, 9), (4, 5), 2), ((8, 8), (3, 3), 0), ((6, 7), (6, 3), 1)])
def test_tile_blending_is_exact_for_a_local_decoder(size, tile, overlap) -> None:
    z = latents(2, 4, *size)

    def local(x):  # pointwise in latent space: tiles must reassemble it exactly
        return F.interpolate(x, scale_factor=8, mode="nearest") * 2 - 1

    torch.testing.assert_close(decode_tiled(local, z, tile, overlap, 8), local(z))


@torch.no_grad()
def test_tiled_video_decoding(video_movq: MoVQ) -> None:
    clip = latents(1, 4, 2, 5, 6)
    plain = video_movq.decode(clip, window=2)
    torch.testing.assert_close(video_movq.decode(clip, window=2, tile=(5, 6)), plain, rtol=1e-4, atol=1e-5)
    tiled = video_movq.decode(clip, window=2, tile=4, tile_overlap=2)
    assert tiled.shape == plain.shape and tiled.abs().max() <= 1
    assert (tiled - plain).abs().mean() < (plain - plain.mean()).abs().mean()  # same picture, not noise


# -- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, options, word", [
    ((1, 3, 4, 4), {}, "channels"),
    ((1, 4, 2, 4, 4, 1), {}, "videos"),
    ((1, 4, 0, 4, 4), {}, ">= 1"),
    ((1, 4, 3, 4, 4), dict(window=0), "window=0"),
    ((1, 4, 3, 4, 4), dict(tile=5), "tile"),
    ((1, 4, 3, 4, 4), dict(tile=2, tile_overlap=2), "tile_overlap"),
    ((1, 4, 3, 4, 4), dict(windows_per_batch=0), "windows_per_batch"),
])
def test_decode_rejects_bad_input(video_movq: MoVQ, shape, options, word) -> None:
    with pytest.raises(ValueError, match=word):
        video_movq.decode(torch.zeros(shape), **options)


def test_decode_rejects_integer_latents(video_movq: MoVQ) -> None:
    with pytest.raises(ValueError, match="float"):
        video_movq.decode(torch.zeros(1, 4, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("shape, word", [((1, 4, 16, 16), "channels"), ((1, 3, 20, 16), "multiple of 8")])
def test_encode_rejects_bad_input(image_movq: MoVQ, shape, word) -> None:
    with pytest.raises(ValueError, match=word):
        image_movq.encode(torch.zeros(shape))


# -- encode / outputs ------------------------------------------------------------------------------------
@torch.no_grad()
def test_encode_videos_frame_by_frame(image_movq: MoVQ) -> None:
    video = torch.rand(2, 3, 3, 16, 24) * 2 - 1
    encoded = image_movq.encode(video, batch_size=2)
    assert encoded.shape == (2, 4, 3, 2, 3)
    torch.testing.assert_close(encoded[:, :, 1], image_movq.encode(video[:, :, 1]), rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_outputs_are_float32_in_range_also_from_bfloat16(video_movq: MoVQ) -> None:
    clip = latents(1, 4, 2, 2, 2)
    out = video_movq.decode(clip)
    assert out.dtype == torch.float32 and out.abs().max() <= 1 and out.abs().max() > 0.1
    half = MoVQ(video_movq.config)
    half.load_state_dict(video_movq.state_dict())
    low = half.to(torch.bfloat16).eval().decode(clip)
    assert low.dtype == torch.float32
    assert (low - out).abs().mean() < 0.05


def test_to_uint8() -> None:
    pixels = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    assert to_uint8(pixels).tolist() == [0, 0, 128, 191, 255, 255]
    assert to_uint8(pixels).dtype == torch.uint8


# -- checkpoints -----------------------------------------------------------------------------------------
@torch.no_grad()
def test_save_and_load_pretrained_round_trip(video_movq: MoVQ, tmp_path: Path) -> None:
    video_movq.save_pretrained(tmp_path / "movq.safetensors")
    loaded = MoVQ.from_pretrained(tmp_path / "movq.safetensors")
    assert loaded.config == video_movq.config
    clip = latents(1, 4, 2, 2, 2)
    torch.testing.assert_close(loaded.decode(clip), video_movq.decode(clip), rtol=0, atol=0)


def test_official_pickle_loads_and_converts(video_movq: MoVQ, tmp_path: Path) -> None:
    torch.save(video_movq.official_state_dict(), tmp_path / "video_movq.pt")
    converted = convert_official(tmp_path / "video_movq.pt", tmp_path / "video_movq.safetensors", video_movq.config)
    loaded = MoVQ.from_pretrained(tmp_path / "video_movq.safetensors")
    for ours in (converted, loaded):
        assert ours.config == video_movq.config
        for key, value in video_movq.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value), key


def test_wrong_official_checkpoints_give_clear_errors(video_movq: MoVQ, image_movq: MoVQ, tmp_path: Path) -> None:
    unet = {"unet": {"down_samples.0.temporal_resnet_blocks.0.weight": torch.zeros(2)},
            "null_embedding": torch.zeros(4)}
    torch.save(unet, tmp_path / "kandinsky_video.pt")
    with pytest.raises(CheckpointError, match="not a MoVQ checkpoint.*keyframe UNet"):
        MoVQ.from_pretrained(tmp_path / "kandinsky_video.pt", video_movq.config)
    torch.save(image_movq.official_state_dict(), tmp_path / "movq.pt")
    with pytest.raises(CheckpointError, match=r"missing keys .*temporal"):
        MoVQ.from_pretrained(tmp_path / "movq.pt", video_movq.config)
    with pytest.raises(CheckpointError, match="shape mismatches"):  # a tiny file read as the official size
        MoVQ.from_pretrained(tmp_path / "movq.pt")


def test_kvideo_file_of_another_model_is_rejected(tmp_path: Path) -> None:
    save_safetensors(tmp_path / "unet.safetensors", {"w": torch.zeros(1)}, {"model_type": "unet", "config": "{}"})
    with pytest.raises(CheckpointError, match="not a movq"):
        MoVQ.from_pretrained(tmp_path / "unet.safetensors")
