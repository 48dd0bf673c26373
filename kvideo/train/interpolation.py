"""Interpolation objective: v-prediction of the frames between keyframes, perturbed / dropped keyframes."""
from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import nn

from kvideo.diffusion import Schedule, cosine_schedule, diffusion_mse, diffusion_target, q_sample, sample_timesteps
from kvideo.text import null_context
from kvideo.train.cache import LatentCache, collate_cached
from kvideo.train.config import TrainConfig
from kvideo.train.keyframe import check_cache
from kvideo.train.task import Task, load_unet, select_trainable, unet_shard_types

CONTEXT_TOKENS = 2  # the release's interpolation context: the null embedding + one padding row


def split_clip(latents: torch.Tensor, between: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, c, F, h, w), F = (between+1)(K-1)+1 -> keyframes (b, c, K, h, w) and the frames between
    each pair stacked on channels (b, between·c, K-1, h, w), frame-major as the model predicts them."""
    keyframes = latents[:, :, ::between + 1]
    groups = rearrange(latents[:, :, :-1], "b c (g k) h w -> b c g k h w", k=between + 1)
    middle = rearrange(groups[:, :, :, 1:], "b c g k h w -> b (k c) g h w")
    return keyframes, middle


def interpolation_inputs(keyframes: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """[left keyframe | noisy middle frames | right keyframe] per pair: (b, c + k·c + c, g, h, w)."""
    return torch.cat([keyframes[:, :, :-1], noisy, keyframes[:, :, 1:]], dim=1)


def interpolation_loss(model: nn.Module, batch: dict[str, Any], generator: torch.Generator, *, schedule: Schedule,
                       null_embedding: torch.Tensor, uncond_prob: float, max_perturbation: int,
                       between: int, snr_gamma: float = 0.0, timestep_shift: float = 1.0) -> torch.Tensor:
    """MSE to v = alpha·eps - sigma·x0 of the middle frames; the keyframes are noised to a random
    perturbation level in 0..max_perturbation and zeroed for a random `uncond_prob` share
    (min-SNR-gamma weighted when `snr_gamma` > 0; t drawn noisier when `timestep_shift` > 1)."""
    keyframes, x0 = split_clip(batch["latents"], between)
    b, device = x0.shape[0], x0.device
    t = sample_timesteps(b, len(schedule), generator, timestep_shift).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    t_p = torch.randint(max_perturbation + 1, (b,), generator=generator).to(device)
    keyframes = q_sample(keyframes, t_p, schedule, torch.randn(keyframes.shape, generator=generator).to(device))
    keep = (torch.rand(b, generator=generator) >= uncond_prob).to(device, keyframes.dtype)
    x = interpolation_inputs(keyframes * keep[:, None, None, None, None], q_sample(x0, t, schedule, noise))
    context, mask = null_context(null_embedding.to(device), b, CONTEXT_TOKENS)
    v = model(x, t * schedule.time_scale, context, mask, skip_frames=batch["step"],
              perturbation_time=t_p * schedule.time_scale)
    return diffusion_mse(v, diffusion_target(x0, noise, t, schedule, "v"), t, schedule, snr_gamma, "v")


def build(cfg: TrainConfig) -> Task:
    cache = LatentCache(cfg.data)  # data first: a bad folder fails before a large model loads
    unet, extras = load_unet(cfg, "interpolation")
    check_cache(cache, "interpolation", unet.config.latent_channels)
    between = unet.config.interpolated_frames
    frames = cache[0]["latents"].shape[1]
    if frames < between + 2 or (frames - 1) % (between + 1):
        raise ValueError(f"cached clips have {frames} frames; the model fills {between} frames between keyframes, "
                         f"so clips need (keyframes - 1)·{between + 1} + 1 frames (set clip.interpolated_frames)")
    select_trainable(unet, cfg.train)
    unet.set_gradient_checkpointing(cfg.gradient_checkpointing)
    schedule = cosine_schedule(cfg.num_train_timesteps)

    def loss(module, batch, generator):
        return interpolation_loss(module, batch, generator, schedule=schedule, null_embedding=extras["null_embedding"],
                                  uncond_prob=cfg.uncond_prob, max_perturbation=cfg.max_perturbation,
                                  between=between, snr_gamma=cfg.snr_gamma, timestep_shift=cfg.timestep_shift)

    return Task("interpolation", unet, unet, loss, cache, collate_cached, "latents", extras,
                unet_shard_types())
