"""The Kandinsky 3.0 UNet family: 2D text-to-image, keyframe (inflated 3D) and interpolation models."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from kvideo.checkpoint import CheckpointError, KeyRenames, check_keys
from kvideo.config import Config, check, check_sizes
from kvideo.models import temporal
from kvideo.models.base import PretrainedModel
from kvideo.models.layers import (
    AttentionBlock,
    AttentionPooling,
    Conditioning,
    FramePositionEmbedding,
    GatedTemporalAttentionBlock,
    InterpolationEmbedding,
    ResNetBlock,
    ScalarEmbedding,
    Skip,
    TemporalAttentionBlock,
    TemporalEmbedding,
    TemporalResNetBlock,
)
from kvideo.models.temporal import TemporalModule

KINDS = ("image", "keyframe", "interpolation")
RELEASES = ("1.0", "1.1")
MODES = ("video", "image")
# Keyword arguments of the 1.1 reference interpolation UNet that kvideo builds only at these values.
_REFERENCE_11_INTERPOLATION = dict(
    time_downsample=(False, False, False, False), temporal=True, use_perturbation_time_embed=True,
    merge_perturbation_time_with_diffusion_time=True, merge_perturbation_time_with_context=False,
    pass_skip_frames=True, temporal_type="conv3D", add_new_temporal_params=False, add_temporal_attention=True,
)


SIZE_FIELDS = ("model_channels", "init_channels", "num_channels", "out_channels", "time_embed_dim", "context_dim",
               "groups", "head_dim", "expansion_ratio", "compression_ratio", "dim_mult", "num_blocks",
               "latent_channels", "num_frames", "frame_stride", "interpolated_frames", "num_skip_embeddings")


@dataclasses.dataclass(frozen=True)
class UNetConfig(Config):
    """Architecture of one UNet of the family; `kind` switches the temporal parts.

    image: the 2D Kandinsky 3.0 UNet. keyframe: + temporal ResNet / attention blocks and the
    frame-position embedding. interpolation: + per-Block temporal convs and the skip-frame /
    perturbation embeddings, with `(interpolated_frames + 2) * latent_channels` input channels.

    `release="1.1"` switches to Kandinsky Video 1.1. keyframe: an `image_in_layer` for image mode
    (the first frame), every temporal layer conditioned on time + frame position (0..T-1) [+
    noise-augmentation time] [+ motion score] embeddings; 9 input channels in the release (noisy,
    first-frame condition, mask). interpolation: text-conditioned, gated temporal attention after
    self-attention, a per-sample temporal mask scaling every temporal merge, and the skip-frame /
    perturbation embeddings applied before the text pooling.
    """

    kind: str = "keyframe"
    model_channels: int = 384
    init_channels: int = 192
    num_channels: int = 4
    out_channels: int = 4
    time_embed_dim: int = 1536
    context_dim: int | None = 4096
    groups: int = 32
    head_dim: int = 64
    expansion_ratio: int = 4
    compression_ratio: int = 2
    dim_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_blocks: tuple[int, ...] = (3, 3, 3, 3)
    add_cross_attention: tuple[bool, ...] = (False, True, True, True)
    add_self_attention: tuple[bool, ...] = (False, True, True, True)
    latent_channels: int = 4
    num_frames: int = 15  # keyframes per clip (the default for generation; not a fixed shape)
    frame_stride: int = 12  # frame-position step between keyframes (every 12th frame of ~24 fps video)
    interpolated_frames: int = 3  # interpolation model: frames predicted between two keyframes
    num_skip_embeddings: int = 20
    release: str = "1.0"
    noise_augmentation: bool = False  # 1.1 keyframe: embed the first frame's noise-augmentation time
    motion_score: bool = False  # 1.1 keyframe: embed the motion score
    # What the network predicts: "" is the release's choice (eps for image / keyframe UNets, v for
    # interpolation UNets); "v" makes an image / keyframe UNet predict v = alpha·eps - sigma·x0, whose
    # x0 stays accurate at high noise, where an eps-predicting UNet's x0 (x_t - sigma·eps) / alpha
    # multiplies every error by sigma / alpha (the layout and motion of a clip are decided there).
    prediction: str = ""
    # Which temporal norms read the frame-position embedding (keyframe UNets): "" is the release's
    # choice (1.0: only the first norm of each temporal attention block, so position reaches the
    # features only through the attention weights; 1.1: every temporal norm, on top of time); "all"
    # gives a 1.0 UNet the 1.1 scheme, every temporal norm reading time + frame position, so that the
    # positions reach the features without first opening the attention path (benchmarks/README.md).
    frame_conditioning: str = ""

    @property
    def predicts(self) -> str:
        """The prediction type, "eps" or "v", that training targets and samplers read."""
        return self.prediction or ("v" if self.kind == "interpolation" else "eps")

    def validate(self) -> None:
        check_sizes(self, SIZE_FIELDS)
        check(self.kind in KINDS, f"UNetConfig.kind={self.kind!r}; expected one of {KINDS}")
        check(self.release in RELEASES, f"UNetConfig.release={self.release!r}; expected one of {RELEASES}")
        check(self.prediction in ("", "eps", "v"),
              f"UNetConfig.prediction={self.prediction!r}; expected 'eps', 'v' or '' (the release's choice)")
        check(self.frame_conditioning in ("", "all"),
              f"UNetConfig.frame_conditioning={self.frame_conditioning!r}; expected 'all' or '' (the release's)")
        check(not self.frame_conditioning or self.kind == "keyframe",
              f"UNetConfig.frame_conditioning={self.frame_conditioning!r} needs kind='keyframe' "
              f"(only keyframe UNets embed frame positions)")
        check(self.kind != "interpolation" or self.predicts == "v",
              "UNetConfig.prediction='eps': interpolation UNets predict v (leave prediction empty)")
        check(self.release == "1.0" or self.kind != "image",
              "UNetConfig: release 1.1 has no separate image UNet (its keyframe UNet has an image mode)")
        for name in ("noise_augmentation", "motion_score"):
            check(not getattr(self, name) or (self.kind, self.release) == ("keyframe", "1.1"),
                  f"UNetConfig.{name}=True needs kind='keyframe' and release='1.1' "
                  f"(got kind={self.kind!r}, release={self.release!r})")
        levels = len(self.dim_mult)
        for name in ("num_blocks", "add_cross_attention", "add_self_attention"):
            check(len(getattr(self, name)) == levels,
                  f"UNetConfig.{name}={getattr(self, name)} must have one entry per level ({levels}, as dim_mult)")
        check(min(self.num_blocks) >= 2, f"UNetConfig.num_blocks={self.num_blocks}: every level needs >= 2 blocks")
        check(self.init_channels % 2 == 0 and self.init_channels >= 4,
              f"UNetConfig.init_channels={self.init_channels} must be even and >= 4 (sinusoidal embedding)")
        self._validate_channels()
        if self.kind == "interpolation":
            self._validate_interpolation()
        if self.kind == "keyframe":
            check(self.num_frames >= 1, f"UNetConfig.num_frames={self.num_frames} must be >= 1")

    def _validate_channels(self) -> None:
        dims = self.level_channels
        for channels in (self.init_channels, *dims, *(c // self.compression_ratio for c in dims)):
            check(channels % self.groups == 0,
                  f"UNetConfig: {channels} channels are not divisible by groups={self.groups}")
        for level, channels in enumerate(dims):
            if self.add_self_attention[level] or self.add_cross_attention[level]:
                check(channels % self.head_dim == 0,
                      f"UNetConfig: level {level} has {channels} channels, not divisible by head_dim={self.head_dim}")
        if self.context_dim is not None:
            check(self.time_embed_dim % self.head_dim == 0,
                  f"UNetConfig.time_embed_dim={self.time_embed_dim} is not divisible by head_dim={self.head_dim}")
        else:
            check(not any(self.add_cross_attention), "UNetConfig: cross-attention needs a context_dim")

    def _validate_interpolation(self) -> None:
        n, c = self.interpolated_frames, self.latent_channels
        check(self.num_channels == (n + 2) * c,
              f"UNetConfig.num_channels={self.num_channels}: an interpolation UNet takes "
              f"(interpolated_frames + 2) * latent_channels = {(n + 2) * c} channels")
        check(self.out_channels == n * c,
              f"UNetConfig.out_channels={self.out_channels}: an interpolation UNet predicts "
              f"interpolated_frames * latent_channels = {n * c} channels")

    @property
    def level_channels(self) -> list[int]:
        return [self.model_channels * m for m in self.dim_mult]

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def has_image_mode(self) -> bool:
        """Whether the model can run in image mode (no temporal layers): image and keyframe UNets."""
        return self.kind != "interpolation"

    @classmethod
    def from_reference(cls, kwargs: Mapping[str, Any], *, release: str = "1.0",
                       kind: str | None = None) -> "UNetConfig":
        """From the reference constructor's keyword arguments (as stored in golden / official configs).

        Release 1.1 configs do not say which model they build: pass `release="1.1"` and `kind`
        ('keyframe' for `t2v.pt`, 'interpolation' for `interpolation.pt`).
        """
        if release == "1.1":
            return cls._from_reference_11(dict(kwargs), kind)
        kwargs = dict(kwargs)
        if kwargs.pop("interpolation", False):
            kind = "interpolation"
            kwargs.pop("num_frames", None)
        else:
            kind = "keyframe" if kwargs.get("num_frames") is not None else "image"
            if kwargs.get("num_frames") is None:
                kwargs.pop("num_frames", None)
        kwargs["init_channels"] = kwargs.get("init_channels") or kwargs["model_channels"]
        return cls(kind=kind, **kwargs)

    @classmethod
    def _from_reference_11(cls, kwargs: dict[str, Any], kind: str | None) -> "UNetConfig":
        check(kind in ("keyframe", "interpolation"),
              f"a release 1.1 reference config needs kind='keyframe' or 'interpolation'; got {kind!r}")
        kwargs["init_channels"] = kwargs.get("init_channels") or kwargs["model_channels"]
        if kind == "keyframe":
            return cls(kind=kind, release="1.1", num_frames=12, frame_stride=1, **kwargs)
        for name, supported in _REFERENCE_11_INTERPOLATION.items():
            value = kwargs.pop(name, supported)
            check((tuple(value) if isinstance(value, list) else value) == supported,
                  f"1.1 interpolation UNet: {name}={value!r} is not supported (kvideo builds {name}={supported!r})")
        return cls(kind=kind, release="1.1", **kwargs)


_OFFICIAL = dict(model_channels=384, init_channels=192, time_embed_dim=1536, context_dim=4096, groups=32, head_dim=64)
_TINY = dict(model_channels=16, init_channels=16, time_embed_dim=32, context_dim=24, groups=4, head_dim=8)
for _size, _values in (("official", _OFFICIAL), ("tiny", _TINY)):
    UNetConfig.register_preset(f"{_size}-image", kind="image", **_values)
    UNetConfig.register_preset(f"{_size}-keyframe", kind="keyframe", **_values)
    UNetConfig.register_preset(f"{_size}-interpolation", kind="interpolation", num_channels=20, out_channels=12,
                               **_values)
    # Kandinsky Video 1.1 (`t2v.pt`, `interpolation.pt`): the same sizes, 12 keyframes at positions 0..11
    UNetConfig.register_preset(f"{_size}-kv11-keyframe", kind="keyframe", release="1.1", num_channels=9,
                               num_frames=12, frame_stride=1, noise_augmentation=True, motion_score=True, **_values)
    UNetConfig.register_preset(f"{_size}-kv11-interpolation", kind="interpolation", release="1.1", num_channels=20,
                               out_channels=12, **_values)
# The shapes model's presets are in kvideo.shapes.presets.


class LevelBuilder:
    """Builds the blocks of one level; which ones exist depends on the model kind and the level."""

    def __init__(self, cfg: UNetConfig, level: int) -> None:
        self.cfg = cfg
        self.video, self.temporal_convs = cfg.kind == "keyframe", cfg.kind == "interpolation"
        self.self_attention = cfg.add_self_attention[level]
        self.context_dim = cfg.context_dim if cfg.add_cross_attention[level] else None
        self.num_groups = cfg.num_blocks[level]
        self.block_args = (cfg.time_embed_dim, cfg.groups, cfg.compression_ratio)
        self.attn_args = (cfg.groups, cfg.head_dim, cfg.expansion_ratio)

    def group(self, c_in: int, c_mid: int, c_out: int, first: str | None, second: str | None) -> nn.ModuleList:
        """[ResNet c_in->c_mid, cross-attention, ResNet c_mid->c_out, temporal ResNet x2] (official indices)."""
        cfg, args = self.cfg, self.block_args
        return nn.ModuleList([
            ResNetBlock(c_in, c_mid, *args, resample=first, temporal=self.temporal_convs),
            AttentionBlock(c_mid, cfg.time_embed_dim, self.context_dim, *self.attn_args) if self.context_dim else Skip(),
            ResNetBlock(c_mid, c_out, *args, resample=second, temporal=self.temporal_convs),
            TemporalResNetBlock(c_mid, *args) if self.video else Skip(),
            TemporalResNetBlock(c_mid, *args) if self.video else Skip(),
        ])

    def self_attention_block(self, channels: int) -> nn.Module:
        if not self.self_attention:
            return Skip()
        return AttentionBlock(channels, self.cfg.time_embed_dim, None, *self.attn_args)

    def temporal_attention_block(self, channels: int) -> nn.Module:
        if not self.self_attention:
            return Skip()
        if self.video:
            return TemporalAttentionBlock(channels, self.cfg.time_embed_dim, *self.attn_args)
        if self.temporal_convs and self.cfg.release == "1.1":
            return GatedTemporalAttentionBlock(channels, self.cfg.time_embed_dim, *self.attn_args)
        return Skip()


class DownLevel(nn.Module):
    """Self-attention, temporal attention, then per group: ResNet, temporal ResNet, cross-attention,
    ResNet (downsampling on the last group), temporal ResNet."""

    def __init__(self, cfg: UNetConfig, level: int, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        build = LevelBuilder(cfg, level)
        self.self_attention_block = build.self_attention_block(in_channels)
        self.temporal_attention_block = build.temporal_attention_block(in_channels)
        last = build.num_groups - 1
        self.resnet_attn_blocks = nn.ModuleList(
            build.group(in_channels if i == 0 else out_channels, out_channels, out_channels,
                        None, "down" if downsample and i == last else None)
            for i in range(build.num_groups)
        )

    def order(self) -> list[nn.Module]:
        """The blocks in the order they run."""
        blocks = [self.self_attention_block, self.temporal_attention_block]
        for in_resnet, attention, out_resnet, in_temporal, out_temporal in self.resnet_attn_blocks:
            blocks += [in_resnet, in_temporal, attention, out_resnet, out_temporal]
        return blocks


class UpLevel(nn.Module):
    """Per group: temporal ResNet, ResNet (upsampling on the first group), cross-attention, temporal
    ResNet, ResNet; then temporal attention and self-attention (the 1.1 interpolation UNet runs
    self-attention first)."""

    def __init__(self, cfg: UNetConfig, level: int, in_channels: int, skip_channels: int, out_channels: int,
                 upsample: bool) -> None:
        super().__init__()
        build = LevelBuilder(cfg, level)
        last = build.num_groups - 1
        groups = []
        for i in range(build.num_groups):
            c_in = in_channels + skip_channels if i == 0 else in_channels
            c_out = out_channels if i == last else in_channels
            groups.append(build.group(c_in, c_in, c_out, "up" if upsample and i == 0 else None, None))
        self.resnet_attn_blocks = nn.ModuleList(groups)
        self.temporal_attention_block = build.temporal_attention_block(out_channels)
        self.self_attention_block = build.self_attention_block(out_channels)
        self.self_attention_first = cfg.kind == "interpolation"

    def order(self) -> list[nn.Module]:
        blocks = []
        for in_resnet, attention, out_resnet, in_temporal, out_temporal in self.resnet_attn_blocks:
            blocks += [in_temporal, in_resnet, attention, out_temporal, out_resnet]
        if self.self_attention_first:
            return blocks + [self.self_attention_block, self.temporal_attention_block]
        return blocks + [self.temporal_attention_block, self.self_attention_block]


class UNet(PretrainedModel):
    """Kandinsky 3.0 UNet, optionally inflated for video (keyframe) or frame interpolation.

    Public layout: `x` is `(b, c, f, h, w)` latents (f = frames, or keyframe pairs for the
    interpolation model); `forward_folded` takes the reference's `(b f) c h w` layout.
    """

    model_type = "unet"
    config_class = UNetConfig
    # The blocks `torch.compile` takes one at a time (kvideo.compilation.compile_blocks): the levels repeat them
    REPEATED_BLOCKS = (ResNetBlock, AttentionBlock, TemporalResNetBlock, TemporalAttentionBlock,
                       GatedTemporalAttentionBlock)
    RENAMES = {  # (release, kind) -> official <-> kvideo rules that only that model uses
        "1.0": (
            ("temporal_projection", "temporal.conv"),
            ("temporal_merge", "temporal.merge"),
            ("perturbation_to_time_embed", "interpolation_embed.perturbation_embed"),
            ("time_embed_merge", "interpolation_embed.time_merge"),
            ("skip_merge", "interpolation_embed.skip_merge"),
            ("skip_embeddings", "interpolation_embed.skip_embeddings"),
        ),
        ("1.1", "keyframe"): (
            ("temporal_attention_block.temporal_norm", "temporal_attention_block.in_norm"),
            ("temporal_attention_block.ff_norm", "temporal_attention_block.out_norm"),
        ),
        ("1.1", "interpolation"): (
            ("temporal_projection_new.temporal_projection", "temporal.conv"),
            ("temporal_projection_new.temporal_merge", "temporal.merge"),
        ),
    }
    # Official -> kvideo names of every release (no official name of one release is renamed by
    # another's rule); kvideo -> official goes through `official_renames()`, which knows the release.
    renames = KeyRenames(RENAMES["1.1", "keyframe"] + RENAMES["1.1", "interpolation"] + RENAMES["1.0"])

    def __init__(self, config: UNetConfig) -> None:
        super().__init__(config)
        cfg = config
        self.gradient_checkpointing = False
        self.to_time_embed = ScalarEmbedding(cfg.init_channels, cfg.time_embed_dim)
        if cfg.context_dim is not None:
            self.feature_pooling = AttentionPooling(cfg.time_embed_dim, cfg.context_dim, cfg.head_dim)
        if cfg.kind == "keyframe":
            self.to_temporal_embed = FramePositionEmbedding(cfg.init_channels, cfg.time_embed_dim)
        if cfg.noise_augmentation:
            self.temporal_noise_aug_time_encoding = TemporalEmbedding(cfg.init_channels, cfg.time_embed_dim)
        if cfg.motion_score:
            self.temporal_motion_score_encoding = TemporalEmbedding(cfg.init_channels, cfg.time_embed_dim)
        if cfg.kind == "interpolation":
            self.interpolation_embed = InterpolationEmbedding(cfg.init_channels, cfg.time_embed_dim,
                                                              cfg.num_skip_embeddings)
        self.in_layer = nn.Conv2d(cfg.num_channels, cfg.init_channels, kernel_size=3, padding=1)
        if cfg.release == "1.1" and cfg.kind == "keyframe":
            self.image_in_layer = nn.Conv2d(cfg.num_channels, cfg.init_channels, kernel_size=3, padding=1)
        self._build_levels(cfg)
        self.out_layer = nn.Sequential(
            nn.GroupNorm(cfg.groups, cfg.init_channels),
            nn.SiLU(),
            nn.Conv2d(cfg.init_channels, cfg.out_channels, kernel_size=3, padding=1),
        )

    def _build_levels(self, cfg: UNetConfig) -> None:
        dims = [cfg.init_channels, *cfg.level_channels]
        last = len(cfg.dim_mult) - 1
        self.down_samples = nn.ModuleList(
            DownLevel(cfg, level, dims[level], dims[level + 1], downsample=level != last)
            for level in range(last + 1)
        )
        self.up_samples = nn.ModuleList(
            UpLevel(cfg, level, dims[level + 1], dims[level + 1] if level != last else 0, dims[level],
                    upsample=level != last)
            for level in reversed(range(last + 1))
        )

    # -- official checkpoints ------------------------------------------------------------------
    @classmethod
    def split_official(cls, contents):
        """`kandinsky_video*.pt` holds {'unet': state, 'null_embedding': (d,), 'projections': state}."""
        if not isinstance(contents.get("unet"), Mapping):
            found = f"a {type(contents['unet']).__name__}" if "unet" in contents else f"{sorted(contents)[:8]}"
            raise CheckpointError(
                f"not a Kandinsky Video UNet checkpoint: expected a 'unet' entry holding the state dict, found {found}"
            )
        extras = {k: v for k, v in contents.items() if k != "unet" and torch.is_tensor(v)}
        for name, value in contents.items():
            if isinstance(value, Mapping) and name != "unet":
                extras.update({f"{name}.{k}": v for k, v in value.items()})
        return dict(contents["unet"]), extras

    @classmethod
    def default_official_config(cls) -> UNetConfig:
        return UNetConfig.preset("official-keyframe")

    def official_renames(self) -> KeyRenames:
        """kvideo <-> official key names for this model's release and kind."""
        cfg = self.config
        return KeyRenames(self.RENAMES.get((cfg.release, cfg.kind), ()) + self.RENAMES["1.0"])

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        return self.official_renames().state_to_official(self.state_dict())

    # -- temporal parts --------------------------------------------------------------------------
    def freeze_spatial(self) -> "UNet":
        return temporal.freeze_spatial(self)

    def temporal_parameters(self):
        return temporal.temporal_parameters(self)

    def temporal_state_dict(self) -> dict[str, torch.Tensor]:
        return temporal.temporal_state_dict(self)

    def load_temporal_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        temporal.load_temporal_state_dict(self, state)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = enabled

    @classmethod
    def inflate(cls, state_2d: Mapping[str, torch.Tensor], config: UNetConfig) -> "UNet":
        """A keyframe UNet whose spatial weights are a 2D Kandinsky 3.0 UNet's state dict.

        The temporal parts start as the identity: the result equals the 2D model frame by frame.
        """
        if config.kind != "keyframe":
            raise ValueError(f"inflate builds a keyframe UNet; config.kind={config.kind!r}")
        model = cls(config)
        temporal_keys = set(model.temporal_state_dict())
        spatial = {k: v for k, v in model.state_dict().items() if k not in temporal_keys}
        check_keys(spatial, state_2d, what=f"the spatial part of {model.describe()}")
        model.load_state_dict(dict(state_2d), strict=False)
        return model

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, time: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, *, mode: str | None = None,
                frame_positions: torch.Tensor | None = None, skip_frames: torch.Tensor | None = None,
                perturbation_time: torch.Tensor | None = None, noise_aug_time: torch.Tensor | None = None,
                motion_score: torch.Tensor | None = None, temporal_mask: torch.Tensor | None = None,
                cache: "DeepFeatureCache | None" = None) -> torch.Tensor:
        """x (b, c, f, h, w) -> (b, out_channels, f, h, w); conditioning is per video (b, ...).

        mode: 'video' (default for keyframe / interpolation UNets) or 'image' (default for image
        UNets): the frames are independent images, no temporal layer runs, and a 1.1 keyframe UNet
        reads them through its `image_in_layer`; in image mode x may also be (b, c, h, w).
        frame_positions: (f,) or (b, f) positions of the frames (keyframe model; default
        0, frame_stride, 2·frame_stride, ...). skip_frames / perturbation_time: (b,)
        (interpolation model). noise_aug_time / motion_score: (b,) (1.1 keyframe model, video
        mode). temporal_mask: (b,) scales every temporal merge (1.1 interpolation; default 1).
        """
        mode = self._mode(mode)
        if x.dim() == 4 and mode == "image":
            return self.forward(x[:, :, None], time, context, context_mask, mode="image")[:, :, 0]
        self._check_input(x, context, context_mask)
        b, _, f = x.shape[:3]

        def rows(value, name):  # per-sample (b,) or scalar -> per row (b f,)
            return None if value is None else repeat(self._per_sample(value, b, name), "b ... -> (b f) ...", f=f)

        positions = None
        if mode == "video" and self.config.kind == "keyframe":
            positions = rearrange(self._frame_positions(frame_positions, b, f, x.device), "b f -> (b f)")
        out = self.forward_folded(
            rearrange(x, "b c f h w -> (b f) c h w"), rows(time, "time"),
            None if context is None else repeat(context, "b n d -> (b f) n d", f=f),
            None if context_mask is None else repeat(context_mask, "b n -> (b f) n", f=f),
            num_frames=f, mode=mode, frame_positions=positions, skip_frames=rows(skip_frames, "skip_frames"),
            perturbation_time=rows(perturbation_time, "perturbation_time"),
            noise_aug_time=rows(noise_aug_time, "noise_aug_time"), motion_score=rows(motion_score, "motion_score"),
            temporal_mask=rows(temporal_mask, "temporal_mask"), cache=cache,
        )
        return rearrange(out, "(b f) c h w -> b c f h w", b=b)

    def forward_folded(self, x: torch.Tensor, time: torch.Tensor, context: torch.Tensor | None = None,
                       context_mask: torch.Tensor | None = None, *, num_frames: int, mode: str | None = None,
                       frame_positions: torch.Tensor | None = None, skip_frames: torch.Tensor | None = None,
                       perturbation_time: torch.Tensor | None = None, noise_aug_time: torch.Tensor | None = None,
                       motion_score: torch.Tensor | None = None, temporal_mask: torch.Tensor | None = None,
                       cache: "DeepFeatureCache | None" = None) -> torch.Tensor:
        """The reference layout: x ((b f), c, h, w) with every condition given per row (b f)."""
        mode = self._mode(mode)
        self._check_unused(noise_aug_time=noise_aug_time, motion_score=motion_score, temporal_mask=temporal_mask)
        if x.shape[0] % num_frames:
            raise ValueError(f"batch {x.shape[0]} is not a multiple of num_frames={num_frames}")
        self._check_input(rearrange(x, "(b f) c h w -> b c f h w", f=num_frames), context, context_mask)
        n = x.shape[0]
        time_embed = self._embed_time(self._per_sample(time, n, "time"), context, context_mask, skip_frames,
                                      perturbation_time)
        cond = Conditioning(time=time_embed, num_frames=num_frames, context=context,
                            context_mask=None if context_mask is None else context_mask.bool(), video=mode == "video")
        if cond.video:
            self._add_temporal_conditioning(cond, frame_positions, noise_aug_time, motion_score, temporal_mask)
        image_layer = mode == "image" and hasattr(self, "image_in_layer")
        return self._unet(x, cond, self.image_in_layer if image_layer else self.in_layer, cache)

    def _check_unused(self, **given) -> None:
        """Refuse a condition this model has no input for (it would be ignored silently)."""
        cfg = self.config
        takes = {"noise_aug_time": cfg.noise_augmentation, "motion_score": cfg.motion_score,
                 "temporal_mask": cfg.kind == "interpolation"}
        for name, value in given.items():
            if value is not None and not takes[name]:
                raise ValueError(f"{name} was given, but this {cfg.kind} UNet (release {cfg.release}) has no "
                                 f"input for it")

    def _mode(self, mode: str | None) -> str:
        if mode is None:
            return "image" if self.config.kind == "image" else "video"
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; choose one of {MODES}")
        if mode == "video" and self.config.kind == "image":
            raise ValueError("mode='video' needs a keyframe or interpolation UNet; this is an image UNet")
        if mode == "image" and not self.config.has_image_mode:
            raise ValueError("mode='image' needs an image or keyframe UNet; the interpolation UNet has no image mode")
        return mode

    def _unet(self, x: torch.Tensor, cond: Conditioning, in_layer: nn.Module,
              cache: "DeepFeatureCache | None" = None) -> torch.Tensor:
        """(b f) c h w -> (b f) out h w through all levels; with a `cache` holding the deep levels' output
        for this input shape, only the outermost down and up levels run."""
        key = (tuple(x.shape), cond.video)
        x = in_layer(x)
        deep = cache.lookup(key) if cache is not None and len(self.down_samples) > 1 else None
        if deep is not None:
            skip = self._run_level(self.down_samples[0], x, cond)
            return self.out_layer(self._run_level(self.up_samples[-1], torch.cat([deep, skip], dim=1), cond))
        skips = []
        for level, down in enumerate(self.down_samples):
            x = self._run_level(down, x, cond)
            if level != len(self.down_samples) - 1:
                skips.append(x)
        for level, up in enumerate(self.up_samples):
            if level != 0:
                if cache is not None and level == len(self.up_samples) - 1:
                    cache.store(key, x)
                x = torch.cat([x, skips.pop()], dim=1)
            x = self._run_level(up, x, cond)
        return self.out_layer(x)

    def _run_level(self, level: nn.Module, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        use_checkpoint = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in level.order():
            if isinstance(block, Skip) or (not cond.video and isinstance(block, TemporalModule)):
                continue
            x = checkpoint(block, x, cond, use_reentrant=False) if use_checkpoint else block(x, cond)
        return x

    def _embed_time(self, time, context, context_mask, skip_frames, perturbation_time) -> torch.Tensor:
        """Timestep embedding + text attention pooling (+ interpolation embeddings): (n,) -> (n, d).

        Release 1.0 pools the text first; 1.1 mixes in the interpolation embeddings first.
        """
        embed = self.to_time_embed(time)
        interpolation = self.config.kind == "interpolation"
        if interpolation and self.config.release == "1.1":
            embed = self._embed_interpolation(embed, skip_frames, perturbation_time)
        if context is not None and self.config.context_dim is not None:
            embed = self.feature_pooling(embed, context, None if context_mask is None else context_mask.bool())
        if interpolation and self.config.release == "1.0":
            embed = self._embed_interpolation(embed, skip_frames, perturbation_time)
        return embed

    def _embed_interpolation(self, embed: torch.Tensor, skip_frames, perturbation_time) -> torch.Tensor:
        if skip_frames is None:
            raise ValueError("the interpolation UNet needs skip_frames (the frame distance being filled in)")
        n = embed.shape[0]
        return self.interpolation_embed(
            embed, self._per_sample(skip_frames, n, "skip_frames"),
            None if perturbation_time is None else self._per_sample(perturbation_time, n, "perturbation_time"),
        )

    def _add_temporal_conditioning(self, cond: Conditioning, positions, noise_aug_time, motion_score,
                                   temporal_mask) -> None:
        """Fill the per-row temporal inputs of `cond` (video mode)."""
        cfg, n = self.config, cond.time.shape[0]
        if cfg.kind == "interpolation" and temporal_mask is not None:
            cond.temporal_mask = self._per_sample(temporal_mask, n, "temporal_mask")
        if cfg.kind != "keyframe":
            return
        if positions is None:
            raise ValueError("the keyframe UNet needs frame_positions in the folded layout")
        frames = self.to_temporal_embed(self._per_sample(positions, n, "frame_positions"))
        if cfg.release == "1.0":
            if cfg.frame_conditioning == "all":
                cond.frames = cond.temporal_time = cond.time + frames
            else:
                cond.frames = frames
            return
        embeddings = []
        if cfg.noise_augmentation:
            embeddings.append(("noise_aug_time", noise_aug_time, self.temporal_noise_aug_time_encoding))
        if cfg.motion_score:
            embeddings.append(("motion_score", motion_score, self.temporal_motion_score_encoding))
        for name, value, embedding in embeddings:
            if value is None:
                raise ValueError(f"this 1.1 keyframe UNet needs {name} (one value per video) in video mode")
            frames = frames + embedding(self._per_sample(value, n, name))
        cond.frames = cond.temporal_time = cond.time + frames

    def _frame_positions(self, positions: torch.Tensor | None, b: int, f: int, device) -> torch.Tensor:
        """(b, f) frame positions: given as (f,) or (b, f), by default 0, stride, 2·stride, ..."""
        if positions is None:
            positions = torch.arange(f, device=device) * self.config.frame_stride
        if positions.dim() == 1:
            positions = repeat(positions, "f -> b f", b=b)
        if tuple(positions.shape) != (b, f):
            raise ValueError(f"frame_positions has shape {tuple(positions.shape)}; expected ({f},) or ({b}, {f})")
        return positions

    @staticmethod
    def _per_sample(values: torch.Tensor | int | float, n: int, name: str = "values") -> torch.Tensor:
        values = torch.as_tensor(values)
        if values.dim() == 0:
            values = values.expand(n)
        if values.shape[0] != n:
            raise ValueError(f"{name}: expected {n} per-sample values, got shape {tuple(values.shape)}")
        return values

    def _check_input(self, x: torch.Tensor, context, context_mask) -> None:
        cfg = self.config
        if x.dim() != 5:
            raise ValueError(f"x must be (b, c, f, h, w) latents; got shape {tuple(x.shape)}")
        if x.shape[1] != cfg.num_channels:
            raise ValueError(
                f"x has {x.shape[1]} channels; this {cfg.kind} UNet expects {cfg.num_channels}"
                + (" ([left keyframe | noisy frames | right keyframe] stacked on channels)" if cfg.kind == "interpolation" else "")
            )
        factor = cfg.downsample_factor
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"latent size {tuple(x.shape[-2:])} is not divisible by {factor} (the UNet halves it "
                f"{len(cfg.dim_mult) - 1} times); pixel sizes must be multiples of {8 * factor}"
            )
        if cfg.context_dim is not None and context is not None and context.shape[-1] != cfg.context_dim:
            raise ValueError(f"context has dim {context.shape[-1]}; expected context_dim={cfg.context_dim}")
        if context_mask is not None and context is not None and context_mask.shape != context.shape[:2]:
            raise ValueError(f"context_mask shape {tuple(context_mask.shape)} != context {tuple(context.shape[:2])}")


class DeepFeatureCache:
    """Step caching for one sampling run (DeepCache, Ma et al. 2024): the UNet's deep levels change little
    from one denoising step to the next, so their output (the input of the outermost up level) is computed
    on every `interval`-th call and reused on the calls between, where only the outermost down and up
    levels run with the current input and time. `interval` 1 never reuses (the full UNet every call).

    One cache serves one model over one run: a call with another input shape (say, guidance switched
    off for a step, halving the batch) runs the whole UNet and refreshes the cache.
    """

    def __init__(self, interval: int) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"cache interval {interval!r}: must be an integer >= 1 (1: no caching)")
        self.interval = interval
        self.key: tuple | None = None
        self.features: torch.Tensor | None = None
        self.age = 0  # reuses since the last refresh
        self.full_calls = self.cached_calls = 0

    def lookup(self, key: tuple) -> torch.Tensor | None:
        """The cached deep features for a call with this key, or None: run every level (and `store`)."""
        if self.features is None or key != self.key or self.age + 1 >= self.interval:
            self.full_calls += 1
            return None
        self.age += 1
        self.cached_calls += 1
        return self.features

    def store(self, key: tuple, features: torch.Tensor) -> None:
        self.key, self.features, self.age = key, features, 0
