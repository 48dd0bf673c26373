"""Diffusion: schedules, samplers (DDPM, DDIM, DPM-Solver++(2M)), denoiser / guidance wrappers and the
training targets and losses in the same parametrisation.

Typical use (keyframes, the release's settings)::

    schedule = cosine_schedule(50)
    model = TextGuidance(unet, context, mask, uncond_context, uncond_mask, scale=5.0)
    denoise = X0Denoiser(model, schedule, prediction="eps")        # thresholding at 0.98
    latents = sample_ddpm(denoise, noise, schedule, generator=generator)

See `kvideo.diffusion.wrappers` for the model / denoiser interfaces.
"""
from kvideo.diffusion.losses import diffusion_mse, diffusion_target, distillation_x0, prediction_from_x0
from kvideo.diffusion.samplers import (
    SAMPLERS,
    ddim_step,
    ddpm_step,
    dpmpp_2m_step,
    get_sampler,
    randn_like,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)
from kvideo.diffusion.schedules import (
    COSINE_SPACINGS,
    MODEL_TIMESTEPS,
    SPACINGS,
    Schedule,
    add_noise,
    cosine_schedule,
    linear_schedule,
    min_snr_weights,
    q_sample,
    rescale_zero_terminal_snr,
    sample_timesteps,
    spaced_timesteps,
    zero_snr_cosine_alphas_cumprod,
    zero_snr_cosine_schedule,
)
from kvideo.diffusion.wrappers import (
    PREDICTIONS,
    ConditionChannels,
    FirstFrameGuidance,
    KeyframeGuidance,
    TextGuidance,
    X0Denoiser,
    check_guidance_interval,
    check_latent_range,
    clip_to_range,
    dynamic_threshold,
    predict_x0,
    rescale_guided,
)

__all__ = [
    "COSINE_SPACINGS", "MODEL_TIMESTEPS", "PREDICTIONS", "SAMPLERS", "SPACINGS", "ConditionChannels",
    "FirstFrameGuidance", "KeyframeGuidance", "Schedule", "TextGuidance", "X0Denoiser", "add_noise",
    "check_guidance_interval", "check_latent_range", "clip_to_range", "cosine_schedule", "ddim_step", "ddpm_step",
    "diffusion_mse", "diffusion_target", "distillation_x0", "dpmpp_2m_step", "dynamic_threshold", "get_sampler",
    "linear_schedule", "predict_x0", "prediction_from_x0", "q_sample", "randn_like", "rescale_guided",
    "rescale_zero_terminal_snr", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "spaced_timesteps",
    "zero_snr_cosine_alphas_cumprod", "zero_snr_cosine_schedule",
]
