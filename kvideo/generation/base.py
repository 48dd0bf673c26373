"""What the 1.0 and 1.1 pipelines share: devices, dtype, offload, compilation, autocast, prompt encoding, decoding,
checks, and the stages' out-of-memory errors.

`BasePipeline.from_pretrained` (and `open_pipeline`) pick the release of a weights folder; each release's
pipeline class registers itself in `PIPELINES` by its `release` attribute.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch
from einops import rearrange
from torch import nn

from kvideo.compilation import check_compiler, compile_blocks, compile_limits, to_channels_last
from kvideo.errors import KVideoError, SamplingDivergedError
from kvideo.generation.options import GenerationOptions, check_memory, resolve_options
from kvideo.generation.weights import TINY, TINY_CARD, is_kv11_folder, read_model_card, resolve_weights
from kvideo.models.movq import MoVQ
from kvideo.models.unet import DeepFeatureCache, UNet
from kvideo.text import TextEncoder, TextProjection, null_context

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OFFLOAD = ("none", "model", "disk")
LOAD_OPTIONS = ("compile", "text_encoder_int8")  # options that change the pipeline itself, for all later calls
PIPELINES: dict[str, type["BasePipeline"]] = {}  # release -> its pipeline class (filled as each class is defined)
WeightFile = Callable[[], Mapping[str, torch.Tensor]]  # reads one model's state dict (kvideo key names) from disk


class StageOutOfMemoryError(KVideoError, torch.OutOfMemoryError):
    """The GPU ran out of memory in a named stage of a generation; the message says what to try."""


class BasePipeline:
    """Text encoder, keyframe UNet, interpolation UNet and video MoVQ decoder on one device and dtype.

    `offload="model"` keeps every model on the CPU except while it runs. `offload="disk"` (staged loading)
    keeps none in memory: each model is read from its file when its stage runs and freed after it, so the
    peak is the largest single model, not their sum (`weight_files` gives each model's reader, by attribute
    name; `from_pretrained` fills it). `card` is the weights folder's model.json (name, prompt grammar,
    generation defaults); its defaults apply to every call, and `defaults` (the `LOAD_OPTIONS` given to
    `from_pretrained`) over them.
    """

    release: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "release" in cls.__dict__:  # a release's own class; a user's subclass of it does not take its place
            PIPELINES[cls.release] = cls

    def __init__(self, text_encoder: TextEncoder, unet: UNet, interpolation_unet: UNet,
                 interpolation_null_embedding: torch.Tensor, decoder: MoVQ, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "fp32", offload: str = "none", progress: bool = True,
                 weight_files: Mapping[str, WeightFile] | None = None) -> None:
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
        self.defaults: dict[str, Any] = {}
        self.compiled = False
        self.weight_files = dict(weight_files or {})
        self._reading = False  # True while a staged model takes its weights from its file
        self.text_encoder = text_encoder
        self.unet, self.interpolation_unet, self.decoder = unet, interpolation_unet, decoder
        channels = {"keyframe UNet": unet.config.latent_channels, "video MoVQ": decoder.config.latent_channels,
                    "interpolation UNet": interpolation_unet.config.latent_channels}
        if len(set(channels.values())) > 1:
            raise ValueError(f"the models do not share one latent space: latent channels {channels}")
        self.interpolation_null_embedding = interpolation_null_embedding.to(self.device)
        for name in ("unet", "interpolation_unet", "decoder"):
            self._place(name)

    def _place(self, name: str) -> None:
        """The model of attribute `name` in eval mode, frozen, in the pipeline's dtype, on its device (or the CPU
        when offloading; or weightless on the meta device, read from its file at its stage, with offload="disk")."""
        model = getattr(self, name).eval().requires_grad_(False)
        if self.offload == "disk":
            if name not in self.weight_files:
                raise ValueError(f"offload='disk' reads each model from its file when its stage runs, and the {name} "
                                 "has none: load the pipeline from a weights folder (from_pretrained), or use "
                                 "offload 'model'")
            model.register_load_state_dict_pre_hook(self._refuse_weights)
            model.to("meta")
            return
        model.to(dtype=self.dtype)
        model.to("cpu" if self.offload == "model" else self.device)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, weights_dir: str | Path, *, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "fp32", offload: str = "none", progress: bool = True,
                        compile: bool = False, text_encoder_int8: bool = False) -> "BasePipeline":
        """The pipeline of a weights folder, of the release its files are (1.1: t2v.pt, ...; else 1.0), or of a
        built-in model by name ("shapes": kvideo's own model trained on rendered shapes). The folder's
        `model.json` card gives the model's generation defaults (size, steps, ...) and its prompt grammar.

        `compile` and `text_encoder_int8` (see `GenerationOptions`) apply to the pipeline and every call: the
        text encoder is loaded in int8 (its float weights exist only while it loads), the blocks compile."""
        folder = resolve_weights(weights_dir)
        release = "1.1" if is_kv11_folder(folder) else "1.0"
        pipe = PIPELINES[release].load(folder, device=device, dtype=dtype, offload=offload, progress=progress,
                                       text_encoder_int8=text_encoder_int8)
        pipe.card = read_model_card(folder, release)
        return pipe.set_defaults(compile=compile, text_encoder_int8=text_encoder_int8)

    def set_defaults(self, **options: bool) -> "BasePipeline":
        """Switch `LOAD_OPTIONS` on for this pipeline and every later call (False leaves one as it is)."""
        unknown = sorted(set(options) - set(LOAD_OPTIONS))
        if unknown:
            raise ValueError(f"set_defaults takes {list(LOAD_OPTIONS)}; got {unknown}")
        self.defaults.update({name: True for name, on in options.items() if on})
        self.prepare(**options)
        return self

    @classmethod
    def load(cls, folder: Path, **kwargs: Any) -> "BasePipeline":
        """This release's models from the files of `folder` (see `from_pretrained`); each release's class has its own."""
        raise NotImplementedError(f"{cls.__name__} is the base of the release pipelines: use from_pretrained, "
                                  "KVideoPipeline.load or KVideo11Pipeline.load")

    # -- options -----------------------------------------------------------------------------
    def options(self, **given: Any) -> GenerationOptions:
        """The options of one call: the release's defaults, the card's, then `given`; checked against the models
        and the memory the clip needs before any work."""
        opts = resolve_options(self.release, {**self.card.get("generation", {}), **self.defaults}, **given)
        check_memory(opts, self.unet.config.num_frames)
        return opts

    def prepare(self, *, compile: bool = False, text_encoder_int8: bool = False) -> None:
        """Apply a call's `LOAD_OPTIONS` to the pipeline (once: it keeps them for the later calls)."""
        if text_encoder_int8:
            self.text_encoder.quantize_int8()
        if compile:
            self.compile()

    def compile(self, *, mode: str = "default", channels_last: bool = False) -> None:
        """torch.compile, in place, the repeated blocks of both UNets and of the video decoder (one graph per
        block class and shape, static shapes; kvideo.compilation). Each block compiles when it first runs; the
        pipeline stays compiled. `channels_last`: the 2D convolutions' weights in channels-last order too.
        Without torch.compile or the compiler it needs: one line naming what to install."""
        if self.compiled:
            return
        check_compiler(self.device)
        for model in self.compiled_models():
            if channels_last:
                to_channels_last(model)
            compile_blocks(model, getattr(model, "REPEATED_BLOCKS", MoVQ.REPEATED_BLOCKS), mode=mode)
        self.compiled = True

    def compiled_models(self) -> list[nn.Module]:
        """The models `compile` compiles: those that run many times per clip."""
        return [self.unet, self.interpolation_unet, self.decoder]

    # -- shared stages -----------------------------------------------------------------------
    def encode_prompt(self, prompt: str | Sequence[str], negative_prompt: str | None):
        """(context, mask) of the prompt and of the unconditional branch (negative prompt or null)."""
        with self._stage("text encoding"):
            cond, uncond = self.text_encoder.encode_pair(prompt, negative_prompt)
        cond, uncond = cond.to(self.device), uncond.to(self.device)
        return cond.context, cond.mask, uncond.context, uncond.mask

    def decode(self, latents: torch.Tensor, window: int | None) -> np.ndarray:
        """(b, 4, f, h, w) latents -> uint8 frames (b, f, H, W, 3) through the video MoVQ."""
        with self._stage("decode", self.decoder), self._autocast():
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
    def _stage(self, stage: str, model: torch.nn.Module | None = None) -> Iterator[None]:
        """One stage of a generation: its model on the device (read from its file with offload="disk"), compiled
        blocks allowed one graph per shape, and a CUDA out-of-memory error named by the stage."""
        try:
            with self._on_device(model), compile_limits(self.compiled):
                yield
        except torch.OutOfMemoryError as error:
            if isinstance(error, StageOutOfMemoryError):
                raise
            raise StageOutOfMemoryError(out_of_memory_message(stage, self.offload, error)) from error

    @contextlib.contextmanager
    def _on_device(self, model: torch.nn.Module | None) -> Iterator[None]:
        if model is None or self.offload == "none":
            yield
            return
        if self.offload == "disk":
            self._read_weights(model)
        else:
            model.to(self.device)
        try:
            yield
        finally:
            model.to("meta" if self.offload == "disk" else "cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _read_weights(self, model: torch.nn.Module) -> None:
        """offload="disk": a staged model takes its weights from its file, in the pipeline's dtype, on its device."""
        name = next(n for n, m in vars(self).items() if m is model)
        state = self.weight_files[name]()
        self._reading = True
        try:
            model.load_state_dict(state, strict=True, assign=True)
        finally:
            self._reading = False
        del state
        model.to(device=self.device, dtype=self.dtype)

    def _refuse_weights(self, *args: Any) -> None:
        """A staged model's weights come from its file at each stage: weights loaded into it otherwise would be
        lost (trained weights, say), so that is refused."""
        if not self._reading:
            raise ValueError("this pipeline reads each model from its weights file at each stage (offload='disk'); "
                             "load other weights into it with offload 'none' or 'model'")


def open_pipeline(weights: str | Path, *, release: str = "1.0", compile: bool = False, text_encoder_int8: bool = False,
                  **kwargs: Any) -> BasePipeline:
    """A weights folder's pipeline, a built-in model's ("shapes"), or "tiny": random weights of `release` with
    the tiny card (64x64, 10 steps), which only show that every stage runs."""
    if str(weights) != TINY:
        return BasePipeline.from_pretrained(weights, compile=compile, text_encoder_int8=text_encoder_int8, **kwargs)
    pipe = PIPELINES[release].from_preset(TINY, **kwargs)
    pipe.card = TINY_CARD
    return pipe.set_defaults(compile=compile, text_encoder_int8=text_encoder_int8)


# -- checks and small helpers both releases use ------------------------------------------------
def shelve(model: nn.Module, staged: bool) -> nn.Module:
    """`model`, its weights freed to the meta device when `staged` (offload="disk" reads them at its stage)."""
    return model.to("meta") if staged else model


def state_reader(model_class: type, path: Path) -> WeightFile:
    """A function that reads the state dict (kvideo key names) of a `model_class` file (official or kvideo's)."""
    return lambda: model_class.read_checkpoint(path).state


def check_prompt(prompt: object, name: str = "prompt") -> str:
    if not isinstance(prompt, str):
        raise ValueError(f"{name} must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError(f"{name} is empty; describe the video to generate")
    return prompt


def out_of_memory_message(stage: str, offload: str, error: BaseException) -> str:
    """One line: the stage that ran out of GPU memory, torch's first sentence (and the sizes it names), what to try."""
    text = " ".join(str(error).split())
    wanted, free = re.search(r"Tried to allocate ([\d.]+ \w+)", text), re.search(r"([\d.]+ \w+) is free", text)
    said = text.split(". ")[0].rstrip(".") + (f": {wanted[1]} asked" if wanted else "")
    said += f", {free[1]} free" if free else ""
    advice = ("try --offload model (each model on the GPU only while it runs) or --offload disk (staged loading), "
              "--text-encoder-int8, or a smaller --size / fewer --frames" if offload == "none" else
              "try a smaller --size, fewer --frames, --decode-window 1 or --text-encoder-int8")
    return f"out of GPU memory in the {stage} stage ({said}); {advice}"


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
