"""MoVQ latent autoencoder (factor 8): the image model and the Kandinsky Video 1.1 video decoder."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn
from tqdm.auto import tqdm

from kvideo.attention import attention
from kvideo.checkpoint import CheckpointError, KeyRenames, check_keys, guess_checkpoint_kind
from kvideo.config import Config, check, check_sizes
from kvideo.models import temporal
from kvideo.models.base import Checkpoint, PretrainedModel
from kvideo.models.layers import TemporalConvMix
from kvideo.models.temporal import TemporalModule

ATTENTION_LATENTS = ("frame", "window_first")
NORM_EPS = 1e-6
# Options of the reference constructor that kvideo does not implement, with the value it supports.
_UNSUPPORTED_REFERENCE_OPTIONS = {
    "double_z": False, "dropout": 0.0, "add_conv": False, "give_pre_end": False, "resamp_with_conv": True,
    "temporal_mid_blocks": True, "build_3D_decoder": False, "temporal_blocks": False, "flicker_augmentation": False,
}


@dataclasses.dataclass(frozen=True)
class MoVQConfig(Config):
    """Architecture of a MoVQ: encoder and decoder widths, attention levels, the video decoder's parts.

    `temporal` adds a 3D conv mix after each decoder ResNet conv; `temporal_attention` adds a
    temporal attention block after each decoder attention block. `attention_latent` is the latent
    that conditions the spatial-attention norms of the decoder: each frame's own ("frame"), or the
    first frame of its temporal window for every frame ("window_first", what the release 1.1
    video decoder computes and was trained with).
    """

    in_channels: int = 3
    out_channels: int = 3
    channels: int = 256
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2  # per encoder level; the decoder has one more
    attention_levels: tuple[bool, ...] = (False, False, False, True)
    latent_channels: int = 4
    groups: int = 32
    temporal: bool = False
    temporal_kernel_size: tuple[int, int, int] = (3, 3, 3)
    temporal_attention: bool = False
    attention_latent: str = "frame"
    # encode multiplies its latents by this, decode divides: it puts the diffusion latents where the
    # samplers' thresholding expects them (|x0| mostly <= 1). The released MoVQs use 1.
    latent_scale: float = 1.0

    def validate(self) -> None:
        check_sizes(self, ("in_channels", "out_channels", "channels", "channel_mult", "latent_channels", "groups",
                           "temporal_kernel_size"))
        levels = len(self.channel_mult)
        check(levels >= 1, f"MoVQConfig.channel_mult={self.channel_mult} needs at least one level")
        check(len(self.attention_levels) == levels,
              f"MoVQConfig.attention_levels={self.attention_levels} needs one entry per level ({levels})")
        for width in (self.channels, *self.level_channels):
            check(width % self.groups == 0, f"MoVQConfig: {width} channels are not divisible by groups={self.groups}")
        check(self.num_res_blocks >= 1, f"MoVQConfig.num_res_blocks={self.num_res_blocks} must be >= 1")
        check(len(self.temporal_kernel_size) == 3 and all(k >= 1 and k % 2 for k in self.temporal_kernel_size),
              f"MoVQConfig.temporal_kernel_size={self.temporal_kernel_size} must be three odd sizes (f, h, w)")
        check(self.latent_scale > 0 and math.isfinite(self.latent_scale),
              f"MoVQConfig.latent_scale={self.latent_scale} must be a finite number > 0")
        check(self.attention_latent in ATTENTION_LATENTS,
              f"MoVQConfig.attention_latent={self.attention_latent!r}; expected one of {ATTENTION_LATENTS}")

    @property
    def level_channels(self) -> list[int]:
        return [self.channels * m for m in self.channel_mult]

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def is_video(self) -> bool:
        return self.temporal or self.temporal_attention

    @classmethod
    def from_reference(cls, kwargs: Mapping[str, Any]) -> "MoVQConfig":
        """From the reference constructor's `generator_params` (golden files, official_checkpoints.json)."""
        for name, supported in _UNSUPPORTED_REFERENCE_OPTIONS.items():
            if name in kwargs and kwargs[name] != supported:
                raise ValueError(f"reference MoVQ option {name}={kwargs[name]!r} is not supported (only {supported!r})")
        kernel = tuple(kwargs.get("temporal_kernel_size", (3, 3, 3)))
        padding = tuple(kwargs.get("temporal_conv_padding", [k // 2 for k in kernel]))
        if padding != tuple(k // 2 for k in kernel):
            raise ValueError(f"temporal_conv_padding={padding} is not the 'same' padding of kernel {kernel}")
        levels = range(len(kwargs["ch_mult"]))
        video = bool(kwargs.get("temporal", False))
        return cls(
            in_channels=kwargs["in_channels"], out_channels=kwargs["out_ch"], channels=kwargs["ch"],
            channel_mult=tuple(kwargs["ch_mult"]), num_res_blocks=kwargs["num_res_blocks"],
            attention_levels=tuple(kwargs["resolution"] // 2 ** i in kwargs["attn_resolutions"] for i in levels),
            latent_channels=kwargs["z_channels"], temporal=video, temporal_kernel_size=kernel,
            temporal_attention=bool(kwargs.get("temporal_attention_block", False)),
            attention_latent="window_first" if video else "frame",
        )


_VIDEO = dict(temporal=True, temporal_attention=True, attention_latent="window_first")
MoVQConfig.register_preset("official")
MoVQConfig.register_preset("official-video", **_VIDEO)
_TINY = dict(channels=8, num_res_blocks=1, groups=4)
MoVQConfig.register_preset("tiny", **_TINY)
MoVQConfig.register_preset("tiny-video", **_TINY, **_VIDEO)
# The shapes model's presets are in kvideo.shapes.presets.


@dataclasses.dataclass
class LatentCondition:
    """What decoder blocks read besides features: the raw latents and the temporal window length."""

    latent: torch.Tensor  # ((n f), z, h, w): each row's own latent
    attention_latent: torch.Tensor  # ((n f), z, h, w): the latent of the spatial-attention norms
    num_frames: int  # f: frames per temporal window


# -- layers ------------------------------------------------------------------------------------------
class SpatialNorm(nn.Module):
    """GroupNorm, then ·conv_y(zq) + conv_b(zq) with zq the latent resized (nearest) to the features."""

    def __init__(self, channels: int, groups: int, latent_channels: int | None = None) -> None:
        super().__init__()
        self.norm_layer = nn.GroupNorm(groups, channels, eps=NORM_EPS)
        if latent_channels is not None:
            self.conv_y = nn.Conv2d(latent_channels, channels, 1)
            self.conv_b = nn.Conv2d(latent_channels, channels, 1)

    def forward(self, x: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        out = self.norm_layer(x)
        if latent is None:
            return out
        latent = F.interpolate(latent, size=x.shape[-2:], mode="nearest")  # (n, z, h, w) at the feature size
        return out * self.conv_y(latent) + self.conv_b(latent)


class ResnetBlock(nn.Module):
    """norm -> SiLU -> conv -> [temporal mix] -> norm -> SiLU -> conv -> [temporal mix], plus a 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, latent_channels: int | None = None,
                 temporal_kernel: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        self.norm1 = SpatialNorm(in_channels, groups, latent_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = SpatialNorm(out_channels, groups, latent_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.nin_shortcut = nn.Identity()
        video = temporal_kernel is not None
        self.temporal1 = TemporalConvMix(out_channels, temporal_kernel) if video else None
        self.temporal2 = TemporalConvMix(out_channels, temporal_kernel) if video else None

    def forward(self, x: torch.Tensor, cond: LatentCondition | None = None) -> torch.Tensor:
        latent = None if cond is None else cond.latent
        h = self.conv1(F.silu(self.norm1(x, latent)))  # (n, out, h, w)
        if self.temporal1 is not None:
            h = self.temporal1(h, cond.num_frames)
        h = self.conv2(F.silu(self.norm2(h, latent)))
        if self.temporal2 is not None:
            h = self.temporal2(h, cond.num_frames)
        return self.nin_shortcut(x) + h


class _QKVAttention(nn.Module):
    """norm, then 1x1-conv query / key / value / output projections of a single-head attention."""

    def __init__(self, channels: int, groups: int, latent_channels: int | None = None) -> None:
        super().__init__()
        self.norm = SpatialNorm(channels, groups, latent_channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)


class AttentionBlock(_QKVAttention):
    """norm -> self-attention over the pixels of each frame (one head, scale c^-0.5) -> residual."""

    def forward(self, x: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        height, width = x.shape[-2:]
        out = self.norm(x, latent)
        q, k, v = (rearrange(proj(out), "n c h w -> n 1 (h w) c") for proj in (self.q, self.k, self.v))
        out = attention(q, k, v)  # (n, 1, hw, c)
        return x + self.proj_out(rearrange(out, "n 1 (h w) c -> n c h w", h=height, w=width))


class TemporalAttentionBlock(_QKVAttention, TemporalModule):
    """norm -> attention over the frames of each window at every pixel -> residual (proj_out zeroed at init).

    The norm is a plain GroupNorm: the reference builds conv_y / conv_b for it but never passes it the
    latent, so they are kept (the official checkpoint holds them) and unused.
    """

    def __init__(self, channels: int, groups: int, latent_channels: int | None = None) -> None:
        super().__init__(channels, groups, latent_channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        height, width = x.shape[-2:]
        out = self.norm(x)
        q, k, v = (rearrange(proj(out), "(b f) c h w -> (b h w) 1 f c", f=num_frames)
                   for proj in (self.q, self.k, self.v))
        out = attention(q, k, v)  # ((b h w), 1, f, c)
        return x + self.proj_out(rearrange(out, "(b h w) 1 f c -> (b f) c h w", h=height, w=width))


class Downsample(nn.Module):
    """Pad right and bottom by one, then a 3x3 conv with stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (n, c, h/2, w/2)


class Upsample(nn.Module):
    """Nearest x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (n, c, 2h, 2w)


# -- encoder and decoder -------------------------------------------------------------------------------
class EncoderLevel(nn.Module):
    def __init__(self, cfg: MoVQConfig, level: int, in_channels: int) -> None:
        super().__init__()
        width, count = cfg.level_channels[level], cfg.num_res_blocks
        self.block = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else width, width, cfg.groups) for i in range(count)
        )
        self.attn = nn.ModuleList(
            AttentionBlock(width, cfg.groups) for _ in range(count if cfg.attention_levels[level] else 0)
        )
        if level != len(cfg.channel_mult) - 1:
            self.downsample = Downsample(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.block):
            x = block(x)
            if self.attn:
                x = self.attn[index](x)
        return self.downsample(x) if hasattr(self, "downsample") else x


class MidBlock(nn.Module):
    """ResNet, attention, [temporal attention], ResNet at the lowest resolution."""

    def __init__(self, cfg: MoVQConfig, latent_channels: int | None = None, video: bool = False) -> None:
        super().__init__()
        width = cfg.level_channels[-1]
        kernel = cfg.temporal_kernel_size if video and cfg.temporal else None
        self.block_1 = ResnetBlock(width, width, cfg.groups, latent_channels, kernel)
        self.attn_1 = AttentionBlock(width, cfg.groups, latent_channels)
        if video and cfg.temporal_attention:
            self.temporal_attn_1 = TemporalAttentionBlock(width, cfg.groups, latent_channels)
        self.block_2 = ResnetBlock(width, width, cfg.groups, latent_channels, kernel)

    def forward(self, x: torch.Tensor, cond: LatentCondition | None = None) -> torch.Tensor:
        x = self.attn_1(self.block_1(x, cond), None if cond is None else cond.attention_latent)
        if hasattr(self, "temporal_attn_1"):
            x = self.temporal_attn_1(x, cond.num_frames)
        return self.block_2(x, cond)


class Encoder(nn.Module):
    """Images (n, in, H, W) -> (n, z, H/8, W/8) before the quant conv."""

    def __init__(self, cfg: MoVQConfig) -> None:
        super().__init__()
        widths = [cfg.channels, *cfg.level_channels]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.channels, 3, padding=1)
        self.down = nn.ModuleList(EncoderLevel(cfg, level, widths[level]) for level in range(len(cfg.channel_mult)))
        self.mid = MidBlock(cfg)
        self.norm_out = SpatialNorm(widths[-1], cfg.groups)
        self.conv_out = nn.Conv2d(widths[-1], cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)  # (n, c_level, h, w), halved except on the last level
        x = self.mid(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class DecoderLevel(nn.Module):
    def __init__(self, cfg: MoVQConfig, level: int, in_channels: int) -> None:
        super().__init__()
        width, count, z = cfg.level_channels[level], cfg.num_res_blocks + 1, cfg.latent_channels
        kernel = cfg.temporal_kernel_size if cfg.temporal else None
        self.block = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else width, width, cfg.groups, z, kernel) for i in range(count)
        )
        attention_count = count if cfg.attention_levels[level] else 0
        self.attn = nn.ModuleList(AttentionBlock(width, cfg.groups, z) for _ in range(attention_count))
        temporal_count = attention_count if cfg.temporal_attention else 0
        self.temporal_attn = nn.ModuleList(TemporalAttentionBlock(width, cfg.groups, z) for _ in range(temporal_count))
        if level != 0:
            self.upsample = Upsample(width)

    def forward(self, x: torch.Tensor, cond: LatentCondition) -> torch.Tensor:
        for index, block in enumerate(self.block):
            x = block(x, cond)
            if self.attn:
                x = self.attn[index](x, cond.attention_latent)
            if self.temporal_attn:
                x = self.temporal_attn[index](x, cond.num_frames)
        return self.upsample(x) if hasattr(self, "upsample") else x


class Decoder(nn.Module):
    """post-quant latents ((n f), z, h, w) -> ((n f), out, 8h, 8w), every norm conditioned on the raw latent."""

    def __init__(self, cfg: MoVQConfig) -> None:
        super().__init__()
        widths = cfg.level_channels
        self.conv_in = nn.Conv2d(cfg.latent_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(cfg, cfg.latent_channels, video=True)
        inputs = [*widths[1:], widths[-1]]  # level i receives the output of level i + 1
        self.up = nn.ModuleList(DecoderLevel(cfg, level, inputs[level]) for level in range(len(widths)))
        self.norm_out = SpatialNorm(widths[0], cfg.groups, cfg.latent_channels)
        self.conv_out = nn.Conv2d(widths[0], cfg.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: LatentCondition) -> torch.Tensor:
        x = self.mid(self.conv_in(x), cond)  # (n, c_last, h, w)
        for level in reversed(self.up):
            x = level(x, cond)  # doubled in size except on level 0
        return self.conv_out(F.silu(self.norm_out(x, cond.latent)))


# -- windows and tiles ---------------------------------------------------------------------------------
def reference_window(num_frames: int) -> int:
    """The reference's window: `video.chunk(num_frames // 4)`, i.e. ceil(f / (f // 4)) frames (all if f < 4)."""
    return math.ceil(num_frames / max(1, num_frames // 4))


def split_windows(num_frames: int, window: int | None = None) -> list[int]:
    """Lengths of the consecutive temporal windows of a clip: full windows, then the remainder."""
    return [length for length, count in window_groups(num_frames, window) for _ in range(count)]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of length `tile` covering `size` with at least `overlap` shared; the last ends at size."""
    starts = list(range(0, size - tile, tile - overlap))
    return starts + [size - tile]


def _blend_ramp(length: int, ramp: int) -> torch.Tensor:
    """Tile weights along one axis: rising over `ramp` samples at both ends, 1 inside, never 0."""
    index = torch.arange(length, dtype=torch.float32)
    edge = torch.minimum(index + 1, length - index)
    return (edge / (ramp + 1)).clamp(max=1.0) if ramp > 0 else torch.ones(length)


# Output pixels per decoder pass by default: 10 frames at 512x512. Measured on an H100 with the official
# video decoder (bf16, 57 frames): 2 windows of 5 frames per pass decode as fast as 4 (4.37 s vs 4.38 s)
# at half the peak (13.1 vs 25.9 GB); all 12 windows at once needed more than the 80 GB card.
DECODE_PIXELS_PER_PASS = 10 * 512 * 512


def decode_halving_on_oom(decode: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, num_frames: int,
                          per_pass: int | None = None, done: Callable[[int], Any] | None = None) -> torch.Tensor:
    """Decode ((n f), ...) windows of `num_frames` rows, `per_pass` windows per pass (default all).

    On a CUDA out-of-memory error the windows per pass are halved (the result does not depend on it)
    and the smaller size is kept for the rest; one window that does not fit re-raises the error.
    `done(k)` is called after each pass with the k windows it decoded (a progress bar's update).
    """
    windows = rows.shape[0] // num_frames
    per_pass, start, outs = min(windows, per_pass or windows), 0, []
    while start < windows:
        chunk = rows[start * num_frames:(start + per_pass) * num_frames]
        try:
            out = decode(chunk)
        except torch.OutOfMemoryError:
            if per_pass == 1:
                raise
            out = None
        if out is None:  # outside the handler, so that the failed pass's tensors are freed
            per_pass = (per_pass + 1) // 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        outs.append(out)
        start += chunk.shape[0] // num_frames
        if done is not None:
            done(chunk.shape[0] // num_frames)
    return torch.cat(outs)


def decode_tiled(decode: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, tile: tuple[int, int],
                 overlap: int, scale: int) -> torch.Tensor:
    """Decode (n, z, h, w) in overlapping (th, tw) tiles and blend them linearly over the overlap.

    `decode` maps (n, z, th, tw) -> (n, c, scale·th, scale·tw); tiles run one after another.
    """
    (height, width), (th, tw) = latents.shape[-2:], tile
    out = weight_sum = None
    weights = _blend_ramp(th * scale, overlap * scale)[:, None] * _blend_ramp(tw * scale, overlap * scale)[None, :]
    for top in tile_starts(height, th, overlap):
        for left in tile_starts(width, tw, overlap):
            pixels = decode(latents[..., top:top + th, left:left + tw]).float()  # (n, c, scale·th, scale·tw)
            if out is None:
                out = pixels.new_zeros(*pixels.shape[:2], height * scale, width * scale)
                weight_sum = pixels.new_zeros(height * scale, width * scale)
                weights = weights.to(pixels.device)
            rows, cols = slice(top * scale, (top + th) * scale), slice(left * scale, (left + tw) * scale)
            out[..., rows, cols] += pixels * weights
            weight_sum[rows, cols] += weights
    return out / weight_sum


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 0..255 in the same layout (rounded; the reference truncates)."""
    return ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


# -- the model -----------------------------------------------------------------------------------------
class MoVQ(PretrainedModel):
    """MoVQ autoencoder: `encode` pixels in [-1, 1] to latents, `decode` latents to pixels.

    Images are (n, 3, H, W) <-> (n, 4, H/8, W/8), videos (b, 3, f, H, W) <-> (b, 4, f, H/8, W/8).
    A video config decodes clips in temporal windows, all windows of one length batched together.
    """

    model_type = "movq"
    config_class = MoVQConfig
    # The blocks `torch.compile` takes one at a time (kvideo.compilation.compile_blocks): the levels repeat them
    REPEATED_BLOCKS = (ResnetBlock, AttentionBlock, TemporalAttentionBlock, Upsample)
    renames = KeyRenames(tuple(
        (f"temporal_{part}{n}", f"temporal{n}.{ours}")
        for n in (1, 2) for part, ours in (("projection", "conv"), ("merge", "merge"))
    ))

    def __init__(self, config: MoVQConfig) -> None:
        super().__init__(config)
        z = config.latent_channels
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(z, z, 1)
        self.post_quant_conv = nn.Conv2d(z, z, 1)
        self.decoder = Decoder(config)

    # -- encoding ------------------------------------------------------------------------------------
    def encode(self, frames: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """(n, 3, H, W) or (b, 3, f, H, W) pixels in [-1, 1] -> latents (n, 4, h, w) / (b, 4, f, h, w).

        `batch_size` bounds the frames per encoder pass (memory); the result does not depend on it.
        """
        self._check_frames(frames)
        rows = rearrange(frames, "b c f h w -> (b f) c h w") if frames.dim() == 5 else frames
        rows = rows.to(self._dtype)
        step = batch_size or rows.shape[0]
        latents = torch.cat([self.quant_conv(self.encoder(chunk)) for chunk in rows.split(step)]).float()
        latents = latents * self.config.latent_scale
        if frames.dim() == 5:
            return rearrange(latents, "(b f) c h w -> b c f h w", b=frames.shape[0])
        return latents


    # -- decoding ------------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor, *, window: int | None = None, tile: int | tuple[int, int] | None = None,
               tile_overlap: int = 4, windows_per_batch: int | None = None, clamp: bool = True,
               progress: bool = False) -> torch.Tensor:
        """Latents (n, 4, h, w) or (b, 4, f, h, w) -> float32 pixels (n, 3, 8h, 8w) / (b, 3, f, 8h, 8w).

        window: frames per temporal window of the video decoder; default the reference's,
            `reference_window(f)` (5 for 57 frames). Windows of one length run as one batch.
            Images (4-d input) are one-frame windows; the image model decodes every frame alone.
        tile, tile_overlap: decode in overlapping spatial tiles of `tile` latent pixels (8·tile output
            pixels), blended linearly over the overlap; a tile as large as the latent is plain decoding.
        windows_per_batch: at most this many windows (or images) per decoder pass, to bound memory;
            the result does not depend on it. Default: about 10 frames of 512x512 per pass
            (DECODE_PIXELS_PER_PASS), halved after a CUDA out-of-memory error.
        clamp: clip to [-1, 1] (False returns the decoder's raw output).
        progress: one tqdm bar over all the windows of the batch (the result does not depend on it).
        """
        self._check_latents(latents)
        latents = latents / self.config.latent_scale if self.config.latent_scale != 1 else latents
        tile_size = self._check_decode_options(latents, window, tile, tile_overlap, windows_per_batch)
        video = latents.dim() == 5
        clips = latents if video else latents[:, :, None]  # (b, z, f, h, w)
        window = window if self.config.is_video else 1
        windows = clips.shape[0] * sum(count for _, count in window_groups(clips.shape[2], window))
        with tqdm(total=windows, desc="decoding", unit="window", disable=not progress) as bar:
            out = self._decode_clips(clips, window, tile_size, tile_overlap, windows_per_batch, bar.update)
        out = out if video else out[:, :, 0]
        return out.clamp(-1, 1) if clamp else out

    def _decode_clips(self, clips: torch.Tensor, window: int | None, tile, overlap: int,
                      windows_per_batch: int | None, done: Callable[[int], Any]) -> torch.Tensor:
        """(b, z, f, h, w) -> (b, out, f, H, W): the windows of each length decoded as one folded batch."""
        parts, start = [], 0
        for length, count in window_groups(clips.shape[2], window):
            part = clips[:, :, start:start + length * count]
            rows = rearrange(part, "b c (n f) h w -> (b n f) c h w", f=length)
            out = self._decode_rows(rows, length, tile, overlap, windows_per_batch, done)
            parts.append(rearrange(out, "(b n f) c h w -> b c (n f) h w", b=clips.shape[0], f=length))
            start += length * count
        return torch.cat(parts, dim=2)

    def _decode_rows(self, rows: torch.Tensor, num_frames: int, tile, overlap: int,
                     windows_per_batch: int | None, done: Callable[[int], Any]) -> torch.Tensor:
        """((n f), z, h, w) windows of `num_frames` rows -> ((n f), out, H, W), a bounded number per pass."""
        def decode(latents: torch.Tensor) -> torch.Tensor:
            return self._decode_folded(latents, num_frames)

        def decode_chunk(chunk: torch.Tensor) -> torch.Tensor:
            return decode(chunk) if tile is None else decode_tiled(decode, chunk, tile, overlap,
                                                                   self.config.downsample_factor)

        if windows_per_batch is None:  # a bounded pass, halved further if the GPU runs out of memory
            pixels = num_frames * rows.shape[-2] * rows.shape[-1] * self.config.downsample_factor ** 2
            return decode_halving_on_oom(decode_chunk, rows, num_frames,
                                         per_pass=max(1, DECODE_PIXELS_PER_PASS // pixels), done=done)
        outs = []
        for chunk in rows.split(windows_per_batch * num_frames):
            outs.append(decode_chunk(chunk))
            done(chunk.shape[0] // num_frames)
        return torch.cat(outs)

    def _decode_folded(self, latents: torch.Tensor, num_frames: int) -> torch.Tensor:
        """((n f), z, h, w) -> ((n f), out, H, W) float32, f frames per temporal window."""
        latents = latents.to(self._dtype)
        cond = LatentCondition(latents, self._attention_latent(latents, num_frames), num_frames)
        return self.decoder(self.post_quant_conv(latents), cond).float()

    def _attention_latent(self, latents: torch.Tensor, num_frames: int) -> torch.Tensor:
        if self.config.attention_latent == "frame":
            return latents
        first = rearrange(latents, "(b f) c h w -> b f c h w", f=num_frames)[:, 0]
        return repeat(first, "b c h w -> (b f) c h w", f=num_frames)

    @property
    def _dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype

    # -- input checks --------------------------------------------------------------------------------
    def _check_frames(self, frames: torch.Tensor) -> None:
        cfg, factor = self.config, self.config.downsample_factor
        if not torch.is_tensor(frames) or frames.dim() not in (4, 5) or not frames.is_floating_point():
            raise ValueError(f"frames must be float (n, {cfg.in_channels}, H, W) images or (b, {cfg.in_channels}, "
                             f"f, H, W) videos in [-1, 1]; got {_describe(frames)}")
        if frames.shape[1] != cfg.in_channels:
            raise ValueError(f"frames have {frames.shape[1]} channels; this MoVQ encodes {cfg.in_channels} "
                             "(channels come second: (n, c, H, W) or (b, c, f, H, W))")
        height, width = frames.shape[-2:]
        if height % factor or width % factor or not (height and width and frames.shape[0]):
            raise ValueError(f"cannot encode frames of {height}x{width} pixels: the size must be a positive "
                             f"multiple of {factor} (the latent is 1/{factor} of it)")

    def _check_latents(self, latents: torch.Tensor) -> None:
        z = self.config.latent_channels
        if not torch.is_tensor(latents) or latents.dim() not in (4, 5) or not latents.is_floating_point():
            raise ValueError(f"latents must be float (n, {z}, h, w) images or (b, {z}, f, h, w) videos; "
                             f"got {_describe(latents)}")
        if latents.shape[1] != z:
            raise ValueError(f"latents have {latents.shape[1]} channels; this MoVQ decodes {z}-channel latents "
                             "(channels come second: (n, c, h, w) or (b, c, f, h, w))")
        if 0 in latents.shape:
            raise ValueError(f"cannot decode latents of shape {tuple(latents.shape)}: every size must be >= 1")

    def _check_decode_options(self, latents: torch.Tensor, window, tile, overlap: int,
                              windows_per_batch) -> tuple[int, int] | None:
        if window is not None and window < 1:
            raise ValueError(f"window={window}: a temporal window needs >= 1 frame (None = the reference's windows)")
        if windows_per_batch is not None and windows_per_batch < 1:
            raise ValueError(f"windows_per_batch={windows_per_batch} must be >= 1 (None = all at once)")
        if tile is None:
            return None
        size = tuple(latents.shape[-2:])
        tile = (tile, tile) if isinstance(tile, int) else tuple(tile)
        factor = self.config.downsample_factor
        if min(tile) < 1 or tile[0] > size[0] or tile[1] > size[1]:
            raise ValueError(f"tile={tile} latent pixels does not fit the latent size {size} ({size[0] * factor}x"
                             f"{size[1] * factor} pixels): use 1 <= tile <= {min(size)}, or tile=None")
        if not 0 <= overlap < min(tile):
            raise ValueError(f"tile_overlap={overlap} must be >= 0 and smaller than the tile {tile}")
        return tile

    # -- temporal parts ------------------------------------------------------------------------------
    def freeze_spatial(self) -> "MoVQ":
        return temporal.freeze_spatial(self)

    def temporal_parameters(self):
        return temporal.temporal_parameters(self)

    def temporal_state_dict(self) -> dict[str, torch.Tensor]:
        return temporal.temporal_state_dict(self)

    @classmethod
    def inflate(cls, image_state: Mapping[str, torch.Tensor], config: MoVQConfig) -> "MoVQ":
        """A video MoVQ whose spatial weights are an image MoVQ's state dict (kvideo or official names).

        The temporal parts start as the identity, so with attention_latent="frame" the result decodes
        every frame exactly as the image model does.
        """
        if not config.is_video:
            raise ValueError("inflate builds a video MoVQ: the config needs temporal=True or temporal_attention=True")
        model = cls(config)
        spatial = {k: v for k, v in model.state_dict().items() if k not in model.temporal_state_dict()}
        check_keys(spatial, cls.renames.state_to_kvideo(image_state), what=f"the spatial part of {model.describe()}")
        model.load_state_dict(cls.renames.state_to_kvideo(image_state), strict=False)
        return model

    # -- official checkpoints ------------------------------------------------------------------------
    @classmethod
    def split_official(cls, contents: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """`movq.pt` / `video_movq.pt` hold a flat state dict with `encoder.*` and `decoder.*` keys."""
        nested = {k: v for k, v in contents.items() if isinstance(v, Mapping)}
        if nested or not any(k.startswith("decoder.") for k in contents):
            raise CheckpointError(
                f"not a MoVQ checkpoint (movq.pt / video_movq.pt): it looks like {_guess_kind(contents)}; "
                "load it with the model it belongs to"
            )
        return dict(contents), {}

    @classmethod
    def read_checkpoint(cls, path: str | Path) -> Checkpoint:
        """As PretrainedModel; an official file gets the official config its keys show (image or video)."""
        checkpoint = super().read_checkpoint(path)
        if checkpoint.config is None:
            checkpoint.config = official_config_for(checkpoint.state)
        return checkpoint

    @classmethod
    def default_official_config(cls) -> MoVQConfig:
        return MoVQConfig.preset("official")


def window_groups(num_frames: int, window: int | None = None) -> list[tuple[int, int]]:
    """`(length, count)` of the windows of a clip, in order: full windows, then the remainder."""
    window = reference_window(num_frames) if window is None else min(window, num_frames)
    full, rest = divmod(num_frames, window)
    return [(window, full)] + ([(rest, 1)] if rest else [])


def official_config_for(state: Mapping[str, Any]) -> MoVQConfig:
    """The official config whose layout a state dict has: 'official-video' if it holds temporal layers."""
    video = any(".temporal" in key for key in state)
    return MoVQConfig.preset("official-video" if video else "official")


def convert_official(source: str | Path, target: str | Path, config: MoVQConfig | None = None) -> MoVQ:
    """Official `movq.pt` / `video_movq.pt` -> a kvideo safetensors file (weights + config)."""
    model = MoVQ.from_pretrained(source, config)
    model.save_pretrained(target)
    return model


def _guess_kind(contents: Mapping[str, Any]) -> str:
    """What an official file that is not a MoVQ holds, for the error message."""
    for name, value in contents.items():
        if isinstance(value, Mapping):
            return f"{guess_checkpoint_kind(value) or 'a checkpoint'} (state under {name!r})"
    return guess_checkpoint_kind(contents) or f"a state dict without MoVQ keys (first keys {sorted(contents)[:4]})"


def _describe(value: Any) -> str:
    if torch.is_tensor(value):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
