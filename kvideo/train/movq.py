"""Image MoVQ objective: an autoencoder trained from scratch on video frames, latents kept near unit scale.

Kandinsky Video's MoVQ has no quantiser and no scaling factor: the diffusion models see its raw
latents. A MoVQ trained here therefore keeps its latents standardised (per channel, over the batch)
with a moment penalty, and learns to decode latents with a little noise added, as sampled latents
have; the loss is pixel L1 + MSE, optionally weighted towards detail (`detail_weight`).
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from einops import rearrange
from torch import nn

from kvideo.models.movq import MoVQ
from kvideo.train.config import TrainConfig
from kvideo.train.data import VideoTextDataset, collate_clips
from kvideo.train.decoder import load_movq
from kvideo.train.task import Task

LATENT_NOISE = 0.1  # std of the Gaussian noise added to the latents before decoding
MOMENT_WEIGHT = 0.1  # weight of the penalty that keeps each latent channel at mean 0, variance 1


class Autoencoder(nn.Module):
    """frames -> encoder -> latents (+ noise) -> decoder, every frame on its own."""

    def __init__(self, movq: MoVQ) -> None:
        super().__init__()
        self.movq = movq

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 3, H, W) in [-1, 1] -> (reconstruction (n, 3, H, W), latents (n, z, h, w))."""
        latents = self.movq.quant_conv(self.movq.encoder(images)) * self.movq.config.latent_scale  # (n, z, h, w)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        return self.movq.decode(latents + LATENT_NOISE * noise, clamp=False), latents


def moment_penalty(latents: torch.Tensor) -> torch.Tensor:
    """Mean over channels of mean² + (variance - 1)², statistics taken over batch and pixels."""
    flat = rearrange(latents.float(), "n z h w -> z (n h w)")
    return (flat.mean(dim=1).pow(2) + (flat.var(dim=1) - 1).pow(2)).mean()


def random_crop(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One random size x size window of (n, c, H, W) images (the same for all); size 0: the images."""
    if not size:
        return images
    top, left = (int(torch.randint(limit - size + 1, (), generator=generator)) for limit in images.shape[-2:])
    return images[..., top:top + size, left:left + size]


def detail_weights(images: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weights (n, 1, H, W): 1 + weight x the pixel's largest channel distance from its
    image's median colour. Small objects on plain backgrounds then count as much as they matter, not
    as little as their area (with plain weights they are learnt last, and colours come out wrong)."""
    median = images.flatten(2).median(dim=2).values[..., None, None]  # (n, c, 1, 1)
    return 1 + weight * (images - median).abs().amax(dim=1, keepdim=True)


def movq_loss(module: nn.Module, batch: dict[str, Any], generator: torch.Generator, *,
              crop_size: int = 0, detail_weight: float = 0.0) -> torch.Tensor:
    """Pixel L1 + MSE of the reconstruction (detail-weighted), plus the latent moment penalty."""
    images = random_crop(rearrange(batch["frames"], "b c f h w -> (b f) c h w"), crop_size, generator)
    decoded, latents = module(images, generator)
    error = decoded.float() - images
    weights = detail_weights(images, detail_weight) if detail_weight else torch.ones_like(images[:, :1])
    pixel = (weights * (error.abs() + error.pow(2))).mean()
    return pixel + MOMENT_WEIGHT * moment_penalty(latents)


def build(cfg: TrainConfig) -> Task:
    if cfg.train != "all":
        raise ValueError(f"train={cfg.train!r}: the image MoVQ has no temporal layers; use train=all")
    if cfg.gradient_checkpointing:
        raise ValueError("gradient_checkpointing is not available for the MoVQ; set it to false")
    if not cfg.data or not cfg.captions:
        raise ValueError("the MoVQ trains on video frames: give data=<video folder> and captions=<CSV / JSONL list> "
                         "(e.g. from `kvideo data shapes`)")
    dataset = VideoTextDataset.from_captions(cfg.captions, cfg.data, cfg.clip, seed=cfg.seed, progress=cfg.progress)
    movq = load_movq(cfg, video=False)
    movq.requires_grad_(True)
    if cfg.crop_size % movq.config.downsample_factor:
        raise ValueError(f"crop_size={cfg.crop_size} is not a multiple of the MoVQ's factor "
                         f"{movq.config.downsample_factor}")
    loss = functools.partial(movq_loss, crop_size=cfg.crop_size, detail_weight=cfg.detail_weight)
    return Task("movq", movq, Autoencoder(movq), loss, dataset, collate_clips, "frames")
