"""Kandinsky Video 1.1: text (or a picture) -> first frame -> 12 keyframes conditioned on it -> interpolation -> video.

The stages, in the release's order (ai-forever/KandinskyVideo @914eac1, `kandinsky_video`):

1. first frame: the keyframe UNet in image mode draws one latent at twice the video size
   (H/4 x W/4), the image MoVQ decodes it; with `image=` a user's picture replaces it;
2. the picture is resized and center-cropped to the video size and encoded by the image MoVQ;
3. keyframes: 12 latents, frame 0 conditioned on the first frame's latent (noise-augmented at
   t = 20 with uniform noise), three-branch guidance, a motion score;
4. interpolation (0, 1 or 2 passes, 3 new frames between each pair), text-conditioned;
5. the video MoVQ decodes all frames.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from einops import rearrange

from kvideo import diffusion
from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.unet import UNet, UNetConfig
from kvideo.pipeline import (
    FPS_MODES,
    NOMINAL_FPS,
    KVideoPipeline,
    VideoOutput,
    check_finite_frames,
    check_prompt,
    step_cache,
    tiny_text_encoder,
    weave,
)
from kvideo.pipeline import find_weights as find_weights_in
from kvideo.text import TextEncoder, TextProjection, null_context

MOTION_SCORES = {"low": 1, "medium": 10, "high": 50, "extreme": 100}
CONFIGS_FILE = "configs.json"
# Files of a 1.1 weights folder: official names first, kvideo conversions second.
WEIGHT_FILES = {
    "keyframe": ("t2v.pt", "t2v.safetensors"),
    "interpolation": ("interpolation.pt", "interpolation.safetensors"),
    "projections": ("t5_projections.pt",),
    "movq": ("movq.pt", "movq.safetensors"),
    "decoder": ("video_movq.pt", "video_movq.safetensors"),
    "text_encoder": ("text_encoder",),
}
# configs.json entry -> (its model, the kind a 1.1 UNet entry builds)
CONFIG_ENTRIES = {"keyframe": ("t2v", "keyframe"), "interpolation": ("interpolation", "interpolation"),
                  "movq": ("image_movq", None), "decoder": ("video_movq", None)}


def is_kv11_folder(folder: str | Path) -> bool:
    """Whether a weights folder holds release 1.1 files (`t2v.pt` or its conversion)."""
    folder = Path(folder)
    return any((folder / name).exists() for name in WEIGHT_FILES["keyframe"])


# -- options -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Generation11Options:
    """Every knob of one 1.1 generation, validated before any heavy work starts.

    guidance_scale is the prompt weight wt, image_guidance_scale the image weight wi of the
    keyframes' three-branch guidance; first_frame_guidance_scale guides the drawn first frame,
    interpolation_guidance_scale the interpolation ((w + 1)·cond - w·uncond). The defaults are
    the release's (its `__call__` passes wi = 2.0 to a function whose own default is 3.0; kvideo
    uses 3.0, the 1.1 description's value). `fps` defaults to 'medium' as everywhere in kvideo (the
    release's `__call__` defaults to 'low'). `upscale_image=False` keeps the release's handling of
    pictures smaller than the video: they are not enlarged, and the crop pads them with black.
    """

    width: int = 512
    height: int = 512
    fps: str = "medium"
    num_frames: int | None = None  # keyframes; default: the keyframe model's num_frames (12)
    steps: int = 50
    first_frame_steps: int = 50
    interpolation_steps: int = 10
    guidance_scale: float = 5.0
    image_guidance_scale: float = 3.0
    first_frame_guidance_scale: float = 5.0
    interpolation_guidance_scale: float = 0.5
    motion: str = "medium"
    noise_augmentation: int = 20
    seed: int | None = None
    decode_window: int | None = None
    upscale_image: bool = False
    cache_interval: int = 1  # step caching: the UNets' deep levels computed every N-th step (1: off, exact)

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0 or value % 64:
                raise ValueError(f"{name}={value!r}: sizes must be positive multiples of 64 (e.g. 512x512, 640x384)")
        if self.fps not in FPS_MODES:
            raise ValueError(f"fps={self.fps!r}: choose one of {sorted(FPS_MODES)}")
        check_motion(self.motion)
        for name in ("steps", "first_frame_steps", "interpolation_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
                raise ValueError(f"{name}={value!r}: must be an integer in 1..1000")
        for name in ("guidance_scale", "image_guidance_scale", "first_frame_guidance_scale",
                     "interpolation_guidance_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}={value!r}: must be a finite number")
        if not isinstance(self.noise_augmentation, int) or not 0 <= self.noise_augmentation < 1000:
            raise ValueError(f"noise_augmentation={self.noise_augmentation!r}: must be an integer in 0..999")
        if self.num_frames is not None and (not isinstance(self.num_frames, int) or self.num_frames < 2):
            raise ValueError(f"num_frames={self.num_frames!r}: needs at least 2 keyframes (frame 0 is the first frame)")
        if self.decode_window is not None and self.decode_window < 1:
            raise ValueError(f"decode_window={self.decode_window}: must be >= 1")
        interval = self.cache_interval
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"cache_interval={interval!r}: an integer >= 1 (1: no step caching)")


def check_motion(motion: object) -> int:
    """The motion score of a motion name; an unknown name is an error (the release silently used 'medium')."""
    if motion not in MOTION_SCORES:
        raise ValueError(f"motion={motion!r}: choose one of {list(MOTION_SCORES)}")
    return MOTION_SCORES[motion]


@dataclass
class Video11Output(VideoOutput):
    """A 1.1 clip plus the first frame that conditioned it: uint8 (H, W, 3), drawn or given."""

    first_frame: np.ndarray | None = None

    def save_first_frame(self, path: str | Path) -> Path:
        from PIL import Image

        from kvideo.checkpoint import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            Image.fromarray(self.first_frame).save(tmp, format=image_format(path))
        return path


def image_format(path: Path) -> str:
    """The PIL format of an image file name (.png, .jpg, ...), or a ValueError naming the choices."""
    from PIL import Image

    Image.init()
    if path.suffix.lower() not in Image.EXTENSION:
        raise ValueError(f"{str(path)!r}: unknown image extension; use .png or .jpg")
    return Image.EXTENSION[path.suffix.lower()]


# -- pictures ------------------------------------------------------------------------------------
def load_image(image: Any):
    """A PIL RGB image from a PIL image, a uint8 array (h, w), (h, w, 1|3|4) or an image file path.

    Pictures with alpha or one channel are converted to RGB (alpha dropped, as the release does)
    with a warning that says so.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image {str(path)!r} does not exist (or is not a file)")
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"image {str(path)!r} is not a readable picture ({error}); give a PNG or JPEG") from None
    elif isinstance(image, np.ndarray):
        image = _array_image(image)
    elif not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL image, a uint8 array or a file path; got {type(image).__name__}")
    if image.mode != "RGB":
        warnings.warn(f"the image has mode {image.mode!r} ({_describe_mode(image.mode)}); converted to RGB",
                      stacklevel=2)
        image = image.convert("RGB")
    return image


def _array_image(array: np.ndarray):
    from PIL import Image

    if array.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8 (0..255); got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"an image array must be (h, w), (h, w, 1), (h, w, 3) or (h, w, 4); got {array.shape}")
    return Image.fromarray(array)


def _describe_mode(mode: str) -> str:
    if "A" in mode or mode == "PA":
        return "it has an alpha channel, which is dropped"
    if mode in ("L", "1", "I", "F", "I;16"):
        return "one channel, repeated"
    return "not RGB"


def resize_center_crop(image, width: int, height: int, *, upscale: bool = False):
    """The release's fit: shrink by max(1, min(w0/W, h0/H)) (bicubic), then center-crop W x H.

    A picture smaller than W x H is not enlarged and the crop pads it with black, as the release
    does; `upscale=True` enlarges it first instead (kvideo's option, not the release's).
    """
    from PIL import Image

    w0, h0 = image.size
    factor = min(w0 / width, h0 / height)
    factor = factor if upscale else max(1.0, factor)
    image = image.resize((round(w0 / factor), round(h0 / factor)), Image.Resampling.BICUBIC)
    w1, h1 = image.size
    return image.crop(((w1 - width) / 2, (h1 - height) / 2, (w1 + width) / 2, (h1 + height) / 2))


def pixels_to_tensor(image) -> torch.Tensor:
    """PIL RGB (W x H) -> (1, 3, H, W) float in [-1, 1]."""
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # (H, W, 3)
    return (array.permute(2, 0, 1)[None].float() / 255.0) * 2.0 - 1.0


def tensor_to_pixels(image: torch.Tensor):
    """(1, 3, H, W) in [-1, 1] -> PIL RGB, truncating to uint8 as the release does."""
    from PIL import Image

    array = (((image[0].float() + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array.astype(np.uint8))


# -- the pipeline --------------------------------------------------------------------------------
class KVideo11Pipeline(KVideoPipeline):
    """Kandinsky Video 1.1: first frame (drawn, or a user's picture) -> keyframes -> interpolation -> video MoVQ.

    `movq` is the image MoVQ (first frame decode / encode), `decoder` the video MoVQ.
    """

    release = "1.1"

    def __init__(self, text_encoder: TextEncoder, unet: UNet, interpolation_unet: UNet,
                 interpolation_null_embedding: torch.Tensor, movq: MoVQ, decoder: MoVQ, **kwargs) -> None:
        check_models(unet, interpolation_unet)
        super().__init__(text_encoder, unet, interpolation_unet, interpolation_null_embedding, decoder, **kwargs)
        self.movq = movq.eval().requires_grad_(False).to(dtype=self.dtype)
        self.movq.to("cpu" if self.offload == "model" else self.device)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, weights_dir: str | Path, *, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "fp32", offload: str = "none", progress: bool = True,
                        ) -> "KVideo11Pipeline":
        """A 1.1 weights folder: t2v.pt, interpolation.pt, t5_projections.pt, movq.pt, video_movq.pt,
        configs.json (the models' constructor configs; not needed for kvideo conversions) and
        text_encoder/ (a T5 encoder in Hugging Face format)."""
        paths = find_weights(weights_dir)
        configs = read_configs(weights_dir, paths)
        keyframe = UNet.read_checkpoint(paths["keyframe"])
        interpolation = UNet.read_checkpoint(paths["interpolation"])
        for name, checkpoint in (("keyframe", keyframe), ("interpolation", interpolation)):
            if "null_embedding" not in checkpoint.extras:
                raise ValueError(f"{paths[name]} has no null_embedding; is it a Kandinsky Video 1.1 UNet checkpoint?")
        unet = UNet.from_checkpoint(keyframe, configs.get("keyframe"))
        interp = UNet.from_checkpoint(interpolation, configs.get("interpolation"))
        movq = MoVQ.from_pretrained(paths["movq"], configs.get("movq"))
        decoder = MoVQ.from_pretrained(paths["decoder"], configs.get("decoder"))
        projection = TextProjection.from_state_dict(read_projection(paths["projections"]))
        encoder = TextEncoder.from_pretrained(paths["text_encoder"], projection, keyframe.extras["null_embedding"],
                                              device=device, offload=offload == "model", progress=progress)
        return cls(encoder, unet, interp, interpolation.extras["null_embedding"], movq, decoder,
                   device=device, dtype=dtype, offload=offload, progress=progress)

    @classmethod
    def from_preset(cls, name: str = "tiny", *, seed: int = 0, **kwargs) -> "KVideo11Pipeline":
        """Random weights at a named size ('tiny' runs every 1.1 stage on a CPU in seconds).
        The output is noise-like: it exercises every stage, it is not a trained model."""
        if name != "tiny":
            raise ValueError(f"unknown 1.1 pipeline preset {name!r}; available: ['tiny']")
        torch.manual_seed(seed)
        unet = UNet(UNetConfig.preset("tiny-kv11-keyframe"))
        interp = UNet(UNetConfig.preset("tiny-kv11-interpolation"))
        context_dim = unet.config.context_dim
        encoder = tiny_text_encoder(context_dim, device=kwargs.get("device", "cpu"))
        movq, decoder = MoVQ(MoVQConfig.preset("tiny")), MoVQ(MoVQConfig.preset("tiny-video"))
        return cls(encoder, unet, interp, torch.randn(context_dim), movq, decoder, **kwargs)

    # -- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str, negative_prompt: str | None = None, *, image: Any = None,
                 callback: Callable[[str, dict], None] | None = None, **options) -> Video11Output:
        """Generate one clip; with `image` (PIL image, uint8 array or path) animate that picture.

        Options: see `Generation11Options` (width, height, fps, motion, steps, ...). A negative
        prompt replaces the null text of the first frame's and the keyframes' unconditional
        branches (the release has none); interpolation keeps the null text, as the release.
        """
        check_prompt(prompt)
        if negative_prompt is not None:
            check_prompt(negative_prompt, "negative_prompt")
        opts = Generation11Options(**options)
        picture = None if image is None else load_image(image)
        generator = torch.Generator()  # on the CPU: a seed gives the same clip on every device
        generator.manual_seed(opts.seed if opts.seed is not None else int(torch.seed() % 2**63))
        text = self.encode_prompt(prompt, negative_prompt)
        if picture is None:
            picture = self.draw_first_frame(text, opts, generator, callback)
        frame = resize_center_crop(picture, opts.width, opts.height, upscale=opts.upscale_image)
        latents = self.keyframes_from(self.encode_first_frame(frame), text, opts, generator, callback)
        for skip in FPS_MODES[opts.fps]:
            latents = self.interpolate_with_text(latents, skip, text, opts, generator, callback)
        frames = self.decode_clip(latents, opts.decode_window)
        return Video11Output(frames=frames, fps=NOMINAL_FPS[opts.fps], latents=latents.float().cpu(),
                             first_frame=np.asarray(frame, dtype=np.uint8))

    def draw_first_frame(self, text, opts: Generation11Options, generator, callback):
        """Text -> a picture at twice the video size: the keyframe UNet in image mode, then the image MoVQ."""
        context, mask, uncond, uncond_mask = text
        factor = self.movq.config.downsample_factor  # the picture is twice the video's size
        shape = (1, self.unet.config.out_channels, 2 * opts.height // factor, 2 * opts.width // factor)
        condition = torch.zeros(1, self.unet.config.num_channels - shape[1], *shape[2:], device=self.device)
        model = diffusion.TextGuidance(diffusion.ConditionChannels(self.unet, condition), context, mask, uncond,
                                       uncond_mask, opts.first_frame_guidance_scale, mode="image", **step_cache(opts))
        latent = self._sample_11("first frame", self.unet, model, self.unet.config.predicts, shape,
                                 opts.first_frame_steps, "leading", generator, callback)
        with self._on_device(self.movq), self._autocast():
            return tensor_to_pixels(self.movq.decode(latent.to(self.device)))

    def encode_first_frame(self, frame) -> torch.Tensor:
        """PIL W x H -> its image-MoVQ latent (1, 4, H/8, W/8)."""
        with self._on_device(self.movq), self._autocast():
            return self.movq.encode(pixels_to_tensor(frame).to(self.device)).float()

    def keyframes_from(self, first: torch.Tensor, text, opts: Generation11Options, generator, callback):
        """The keyframes (1, 4, T, h, w), frame 0 conditioned on the noise-augmented first-frame latent."""
        cfg = self.unet.config
        frames = opts.num_frames or cfg.num_frames
        context, mask, uncond, uncond_mask = text
        # uniform noise, as the release draws it (torch.rand_like), not Gaussian
        noise = torch.rand(first.shape, generator=generator, device=generator.device).to(first)
        augmented = diffusion.add_noise(first, noise, opts.noise_augmentation)
        condition = torch.zeros(1, cfg.num_channels - cfg.out_channels, frames, *first.shape[-2:], device=self.device)
        condition[:, :first.shape[1], 0] = augmented[0]
        condition[:, first.shape[1]:, 0] = 1.0  # the mask: frame 0 holds the condition
        per_video = {"noise_aug_time": torch.tensor([opts.noise_augmentation], device=self.device),
                     "motion_score": torch.tensor([check_motion(opts.motion)], device=self.device)}
        model = diffusion.FirstFrameGuidance(
            self.unet, condition, context, mask, uncond, uncond_mask, text_scale=opts.guidance_scale,
            image_scale=opts.image_guidance_scale, batch_kwargs=per_video, mode="video",
            frame_positions=torch.arange(frames, device=self.device) * cfg.frame_stride, **step_cache(opts))
        shape = (1, cfg.out_channels, frames, *first.shape[-2:])
        return self._sample_11("keyframes", self.unet, model, cfg.predicts, shape, opts.steps, "leading", generator,
                               callback)

    def interpolate_with_text(self, latents: torch.Tensor, skip_frames: int, text, opts: Generation11Options,
                              generator, callback) -> torch.Tensor:
        """(1, c, T, h, w) -> (1, c, 4T - 3, h, w); the unconditional branch has null text, zeroed
        keyframes and a temporal mask of 0."""
        cfg = self.interpolation_unet.config
        b, c, t, h, w = latents.shape
        context, mask = text[0], text[1]
        uncond, uncond_mask = null_context(self.interpolation_null_embedding.to(context), 1, context.shape[1])
        ones = torch.ones(1, device=self.device)
        model = diffusion.KeyframeGuidance(
            self.interpolation_unet, latents[:, :, :-1], latents[:, :, 1:], opts.interpolation_guidance_scale,
            context=context, context_mask=mask, uncond_context=uncond, uncond_context_mask=uncond_mask,
            batch_kwargs={"skip_frames": torch.full((1,), skip_frames, device=self.device),
                          "perturbation_time": torch.zeros(1, device=self.device), "temporal_mask": ones},
            uncond_batch_kwargs={"temporal_mask": torch.zeros_like(ones)}, **step_cache(opts),
        )
        shape = (b, cfg.out_channels, t - 1, h, w)
        middle = self._sample_11(f"interpolation (skip {skip_frames})", self.interpolation_unet, model, "v", shape,
                                 opts.interpolation_steps, "trailing", generator, callback)
        return weave(latents, rearrange(middle, "b (k c) g h w -> b c g k h w", c=c))

    def decode_clip(self, latents: torch.Tensor, window: int | None) -> np.ndarray:
        """(1, 4, f, h, w) latents -> uint8 frames (f, H, W, 3) through the video MoVQ."""
        with self._on_device(self.decoder), self._autocast():
            video = self.decoder.decode(latents.to(self.device), window=window,
                                        progress=self.progress)  # (1, 3, f, H, W)
        check_finite_frames(video)
        video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return rearrange(video[0], "c f h w -> f h w c").cpu().numpy()

    def _sample_11(self, stage, unet, model, prediction, shape, steps, spacing, generator, callback):
        """Ancestral DDPM on the zero-SNR cosine schedule, x0 clipped to [-1, 1] (the release's thresholding)."""
        schedule = diffusion.zero_snr_cosine_schedule(steps, spacing)
        denoise = diffusion.X0Denoiser(model, schedule, prediction, percentile=0.995, max_value=1.0)
        x = torch.randn(shape, generator=generator, device=generator.device).to(self.device)
        report = self._step_report(stage, steps, callback)
        with self._on_device(unet), self._autocast():
            return diffusion.sample_ddpm(denoise, x, schedule, generator=generator, callback=report,
                                         progress=self.progress and stage)


def check_models(unet: UNet, interpolation_unet: UNet) -> None:
    """The UNets are release 1.1 models: a keyframe UNet with [noisy | condition | mask] input, an interpolation one."""
    cfg = unet.config
    if (cfg.kind, cfg.release) != ("keyframe", "1.1") or cfg.num_channels != 2 * cfg.out_channels + 1:
        raise ValueError(f"the 1.1 pipeline needs a release 1.1 keyframe UNet with {2 * cfg.out_channels + 1} input "
                         f"channels; got kind={cfg.kind!r}, release={cfg.release!r}, num_channels={cfg.num_channels}")
    if not (cfg.noise_augmentation and cfg.motion_score):
        raise ValueError("the 1.1 pipeline needs a keyframe UNet with noise_augmentation and motion_score embeddings")
    icfg = interpolation_unet.config
    if (icfg.kind, icfg.release) != ("interpolation", "1.1"):
        raise ValueError(f"the 1.1 pipeline needs a release 1.1 interpolation UNet; got kind={icfg.kind!r}, "
                         f"release={icfg.release!r}")


# -- weights folder ------------------------------------------------------------------------------
def find_weights(weights_dir: str | Path) -> dict[str, Path]:
    """The files of a release 1.1 weights folder (see `WEIGHT_FILES`)."""
    return find_weights_in(weights_dir, WEIGHT_FILES, what="1.1 weights folder")


def read_configs(weights_dir: str | Path, paths: dict[str, Path]) -> dict[str, Any]:
    """Model configs from the release's configs.json, for the official (pickle) files among `paths`."""
    official = [part for part in CONFIG_ENTRIES if paths[part].suffix != ".safetensors"]
    if not official:
        return {}
    path = Path(weights_dir) / CONFIGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist: the official 1.1 files need the release's "
                                f"{CONFIGS_FILE} for their model configs")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from None
    configs = {}
    for part in official:
        entry, kind = CONFIG_ENTRIES[part]
        if entry not in entries:
            raise ValueError(f"{str(path)!r} has no {entry!r} entry (found {sorted(entries)})")
        kwargs = entries[entry].get("configs", entries[entry])  # the release nests them under "configs"
        configs[part] = (UNetConfig.from_reference(kwargs, release="1.1", kind=kind) if kind
                         else MoVQConfig.from_reference(kwargs))
    return configs


def read_projection(path: Path) -> dict[str, torch.Tensor]:
    """The text projection of `t5_projections.pt` that the release uses for every stage ('projection_base')."""
    from kvideo.checkpoint import load_file

    contents, _ = load_file(path)
    if "projection_base" not in contents:
        raise ValueError(f"{str(path)!r} has no 'projection_base' entry (found {sorted(contents)[:6]}); "
                         "is it the release's t5_projections.pt?")
    return {f"t5.{k}": v for k, v in contents["projection_base"].items()}
