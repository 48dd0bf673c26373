"""Video-decoder objective: reconstruction of pixel clips through the frozen encoder and the trained decoder."""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.train.config import TrainConfig
from kvideo.train.data import VideoTextDataset, collate_clips
from kvideo.train.task import Task, select_trainable

LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


class Reconstruction(nn.Module):
    """frames -> frozen encoder (no gradient) -> latents (+ noise) -> decoder, one temporal window per clip."""

    def __init__(self, movq: MoVQ) -> None:
        super().__init__()
        self.movq = movq

    def forward(self, frames: torch.Tensor, noise_std: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """(b, 3, f, H, W) in [-1, 1] -> (b, 3, f, H, W), unclamped. With `noise_std` (b,), each clip's
        latents get Gaussian noise of that std: a sampler's latents are never exact, and the decoder
        must not amplify the difference."""
        with torch.no_grad():
            latents = self.movq.encode(frames)  # (b, z, f, h, w), scaled by latent_scale
        if noise_std is not None:
            noise = torch.randn(latents.shape, generator=generator).to(latents)
            latents = latents + noise * noise_std.to(latents)[:, None, None, None, None]
        return self.movq.decode(latents, window=frames.shape[2], clamp=False)


def decoder_loss(module: nn.Module, batch: dict[str, Any], generator: torch.Generator, *, kind: str,
                 latent_noise: float = 0.0) -> torch.Tensor:
    """Reconstruction loss; with `latent_noise`, each clip's latents get Gaussian noise of a std drawn
    uniformly from [0, latent_noise], so the decoder also stays exact on clean latents."""
    frames = batch["frames"]
    if not latent_noise:
        return LOSSES[kind](module(frames).float(), frames)
    std = torch.rand(frames.shape[0], generator=generator) * latent_noise
    return LOSSES[kind](module(frames, std, generator).float(), frames)


def load_movq(cfg: TrainConfig, *, video: bool = True) -> MoVQ:
    """The MoVQ to train: `cfg.model` (a video MoVQ, or an image MoVQ inflated to the video preset
    `cfg.model_preset`), or a random `cfg.model_preset` model. `video` says which kind the task trains."""
    preset = MoVQConfig.preset(cfg.model_preset) if cfg.model_preset else None
    if cfg.model:
        checkpoint = MoVQ.read_checkpoint(cfg.model)
        image_to_video = video and preset is not None and preset.is_video and not checkpoint.config.is_video
        if image_to_video:
            movq = MoVQ.inflate(checkpoint.state, replace(preset, **_spatial_fields(checkpoint.config)))
        else:
            movq = MoVQ.from_checkpoint(checkpoint, preset if checkpoint.metadata.get("config") is None else None)
    elif preset is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            movq = MoVQ(preset)
    else:
        raise ValueError("give model=<MoVQ checkpoint> (or model_preset=<MoVQ preset> for random weights)")
    if movq.config.is_video != video:
        raise ValueError(f"the {cfg.task} task trains {'a video' if video else 'an image'} MoVQ; the model is "
                         f"{'a video' if movq.config.is_video else 'an image'} MoVQ"
                         + (": inflate it with model_preset=<video preset> (e.g. official-video)" if video else ""))
    return movq


def _spatial_fields(config: MoVQConfig) -> dict:
    """The fields of an image MoVQ config that its inflated video model keeps."""
    return {f.name: getattr(config, f.name) for f in fields(config)
            if f.name not in ("temporal", "temporal_kernel_size", "temporal_attention", "attention_latent")}


def freeze_encoder(movq: MoVQ) -> None:
    """train=all trains the decoder side only: encoder and quant_conv stay frozen."""
    movq.encoder.requires_grad_(False)
    movq.quant_conv.requires_grad_(False)


def build(cfg: TrainConfig) -> Task:
    if cfg.gradient_checkpointing:
        raise ValueError("gradient_checkpointing is not available for the MoVQ decoder; set it to false")
    if not cfg.data or not cfg.captions:
        raise ValueError("the decoder trains on videos: give data=<video folder> and captions=<CSV / JSONL list>")
    dataset = VideoTextDataset.from_captions(cfg.captions, cfg.data, cfg.clip, seed=cfg.seed,
                                             progress=cfg.progress)
    movq = load_movq(cfg)
    select_trainable(movq, cfg.train)
    freeze_encoder(movq)

    def loss(module, batch, generator):
        return decoder_loss(module, batch, generator, kind=cfg.decoder_loss, latent_noise=cfg.latent_noise)

    return Task("decoder", movq, Reconstruction(movq), loss, dataset, collate_clips, "frames")
