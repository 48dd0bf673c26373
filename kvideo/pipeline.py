"""Text -> keyframes -> interpolation -> video MoVQ decoding -> uint8 frames (the Kandinsky Video pipeline)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from einops import rearrange

from kvideo import diffusion
from kvideo.checkpoint import CheckpointError, sub_state_dict
from kvideo.errors import SamplingDivergedError
from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.unet import DeepFeatureCache, UNet, UNetConfig
from kvideo.text import TextEncoder, TextProjection, null_context

FPS_MODES = {"low": (), "medium": (3,), "high": (3, 1)}  # skip_frames of each interpolation pass
NOMINAL_FPS = {"low": 2, "medium": 8, "high": 32}
SAMPLERS = ("ddpm", "ddim", "dpmpp_2m")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OFFLOAD = ("none", "model")
BUILTIN_MODELS = ("shapes",)  # models shipped in the package, loadable by name
MODEL_CARD = "model.json"

# Files of a weights directory: official names first, kvideo conversions second.
WEIGHT_FILES = {
    "keyframe": ("kandinsky_video.pt", "keyframe_unet.safetensors"),
    "interpolation": ("kandinsky_video_interpolation.pt", "interpolation_unet.safetensors"),
    "decoder": ("video_movq.pt", "video_movq.safetensors"),
    "text_encoder": ("text_encoder",),
}


@dataclass
class VideoOutput:
    """A generated clip: uint8 frames (f, h, w, 3), their nominal fps and the latents."""

    frames: np.ndarray
    fps: int
    latents: torch.Tensor

    def save(self, path: str | Path, **kwargs) -> Path:
        from kvideo.export import write_video

        write_video(path, self.frames, self.fps, **kwargs)
        return Path(path)


@dataclass(frozen=True)
class GenerationOptions:
    """Every knob of one generation, validated before any heavy work starts."""

    width: int = 512
    height: int = 512
    fps: str = "medium"
    num_frames: int | None = None  # keyframes; default: the keyframe model's num_frames
    steps: int = 50
    interpolation_steps: int = 50
    sampler: str = "ddpm"
    interpolation_sampler: str = "ddpm"
    timestep_spacing: str = "direct"  # the samplers' steps: "direct" (the release's), "trailing" or "leading"
    # dynamic thresholding of each step's x0 estimate: the quantile q of |x0| above which it is clipped and
    # rescaled (the release's 0.98, for latents kept within [-1, 1]); None turns it off
    threshold: float | None = 0.98
    # ([low], [high]) per latent channel: each x0 estimate is clipped to the range of the latents the model was
    # trained on (guidance extrapolates past it; the decoder draws such latents as dark specks and wrong colours)
    latent_range: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    guidance_scale: float = 5.0
    interpolation_guidance_scale: float = 0.25
    # text guidance only at model times low <= t <= high (0..1000; the noisiest step is near 1000); the other
    # steps run the conditional branch alone, one UNet pass instead of two. None: every step
    guidance_interval: tuple[float, float] | None = None
    # the guided output scaled back toward the conditional output's standard deviation (0: off, 1: fully)
    guidance_rescale: float = 0.0
    # step caching: the UNets' deep levels computed every N-th step and reused between (1: off, exact)
    cache_interval: int = 1
    seed: int | None = None
    decode_window: int | None = None

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0 or value % 64:
                raise ValueError(f"{name}={value!r}: sizes must be positive multiples of 64 (e.g. 512x512, 640x384)")
        if self.fps not in FPS_MODES:
            raise ValueError(f"fps={self.fps!r}: choose one of {sorted(FPS_MODES)}")
        for name in ("steps", "interpolation_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an integer >= 1")
        for name in ("sampler", "interpolation_sampler"):
            if getattr(self, name) not in SAMPLERS:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {SAMPLERS}")
        if self.timestep_spacing not in diffusion.COSINE_SPACINGS:
            raise ValueError(f"timestep_spacing={self.timestep_spacing!r}: choose one of {diffusion.COSINE_SPACINGS}")
        quantile = self.threshold
        if quantile is not None and (isinstance(quantile, bool) or not isinstance(quantile, (int, float))
                                     or not 0.0 < quantile <= 1.0):
            raise ValueError(f"threshold={self.threshold!r}: a quantile in (0, 1] (the release's 0.98), or None "
                             "for no thresholding")
        if self.num_frames is not None and self.num_frames < 2 and self.fps != "low":
            raise ValueError(f"num_frames={self.num_frames}: interpolation needs at least 2 keyframes")
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"num_frames={self.num_frames}: must be >= 1")
        if self.decode_window is not None and self.decode_window < 1:
            raise ValueError(f"decode_window={self.decode_window}: must be >= 1")
        for name in ("guidance_scale", "interpolation_guidance_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}={value!r}: must be a finite number")
        object.__setattr__(self, "guidance_interval", diffusion.check_guidance_interval(self.guidance_interval))
        object.__setattr__(self, "latent_range", diffusion.check_latent_range(self.latent_range))
        rescale = self.guidance_rescale
        if isinstance(rescale, bool) or not isinstance(rescale, (int, float)) or not 0.0 <= rescale <= 1.0:
            raise ValueError(f"guidance_rescale={rescale!r}: a number in [0, 1] (0: off)")
        interval = self.cache_interval
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"cache_interval={interval!r}: an integer >= 1 (1: no step caching)")


def check_prompt(prompt: object, name: str = "prompt") -> str:
    if not isinstance(prompt, str):
        raise ValueError(f"{name} must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError(f"{name} is empty; describe the video to generate")
    return prompt


class KVideoPipeline:
    """Keyframe UNet -> interpolation UNet (0, 1 or 2 passes) -> video MoVQ decoder.

    `offload="model"` keeps every model on the CPU except while it runs.
    """

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
        self.card: dict = {}  # the weights folder's model.json: name, prompt grammar, generation defaults
        self.text_encoder = text_encoder
        self.unet, self.interpolation_unet, self.decoder = unet, interpolation_unet, decoder
        channels = {"keyframe UNet": unet.config.latent_channels, "video MoVQ": decoder.config.latent_channels,
                    "interpolation UNet": interpolation_unet.config.latent_channels}
        if len(set(channels.values())) > 1:
            raise ValueError(f"the models do not share one latent space: latent channels {channels}")
        self.interpolation_null_embedding = interpolation_null_embedding.to(self.device)
        for model in (unet, interpolation_unet, decoder):
            model.eval().requires_grad_(False).to(dtype=self.dtype)
            model.to("cpu" if offload == "model" else self.device)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, weights_dir: str | Path, *, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "fp32", offload: str = "none", progress: bool = True,
                        ) -> "KVideoPipeline":
        """Load a weights folder holding the official files (or their kvideo conversions):
        text_encoder/ (a T5 encoder in Hugging Face format), kandinsky_video.pt,
        kandinsky_video_interpolation.pt and video_movq.pt; or a built-in model by name ("shapes",
        kvideo's own model trained on rendered shapes: see `BUILTIN_MODELS`). A `model.json` card in
        the folder gives the model's generation defaults (size, steps, ...) and its prompt grammar."""
        from kvideo.pipeline11 import KVideo11Pipeline, is_kv11_folder

        if is_kv11_folder(weights_dir):  # release 1.1 files (t2v.pt, ...): the 1.1 pipeline
            return KVideo11Pipeline.from_pretrained(weights_dir, device=device, dtype=dtype, offload=offload,
                                                    progress=progress)
        weights_dir = resolve_weights(weights_dir)
        paths = find_weights(weights_dir)
        keyframe = UNet.read_checkpoint(paths["keyframe"])
        interpolation = UNet.read_checkpoint(paths["interpolation"])
        for name, checkpoint in (("keyframe", keyframe), ("interpolation", interpolation)):
            check_unet_file(name, checkpoint, paths[name])
        unet = UNet.from_checkpoint(keyframe, None if keyframe.config else UNetConfig.preset("official-keyframe"))
        interp = UNet.from_checkpoint(
            interpolation, None if interpolation.config else UNetConfig.preset("official-interpolation"))
        decoder_config = None if paths["decoder"].suffix == ".safetensors" else MoVQConfig.preset("official-video")
        decoder = MoVQ.from_pretrained(paths["decoder"], decoder_config)
        projection = TextProjection.from_state_dict(sub_state_dict(keyframe.extras, "projections"))
        encoder = TextEncoder.from_pretrained(paths["text_encoder"], projection, keyframe.extras["null_embedding"],
                                              device=device, offload=offload == "model", progress=progress)
        pipe = cls(encoder, unet, interp, interpolation.extras["null_embedding"], decoder,
                   device=device, dtype=dtype, offload=offload, progress=progress)
        pipe.card = read_model_card(weights_dir)
        return pipe

    @classmethod
    def from_preset(cls, name: str = "tiny", *, seed: int = 0, **kwargs) -> "KVideoPipeline":
        """Random weights at a named size ('tiny' runs end to end on a CPU in seconds).
        The output is noise-like: it exercises every stage, it is not a trained model."""
        if name != "tiny":
            raise ValueError(f"unknown pipeline preset {name!r}; available: ['tiny']")
        torch.manual_seed(seed)
        unet = UNet(UNetConfig.preset("tiny-keyframe"))
        interp = UNet(UNetConfig.preset("tiny-interpolation"))
        context_dim = unet.config.context_dim
        encoder = tiny_text_encoder(context_dim, device=kwargs.get("device", "cpu"))
        decoder = MoVQ(MoVQConfig.preset("tiny-video"))
        return cls(encoder, unet, interp, torch.randn(context_dim), decoder, **kwargs)

    # -- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str], negative_prompt: str | None = None, *,
                 callback: Callable[[str, int, torch.Tensor], None] | None = None,
                 **options) -> VideoOutput | list[VideoOutput]:
        """Generate a clip, or one clip per prompt of a list (denoised together as one batch).

        Options: see `GenerationOptions` (width, height, fps, steps, ...). `seed` is an int (prompt i
        of a list gets seed + i) or one seed per prompt; each clip draws its noise from a generator of
        its own, so a clip of a batch is the clip its prompt and seed give alone. (Prompts of a batch
        are padded to the longest; the attention pooling averages over padding rows too, so prompts of
        different token lengths move each other slightly, as in the release's batched calls.)
        """
        single = not isinstance(prompt, (list, tuple))
        prompts = [prompt] if single else list(prompt)
        if not prompts:
            raise ValueError("no prompt given: pass a string or a non-empty list of strings")
        for text in prompts:
            check_prompt(text)
        if negative_prompt is not None:
            check_prompt(negative_prompt, "negative_prompt")
        seeds = batch_seeds(options.pop("seed", None), len(prompts))
        opts = GenerationOptions(**{**self.card.get("generation", {}), **options})
        channels = self.unet.config.latent_channels
        if opts.latent_range is not None and len(opts.latent_range[0]) != channels:
            raise ValueError(f"latent_range has {len(opts.latent_range[0])} channels; the model's latents have "
                             f"{channels}")
        # CPU generators: a seed gives the same noise, hence the same clip, on every device
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        generator = generators[0] if single else generators
        context, mask, uncond, uncond_mask = self.encode_prompt(prompts, negative_prompt)
        latents = self.keyframes(context, mask, uncond, uncond_mask, opts, generator, callback)
        for skip in FPS_MODES[opts.fps]:
            latents = self.interpolate(latents, skip, opts, generator, callback)
        frames = self.decode(latents, opts.decode_window)
        outputs = [VideoOutput(frames=clip, fps=NOMINAL_FPS[opts.fps], latents=latents[i:i + 1].float().cpu())
                   for i, clip in enumerate(frames)]
        return outputs[0] if single else outputs

    def encode_prompt(self, prompt: str | Sequence[str], negative_prompt: str | None):
        """(context, mask) of the prompt and of the unconditional branch (negative prompt or null)."""
        cond, uncond = self.text_encoder.encode_pair(prompt, negative_prompt)
        cond, uncond = cond.to(self.device), uncond.to(self.device)
        return cond.context, cond.mask, uncond.context, uncond.mask

    def keyframes(self, context, mask, uncond, uncond_mask, opts: GenerationOptions, generator, callback):
        """Denoise all keyframes of each prompt as one (b, 4, T, h, w) tensor with text guidance (the
        UNet's prediction type: eps in the release)."""
        cfg = self.unet.config
        frames = opts.num_frames or cfg.num_frames
        shape = (context.shape[0], cfg.out_channels, frames, *self.latent_size(opts))
        positions = torch.arange(frames, device=self.device) * cfg.frame_stride
        model = diffusion.TextGuidance(self.unet, context, mask, uncond, uncond_mask, opts.guidance_scale,
                                       interval=opts.guidance_interval, rescale=opts.guidance_rescale,
                                       frame_positions=positions, **step_cache(opts))
        return self._sample("keyframes", self.unet, model, cfg.predicts, shape, opts.steps, opts.sampler,
                            opts, generator, callback)

    def latent_size(self, opts: GenerationOptions) -> tuple[int, int]:
        """(h, w) of the latents of a `opts.height` x `opts.width` video: the decoder's downsampling
        (8 for the release's MoVQ, 4 for the shapes model's)."""
        factor = self.decoder.config.downsample_factor
        return opts.height // factor, opts.width // factor

    def interpolate(self, latents: torch.Tensor, skip_frames: int, opts: GenerationOptions, generator, callback):
        """(b, c, T, h, w) -> (b, c, 4T - 3, h, w): 3 new frames between each pair (v-prediction)."""
        cfg = self.interpolation_unet.config
        b, c, t, h, w = latents.shape
        context, mask = interpolation_context(self.interpolation_null_embedding, self.device, self.dtype)
        model = diffusion.KeyframeGuidance(
            self.interpolation_unet, latents[:, :, :-1], latents[:, :, 1:], opts.interpolation_guidance_scale,
            context=context, context_mask=mask,
            batch_kwargs={"skip_frames": torch.full((1,), skip_frames, device=self.device)}, **step_cache(opts),
        )
        shape = (b, cfg.out_channels, t - 1, h, w)
        middle = self._sample(f"interpolation x{cfg.interpolated_frames + 1} (skip {skip_frames})",
                              self.interpolation_unet, model, "v", shape, opts.interpolation_steps,
                              opts.interpolation_sampler, opts, generator, callback)
        return weave(latents, rearrange(middle, "b (k c) g h w -> b c g k h w", c=c))

    def decode(self, latents: torch.Tensor, window: int | None) -> np.ndarray:
        """(b, 4, f, h, w) latents -> uint8 frames (b, f, H, W, 3)."""
        with self._on_device(self.decoder), self._autocast():
            video = self.decoder.decode(latents.to(self.device), window=window,
                                        progress=self.progress)  # (b, 3, f, H, W)
        check_finite_frames(video)
        video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return rearrange(video, "b c f h w -> b f h w c").cpu().numpy()

    def _sample(self, stage, unet, model, prediction, shape, steps, sampler, opts, generator, callback):
        schedule = diffusion.cosine_schedule(steps, spacing=opts.timestep_spacing)
        denoise = diffusion.X0Denoiser(model, schedule, prediction, percentile=opts.threshold,
                                       latent_range=opts.latent_range)
        x = diffusion.randn_like(torch.empty(shape, device=self.device), generator)
        report = self._step_report(stage, steps, callback)
        with self._on_device(unet), self._autocast():
            return diffusion.get_sampler(sampler)(
                denoise, x, schedule, generator=generator, callback=report, progress=self.progress and stage)

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


def step_cache(opts: GenerationOptions) -> dict[str, DeepFeatureCache]:
    """The UNet keyword that turns on step caching for one sampling run ({} when `cache_interval` is 1, so
    that the uncached path is the one that runs)."""
    return {"cache": DeepFeatureCache(opts.cache_interval)} if opts.cache_interval > 1 else {}


def batch_seeds(seed: int | Sequence[int] | None, count: int) -> list[int]:
    """One seed per prompt: `seed + i` for an int, the given ones for a sequence, random for None."""
    if seed is None:
        seed = int(torch.seed() % 2**62)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed) + i for i in range(count)]
    seeds = list(seed) if isinstance(seed, Sequence) else None
    if seeds is None or len(seeds) != count or not all(isinstance(s, (int, np.integer)) for s in seeds):
        raise ValueError(f"seed={seed!r}: give an int or a list of {count} ints (one per prompt)")
    return [int(s) for s in seeds]


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


def check_unet_file(slot: str, checkpoint, path: Path) -> None:
    """A weights-folder UNet file is the model its name says (a keyframe UNet in the interpolation slot
    would otherwise fail only after keyframe sampling) and carries its null embedding."""
    kind = checkpoint.config.kind if checkpoint.config is not None else None
    if kind is not None and kind != slot:
        raise CheckpointError(f"{str(path)!r} holds a {kind} UNet, but the file name is the {slot} model's; "
                              f"put the {slot} UNet there")
    if "null_embedding" not in checkpoint.extras:
        raise CheckpointError(f"{str(path)!r} has no null_embedding; is it a Kandinsky Video UNet checkpoint?")


def weave(keyframes: torch.Tensor, middle: torch.Tensor) -> torch.Tensor:
    """keyframes (b, c, t, h, w) and middle (b, c, t-1, k, h, w) -> (b, c, (k+1)(t-1)+1, h, w)."""
    groups = torch.cat([keyframes[:, :, :-1, None], middle], dim=3)  # (b, c, t-1, k+1, h, w)
    woven = rearrange(groups, "b c g k h w -> b c (g k) h w")
    return torch.cat([woven, keyframes[:, :, -1:]], dim=2)


def tiny_text_encoder(context_dim: int, device="cpu", *, t5: dict | None = None) -> TextEncoder:
    """A 2-layer random T5 encoder with a byte-level tokenizer (no files needed), for the tiny preset.

    `t5` overrides T5Config fields (e.g. a flan-ul2-wide stand-in for benchmarks); the weights are
    initialised on the current default device (`with torch.device(...)`)."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

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


def builtin_model_dir(name: str) -> Path:
    """The folder of a model shipped inside the package (`kvideo/weights/<name>`)."""
    return Path(__file__).resolve().parent / "weights" / name


def resolve_weights(weights: str | Path) -> Path:
    """A weights folder, or the folder of the built-in model `weights` names ("shapes")."""
    if str(weights) in BUILTIN_MODELS and not Path(weights).exists():
        folder = builtin_model_dir(str(weights))
        if not (folder / MODEL_CARD).is_file():
            raise FileNotFoundError(f"the built-in {weights!r} model is missing from this installation "
                                    f"({str(folder)!r}); reinstall kvideo or train it: kvideo recipe {weights} OUT")
        return folder
    return Path(weights)


def read_model_card(folder: str | Path) -> dict:
    """The folder's `model.json` (name, description, prompt grammar, generation defaults), or {}."""
    path = Path(folder) / MODEL_CARD
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from error
    if not isinstance(card, dict) or not isinstance(card.get("generation", {}), dict):
        raise ValueError(f"{str(path)!r} must hold an object whose 'generation' entry is an object")
    check_card(card, path)
    return card


def check_card(card: dict, path: Path) -> None:
    """A model card's generation defaults and prompt grammar, checked when it is read (not mid-generation)."""
    known = {f.name for f in dataclasses.fields(GenerationOptions)} - {"seed"}
    unknown = sorted(set(card.get("generation", {})) - known)
    if unknown:
        raise ValueError(f"{str(path)!r}: unknown generation key(s) {unknown}; known: {sorted(known)}")
    try:
        GenerationOptions(**card.get("generation", {}))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{str(path)!r}: a bad generation default: {error}") from None
    pattern, words = card.get("prompt_pattern"), card.get("prompt_words", {})
    try:
        re.compile(pattern) if pattern is not None else None
    except (re.error, TypeError) as error:
        raise ValueError(f"{str(path)!r}: prompt_pattern {pattern!r} is not a regular expression ({error})") from None
    if not isinstance(words, dict) or not all(isinstance(v, list) and all(isinstance(w, str) for w in v)
                                              for v in words.values()):
        raise ValueError(f"{str(path)!r}: prompt_words must map each slot to a list of words, e.g. "
                         '{"color": ["red", "green"]}')


def find_weights(weights_dir: str | Path, files: dict[str, tuple[str, ...]] = WEIGHT_FILES,
                 what: str = "weights folder") -> dict[str, Path]:
    """The path of each part of a weights folder: the first of its accepted file names that exists."""
    folder = Path(weights_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {str(folder)!r} does not exist")
    found, missing = {}, []
    for part, names in files.items():
        hit = next((folder / n for n in names if (folder / n).exists()), None)
        if hit is None:
            missing.append(" or ".join(names))
        else:
            found[part] = hit
    if missing:
        raise FileNotFoundError(f"{what} {str(folder)!r} lacks: {'; '.join(missing)}")
    return found

