"""What the 1.0 and 1.1 pipelines share: devices, dtype, offload, autocast, prompt encoding, decoding, checks.

`BasePipeline.from_pretrained` (and `open_pipeline`) pick the release of a weights folder; each release's
pipeline class registers itself in `PIPELINES` by its `release` attribute.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch
from einops import rearrange

from kvideo.errors import SamplingDivergedError
from kvideo.generation.options import GenerationOptions, check_memory, resolve_options
from kvideo.generation.weights import TINY, TINY_CARD, is_kv11_folder, read_model_card, resolve_weights
from kvideo.models.movq import MoVQ
from kvideo.models.unet import DeepFeatureCache, UNet
from kvideo.text import TextEncoder, TextProjection, null_context

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OFFLOAD = ("none", "model")
PIPELINES: dict[str, type["BasePipeline"]] = {}  # release -> its pipeline class (filled as each class is defined)


class BasePipeline:
    """Text encoder, keyframe UNet, interpolation UNet and video MoVQ decoder on one device and dtype.

    `offload="model"` keeps every model on the CPU except while it runs. `card` is the weights folder's
    model.json (name, prompt grammar, generation defaults); its defaults apply to every call.
    """

    release: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        PIPELINES[cls.release] = cls

    def __init__(self, text_encoder: TextEncoder, unet: UNet, interpolation_unet: UNet,
                 interpolation_null_embedding: torch.Tensor, decoder: MoVQ, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "fp32", offload: str = "none", progress: bool = True) -> None:
        if offload not in OFFLOAD:
            raise ValueError(f"offload={offload!r}: choose one of {OFFLOAD}")
        if isinstance(dtype, str) and dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}: choose one of {sorted(DTYPES)}")
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        if self.device.type == "cpu" and self.dtype == torch.float16:
            raise ValueError("fp16 needs a GPU; use fp32 or bf16 on the CPU")
        self.offload = offload
        self.progress = progress
        self.card: dict = {}
        self.text_encoder = text_encoder
        self.unet, self.interpolation_unet, self.decoder = unet, interpolation_unet, decoder
        channels = {"keyframe UNet": unet.config.latent_channels, "video MoVQ": decoder.config.latent_channels,
                    "interpolation UNet": interpolation_unet.config.latent_channels}
        if len(set(channels.values())) > 1:
            raise ValueError(f"the models do not share one latent space: latent channels {channels}")
        self.interpolation_null_embedding = interpolation_null_embedding.to(self.device)
        for model in (unet, interpolation_unet, decoder):
            self._place(model)

    def _place(self, model: torch.nn.Module) -> torch.nn.Module:
        """A model in eval mode, frozen, in the pipeline's dtype, on its device (or the CPU when offloading)."""
        model.eval().requires_grad_(False).to(dtype=self.dtype)
        return model.to("cpu" if self.offload == "model" else self.device)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, weights_dir: str | Path, *, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "fp32", offload: str = "none", progress: bool = True,
                        ) -> "BasePipeline":
        """The pipeline of a weights folder, of the release its files are (1.1: t2v.pt, ...; else 1.0), or of a
        built-in model by name ("shapes": kvideo's own model trained on rendered shapes). The folder's
        `model.json` card gives the model's generation defaults (size, steps, ...) and its prompt grammar."""
        folder = resolve_weights(weights_dir)
        release = "1.1" if is_kv11_folder(folder) else "1.0"
        pipe = PIPELINES[release].load(folder, device=device, dtype=dtype, offload=offload, progress=progress)
        pipe.card = read_model_card(folder, release)
        return pipe

    @classmethod
    def load(cls, folder: Path, **kwargs: Any) -> "BasePipeline":
        """This release's models from the files of `folder` (see `from_pretrained`); each release's class has its own."""
        raise NotImplementedError(f"{cls.__name__} is the base of the release pipelines: use from_pretrained, "
                                  "KVideoPipeline.load or KVideo11Pipeline.load")

    # -- options -----------------------------------------------------------------------------
    def options(self, **given: Any) -> GenerationOptions:
        """The options of one call: the release's defaults, the card's, then `given`; checked against the models
        and the memory the clip needs before any work."""
        opts = resolve_options(self.release, self.card.get("generation", {}), **given)
        check_memory(opts, self.unet.config.num_frames)
        return opts

    # -- shared stages -----------------------------------------------------------------------
    def encode_prompt(self, prompt: str | Sequence[str], negative_prompt: str | None):
        """(context, mask) of the prompt and of the unconditional branch (negative prompt or null)."""
        cond, uncond = self.text_encoder.encode_pair(prompt, negative_prompt)
        cond, uncond = cond.to(self.device), uncond.to(self.device)
        return cond.context, cond.mask, uncond.context, uncond.mask

    def decode(self, latents: torch.Tensor, window: int | None) -> np.ndarray:
        """(b, 4, f, h, w) latents -> uint8 frames (b, f, H, W, 3) through the video MoVQ."""
        with self._on_device(self.decoder), self._autocast():
            video = self.decoder.decode(latents.to(self.device), window=window,
                                        progress=self.progress)  # (b, 3, f, H, W)
        check_finite_frames(video)
        video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return rearrange(video, "b c f h w -> b f h w c").cpu().numpy()

    def _step_report(self, stage: str, steps: int, callback):
        """A sampler's per-step callback: non-finite latents stop the run there, before any decoding."""
        def report(info):
            check_finite_latents(info["x"], stage, info["step"] + 1, steps)
            if callback is not None:
                callback(stage, info)
        return report

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @contextlib.contextmanager
    def _on_device(self, model: torch.nn.Module) -> Iterator[None]:
        if self.offload != "model":
            yield
            return
        model.to(self.device)
        try:
            yield
        finally:
            model.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def open_pipeline(weights: str | Path, *, release: str = "1.0", **kwargs: Any) -> BasePipeline:
    """A weights folder's pipeline, a built-in model's ("shapes"), or "tiny": random weights of `release` with
    the tiny card (64x64, 10 steps), which only show that every stage runs."""
    if str(weights) != TINY:
        return BasePipeline.from_pretrained(weights, **kwargs)
    pipe = PIPELINES[release].from_preset(TINY, **kwargs)
    pipe.card = TINY_CARD
    return pipe


# -- checks and small helpers both releases use ------------------------------------------------
def check_prompt(prompt: object, name: str = "prompt") -> str:
    if not isinstance(prompt, str):
        raise ValueError(f"{name} must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError(f"{name} is empty; describe the video to generate")
    return prompt


def check_finite_latents(x: torch.Tensor, stage: str, step: int, steps: int) -> None:
    """Stop at the first step whose latents hold NaN or inf: decoding them gives garbage."""
    if not bool(torch.isfinite(x).all()):
        raise SamplingDivergedError(
            f"sampling diverged at step {step} of {steps} of stage {stage!r} (NaN or inf in the latents); "
            "nothing was written. Try a smaller guidance scale, --dtype fp32, or check the weights")


def check_finite_frames(video: torch.Tensor) -> None:
    """Decoded frames holding NaN or inf (a damaged decoder, or latents past its range) never become a file."""
    if not bool(torch.isfinite(video).all()):
        raise SamplingDivergedError("the video decoder gave NaN or inf pixels; nothing was written. Check the video "
                                    "MoVQ weights, or try a smaller guidance scale")


def step_cache(opts: GenerationOptions) -> dict[str, DeepFeatureCache]:
    """The UNet keyword that turns on step caching for one sampling run ({} when `cache_interval` is 1, so
    that the uncached path is the one that runs)."""
    return {"cache": DeepFeatureCache(opts.cache_interval)} if opts.cache_interval > 1 else {}


def weave(keyframes: torch.Tensor, middle: torch.Tensor) -> torch.Tensor:
    """keyframes (b, c, t, h, w) and middle (b, c, t-1, k, h, w) -> (b, c, (k+1)(t-1)+1, h, w)."""
    groups = torch.cat([keyframes[:, :, :-1, None], middle], dim=3)  # (b, c, t-1, k+1, h, w)
    woven = rearrange(groups, "b c g k h w -> b c (g k) h w")
    return torch.cat([woven, keyframes[:, :, -1:]], dim=2)


def tiny_text_encoder(context_dim: int, device="cpu", *, t5: dict | None = None) -> TextEncoder:
    """A 2-layer random T5 encoder with a byte-level tokenizer (no files needed), for the tiny preset.

    `t5` overrides T5Config fields (e.g. a flan-ul2-wide stand-in for benchmarks); the weights are
    initialised on the current default device (`with torch.device(...)`)."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel  # heavy: only the tiny preset needs it here

    fields = dict(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    config = T5Config(**{**fields, **(t5 or {})})
    encoder = T5EncoderModel(config).eval()
    projection = TextProjection(config.d_model, context_dim)
    return TextEncoder(encoder, ByT5Tokenizer(), projection, torch.randn(context_dim), device=device)


def interpolation_context(null_embedding: torch.Tensor, device, dtype):
    """The interpolation model's context: [null embedding, zeros] with only the first token on.

    The release passes this 2-token form; the zero token is masked out of attention but it
    halves the mean that queries the attention pooling, so it is kept for parity.
    """
    context, mask = null_context(null_embedding.to(device), batch=1, length=2)
    return context.to(dtype=dtype), mask
