"""Keyframe objective: eps- (or v-) prediction at a random timestep, spatial weights frozen, 10 % empty-text
dropout (optionally min-SNR-gamma weighted: `snr_gamma`; noisy steps drawn more often: `timestep_shift`;
object latents weighted up: `detail_weight`)."""
from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import nn

from kvideo.diffusion import Schedule, cosine_schedule, diffusion_mse, diffusion_target, q_sample, sample_timesteps
from kvideo.text import null_context
from kvideo.train.cache import LatentCache, collate_cached
from kvideo.train.config import TrainConfig
from kvideo.train.movq import detail_weights
from kvideo.train.task import Task, load_unet, select_trainable, unet_shard_types


def drop_text(context: torch.Tensor, mask: torch.Tensor, null_embedding: torch.Tensor, prob: float,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the text of a random `prob` share of the batch by the null context (for guidance)."""
    b, n = mask.shape
    drop = (torch.rand(b, generator=generator) < prob).to(context.device)  # (b,)
    null, null_mask = null_context(null_embedding.to(context.device, context.dtype), b, n)
    return torch.where(drop[:, None, None], null, context), torch.where(drop[:, None], null_mask, mask)


def latent_detail_weights(latents: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-position loss weights (b, 1, f, h, w) of clean latents (b, c, f, h, w): 1 + weight x the
    position's largest channel distance from its frame's median latent. A small object on a plain
    background then weighs more than its area; its shape is otherwise a tiny share of the loss."""
    b = latents.shape[0]
    frames = rearrange(latents.float(), "b c f h w -> (b f) c h w")
    return rearrange(detail_weights(frames, weight), "(b f) 1 h w -> b 1 f h w", b=b)


def keyframe_loss(model: nn.Module, batch: dict[str, Any], generator: torch.Generator, *, schedule: Schedule,
                  null_embedding: torch.Tensor, uncond_prob: float, snr_gamma: float = 0.0,
                  prediction: str = "eps", timestep_shift: float = 1.0, detail_weight: float = 0.0) -> torch.Tensor:
    """MSE between the UNet's output and the noise added to the clean keyframe latents at a random t
    (`prediction` "eps"), or v = alpha·eps - sigma·x0 ("v"); min-SNR-gamma weighted when `snr_gamma` > 0;
    t uniform, or drawn noisier with `timestep_shift` > 1 (`kvideo.diffusion.sample_timesteps`);
    object latents weighted by `latent_detail_weights` when `detail_weight` > 0."""
    x0 = batch["latents"]  # (b, c, f, h, w)
    b, f = x0.shape[0], x0.shape[2]
    t = sample_timesteps(b, len(schedule), generator, timestep_shift).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = q_sample(x0, t, schedule, noise)
    context, mask = drop_text(batch["context"], batch["context_mask"], null_embedding, uncond_prob, generator)
    positions = torch.arange(f, device=x0.device)[None] * batch["step"][:, None]  # (b, f) reference frames
    output = model(x_t, t * schedule.time_scale, context, mask, frame_positions=positions)
    weights = latent_detail_weights(x0, detail_weight) if detail_weight else None
    return diffusion_mse(output, diffusion_target(x0, noise, t, schedule, prediction), t, schedule, snr_gamma,
                         prediction, weights)


def check_cache(cache: LatentCache, task: str, latent_channels: int) -> None:
    if cache.task != task:
        raise ValueError(f"the cache {str(cache.folder)!r} was built for task={cache.task!r}, not {task!r}; "
                         f"build one with `kvideo train cache --clip.task {task}`")
    channels = cache[0]["latents"].shape[0]
    if channels != latent_channels:
        raise ValueError(f"the cache holds {channels}-channel latents; the model takes {latent_channels}")


def build(cfg: TrainConfig, kind: str = "keyframe") -> Task:
    """The keyframe task; with kind="image", the same objective on a text-to-image UNet, each frame of
    the cached keyframe clips an image of its own."""
    cache = LatentCache(cfg.data)  # data first: a bad folder fails before a large model loads
    unet, extras = load_unet(cfg, kind)
    check_cache(cache, "keyframe", unet.config.latent_channels)
    if not cache.has_text:
        raise ValueError(f"the cache {cfg.data!r} has no text embeddings; rebuild it with a text encoder")
    select_trainable(unet, cfg.train)
    unet.set_gradient_checkpointing(cfg.gradient_checkpointing)
    schedule = cosine_schedule(cfg.num_train_timesteps)
    null_embedding = extras["null_embedding"]

    def loss(module, batch, generator):
        return keyframe_loss(module, batch, generator, schedule=schedule, null_embedding=null_embedding,
                             uncond_prob=cfg.uncond_prob, snr_gamma=cfg.snr_gamma, prediction=unet.config.predicts,
                             timestep_shift=cfg.timestep_shift, detail_weight=cfg.detail_weight)

    return Task(kind, unet, unet, loss, cache, collate_cached, "latents", extras, unet_shard_types())
