"""Noise schedules: builders that return a frozen `Schedule` of float64 tensors."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MODEL_TIMESTEPS = 1000  # the range of `time` the UNets were trained on
SPACINGS = ("leading", "trailing")
COSINE_SPACINGS = ("direct", *SPACINGS)  # `cosine_schedule`: computed at N steps (the release), or a subset of 1000


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete diffusion schedule of N steps, indexed t = 0 (cleanest) ... N-1 (noisiest).

    Every tensor is float64 of shape (N,). The model is called with `t * time_scale`, so a
    schedule computed directly at N steps still spans the model's 0..1000 time range.
    `posterior_log_variance` has its first entry replaced by the second (the first variance is 0).

    A schedule may instead be a subset of a 1000-step schedule (release 1.1, `from_timesteps`):
    then `timesteps[t]` is the model time of step index t and every step goes from
    `timesteps[t]` to `timesteps[t - 1]`.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance: torch.Tensor
    posterior_mean_coef_1: torch.Tensor
    posterior_mean_coef_2: torch.Tensor
    time_scale: int
    timesteps: torch.Tensor | None = None  # (N,) long: model time of each step index (subset schedules)

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

    @classmethod
    def from_timesteps(cls, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> "Schedule":
        """The steps `timesteps` (ascending model times) of a full schedule given by its `alphas_cumprod`.

        Step index i goes from model time timesteps[i] to timesteps[i - 1] (clean, alpha_cumprod 1,
        for i = 0), as diffusers' DDPMScheduler steps from t to t - 1000 // N; the posterior
        log-variance is log(max(variance, 1e-20)) (diffusers' `fixed_small_log`).
        """
        full = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        timesteps = torch.as_tensor(timesteps, dtype=torch.long)
        _check_steps(len(timesteps))
        if timesteps.dim() != 1 or bool((timesteps[1:] <= timesteps[:-1]).any()):
            raise ValueError(f"timesteps must be strictly ascending; got {timesteps.tolist()}")
        if int(timesteps[0]) < 0 or int(timesteps[-1]) >= len(full):
            raise ValueError(f"timesteps {timesteps.tolist()} fall outside the {len(full)}-step schedule")
        acp = full[timesteps]
        prev = torch.cat([acp.new_ones(1), acp[:-1]])
        betas = 1.0 - acp / prev
        variance = (1.0 - prev) / (1.0 - acp) * betas
        return cls(
            betas=betas,
            alphas_cumprod=acp,
            alphas_cumprod_prev=prev,
            posterior_variance=variance,
            posterior_log_variance=torch.log(variance.clamp_min(1e-20)),
            posterior_mean_coef_1=prev.sqrt() * betas / (1.0 - acp),
            posterior_mean_coef_2=(1.0 - betas).sqrt() * (1.0 - prev) / (1.0 - acp),
            time_scale=MODEL_TIMESTEPS // len(timesteps),
            timesteps=timesteps,
        )

    def model_time(self, t: int) -> int:
        """The time value the model sees at step index t."""
        if self.timesteps is not None:
            return int(self.timesteps[t])
        return t * self.time_scale

    def alpha_sigma(self, t: int) -> tuple[float, float]:
        """(sqrt(alpha_cumprod_t), sqrt(1 - alpha_cumprod_t)) as Python floats: x_t = alpha·x0 + sigma·eps."""
        a = float(self.alphas_cumprod[t])
        return math.sqrt(a), math.sqrt(1.0 - a)


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MODEL_TIMESTEPS:
        raise ValueError(f"steps must be an integer in 1..{MODEL_TIMESTEPS}; got {steps!r}")


def cosine_schedule(steps: int, *, s: float = 0.008, max_beta: float = 0.999, spacing: str = "direct") -> Schedule:
    """The release's cosine schedule at `steps` steps.

    spacing "direct" (the release's): computed directly at N steps, alpha_bar(u) = cos((u + s) / (1 + s) · pi/2)^2
    and beta_i = min(1 - alpha_bar((i+1)/N) / alpha_bar(i/N), max_beta); step i is labelled 1000·i/N
    though its noise is that of step 1000·(i+1)/N - 1 of the 1000-step schedule (25 steps: pure noise
    labelled 960). "leading" / "trailing": the steps of the 1000-step schedule that `spaced_timesteps`
    picks, with their own labels (trailing: 39, 79, ..., 999 for 25 steps).
    """
    _check_steps(steps)
    if spacing != "direct":
        if spacing not in SPACINGS:
            raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {COSINE_SPACINGS}")
        full = cosine_schedule(MODEL_TIMESTEPS, s=s, max_beta=max_beta)
        return Schedule.from_timesteps(full.alphas_cumprod, spaced_timesteps(steps, spacing))

    def alpha_bar(u: float) -> float:
        return math.cos((u + s) / (1.0 + s) * math.pi / 2) ** 2

    betas = [min(1.0 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)]
    return Schedule.from_betas(torch.tensor(betas, dtype=torch.float64))


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Betas whose last alpha_cumprod is exactly 0 (Lin et al. 2023, "Common diffusion noise schedules
    and sample steps are flawed"): sqrt(alpha_cumprod) shifted to end at 0 and rescaled to keep its start."""
    root = torch.cumprod(1.0 - torch.as_tensor(betas, dtype=torch.float64), dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    alphas_cumprod = ((root - last) * first / (first - last)) ** 2
    alphas = torch.cat([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1.0 - alphas


def zero_snr_cosine_alphas_cumprod(train_steps: int = MODEL_TIMESTEPS) -> torch.Tensor:
    """Release 1.1's training schedule: 1000 cosine betas (clipped at 0.999) rescaled to zero
    terminal SNR ('squaredcos_cap_v2' with `rescale_betas_zero_snr`); its alphas_cumprod, float64."""
    _check_steps(train_steps)

    def alpha_bar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1.0 - alpha_bar((i + 1) / train_steps) / alpha_bar(i / train_steps), 0.999)
             for i in range(train_steps)]
    return torch.cumprod(1.0 - rescale_zero_terminal_snr(torch.tensor(betas, dtype=torch.float64)), dim=0)


def spaced_timesteps(steps: int, spacing: str, train_steps: int = MODEL_TIMESTEPS) -> torch.Tensor:
    """`steps` model times out of `train_steps`, ascending, as diffusers spaces them.

    'leading': 0, r, 2r, ... with r = train_steps // steps (50 steps: 0 ... 980);
    'trailing': train_steps - 1 down in steps of train_steps / steps (10 steps: 99, 199, ... 999).
    """
    _check_steps(steps)
    if spacing == "leading":
        return torch.arange(steps, dtype=torch.long) * (train_steps // steps)
    if spacing == "trailing":
        times = torch.round(torch.arange(train_steps, 0, -train_steps / steps, dtype=torch.float64)) - 1
        return times.long().flip(0)
    raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {SPACINGS}")


def zero_snr_cosine_schedule(steps: int, spacing: str = "leading") -> Schedule:
    """Release 1.1's sampling schedule: `steps` steps of the zero-terminal-SNR cosine schedule.

    The release samples keyframes with 50 'leading' steps (eps) and interpolates with 10
    'trailing' steps (v); `steps=1000` gives the full training schedule (see `add_noise`).
    """
    return Schedule.from_timesteps(zero_snr_cosine_alphas_cumprod(), spaced_timesteps(steps, spacing))


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: int, schedule: Schedule | None = None) -> torch.Tensor:
    """Diffuse x0 to model time t of the full 1000-step zero-SNR cosine schedule (or of `schedule`,
    indexed by step): sqrt(a_t)·x0 + sqrt(1 - a_t)·noise. Release 1.1 noise-augments the first
    frame with it at t = 20."""
    return q_sample(x0, t, schedule or zero_snr_cosine_schedule(MODEL_TIMESTEPS), noise)


def linear_schedule(steps: int, *, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """The reference's linear schedule, with betas scaled by 1000 / steps."""
    _check_steps(steps)
    scale = MODEL_TIMESTEPS / steps
    return Schedule.from_betas(torch.linspace(scale * beta_start, scale * beta_end, steps, dtype=torch.float64))


def sample_timesteps(n: int, num_timesteps: int, generator: torch.Generator, shift: float = 1.0) -> torch.Tensor:
    """(n,) training step indices in [0, num_timesteps): uniform (shift 1, the release), or with
    u ~ U(0, 1) mapped to shift·u / (1 + (shift - 1)·u) (the timestep shift of Esser et al. 2024),
    which for shift > 1 draws noisy steps more often: with 4, 31 % of the draws land in the top tenth
    of the steps instead of 10 %. Video models need that where the layout and motion of a
    clip are only decided at high noise (Blattmann et al. 2023 shift their video training the same way).
    """
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"timestep shift={shift} must be a finite number > 0 (1: uniform)")
    if shift == 1.0:
        return torch.randint(num_timesteps, (n,), generator=generator)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    shifted = shift * u / (1.0 + (shift - 1.0) * u)
    return (shifted * num_timesteps).long().clamp(max=num_timesteps - 1)


def min_snr_weights(schedule: Schedule, t: torch.Tensor, gamma: float, prediction: str = "eps") -> torch.Tensor:
    """Per-sample loss weights of min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via
    Min-SNR Weighting Strategy"): the loss, read in x0 terms, weighted by min(SNR, gamma) instead of
    SNR (eps-prediction) or SNR + 1 (v-prediction). Low-noise steps (SNR > gamma), whose large losses
    otherwise drive the gradient, are damped; with v-prediction the noisiest steps are damped too.

    `t` holds (b,) step indices; returns float32 (b,) weights in [0, 1].
    """
    if prediction not in ("eps", "v"):
        raise ValueError(f"prediction={prediction!r}; min-SNR weights are defined for 'eps' and 'v'")
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma={gamma} must be a finite number > 0")
    alphas_cumprod = schedule.alphas_cumprod.to(t.device)[t.long()]
    snr = alphas_cumprod / (1.0 - alphas_cumprod).clamp(min=1e-20)
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":  # min(SNR, gamma) / SNR, which is 1 where SNR <= gamma (also at SNR = 0)
        weights = torch.where(snr > gamma, clipped / snr, torch.ones_like(snr))
    else:
        weights = clipped / (snr + 1.0)
    return weights.float()


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
