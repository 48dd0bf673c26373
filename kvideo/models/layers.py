"""Building blocks of the Kandinsky 3.0 UNet and their temporal (video) counterparts."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from kvideo.attention import attention
from kvideo.models.temporal import TemporalModule


@dataclass
class Conditioning:
    """Everything a UNet block may read besides its input, for one folded batch `(b f)`."""

    time: torch.Tensor  # (b f, time_embed_dim)
    num_frames: int  # frames (keyframe model) or temporal groups (interpolation model) per sample
    context: torch.Tensor | None = None  # (b f, n, context_dim)
    context_mask: torch.Tensor | None = None  # (b f, n) bool, True = attend
    frames: torch.Tensor | None = None  # (b f, time_embed_dim) what temporal attention's first norm reads
    temporal_time: torch.Tensor | None = None  # (b f, time_embed_dim) the other temporal norms' input (None: time)
    temporal_mask: torch.Tensor | None = None  # (b f,) scales every temporal merge (release 1.1 interpolation)
    video: bool = True  # False: image mode, the temporal layers are skipped

    @property
    def temporal_norm_input(self) -> torch.Tensor:
        """The embedding that conditions temporal ResNets and feed-forwards: time (1.0), time + frame
        position + augmentation + motion embeddings (1.1 keyframes)."""
        return self.time if self.temporal_time is None else self.temporal_time


class Skip(nn.Module):
    """Placeholder that keeps the official module indices where a level has no such block."""

    def forward(self, x: torch.Tensor, cond: Conditioning | None = None) -> torch.Tensor:
        return x


def sinusoidal_embedding(values: torch.Tensor, dim: int) -> torch.Tensor:
    """[sin(v·f), cos(v·f)] with f_j = exp(-j·ln(10000)/(dim/2 - 1)); (n,) -> (n, dim)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=values.device) * (-math.log(10000) / (half - 1)))
    args = values.float()[:, None] * freqs[None, :]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class SinusoidalEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding(values, self.dim)


class ScalarEmbedding(nn.Sequential):
    """Scalar (timestep, frame position, ...) -> sinusoid -> Linear -> SiLU -> Linear."""

    def __init__(self, sinusoid_dim: int, embed_dim: int) -> None:
        super().__init__(
            SinusoidalEmbedding(sinusoid_dim),
            nn.Linear(sinusoid_dim, embed_dim),
            nn.SiLU(),
            nn.Linear(embed_dim, embed_dim),
        )


class ConditionalGroupNorm(nn.Module):
    """GroupNorm without affine, then ·(1 + scale) + shift predicted from an embedding."""

    def __init__(self, groups: int, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.context_mlp = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, 2 * channels))
        nn.init.zeros_(self.context_mlp[1].weight)
        nn.init.zeros_(self.context_mlp[1].bias)

    def forward(self, x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        scale, shift = self.context_mlp(embed).chunk(2, dim=1)  # (n, c) each
        expand = (...,) + (None,) * (x.dim() - 2)
        return self.norm(x) * (scale[expand] + 1.0) + shift[expand]


class Attention(nn.Module):
    """Multi-head attention without biases; queries from `x`, keys/values from `context`."""

    def __init__(self, in_channels: int, out_channels: int, context_dim: int, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.to_query = nn.Linear(in_channels, out_channels, bias=False)
        self.to_key = nn.Linear(context_dim, out_channels, bias=False)
        self.to_value = nn.Linear(context_dim, out_channels, bias=False)
        self.output_layer = nn.Linear(out_channels, out_channels, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = (
            rearrange(layer(src), "b n (h d) -> b h n d", d=self.head_dim)
            for layer, src in ((self.to_query, x), (self.to_key, context), (self.to_value, context))
        )
        out = attention(q, k, v, None if mask is None else mask.bool())  # (b, h, n, d)
        return self.output_layer(rearrange(out, "b h n d -> b n (h d)"))


class AttentionPooling(nn.Module):
    """Adds to the time embedding an attention read-out of the text, queried by its mean token."""

    def __init__(self, embed_dim: int, context_dim: int, head_dim: int) -> None:
        super().__init__()
        self.attention = Attention(context_dim, embed_dim, context_dim, head_dim)

    def forward(self, embed: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        pooled = self.attention(context.mean(dim=1, keepdim=True), context, mask)  # (b, 1, embed_dim)
        return embed + pooled[:, 0]


def feed_forward(channels: int, expansion_ratio: int) -> nn.Sequential:
    hidden = expansion_ratio * channels
    return nn.Sequential(
        nn.Conv2d(channels, hidden, kernel_size=1, bias=False),
        nn.SiLU(),
        nn.Conv2d(hidden, channels, kernel_size=1, bias=False),
    )


class AttentionBlock(nn.Module):
    """norm -> self- or cross-attention -> residual; norm -> 1x1 feed-forward -> residual."""

    def __init__(self, channels: int, embed_dim: int, context_dim: int | None, groups: int, head_dim: int,
                 expansion_ratio: int) -> None:
        super().__init__()
        self.cross = context_dim is not None
        self.in_norm = ConditionalGroupNorm(groups, channels, embed_dim)
        self.attention = Attention(channels, channels, context_dim or channels, head_dim)
        self.out_norm = ConditionalGroupNorm(groups, channels, embed_dim)
        self.feed_forward = feed_forward(channels, expansion_ratio)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        height, width = x.shape[-2:]
        out = rearrange(self.in_norm(x, cond.time), "n c h w -> n (h w) c")
        if self.cross:
            out = self.attention(out, cond.context, cond.context_mask)
        else:
            out = self.attention(out, out)
        x = x + rearrange(out, "n (h w) c -> n c h w", h=height, w=width)
        return x + self.feed_forward(self.out_norm(x, cond.time))


class TemporalConvMix(TemporalModule):
    """(1 - a)·x + a·Conv3d(x) over (frames, h, w) of each sample; a = 0 and the conv zeroed at init.

    The interpolation UNet uses a (3, 1, 1) kernel, the video MoVQ decoder (3, 3, 3).
    """

    def __init__(self, channels: int, kernel_size: tuple[int, int, int] = (3, 1, 1)) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, kernel_size, padding=tuple(k // 2 for k in kernel_size))
        self.merge = nn.Parameter(torch.zeros(1))
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, num_frames: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`mask` (b f,) scales the merge weight per row (release 1.1: 0 turns the conv off)."""
        out = self.conv(rearrange(x, "(b f) c h w -> b c f h w", f=num_frames))
        out = rearrange(out, "b c f h w -> (b f) c h w")
        merge = self.merge if mask is None else self.merge * mask[:, None, None, None].to(x.dtype)
        return (1 - merge) * x + merge * out


class Block(nn.Module):
    """norm(time) -> SiLU -> [up] -> conv -> [temporal conv mix] -> [down]."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, kernel_size: int, groups: int,
                 resample: str | None = None, temporal: bool = False) -> None:
        super().__init__()
        self.group_norm = ConditionalGroupNorm(groups, in_channels, embed_dim)
        self.activation = nn.SiLU()
        self.up_sample = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2) if resample == "up" else nn.Identity()
        self.projection = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.temporal = TemporalConvMix(out_channels) if temporal else None
        self.down_sample = nn.Conv2d(out_channels, out_channels, 2, stride=2) if resample == "down" else nn.Identity()

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        x = self.up_sample(self.activation(self.group_norm(x, cond.time)))
        x = self.projection(x)
        if self.temporal is not None:
            x = self.temporal(x, cond.num_frames, cond.temporal_mask)
        return self.down_sample(x)


class ResNetBlock(nn.Module):
    """Four Blocks (kernels 1, 3, 3, 1) through a bottleneck, plus a resampled shortcut."""

    KERNELS = (1, 3, 3, 1)
    RESAMPLE_AT = {"up": 1, "down": 2}  # which Block resamples

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, groups: int, compression_ratio: int,
                 resample: str | None = None, temporal: bool = False) -> None:
        super().__init__()
        hidden = max(in_channels, out_channels) // compression_ratio
        dims = [(in_channels, hidden), (hidden, hidden), (hidden, hidden), (hidden, out_channels)]
        where = self.RESAMPLE_AT.get(resample, -1)
        self.resnet_blocks = nn.ModuleList(
            Block(i, o, embed_dim, k, groups, resample if n == where else None, temporal)
            for n, ((i, o), k) in enumerate(zip(dims, self.KERNELS))
        )
        up, down = resample == "up", resample == "down"
        self.shortcut_up_sample = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2) if up else nn.Identity()
        self.shortcut_projection = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )
        self.shortcut_down_sample = nn.Conv2d(out_channels, out_channels, 2, stride=2) if down else nn.Identity()

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        out = x
        for block in self.resnet_blocks:
            out = block(out, cond)
        shortcut = self.shortcut_down_sample(self.shortcut_projection(self.shortcut_up_sample(x)))
        return shortcut + out


class TemporalResNetBlock(TemporalModule):
    """4 x [norm(time) -> SiLU -> Conv3d (k,1,1)], k = 1,3,3,1, through C/2; the last conv starts at 0."""

    KERNELS = (1, 3, 3, 1)

    def __init__(self, channels: int, embed_dim: int, groups: int, compression_ratio: int) -> None:
        super().__init__()
        hidden = channels // compression_ratio
        dims = [(channels, hidden), (hidden, hidden), (hidden, hidden), (hidden, channels)]
        self.temporal_resnet_blocks = nn.ModuleList(
            nn.ModuleList([
                ConditionalGroupNorm(groups, i, embed_dim),
                nn.SiLU(),
                nn.Conv3d(i, o, (k, 1, 1), padding=(k // 2, 0, 0)),
            ])
            for (i, o), k in zip(dims, self.KERNELS)
        )
        last_conv = self.temporal_resnet_blocks[-1][-1]
        nn.init.zeros_(last_conv.weight)
        nn.init.zeros_(last_conv.bias)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        out = x
        for norm, activation, conv in self.temporal_resnet_blocks:
            out = activation(norm(out, cond.temporal_norm_input))  # (b f) c h w
            out = conv(rearrange(out, "(b f) c h w -> b c f h w", f=cond.num_frames))
            out = rearrange(out, "b c f h w -> (b f) c h w")
        return x + out


class TemporalAttentionBlock(TemporalModule):
    """norm(frame position) -> attention over frames at each pixel -> residual; norm(time) -> FF -> residual.

    Release 1.1 conditions both norms on time + frame position + augmentation + motion embeddings
    (`Conditioning.frames` and `temporal_time` carry what each norm reads). Both residual branches
    start at zero, so a fresh block is the identity.
    """

    def __init__(self, channels: int, embed_dim: int, groups: int, head_dim: int, expansion_ratio: int) -> None:
        super().__init__()
        self.in_norm = ConditionalGroupNorm(groups, channels, embed_dim)
        self.temporal_attention = Attention(channels, channels, channels, head_dim)
        self.out_norm = ConditionalGroupNorm(groups, channels, embed_dim)
        self.feed_forward = feed_forward(channels, expansion_ratio)
        nn.init.zeros_(self.temporal_attention.output_layer.weight)
        nn.init.zeros_(self.feed_forward[-1].weight)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        height, width = x.shape[-2:]
        out = self.in_norm(x, cond.frames)
        out = rearrange(out, "(b f) c h w -> (b h w) f c", f=cond.num_frames)
        out = self.temporal_attention(out, out)
        x = x + rearrange(out, "(b h w) f c -> (b f) c h w", h=height, w=width)
        return x + self.feed_forward(self.out_norm(x, cond.temporal_norm_input))


class GatedTemporalAttentionBlock(TemporalModule):
    """Release 1.1 interpolation: attention over the temporal groups at each pixel, then a 1x1
    feed-forward, each mixed in as (1 - m)·x + m·out with m = merge · temporal_mask (per row).

    Both norms read the time embedding; the merges start at 0, so a fresh block is the identity.
    """

    def __init__(self, channels: int, embed_dim: int, groups: int, head_dim: int, expansion_ratio: int) -> None:
        super().__init__()
        self.in_norm = ConditionalGroupNorm(groups, channels, embed_dim)
        self.attention = Attention(channels, channels, channels, head_dim)
        self.out_norm = ConditionalGroupNorm(groups, channels, embed_dim)
        self.feed_forward = feed_forward(channels, expansion_ratio)
        self.temporal_merge1 = nn.Parameter(torch.zeros(1))
        self.temporal_merge2 = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        height, width = x.shape[-2:]
        out = rearrange(self.in_norm(x, cond.time), "(b f) c h w -> (b h w) f c", f=cond.num_frames)
        out = rearrange(self.attention(out, out), "(b h w) f c -> (b f) c h w", h=height, w=width)
        x = self._mix(x, out, self.temporal_merge1, cond.temporal_mask)
        return self._mix(x, self.feed_forward(self.out_norm(x, cond.time)), self.temporal_merge2, cond.temporal_mask)

    @staticmethod
    def _mix(x: torch.Tensor, out: torch.Tensor, merge: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is not None:
            merge = merge * mask[:, None, None, None].to(x.dtype)  # (b f, 1, 1, 1)
        return (1 - merge) * x + merge * out


class TemporalEmbedding(ScalarEmbedding, TemporalModule):
    """A scalar that only the temporal layers see (frame position, augmentation time, motion score)."""


class FramePositionEmbedding(TemporalEmbedding):
    """Frame position (0, 12, 24, ... at 2 fps in 1.0; 0, 1, 2, ... in 1.1) -> embedding for the temporal layers."""


class InterpolationEmbedding(TemporalModule):
    """Mixes a perturbation-level embedding and a skip-frames embedding into the time embedding.

    time <- (1 - m)·time + m·perturbation_embed(t_p); time <- time + s·skip_embeddings(skip);
    m = s = 0 at init.
    """

    def __init__(self, sinusoid_dim: int, embed_dim: int, num_skip_embeddings: int) -> None:
        super().__init__()
        self.perturbation_embed = ScalarEmbedding(sinusoid_dim, embed_dim)
        self.time_merge = nn.Parameter(torch.zeros(1))
        self.skip_merge = nn.Parameter(torch.zeros(1))
        self.skip_embeddings = nn.Embedding(num_skip_embeddings, embed_dim)

    def forward(self, time_embed: torch.Tensor, skip_frames: torch.Tensor,
                perturbation_time: torch.Tensor | None = None) -> torch.Tensor:
        if perturbation_time is None:
            perturbation_time = torch.zeros(time_embed.shape[0], device=time_embed.device)
        perturbation = self.perturbation_embed(perturbation_time)
        time_embed = self.time_merge * perturbation + (1 - self.time_merge) * time_embed
        return time_embed + self.skip_merge * self.skip_embeddings(skip_frames)
