"""Shared pieces of the training tests: a synthetic video set, tiny models and caches (and a check of them)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.unet import UNet, UNetConfig
from kvideo.train.cache import build_cache
from kvideo.train.config import CacheConfig, ClipConfig, TrainConfig
from synthetic_videos import write_synthetic_set

CONTEXT_DIM = 24  # the tiny UNet presets' context_dim
SMALL_UNET = dict(dim_mult=(1, 2), num_blocks=(2, 2), add_cross_attention=(False, True),
                  add_self_attention=(False, True))  # two levels: fast on a CPU, latents divisible by 2


@pytest.fixture(autouse=True)
def one_thread():
    """Two CPU cores are shared by several test runs: one thread per test is faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_movq(seed: int = 0, preset: str = "tiny") -> MoVQ:
    torch.manual_seed(seed)
    return MoVQ(MoVQConfig.preset(preset)).eval()


def fake_text(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic stand-in text encoder: one row per word (values from the word), + 1 padding row."""
    length = max(len(c.split()) for c in captions) + 1
    context = torch.zeros(len(captions), length, CONTEXT_DIM)
    mask = torch.zeros(len(captions), length, dtype=torch.bool)
    for i, caption in enumerate(captions):
        for j, word in enumerate(caption.split()):
            generator = torch.Generator().manual_seed(sum(map(ord, word)))
            context[i, j] = torch.randn(CONTEXT_DIM, generator=generator)
            mask[i, j] = True
    return context, mask


def write_videos(folder: Path, num_videos: int = 4, num_frames: int = 40, fps: float = 24) -> Path:
    return write_synthetic_set(folder, num_videos, num_frames=num_frames, fps=fps, height=72, width=96)


def make_cache(folder: Path, captions: Path, task: str = "keyframe", **clip) -> Path:
    values = dict(keyframes=3, height=64, width=64, max_skip=2) | clip
    config = CacheConfig(videos=str(captions.parent), captions=str(captions), output=str(folder), shard_size=3,
                         batch_size=2, clip=ClipConfig(task=task, **values), progress=False)
    with torch.no_grad():
        return build_cache(config, tiny_movq().encode, fake_text if task == "keyframe" else None)


def save_unet(path: Path, kind: str = "keyframe", seed: int = 0, **overrides) -> Path:
    """A tiny UNet file standing in for a pretrained one: its zero-initialised spatial layers (the
    time-conditioned norms) get small random values, so the time embedding reaches the output."""
    torch.manual_seed(seed)
    unet = UNet(UNetConfig.preset(f"tiny-{kind}", **(SMALL_UNET | overrides)))
    temporal = {id(p) for p in unet.temporal_parameters()}
    with torch.no_grad():
        for p in unet.parameters():
            if id(p) not in temporal and not p.any():
                p.normal_(0, 0.05)
    unet.save_pretrained(path, extras={"null_embedding": torch.randn(CONTEXT_DIM)})
    return path


def train_config(tmp: Path, task: str = "keyframe", **values) -> TrainConfig:
    base = dict(output_dir=str(tmp / "run"), steps=4, save_every=2, progress=False, tensorboard=False)
    return TrainConfig.preset(f"tiny-{task}", **(base | values))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Captions of 4 synthetic 40-frame 24 fps videos (moving squares)."""
    return write_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def keyframe_setup(tmp_path_factory, videos):
    """(cache folder, UNet checkpoint) for keyframe training."""
    folder = tmp_path_factory.mktemp("keyframe")
    return make_cache(folder / "cache", videos), save_unet(folder / "unet.safetensors")


def test_synthetic_videos_are_readable(videos):
    from kvideo.video_io import read_frames, video_info

    info = video_info(videos.parent / "video-000.mp4")
    assert (info.num_frames, round(info.fps), info.height, info.width) == (40, 24, 72, 96)
    frames = read_frames(videos.parent / "video-000.mp4", [0, 20])
    assert frames.shape == (2, 72, 96, 3) and not (frames[0] == frames[1]).all()  # the square moves
