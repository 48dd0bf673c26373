"""Latent / text caches: round trip against the encoders, resumable shards, settings checks, the T5 path."""
from __future__ import annotations

import json

import pytest
import torch

from kvideo.train.cache import INDEX, LatentCache, build_cache, collate_cached, pad_contexts, run_cache
from kvideo.train.config import CacheConfig, ClipConfig
from kvideo.train.data import VideoTextDataset
from test_train_helpers import (  # noqa: F401 (fixtures)
    CONTEXT_DIM, fake_text, make_cache, one_thread, save_unet, tiny_movq, videos,
)


def cache_config(videos, output, **values) -> CacheConfig:
    clip = ClipConfig(task="keyframe", keyframes=3, height=64, width=64)
    base = dict(videos=str(videos.parent), captions=str(videos), output=str(output), shard_size=3, batch_size=2,
                clips_per_video=2, clip=clip, progress=False)
    return CacheConfig(**(base | values))


def test_cache_round_trips_the_encoders_outputs(videos, tmp_path):
    config = cache_config(videos, tmp_path / "cache")
    movq = tiny_movq()
    with torch.no_grad():
        build_cache(config, movq.encode, fake_text)
    cache = LatentCache(tmp_path / "cache")
    assert len(cache) == 8 and cache.task == "keyframe" and cache.has_text
    dataset = VideoTextDataset.from_captions(videos, None, config.clip, seed=config.seed)
    for number, (video, draw) in enumerate([(0, 0), (0, 1), (3, 1)]):
        item = cache[video * 2 + draw]
        clip = dataset.sample(video, draw)
        with torch.no_grad():
            expected = movq.encode(clip["frames"][None])[0]
        assert item["latents"].shape == (4, 3, 8, 8) and item["step"] == clip["step"] == 12
        torch.testing.assert_close(item["latents"], expected, atol=2e-3, rtol=2e-3)  # stored as float16
        context, mask = fake_text([clip["caption"]])
        words = int(mask.sum())
        assert item["context"].shape == (words + 1, CONTEXT_DIM)
        torch.testing.assert_close(item["context"][:words], context[0, :words].half().float())
        assert item["context"][words].abs().sum() == 0 and item["caption"] == clip["caption"]


def test_cache_resumes_after_a_crash(videos, tmp_path):
    config = cache_config(videos, tmp_path / "cache")
    encoded = []

    def encode(frames):
        encoded.append(frames.shape[0])
        return frames[:, :4, :, ::8, ::8]

    build_cache(config, encode, fake_text)
    before = LatentCache(tmp_path / "cache")
    first = [before[i]["latents"] for i in range(len(before))]
    index = json.loads((tmp_path / "cache" / INDEX).read_text())
    del index["shards"]["shard-00001.safetensors"]  # as if the run died while writing shard 1
    (tmp_path / "cache" / INDEX).write_text(json.dumps(index))
    (tmp_path / "cache" / "shard-00001.safetensors").unlink()
    kept = (tmp_path / "cache" / "shard-00000.safetensors").stat().st_mtime_ns
    encoded.clear()
    build_cache(config, encode, fake_text)
    assert sum(encoded) == 3  # only shard 1 (3 clips) was encoded again
    assert (tmp_path / "cache" / "shard-00000.safetensors").stat().st_mtime_ns == kept
    after = LatentCache(tmp_path / "cache")
    assert all(torch.equal(a, after[i]["latents"]) for i, a in enumerate(first))


def test_resuming_with_other_settings_is_an_error(videos, tmp_path):
    build_cache(cache_config(videos, tmp_path / "cache"), lambda f: f[:, :4, :, ::8, ::8], fake_text)
    with pytest.raises(ValueError, match=r"other settings \(\['clips_per_video'\]\)"):
        build_cache(cache_config(videos, tmp_path / "cache", clips_per_video=3), lambda f: f, fake_text)


def test_interpolation_cache_holds_33_frame_style_clips_without_text(videos, tmp_path):
    folder = make_cache(tmp_path / "cache", videos, task="interpolation")
    cache = LatentCache(folder)
    assert cache.task == "interpolation" and not cache.has_text
    steps = {cache[i]["step"] for i in range(len(cache))}
    assert cache[0]["latents"].shape == (4, 9, 8, 8) and steps <= {1, 2}
    batch = collate_cached([cache[0], cache[1]])
    assert batch["latents"].shape == (2, 4, 9, 8, 8) and "context" not in batch


def test_collate_pads_contexts_and_masks_the_padding():
    context, mask = pad_contexts([torch.ones(3, 2), torch.ones(5, 2)])
    assert context.shape == (2, 5, 2) and mask.tolist() == [[True, True, False, False, False], [True] * 4 + [False]]
    assert context[0, 3:].abs().sum() == 0


def test_missing_cache_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a training cache"):
        LatentCache(tmp_path)


def test_cache_command_path_with_a_t5_encoder_and_movq_checkpoint(videos, tmp_path):
    """`kvideo train cache` as the CLI runs it: MoVQ checkpoint, local T5 folder, projection from the UNet file."""
    from kvideo.text import TextProjection, write_tiny_t5

    t5 = write_tiny_t5(tmp_path / "t5", d_model=16)
    tiny_movq().save_pretrained(tmp_path / "movq.safetensors")
    unet_path = save_unet(tmp_path / "unet.safetensors")  # null_embedding extra, no projection yet
    from kvideo.models.unet import UNet

    unet = UNet.from_pretrained(unet_path)
    projection = TextProjection(16, CONTEXT_DIM)
    extras = {"null_embedding": torch.randn(CONTEXT_DIM),
              **{f"projections.{k}": v for k, v in projection.state_dict().items()}}
    unet.save_pretrained(tmp_path / "unet.safetensors", extras=extras)
    config = cache_config(videos, tmp_path / "cache", movq=str(tmp_path / "movq.safetensors"), text_encoder=str(t5),
                          text_checkpoint=str(tmp_path / "unet.safetensors"), clips_per_video=1, device="cpu")
    cache = LatentCache(run_cache(config))
    item = cache[0]
    assert len(cache) == 4 and item["context"].shape[-1] == CONTEXT_DIM
    assert item["context"][-1].abs().sum() == 0 and item["context"][:-1].abs().sum() > 0
    with pytest.raises(ValueError, match="text_encoder=<T5 folder>"):
        run_cache(cache_config(videos, tmp_path / "other", movq=str(tmp_path / "movq.safetensors")))
