"""Noise schedules: builders that return a frozen `Schedule` of float64 tensors."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MODEL_TIMESTEPS = 1000  # the range of `time` the UNets were trained on


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete diffusion schedule of N steps, indexed t = 0 (cleanest) ... N-1 (noisiest).

    Every tensor is float64 of shape (N,). The model is called with `t * time_scale`, so a
    schedule computed directly at N steps still spans the model's 0..1000 time range.
    `posterior_log_variance` has its first entry replaced by the second (the first variance is 0).
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance: torch.Tensor
    posterior_mean_coef_1: torch.Tensor
    posterior_mean_coef_2: torch.Tensor
    time_scale: int

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> "Schedule":
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or not len(betas):
            raise ValueError(f"betas must be a non-empty 1-D tensor; got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(f"betas must lie in (0, 1); got min {betas.min():.3g}, max {betas.max():.3g}")
        _check_steps(len(betas))
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
        # variance[0] is 0; the release logs variance[1] in its place (unused: no noise is added at t = 0)
        log_variance = torch.log(torch.cat([variance[1:2], variance[1:]]) if len(betas) > 1 else betas)
        return cls(
            betas=betas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=prev,
            posterior_variance=variance,
            posterior_log_variance=log_variance,
            posterior_mean_coef_1=prev.sqrt() * betas / (1.0 - alphas_cumprod),
            posterior_mean_coef_2=(1.0 - betas).sqrt() * (1.0 - prev) / (1.0 - alphas_cumprod),
            time_scale=MODEL_TIMESTEPS // len(betas),
        )

    def __len__(self) -> int:
        return len(self.betas)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    def model_time(self, t: int) -> int:
        """The time value the model sees at step index t."""
        return t * self.time_scale

    def alpha_sigma(self, t: int) -> tuple[float, float]:
        """(sqrt(alpha_cumprod_t), sqrt(1 - alpha_cumprod_t)) as Python floats: x_t = alpha·x0 + sigma·eps."""
        a = float(self.alphas_cumprod[t])
        return math.sqrt(a), math.sqrt(1.0 - a)


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MODEL_TIMESTEPS:
        raise ValueError(f"steps must be an integer in 1..{MODEL_TIMESTEPS}; got {steps!r}")


def cosine_schedule(steps: int, *, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """The release's cosine schedule computed directly at `steps` steps (not a subset of 1000).

    alpha_bar(u) = cos((u + s) / (1 + s) · pi/2)^2 and beta_i = min(1 - alpha_bar((i+1)/N) / alpha_bar(i/N), max_beta).
    """
    _check_steps(steps)

    def alpha_bar(u: float) -> float:
        return math.cos((u + s) / (1.0 + s) * math.pi / 2) ** 2

    betas = [min(1.0 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)]
    return Schedule.from_betas(torch.tensor(betas, dtype=torch.float64))


def linear_schedule(steps: int, *, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """The reference's linear schedule, with betas scaled by 1000 / steps."""
    _check_steps(steps)
    scale = MODEL_TIMESTEPS / steps
    return Schedule.from_betas(torch.linspace(scale * beta_start, scale * beta_end, steps, dtype=torch.float64))


def q_sample(x0: torch.Tensor, t: int | torch.Tensor, schedule: Schedule, noise: torch.Tensor) -> torch.Tensor:
    """Diffuse clean latents to step t: alpha_t·x0 + sigma_t·noise.

    `t` is one step index for the whole batch, or a (b,) tensor of per-sample indices; x0 has any rank.
    """
    if isinstance(t, int):
        alpha, sigma = schedule.alpha_sigma(t)
        return alpha * x0 + sigma * noise
    alphas_cumprod = schedule.alphas_cumprod.to(x0.device)[t.long()].to(x0.dtype)
    alphas_cumprod = alphas_cumprod.reshape(-1, *([1] * (x0.dim() - 1)))  # (b, 1, ...)
    return alphas_cumprod.sqrt() * x0 + (1.0 - alphas_cumprod).sqrt() * noise
