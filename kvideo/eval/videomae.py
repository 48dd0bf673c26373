"""VideoMAE-v2 ViT (the layout of OpenGVLab's fine-tuned checkpoints): the feature network of content-debiased FVD."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from kvideo.config import Config, check
from kvideo.eval.networks import DetectorNetwork

VIDEOMAE_HINT = (
    "content-debiased FVD needs VideoMAE-v2 ViT-g/14 fine-tuned on SSv2, vit_g_hybrid_pt_1200e_ssv2_ft.pth "
    "(https://huggingface.co/OpenGVLab/InternVideoMAE_models, folder mae-g), as used by Ge et al. (CVPR 2024)"
)


@dataclasses.dataclass(frozen=True)
class VideoMAEConfig(Config):
    """A VideoMAE-v2 ViT with mean pooling (fc_norm) and a classification head. The official preset is
    `vit_giant_patch14_224` with the SSv2 head (174 classes); `tiny` has the same layout, small."""

    image_size: int = 224
    patch_size: int = 14
    num_frames: int = 16
    tubelet_size: int = 2
    embed_dim: int = 1408
    depth: int = 40
    num_heads: int = 16
    mlp_dim: int = 6144  # int(1408 * 48 / 11)
    num_classes: int = 174
    layer_norm_eps: float = 1e-6

    def validate(self) -> None:
        check(self.image_size % self.patch_size == 0, f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        check(self.num_frames % self.tubelet_size == 0, f"num_frames {self.num_frames} must be a multiple of tubelet_size {self.tubelet_size}")
        check(self.embed_dim % self.num_heads == 0, f"embed_dim {self.embed_dim} must be a multiple of num_heads {self.num_heads}")
        check(self.embed_dim % 2 == 0, f"embed_dim must be even (sine-cosine positions), got {self.embed_dim}")
        check(self.depth >= 1 and self.mlp_dim >= 1, f"depth and mlp_dim must be >= 1, got {self.depth}, {self.mlp_dim}")

    @property
    def num_patches(self) -> int:
        return (self.num_frames // self.tubelet_size) * (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "VideoMAEConfig":
        """Widths, depth, patch and tubelet sizes from the shapes (heads, frames and size: the official ones)."""
        for key in ("patch_embed.proj.weight", "blocks.0.mlp.fc1.weight", "fc_norm.weight", "head.weight"):
            if key not in state:
                raise ValueError(f"not a VideoMAE-v2 fine-tuned state dict: key {key!r} is missing")
        embed, _, tubelet, patch, _ = state["patch_embed.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        return cls(patch_size=patch, tubelet_size=tubelet, embed_dim=embed, depth=depth,
                   mlp_dim=state["blocks.0.mlp.fc1.weight"].shape[0], num_classes=state["head.weight"].shape[0])


VideoMAEConfig.register_preset("official")
VideoMAEConfig.register_preset("tiny", image_size=28, patch_size=14, num_frames=4, embed_dim=16, depth=2,
                               num_heads=2, mlp_dim=24, num_classes=5)


def sinusoid_positions(num_positions: int, dim: int, device=None) -> torch.Tensor:
    """The fixed sine-cosine table (num_positions, dim): sin on even, cos on odd channels, 10000^(2i/d)."""
    position = torch.arange(num_positions, dtype=torch.float64, device=device)[:, None]
    rate = torch.pow(10000.0, -2 * (torch.arange(dim, device=device) // 2).double() / dim)
    angle = position * rate  # (n, dim)
    table = torch.where(torch.arange(dim, device=device) % 2 == 0, angle.sin(), angle.cos())
    return table.float()


class Attention(nn.Module):
    """Multi-head self-attention with a bias on q and v only (none on k), as VideoMAE-v2."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = rearrange(F.linear(x, self.qkv.weight, bias), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (b, h, n, d)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (no layer scale: the ViT-g checkpoints have none)."""

    def __init__(self, config: VideoMAEConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.attn = Attention(config.embed_dim, config.num_heads)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.mlp = Mlp(config.embed_dim, config.mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, config: VideoMAEConfig) -> None:
        super().__init__()
        kernel = (config.tubelet_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(3, config.embed_dim, kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(x), "b d t h w -> b (t h w) d")  # (b, patches, dim)


class VideoMAEv2(DetectorNetwork):
    """VideoMAE-v2 ViT, key names as OpenGVLab's `vit_giant_patch14_224` checkpoints.

    Input: (b, 3, num_frames, image_size, image_size) in [0, 1] (content-debiased FVD feeds it without
    mean / std normalisation). `features` is the 1408-d fc_norm(mean over tokens), the cd-FVD feature.
    """

    model_type = "videomae"
    config_class = VideoMAEConfig

    def __init__(self, config: VideoMAEConfig) -> None:
        super().__init__(config)
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.fc_norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.embed_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, f, s, s) -> (b, embed_dim): the layer-normed mean of the last tokens."""
        self._check_input(x)
        tokens = self.patch_embed(x)  # (b, n, d)
        tokens = tokens + sinusoid_positions(tokens.shape[1], tokens.shape[2], tokens.device).to(tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens)
        return self.fc_norm(tokens.mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, f, s, s) -> class logits (b, num_classes)."""
        return self.head(self.features(x))

    def _check_input(self, x: torch.Tensor) -> None:
        c = self.config
        expected = (3, c.num_frames, c.image_size, c.image_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"VideoMAE-v2 takes (b, {', '.join(map(str, expected))}) clips in [0, 1], got {tuple(x.shape)}")

    @classmethod
    def split_official(cls, contents: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """OpenGVLab files nest the weights under `model` or `module`."""
        for key in ("model", "module"):
            if key in contents and isinstance(contents[key], Mapping):
                contents = contents[key]
                break
        return {k: v for k, v in contents.items() if isinstance(v, torch.Tensor)}, {}

    @classmethod
    def default_official_config(cls) -> VideoMAEConfig:
        return VideoMAEConfig.preset("official")

