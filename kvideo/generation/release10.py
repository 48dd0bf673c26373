"""Release 1.0 (and kvideo's own models): text -> keyframes -> interpolation -> video MoVQ decoding -> frames."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from einops import rearrange

from kvideo import diffusion
from kvideo.checkpoint import CheckpointError, sub_state_dict
from kvideo.generation.base import (
    BasePipeline, check_prompt, interpolation_context, shelve, state_reader, step_cache, tiny_text_encoder, weave,
)
from kvideo.generation.options import FPS_MODES, NOMINAL_FPS, GenerationOptions
from kvideo.generation.output import VideoOutput
from kvideo.generation.weights import find_weights
from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.unet import UNet, UNetConfig
from kvideo.text import TextEncoder, TextProjection


class KVideoPipeline(BasePipeline):
    """Keyframe UNet -> interpolation UNet (0, 1 or 2 passes) -> video MoVQ decoder."""

    release = "1.0"

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: Path, *, device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32",
             offload: str = "none", progress: bool = True, text_encoder_int8: bool = False) -> "KVideoPipeline":
        """A 1.0 weights folder: the official files or their kvideo conversions: text_encoder/ (a T5 encoder in
        Hugging Face format), kandinsky_video.pt, kandinsky_video_interpolation.pt and video_movq.pt.
        With offload="disk" each model is read once for its config and extras and its weights dropped at once."""
        paths = find_weights(folder, "1.0")
        staged = offload == "disk"
        unet, keyframe_extras = read_unet(paths, "keyframe", staged)
        interp, interpolation_extras = read_unet(paths, "interpolation", staged)
        decoder_config = None if paths["decoder"].suffix == ".safetensors" else MoVQConfig.preset("official-video")
        decoder = shelve(MoVQ.from_pretrained(paths["decoder"], decoder_config), staged)
        projection = TextProjection.from_state_dict(sub_state_dict(keyframe_extras, "projections"))
        encoder = TextEncoder.from_pretrained(paths["text_encoder"], projection, keyframe_extras["null_embedding"],
                                              device=device, offload=offload == "model", progress=progress,
                                              int8=text_encoder_int8, staged=staged)
        files = {"unet": state_reader(UNet, paths["keyframe"]),
                 "interpolation_unet": state_reader(UNet, paths["interpolation"]),
                 "decoder": state_reader(MoVQ, paths["decoder"])}
        return cls(encoder, unet, interp, interpolation_extras["null_embedding"], decoder, device=device,
                   dtype=dtype, offload=offload, progress=progress, weight_files=files if staged else None)

    @classmethod
    def from_preset(cls, name: str = "tiny", *, seed: int = 0, **kwargs: Any) -> "KVideoPipeline":
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

    def options(self, **given: Any) -> GenerationOptions:
        opts = super().options(**given)
        channels = self.unet.config.latent_channels
        if opts.latent_range is not None and len(opts.latent_range[0]) != channels:
            raise ValueError(f"latent_range has {len(opts.latent_range[0])} channels; the model's latents have "
                             f"{channels}")
        return opts

    # -- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str], negative_prompt: str | None = None, *,
                 callback: Callable[[str, int, torch.Tensor], None] | None = None,
                 **options: Any) -> VideoOutput | list[VideoOutput]:
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
        opts = self.options(**options)
        self.prepare(compile=opts.compile, text_encoder_int8=opts.text_encoder_int8)
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

    def _sample(self, stage, unet, model, prediction, shape, steps, sampler, opts, generator, callback):
        schedule = diffusion.cosine_schedule(steps, spacing=opts.timestep_spacing)
        denoise = diffusion.X0Denoiser(model, schedule, prediction, percentile=opts.threshold,
                                       latent_range=opts.latent_range)
        x = diffusion.randn_like(torch.empty(shape, device=self.device), generator)
        report = self._step_report(stage, steps, callback)
        with self._stage(stage, unet), self._autocast():
            return diffusion.get_sampler(sampler)(
                denoise, x, schedule, generator=generator, callback=report, progress=self.progress and stage)


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


def read_unet(paths: dict[str, Path], slot: str, staged: bool) -> tuple[UNet, dict[str, torch.Tensor]]:
    """The folder's keyframe or interpolation UNet (an official file or kvideo's) and its file's extras; `staged`:
    its weights dropped at once (offload="disk" reads them again at its stage)."""
    checkpoint = UNet.read_checkpoint(paths[slot])
    check_unet_file(slot, checkpoint, paths[slot])
    unet = UNet.from_checkpoint(checkpoint, None if checkpoint.config else UNetConfig.preset(f"official-{slot}"))
    return shelve(unet, staged), checkpoint.extras


def check_unet_file(slot: str, checkpoint, path: Path) -> None:
    """A weights-folder UNet file is the model its name says (a keyframe UNet in the interpolation slot
    would otherwise fail only after keyframe sampling) and carries its null embedding."""
    kind = checkpoint.config.kind if checkpoint.config is not None else None
    if kind is not None and kind != slot:
        raise CheckpointError(f"{str(path)!r} holds a {kind} UNet, but the file name is the {slot} model's; "
                              f"put the {slot} UNet there")
    if "null_embedding" not in checkpoint.extras:
        raise CheckpointError(f"{str(path)!r} has no null_embedding; is it a Kandinsky Video UNet checkpoint?")
