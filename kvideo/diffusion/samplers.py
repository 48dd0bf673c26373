"""Samplers as pure functions of a denoiser, the noisy latent, a schedule and a generator.

Each takes `denoise(x, t) -> x0` (see `kvideo.diffusion.wrappers`), the starting noise `x` of
any rank, a `Schedule` of N steps, and runs all N steps from t = N-1 down to 0. Fresh noise
comes only from `generator` (drawn on the generator's device, then moved to x's), so the same
seed gives the same result. `progress` shows a tqdm bar (a string labels it). `callback(info)` is called after every step with a dict:
step (0-based), t, x (the new latent), x0 (the denoiser's prediction). Samplers run under
`torch.no_grad()`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from kvideo.diffusion.schedules import Schedule
from kvideo.diffusion.wrappers import Denoiser

Callback = Callable[[dict[str, Any]], None]


def randn_like(x: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn from `generator` (on its own device) or the global RNG.

    A sequence of generators gives each sample (row of x) its own: row i is drawn from generator i
    exactly as a batch of one would be, so a batched run reproduces the runs of its samples alone.
    """
    if isinstance(generator, Sequence):
        if len(generator) != x.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}; give one per sample")
        return torch.cat([randn_like(row, g) for row, g in zip(x.split(1), generator)])
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=x.device, dtype=x.dtype)


def _steps(schedule: Schedule, progress: bool | str, desc: str):
    """Step indices N-1 ... 0 with a tqdm bar; a string `progress` is the bar's label."""
    label = progress if isinstance(progress, str) else desc
    return tqdm(reversed(range(len(schedule))), total=len(schedule), disable=not progress, desc=label, leave=False)


def _report(callback: Callback | None, step: int, t: int, x: torch.Tensor, x0: torch.Tensor) -> None:
    if callback is not None:
        callback({"step": step, "t": t, "x": x, "x0": x0})


# -- ancestral DDPM (the release) ----------------------------------------------------------------
def ddpm_step(x0: torch.Tensor, x: torch.Tensor, t: int, schedule: Schedule,
              noise: torch.Tensor | None) -> torch.Tensor:
    """One ancestral step x_t -> x_{t-1}: the posterior mean given x0, plus exp(log_var / 2)·noise
    (no noise at t = 0)."""
    mean = float(schedule.posterior_mean_coef_1[t]) * x0 + float(schedule.posterior_mean_coef_2[t]) * x
    if t == 0 or noise is None:
        return mean
    return mean + math.exp(0.5 * float(schedule.posterior_log_variance[t])) * noise


@torch.no_grad()
def sample_ddpm(denoise: Denoiser, x: torch.Tensor, schedule: Schedule, *, generator: torch.Generator | None = None,
                callback: Callback | None = None, progress: bool | str = True) -> torch.Tensor:
    """Ancestral sampling (the release's sampler): N denoiser calls, fresh noise at every step but the last."""
    for step, t in enumerate(_steps(schedule, progress, "ddpm")):
        x0 = denoise(x, t)
        x = ddpm_step(x0, x, t, schedule, randn_like(x, generator) if t > 0 else None)
        _report(callback, step, t, x, x0)
    return x


# -- DDIM ----------------------------------------------------------------------------------------
def ddim_step(x0: torch.Tensor, x: torch.Tensor, t: int, schedule: Schedule, *, eta: float = 0.0,
              noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step x_t -> x_{t-1}: re-noise x0 along the implied eps (eta = 0: deterministic)."""
    alpha, sigma = schedule.alpha_sigma(t)
    eps = (x - alpha * x0) / sigma
    a_prev = float(schedule.alphas_cumprod_prev[t])
    a_t = float(schedule.alphas_cumprod[t])
    spread = eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)) if t > 0 else 0.0
    out = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - spread**2, 0.0)) * eps
    if spread > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        out = out + spread * noise
    return out


@torch.no_grad()
def sample_ddim(denoise: Denoiser, x: torch.Tensor, schedule: Schedule, *, eta: float = 0.0,
                generator: torch.Generator | None = None, callback: Callback | None = None,
                progress: bool | str = True) -> torch.Tensor:
    """DDIM over the schedule's N steps; deterministic for eta = 0, ancestral-like for eta = 1."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0; got {eta!r}")
    for step, t in enumerate(_steps(schedule, progress, "ddim")):
        x0 = denoise(x, t)
        noise = randn_like(x, generator) if eta > 0 and t > 0 else None
        x = ddim_step(x0, x, t, schedule, eta=eta, noise=noise)
        _report(callback, step, t, x, x0)
    return x


# -- DPM-Solver++(2M) ----------------------------------------------------------------------------
def _lambda(schedule: Schedule, t: int) -> float:
    """lambda_t = log(alpha_t / sigma_t)."""
    alpha, sigma = schedule.alpha_sigma(t)
    return math.log(alpha / sigma)


def dpmpp_2m_step(x0: torch.Tensor, x0_prev: torch.Tensor | None, x: torch.Tensor, t: int, schedule: Schedule,
                  h_prev: float | None) -> tuple[torch.Tensor, float | None]:
    """One DPM-Solver++(2M) step x_t -> x_{t-1}; returns (x_{t-1}, h). The step into t = -1 (clean,
    sigma = 0) is first order and returns x0; so is the first step (no previous x0)."""
    if t == 0:
        return x0, None
    alpha_next, sigma_next = schedule.alpha_sigma(t - 1)
    sigma = schedule.alpha_sigma(t)[1]
    h = _lambda(schedule, t - 1) - _lambda(schedule, t)
    estimate = x0
    if x0_prev is not None and h_prev is not None:
        r = h_prev / h
        estimate = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * x0_prev
    return (sigma_next / sigma) * x - alpha_next * math.expm1(-h) * estimate, h


@torch.no_grad()
def sample_dpmpp_2m(denoise: Denoiser, x: torch.Tensor, schedule: Schedule, *, generator: torch.Generator | None = None,
                    callback: Callback | None = None, progress: bool | str = True) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), deterministic multistep solver: good results in 10-25 steps.

    `generator` is accepted for a uniform signature; the solver draws no noise.
    """
    x0_prev, h_prev = None, None
    for step, t in enumerate(_steps(schedule, progress, "dpm++2m")):
        x0 = denoise(x, t)
        x, h_prev = dpmpp_2m_step(x0, x0_prev, x, t, schedule, h_prev)
        x0_prev = x0
        _report(callback, step, t, x, x0)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """The sampler function called `name` ('ddpm', 'ddim' or 'dpmpp_2m')."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]
