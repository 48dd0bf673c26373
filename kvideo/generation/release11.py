"""Kandinsky Video 1.1: text (or a picture) -> first frame -> 12 keyframes conditioned on it -> interpolation -> video.

The stages, in the release's order (ai-forever/KandinskyVideo @914eac1, `kandinsky_video`):

1. first frame: the keyframe UNet in image mode draws one latent at twice the video size
   (H/4 x W/4), the image MoVQ decodes it; with `image=` a user's picture replaces it;
2. the picture is resized and center-cropped to the video size and encoded by the image MoVQ;
3. keyframes: 12 latents, frame 0 conditioned on the first frame's latent (noise-augmented at
   t = 20 with uniform noise), three-branch guidance, a motion score;
4. interpolation (0, 1 or 2 passes, 3 new frames between each pair), text-conditioned;
5. the video MoVQ decodes all frames.

The options are `GenerationOptions` (guidance_scale is the prompt weight wt, image_guidance_scale the image
weight wi of the keyframes' three-branch guidance; the release's `__call__` passes wi = 2.0 to a function whose
own default is 3.0; kvideo uses 3.0, the 1.1 description's value). `fps` defaults to 'medium' as everywhere in
kvideo (the release's `__call__` defaults to 'low'). `upscale_image=False` keeps the release's handling of
pictures smaller than the video: they are not enlarged, and the crop pads them with black.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from einops import rearrange

from kvideo import diffusion
from kvideo.generation.base import (
    BasePipeline, check_prompt, shelve, state_reader, step_cache, tiny_text_encoder, weave,
)
from kvideo.generation.images import load_image, pixels_to_tensor, resize_center_crop, tensor_to_pixels
from kvideo.generation.options import FPS_MODES, MOTION_SCORES, NOMINAL_FPS, GenerationOptions
from kvideo.generation.output import Video11Output
from kvideo.generation.weights import find_weights, read_configs, read_projection
from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.unet import UNet, UNetConfig
from kvideo.text import TextEncoder, TextProjection, null_context


def check_motion(motion: object) -> int:
    """The motion score of a motion name; an unknown name is an error (the release silently used 'medium')."""
    if motion not in MOTION_SCORES:
        raise ValueError(f"motion={motion!r}: choose one of {list(MOTION_SCORES)}")
    return MOTION_SCORES[motion]


class KVideo11Pipeline(BasePipeline):
    """Kandinsky Video 1.1: first frame (drawn, or a user's picture) -> keyframes -> interpolation -> video MoVQ.

    `movq` is the image MoVQ (first frame decode / encode), `decoder` the video MoVQ.
    """

    release = "1.1"

    def __init__(self, text_encoder: TextEncoder, unet: UNet, interpolation_unet: UNet,
                 interpolation_null_embedding: torch.Tensor, movq: MoVQ, decoder: MoVQ, **kwargs: Any) -> None:
        check_models(unet, interpolation_unet)
        super().__init__(text_encoder, unet, interpolation_unet, interpolation_null_embedding, decoder, **kwargs)
        self.movq = movq
        self._place("movq")

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: Path, *, device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32",
             offload: str = "none", progress: bool = True, text_encoder_int8: bool = False) -> "KVideo11Pipeline":
        """A 1.1 weights folder: t2v.pt, interpolation.pt, t5_projections.pt, movq.pt, video_movq.pt,
        configs.json (the models' constructor configs; not needed for kvideo conversions) and
        text_encoder/ (a T5 encoder in Hugging Face format). With offload="disk" each model is read once for
        its config and extras and its weights dropped at once."""
        paths = find_weights(folder, "1.1")
        configs = read_configs(folder, paths)
        staged = offload == "disk"
        unet, keyframe_null = read_unet(paths, configs, "keyframe", staged)
        interp, interpolation_null = read_unet(paths, configs, "interpolation", staged)
        movq = shelve(MoVQ.from_pretrained(paths["movq"], configs.get("movq")), staged)
        decoder = shelve(MoVQ.from_pretrained(paths["decoder"], configs.get("decoder")), staged)
        projection = TextProjection.from_state_dict(read_projection(paths["projections"]))
        encoder = TextEncoder.from_pretrained(paths["text_encoder"], projection, keyframe_null, device=device,
                                              offload=offload == "model", progress=progress, int8=text_encoder_int8,
                                              staged=staged)
        files = {"unet": state_reader(UNet, paths["keyframe"]),
                 "interpolation_unet": state_reader(UNet, paths["interpolation"]),
                 "movq": state_reader(MoVQ, paths["movq"]), "decoder": state_reader(MoVQ, paths["decoder"])}
        return cls(encoder, unet, interp, interpolation_null, movq, decoder, device=device, dtype=dtype,
                   offload=offload, progress=progress, weight_files=files if staged else None)

    @classmethod
    def from_preset(cls, name: str = "tiny", *, seed: int = 0, **kwargs: Any) -> "KVideo11Pipeline":
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
                 callback: Callable[[str, dict], None] | None = None, **options: Any) -> Video11Output:
        """Generate one clip; with `image` (PIL image, uint8 array or path) animate that picture.

        Options: see `GenerationOptions` (width, height, fps, motion, steps, ...). A negative
        prompt replaces the null text of the first frame's and the keyframes' unconditional
        branches (the release has none); interpolation keeps the null text, as the release.
        """
        check_prompt(prompt)
        if negative_prompt is not None:
            check_prompt(negative_prompt, "negative_prompt")
        opts = self.options(**options)
        self.prepare(compile=opts.compile, text_encoder_int8=opts.text_encoder_int8)
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
        frames = self.decode(latents, opts.decode_window)[0]
        return Video11Output(frames=frames, fps=NOMINAL_FPS[opts.fps], latents=latents.float().cpu(),
                             first_frame=np.asarray(frame, dtype=np.uint8))

    def draw_first_frame(self, text, opts: GenerationOptions, generator, callback):
        """Text -> a picture at twice the video size: the keyframe UNet in image mode, then the image MoVQ."""
        context, mask, uncond, uncond_mask = text
        factor = self.movq.config.downsample_factor  # the picture is twice the video's size
        shape = (1, self.unet.config.out_channels, 2 * opts.height // factor, 2 * opts.width // factor)
        condition = torch.zeros(1, self.unet.config.num_channels - shape[1], *shape[2:], device=self.device)
        model = diffusion.TextGuidance(diffusion.ConditionChannels(self.unet, condition), context, mask, uncond,
                                       uncond_mask, opts.first_frame_guidance_scale, mode="image", **step_cache(opts))
        latent = self._sample("first frame", self.unet, model, self.unet.config.predicts, shape,
                              opts.first_frame_steps, "leading", generator, callback)
        with self._stage("first frame decode", self.movq), self._autocast():
            return tensor_to_pixels(self.movq.decode(latent.to(self.device)))

    def encode_first_frame(self, frame) -> torch.Tensor:
        """PIL W x H -> its image-MoVQ latent (1, 4, H/8, W/8)."""
        with self._stage("first frame encode", self.movq), self._autocast():
            return self.movq.encode(pixels_to_tensor(frame).to(self.device)).float()

    def keyframes_from(self, first: torch.Tensor, text, opts: GenerationOptions, generator, callback):
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
        return self._sample("keyframes", self.unet, model, cfg.predicts, shape, opts.steps, "leading", generator,
                            callback)

    def interpolate_with_text(self, latents: torch.Tensor, skip_frames: int, text, opts: GenerationOptions,
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
        middle = self._sample(f"interpolation (skip {skip_frames})", self.interpolation_unet, model, "v", shape,
                              opts.interpolation_steps, "trailing", generator, callback)
        return weave(latents, rearrange(middle, "b (k c) g h w -> b c g k h w", c=c))

    def _sample(self, stage, unet, model, prediction, shape, steps, spacing, generator, callback):
        """Ancestral DDPM on the zero-SNR cosine schedule, x0 clipped to [-1, 1] (the release's thresholding)."""
        schedule = diffusion.zero_snr_cosine_schedule(steps, spacing)
        denoise = diffusion.X0Denoiser(model, schedule, prediction, percentile=0.995, max_value=1.0)
        x = torch.randn(shape, generator=generator, device=generator.device).to(self.device)
        report = self._step_report(stage, steps, callback)
        with self._stage(stage, unet), self._autocast():
            return diffusion.sample_ddpm(denoise, x, schedule, generator=generator, callback=report,
                                         progress=self.progress and stage)


def read_unet(paths: dict[str, Path], configs: dict, slot: str, staged: bool) -> tuple[UNet, torch.Tensor]:
    """The folder's keyframe or interpolation UNet and its null embedding; `staged`: its weights dropped at once."""
    checkpoint = UNet.read_checkpoint(paths[slot])
    if "null_embedding" not in checkpoint.extras:
        raise ValueError(f"{paths[slot]} has no null_embedding; is it a Kandinsky Video 1.1 UNet checkpoint?")
    return shelve(UNet.from_checkpoint(checkpoint, configs.get(slot)), staged), checkpoint.extras["null_embedding"]


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
