"""The shapes model's settings in one place: its UNet, MoVQ, training and cache presets, recipe stages and card.

Importing this module registers the presets (`UNetConfig.preset("shapes-keyframe")`,
`TrainConfig.preset("shapes-movq")`, ...) and the `detector` training task; every command line imports
it, library code that names a shapes preset imports it too.
"""
from __future__ import annotations

import dataclasses

from kvideo.models.movq import MoVQConfig
from kvideo.models.unet import UNetConfig
from kvideo.shapes import detector
from kvideo.train.config import CacheConfig, ClipConfig, TrainConfig
from kvideo.train.tasks import register_task

# The recipe's stages, in order (`kvideo recipe shapes OUT --stages ...`).
STAGES = ("data", "movq", "text", "cache-keyframe", "image", "keyframe", "keyframe-all", "keyframe-detail",
          "cache-interpolation",
          "interpolation", "data-motion", "cache-interpolation-motion", "interpolation-motion", "decoder", "model")
KEYFRAME_PHASES = ("motion", "noisy")  # preset suffixes of the phases before a keyframe preset's own run
# Generation defaults, written into the model card (benchmarks/README.md, "fast and clean clips"): guidance 5 drew
# dark cores and the release's quantile thresholding grayed white backgrounds, so x0 is clipped to `latent_range`;
# guidance 1.5 leaves the keyframes' latents less textured than 2 (fourteenth session).
GENERATION = {"width": 64, "height": 64, "steps": 8, "interpolation_steps": 4, "sampler": "dpmpp_2m",
              "interpolation_sampler": "ddim", "timestep_spacing": "trailing", "threshold": None,
              "guidance_scale": 1.5, "interpolation_guidance_scale": 0.0, "cache_interval": 2}

# -- models: 64x64 videos, 16x16x4 latents --------------------------------------------------------
# The MoVQ downsamples by 4, not the release's 8: in 8x8 latents the UNets drew squares and circles as one blob.
# Narrow full-resolution levels and (3,1,1) temporal convs keep CPU decoding of a 57-frame clip near a second.
_MOVQ = dict(channels=16, channel_mult=(1, 2, 4), attention_levels=(False, False, True), num_res_blocks=1,
             groups=8, latent_channels=4)
MoVQConfig.register_preset("shapes", **_MOVQ)
MoVQConfig.register_preset("shapes-video", **_MOVQ, temporal=True, temporal_attention=True,
                           attention_latent="window_first", temporal_kernel_size=(3, 1, 1))
_UNET = dict(model_channels=32, init_channels=32, time_embed_dim=128, context_dim=64, groups=8, head_dim=16,
             dim_mult=(1, 2, 4, 4), num_blocks=(2, 2, 2, 2), latent_channels=4, num_channels=4, out_channels=4)
# v prediction: predicting eps, the small UNet's x0 estimate at t = 950 was noise, and the motion followed the seed.
UNetConfig.register_preset("shapes-image", kind="image", prediction="v", **_UNET)
# Every temporal norm reads the frame position: with release 1.0's scheme the positions went unused.
UNetConfig.register_preset("shapes-keyframe", kind="keyframe", prediction="v", frame_conditioning="all", **_UNET)
# 64 and 128 channels at the first two levels: with 32 the 20-channel input (80 values per 2x2 block) does not
# fit, the model cannot see the noise it is to remove and never learns to denoise.
UNetConfig.register_preset("shapes-interpolation", kind="interpolation", **{
    **_UNET, "num_channels": 20, "out_channels": 12, "init_channels": 64, "dim_mult": (4, 4, 4),
    "num_blocks": (2, 2, 2), "add_cross_attention": (False, True, True), "add_self_attention": (False, True, True)})

# -- training: sized for a 2-core CPU ---------------------------------------------------------------
_TRAIN = dict(precision="fp32", num_workers=1, log_every=25, tensorboard=False, warmup_steps=100,
              lr_schedule="cosine", weight_decay=0.0, max_grad_norm=1.0)
_KEYFRAMES = ClipConfig(task="keyframe", keyframes=15, keyframe_step=12, height=64, width=64)
_INTERPOLATION = ClipConfig(task="interpolation", keyframes=5, max_skip=4, height=64, width=64)
TrainConfig.register_preset(
    "shapes-movq", task="movq", model_preset="shapes", train="all", steps=3000, batch_size=2, grad_accum=1,
    lr=2e-3, save_every=250, detail_weight=10.0,
    clip=ClipConfig(task="movq", decoder_frames=4, decoder_step=24, height=64, width=64), **_TRAIN)
TrainConfig.register_preset(
    "shapes-image", task="image", train="all", steps=6000, batch_size=2, grad_accum=1, lr=5e-4, ema_decay=0.999,
    save_every=500, clip=dataclasses.replace(_KEYFRAMES, task="image"), **_TRAIN)
# Keyframe phases (the recipe chains them): the direction word decides the motion only at the noisiest steps,
# learned first on four captions (`motion`), then on all (`noisy`), then at every step; all at once never learned it.
_MOTION_CAPTIONS = r"^a red circle moving \w+ on a black background$"
for _name, _train, _lr in (("shapes-keyframe", "temporal", 5e-4), ("shapes-keyframe-all", "all", 3e-4)):
    _keyframe = dict(task="keyframe", model_preset="shapes-keyframe", train=_train, batch_size=2, grad_accum=1,
                     lr=_lr, ema_decay=0.999, clip=_KEYFRAMES, **_TRAIN)
    TrainConfig.register_preset(f"{_name}-motion", steps=500, save_every=250, caption_pattern=_MOTION_CAPTIONS,
                                timestep_shift=1000.0, **_keyframe)
    TrainConfig.register_preset(f"{_name}-noisy", steps=500, save_every=250, timestep_shift=1000.0, **_keyframe)
    TrainConfig.register_preset(_name, steps=1500, save_every=500, timestep_shift=12.0, **_keyframe)
# The shipped keyframe model's last run: keyframe-all's last phase drew 2.7 % of its steps at t < 250, where the fine
# detail is decided, and its keyframes carried 1.8x the training latents' fine-scale texture (4x4-pixel blocks on
# the background); 1000 steps drawn mostly at low noise (shift 0.3: half of them at t < 230) take that down and
# square the corners (fifteenth session, benchmarks/README.md).
TrainConfig.register_preset("shapes-keyframe-detail", **{
    **_keyframe, "steps": 1000, "save_every": 250, "timestep_shift": 0.3, "lr": 1e-4, "lr_schedule": "constant",
    "warmup_steps": 20, "ema_decay": 0.995})
del _name, _train, _lr, _keyframe
TrainConfig.register_preset(
    "shapes-interpolation", task="interpolation", model_preset="shapes-interpolation", train="all", steps=4000,
    batch_size=4, grad_accum=1, lr=5e-4, ema_decay=0.999, save_every=500, clip=_INTERPOLATION,
    **{**_TRAIN, "precision": "bf16"})
# Fine-tuned on 3 s clips: on 10 s ones a keyframe pair moved under a latent pixel and the frames between sat
# at the pair's middle.
TrainConfig.register_preset(
    "shapes-interpolation-motion", task="interpolation", model_preset="shapes-interpolation", train="all",
    steps=1200, batch_size=4, grad_accum=1, lr=2e-4, ema_decay=0.995, save_every=300, clip=_INTERPOLATION,
    **{**_TRAIN, "precision": "bf16", "warmup_steps": 50})
TrainConfig.register_preset(
    "shapes-decoder", task="decoder", model_preset="shapes-video", train="all", steps=800, batch_size=2,
    grad_accum=1, lr=5e-4, latent_noise=0.1, save_every=200,
    clip=ClipConfig(task="decoder", decoder_frames=8, decoder_step=3, height=64, width=64), **_TRAIN)
# The FVD detector: 16 frames 11 apart, as `kvideo.shapes.quality.clip_features` spreads 16 frames over a clip
# (3 apart showed too little motion to read the direction).
TrainConfig.register_preset(
    "shapes-detector", task="detector", model_preset="tiny", train="all", steps=1500, batch_size=8, grad_accum=1,
    lr=1e-3, save_every=250, clip=ClipConfig(task="detector", decoder_frames=16, decoder_step=11, height=64, width=64),
    **_TRAIN)
# Step distillation: keyframes sample in 25 trailing steps, so a 24-step teacher and a 12-step student;
# interpolation 10 -> 5.
_DISTILL = dict(task="distill", train="all", steps=1000, batch_size=2, grad_accum=1, lr=1e-4, ema_decay=0.999,
                save_every=250, clip=ClipConfig(task="distill", height=64, width=64), **_TRAIN)
TrainConfig.register_preset("shapes-distill-keyframe", student_steps=12, teacher_guidance=5.0, **_DISTILL)
TrainConfig.register_preset("shapes-distill-interpolation", student_steps=5, teacher_guidance=0.25, **_DISTILL)
CacheConfig.register_preset("shapes-keyframe", clips_per_video=4, batch_size=8, clip=_KEYFRAMES)
CacheConfig.register_preset("shapes-interpolation", clips_per_video=4, batch_size=8, clip=_INTERPOLATION)
register_task("detector", detector.build)  # the FVD detector of the shapes benchmarks
