"""Training targets and losses, in the parametrisation the samplers read back (`wrappers.predict_x0`):
what a UNet predicting eps or v should output, and the (min-SNR-weighted) MSE to it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kvideo.diffusion.schedules import Schedule, min_snr_weights


def diffusion_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule: Schedule,
                     prediction: str) -> torch.Tensor:
    """What a UNet predicting `prediction` should output for x_t = alpha·x0 + sigma·noise."""
    if prediction == "eps":
        return noise
    if prediction != "v":
        raise ValueError(f"prediction={prediction!r}; expected 'eps' or 'v'")
    alpha_bar = schedule.alphas_cumprod.to(x0.device)[t].float().reshape(-1, *([1] * (x0.dim() - 1)))
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0


def distillation_x0(x_t: torch.Tensor, x_next: torch.Tensor, j: int, student: Schedule) -> torch.Tensor:
    """x0~: the clean latent for which one DDIM step of the student from x_t at grid point j reaches x_next
    (at j = 0 the step goes to clean latents, so x0~ = x_next)."""
    if j == 0:
        return x_next
    a, s = student.alpha_sigma(j)
    a_next, s_next = student.alpha_sigma(j - 1)
    ratio = s_next / s
    return (x_next - ratio * x_t) / (a_next - ratio * a)


def prediction_from_x0(x0: torch.Tensor, x_t: torch.Tensor, j: int, schedule: Schedule,
                       prediction: str) -> torch.Tensor:
    """The output (eps or v) a UNet predicting `prediction` gives at grid point j when it means x0."""
    a, s = schedule.alpha_sigma(j)
    if prediction == "eps":
        return (x_t - a * x0) / s
    if prediction == "v":
        return (a * x_t - x0) / s
    raise ValueError(f"prediction={prediction!r}; expected 'eps' or 'v'")


def diffusion_mse(prediction: torch.Tensor, target: torch.Tensor, t: torch.Tensor, schedule: Schedule,
                  snr_gamma: float, kind: str, weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE of a batch; with `snr_gamma` > 0 each sample weighted by min-SNR-gamma (`kind`: eps or v);
    `weights` (broadcast to the prediction) weight each element."""
    if not snr_gamma and weights is None:
        return F.mse_loss(prediction.float(), target)
    error = (prediction.float() - target).pow(2)
    per_sample = (error if weights is None else error * weights).flatten(1).mean(dim=1)  # (b,)
    if snr_gamma:
        per_sample = per_sample * min_snr_weights(schedule, t, snr_gamma, kind)
    return per_sample.mean()
