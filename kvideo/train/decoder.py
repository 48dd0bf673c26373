"""Video-decoder objective: reconstruction of pixel clips through the frozen encoder and the trained decoder."""
from __future__ import annotations

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
    """frames -> frozen encoder (no gradient) -> decoder, one temporal window per clip."""

    def __init__(self, movq: MoVQ) -> None:
        super().__init__()
        self.movq = movq

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(b, 3, f, H, W) in [-1, 1] -> (b, 3, f, H, W), unclamped."""
        with torch.no_grad():
            latents = self.movq.encode(frames)  # (b, 4, f, h, w)
        return self.movq.decode(latents, window=frames.shape[2], clamp=False)


def decoder_loss(module: nn.Module, batch: dict[str, Any], generator: torch.Generator, *, kind: str) -> torch.Tensor:
    frames = batch["frames"]
    return LOSSES[kind](module(frames).float(), frames)


def load_movq(cfg: TrainConfig) -> MoVQ:
    if cfg.model:
        config = MoVQConfig.preset(cfg.model_preset) if cfg.model_preset else None
        movq = MoVQ.from_pretrained(cfg.model, config)
    elif cfg.model_preset:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            movq = MoVQ(MoVQConfig.preset(cfg.model_preset))
    else:
        raise ValueError("give model=<video MoVQ checkpoint> (or model_preset=<MoVQ preset> for random weights)")
    if not movq.config.is_video:
        raise ValueError("the decoder task trains a video MoVQ (temporal layers); the model is an image MoVQ: "
                         "inflate it (MoVQ.inflate) or use model_preset=official-video")
    return movq


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
        return decoder_loss(module, batch, generator, kind=cfg.decoder_loss)

    return Task("decoder", movq, Reconstruction(movq), loss, dataset, collate_clips, "frames")
