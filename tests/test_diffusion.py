"""Schedules, samplers and denoiser / guidance wrappers on toy problems with known answers."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kvideo.diffusion import (
    SAMPLERS,
    KeyframeGuidance,
    TextGuidance,
    X0Denoiser,
    cosine_schedule,
    ddpm_step,
    dynamic_threshold,
    get_sampler,
    linear_schedule,
    min_snr_weights,
    predict_x0,
    q_sample,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_timesteps,
)

MU, STD = 0.3, 0.5  # the toy data distribution: every element ~ N(MU, STD^2)


def gaussian_denoiser(schedule):
    """The exact E[x0 | x_t] for Gaussian data."""
    def denoise(x, t):
        alpha, sigma = schedule.alpha_sigma(t)
        return MU + alpha * STD**2 / (alpha**2 * STD**2 + sigma**2) * (x - alpha * MU)
    return denoise


def probability_flow_endpoint(x, schedule):
    """Where the exact probability-flow ODE takes x_{N-1} for Gaussian data."""
    alpha, sigma = schedule.alpha_sigma(len(schedule) - 1)
    return MU + STD * (x - alpha * MU) / math.sqrt(alpha**2 * STD**2 + sigma**2)


def noise(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- schedules -----------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(steps=st.integers(2, 1000))
def test_cosine_schedule_properties(steps):
    schedule = cosine_schedule(steps)
    acp, prev = schedule.alphas_cumprod, schedule.alphas_cumprod_prev
    assert all(t.dtype == torch.float64 and t.shape == (steps,) for t in (schedule.betas, acp, prev))
    assert bool((schedule.betas > 0).all()) and bool((schedule.betas <= 0.999).all())
    assert bool((acp[1:] < acp[:-1]).all()) and prev[0] == 1
    assert schedule.time_scale == 1000 // steps
    assert schedule.posterior_variance[0] == 0
    assert schedule.posterior_log_variance[0] == schedule.posterior_log_variance[1]
    # x_t without noise must map back to sqrt(acp_prev)·x0 through the posterior mean
    torch.testing.assert_close(
        schedule.posterior_mean_coef_1 + schedule.posterior_mean_coef_2 * acp.sqrt(), prev.sqrt()
    )


def test_cosine_schedule_is_computed_at_n_steps():
    schedule = cosine_schedule(50)
    alpha_bar = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert float(schedule.alphas_cumprod[9]) == pytest.approx(alpha_bar(10 / 50) / alpha_bar(0), rel=1e-12)
    assert float(schedule.betas[-1]) == 0.999  # clipped


def test_cosine_schedule_trailing_takes_the_training_schedules_own_steps():
    full, direct, trailing = cosine_schedule(1000), cosine_schedule(25), cosine_schedule(25, spacing="trailing")
    assert trailing.timesteps.tolist() == list(range(39, 1000, 40))
    torch.testing.assert_close(trailing.alphas_cumprod, full.alphas_cumprod[39::40], rtol=0, atol=0)
    # the release's direct steps carry the same noise levels (but for the clipped last beta), each
    # labelled one spacing earlier
    torch.testing.assert_close(direct.alphas_cumprod[:-1], full.alphas_cumprod[39:-1:40], rtol=1e-9, atol=0)
    assert float(direct.alphas_cumprod[-1]) < 1e-5 and float(full.alphas_cumprod[-1]) < 1e-5
    assert [direct.model_time(t) for t in range(25)] == list(range(0, 1000, 40))
    assert cosine_schedule(25, spacing="leading").timesteps.tolist() == list(range(0, 1000, 40))
    with pytest.raises(ValueError, match="unknown timestep spacing 'even'; choose one of .'direct', 'leading'"):
        cosine_schedule(25, spacing="even")


@pytest.mark.parametrize("steps", [0, -3, 1001, 2.5, True, "50"])
def test_bad_step_counts_are_rejected(steps):
    with pytest.raises(ValueError, match="steps"):
        cosine_schedule(steps)


def test_linear_schedule_and_q_sample():
    schedule = linear_schedule(1000)
    assert float(schedule.betas[0]) == pytest.approx(1e-4) and float(schedule.betas[-1]) == pytest.approx(0.02)
    x0, eps = noise(3, 4), noise(3, 4, seed=1)
    per_sample = q_sample(x0, torch.tensor([7, 7, 7]), schedule, eps)
    torch.testing.assert_close(per_sample, q_sample(x0, 7, schedule, eps))


def test_min_snr_weights_damp_only_the_low_noise_steps():
    schedule, gamma = cosine_schedule(1000), 5.0
    t = torch.arange(1000)
    abar = schedule.alphas_cumprod
    snr = abar / (1 - abar)
    eps = min_snr_weights(schedule, t, gamma, "eps").double()
    torch.testing.assert_close(eps, torch.minimum(snr, torch.tensor(gamma)) / snr, rtol=1e-6, atol=0)
    assert eps[snr <= gamma].eq(1).all() and eps[snr > gamma].lt(1).all()  # noisy steps keep their weight
    assert (eps.diff() >= -1e-7).all()  # weights only grow with the noise level
    v = min_snr_weights(schedule, t, gamma, "v").double()
    torch.testing.assert_close(v, torch.minimum(snr, torch.tensor(gamma)) / (snr + 1), rtol=1e-6, atol=0)
    from kvideo.diffusion import zero_snr_cosine_schedule

    terminal = min_snr_weights(zero_snr_cosine_schedule(50), torch.tensor([49]), gamma, "eps")
    assert terminal.tolist() == [1.0]  # SNR = 0 at the last step: finite, the plain weight
    with pytest.raises(ValueError, match="gamma"):
        min_snr_weights(schedule, t, 0.0)
    with pytest.raises(ValueError, match="prediction"):
        min_snr_weights(schedule, t, gamma, "x0")


def test_timestep_shift_draws_noisy_steps_more_often():
    uniform = sample_timesteps(4000, 1000, torch.Generator().manual_seed(0))
    assert torch.equal(uniform, torch.randint(1000, (4000,), generator=torch.Generator().manual_seed(0)))  # release
    u = torch.rand(4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shifted = sample_timesteps(4000, 1000, torch.Generator().manual_seed(0), shift=4.0)
    assert torch.equal(shifted, (4 * u / (1 + 3 * u) * 1000).long())  # the map of Esser et al. 2024
    assert shifted.min() >= 0 and shifted.max() <= 999 and shifted.dtype == torch.long
    share = (shifted >= 900).double().mean()
    assert abs(share - (1 - 0.9 / (4 - 3 * 0.9))) < 0.03 and (uniform >= 900).double().mean() < 0.12
    assert sample_timesteps(8, 1000, torch.Generator(), shift=0.5).max() < 1000  # < 1: quieter steps, allowed
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="shift"):
            sample_timesteps(4, 1000, torch.Generator(), shift=bad)


# -- prediction type and thresholding ----------------------------------------------------------
@pytest.mark.parametrize("t", [0, 20, 49])
def test_predict_x0_inverts_eps_and_v(t):
    schedule = cosine_schedule(50)
    x0, eps = noise(2, 3, 5), noise(2, 3, 5, seed=1)
    alpha, sigma = schedule.alpha_sigma(t)
    x = alpha * x0 + sigma * eps
    torch.testing.assert_close(predict_x0(eps, x, t, schedule, "eps"), x0)
    torch.testing.assert_close(predict_x0(alpha * eps - sigma * x0, x, t, schedule, "v"), x0)
    with pytest.raises(ValueError, match="prediction"):
        predict_x0(eps, x, t, schedule, "x0")


def test_dynamic_threshold_per_sample():
    x = torch.cat([noise(1, 4, 6, 6) * 3, noise(1, 4, 6, 6, seed=1) * 0.2])  # one loud, one quiet sample
    out = dynamic_threshold(x, 0.98)
    scale = torch.quantile(x[0].abs().flatten(), 0.98)
    torch.testing.assert_close(out[0], x[0].clamp(-scale, scale) / scale)
    torch.testing.assert_close(out[1], x[1])  # quantile below 1: floored at 1, nothing changes
    assert float(out.abs().max()) <= 1.0


def test_x0_denoiser_time_and_per_frame_threshold():
    schedule = cosine_schedule(10)
    seen = []

    def model(x, time):
        seen.append(time)
        return torch.zeros_like(x)

    x = noise(2, 4, 3, 5, 5) * 4
    x0 = X0Denoiser(model, schedule, "v")(x, 7)
    assert seen[0].dtype == torch.long and seen[0].tolist() == [700, 700]
    alpha = schedule.alpha_sigma(7)[0]
    for f in range(3):  # each frame thresholded on its own, as the release's frame batch
        torch.testing.assert_close(x0[:, :, f], dynamic_threshold(alpha * x[:, :, f]))


# -- samplers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_end_at_a_fixed_x0(name):
    """A denoiser that always answers the same x0 is followed exactly to it (any-rank latents)."""
    schedule = cosine_schedule(8)
    target = noise(2, 3, 4, 5, 6).clamp(-1, 1)
    out = get_sampler(name)(lambda x, t: target, noise(*target.shape, seed=1), schedule,
                            generator=torch.Generator().manual_seed(0), progress=False)
    torch.testing.assert_close(out, target)


def test_deterministic_samplers_follow_the_probability_flow():
    x = noise(4096)
    errors = {}
    for steps in (25, 50):
        schedule = cosine_schedule(steps)
        exact = probability_flow_endpoint(x, schedule)
        for name, sampler in (("ddim", sample_ddim), ("dpmpp_2m", sample_dpmpp_2m)):
            out = sampler(gaussian_denoiser(schedule), x, schedule, progress=False)
            errors[name, steps] = float((out - exact).norm() / exact.norm())
    assert errors["dpmpp_2m", 25] < 2e-3  # second order
    assert errors["ddim", 50] < 0.6 * errors["ddim", 25] and errors["ddim", 50] < 0.04  # first order
    assert errors["dpmpp_2m", 25] < errors["ddim", 50] / 10


def test_ddpm_samples_the_data_distribution():
    schedule = cosine_schedule(200)
    out = sample_ddpm(gaussian_denoiser(schedule), noise(20000), schedule,
                      generator=torch.Generator().manual_seed(1), progress=False)
    assert float(out.mean()) == pytest.approx(MU, abs=0.015)
    assert float(out.std()) == pytest.approx(STD, abs=0.02)


@pytest.mark.parametrize("sampler,kwargs", [(sample_ddpm, {}), (sample_ddim, {"eta": 1.0})])
def test_same_seed_same_result(sampler, kwargs):
    schedule = cosine_schedule(6)
    denoise = gaussian_denoiser(schedule)
    x = noise(2, 4, 3, 8, 8).float()
    run = lambda seed: sampler(denoise, x, schedule, generator=torch.Generator().manual_seed(seed),  # noqa: E731
                               progress=False, **kwargs)
    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


def test_ddpm_step_adds_no_noise_at_t0():
    schedule = cosine_schedule(10)
    x0, x, eps = noise(2, 3), noise(2, 3, seed=1), noise(2, 3, seed=2)
    assert torch.equal(ddpm_step(x0, x, 0, schedule, eps), ddpm_step(x0, x, 0, schedule, None))
    assert not torch.allclose(ddpm_step(x0, x, 5, schedule, eps), ddpm_step(x0, x, 5, schedule, None))


def test_callback_sees_every_step():
    schedule = cosine_schedule(5)
    infos = []
    sample_dpmpp_2m(lambda x, t: x * 0, noise(3), schedule, callback=infos.append, progress=False)
    assert [i["step"] for i in infos] == [0, 1, 2, 3, 4] and [i["t"] for i in infos] == [4, 3, 2, 1, 0]


def test_unknown_sampler():
    with pytest.raises(ValueError, match="dpmpp_2m"):
        get_sampler("euler")


# -- guidance ------------------------------------------------------------------------------------
class RecordingUNet:
    """A fake UNet whose output depends on every input, recording each call."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, time, context=None, context_mask=None, **kwargs):
        self.calls.append(dict(x=x, time=time, context=context, context_mask=context_mask, **kwargs))
        shift = time.float() / 1000
        if context is not None:
            pooled = (context * context_mask[..., None]).sum(dim=(1, 2))
            shift = shift + pooled
        if "skip_frames" in kwargs:
            shift = shift + kwargs["skip_frames"].float()
        return x[:, : x.shape[1]].tanh() + shift.reshape(-1, *([1] * (x.dim() - 1)))


def test_text_guidance_is_one_batched_forward():
    unet = RecordingUNet()
    x, time = noise(2, 4, 3, 5, 5).float(), torch.tensor([490, 490])
    cond, cond_mask = torch.randn(2, 6, 8), torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]).bool()
    uncond, uncond_mask = torch.randn(1, 4, 8), torch.tensor([[1, 1, 1, 0]]).bool()
    positions = torch.arange(3) * 12
    guided = TextGuidance(unet, cond, cond_mask, uncond, uncond_mask, 5.0, frame_positions=positions)
    out = guided(x, time)
    assert len(unet.calls) == 1
    call = unet.calls[0]
    assert call["x"].shape[0] == 4 and call["context"].shape == (4, 6, 8) and call["frame_positions"] is positions
    expected_cond = RecordingUNet()(x, time, cond, cond_mask)
    padded = torch.cat([uncond, torch.zeros(1, 2, 8)], dim=1).expand(2, -1, -1)
    padded_mask = torch.cat([uncond_mask, torch.zeros(1, 2).bool()], 1).expand(2, -1)
    expected_uncond = RecordingUNet()(x, time, padded, padded_mask)
    torch.testing.assert_close(out, 6.0 * expected_cond - 5.0 * expected_uncond)


def test_guidance_scale_zero_runs_only_the_conditional_branch():
    unet = RecordingUNet()
    x, time = noise(1, 4, 2, 4, 4).float(), torch.tensor([10])
    context, mask = torch.randn(1, 3, 8), torch.ones(1, 3).bool()
    out = TextGuidance(unet, context, mask, context * 0, mask, 0.0)(x, time)
    assert len(unet.calls) == 1 and unet.calls[0]["x"].shape[0] == 1
    torch.testing.assert_close(out, RecordingUNet()(x, time, context, mask))


def test_keyframe_guidance_zeroes_both_keyframes_in_one_forward():
    unet = RecordingUNet()
    x, time = noise(2, 12, 3, 4, 4).float(), torch.tensor([250, 250])
    left, right = noise(2, 4, 3, 4, 4, seed=1).float(), noise(2, 4, 3, 4, 4, seed=2).float()
    null, null_mask = torch.randn(1, 2, 8), torch.tensor([[True, False]])
    skip = torch.tensor([3, 3])
    out = KeyframeGuidance(unet, left, right, 0.25, context=null, context_mask=null_mask,
                           batch_kwargs={"skip_frames": skip})(x, time)
    assert len(unet.calls) == 1
    model_x = unet.calls[0]["x"]
    assert model_x.shape == (4, 20, 3, 4, 4) and unet.calls[0]["skip_frames"].tolist() == [3, 3, 3, 3]
    torch.testing.assert_close(model_x[:2], torch.cat([left, x, right], dim=1))
    assert not model_x[2:, :4].any() and not model_x[2:, 16:].any()
    reference = RecordingUNet()
    cond = reference(torch.cat([left, x, right], 1), time, null.expand(2, -1, -1), null_mask.expand(2, -1),
                     skip_frames=skip)
    uncond = reference(torch.cat([left * 0, x, right * 0], 1), time, null.expand(2, -1, -1),
                       null_mask.expand(2, -1), skip_frames=skip)
    torch.testing.assert_close(out, 1.25 * cond - 0.25 * uncond)


def test_guided_sampling_with_the_tiny_unet():
    """The whole keyframe chain on the tiny UNet: guidance -> x0 -> DDPM, same seed same latents."""
    from kvideo.models.unet import UNet, UNetConfig
    from kvideo.text import null_context

    torch.manual_seed(0)
    unet = UNet(UNetConfig.preset("tiny-keyframe")).eval()
    d = unet.config.context_dim
    context, mask = torch.randn(1, 5, d), torch.tensor([[1, 1, 1, 1, 0]]).bool()
    uncond = null_context(torch.randn(d), 1, 5)
    schedule = cosine_schedule(2)
    denoise = X0Denoiser(TextGuidance(unet, context, mask, *uncond, 5.0), schedule, "eps")
    x = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        runs = [sample_ddpm(denoise, x, schedule, generator=torch.Generator().manual_seed(1), progress=False)
                for _ in range(2)]
    assert runs[0].shape == x.shape and torch.isfinite(runs[0]).all()
    assert torch.equal(runs[0], runs[1])


@pytest.mark.gpu
def test_cpu_generator_gives_the_same_noise_on_gpu():
    """Noise is drawn on the generator's device, so a CPU seed reproduces the CPU run on a GPU."""
    schedule = cosine_schedule(4)
    denoise = gaussian_denoiser(schedule)
    x = noise(1, 4, 2, 8, 8).float()
    cpu = sample_ddpm(denoise, x, schedule, generator=torch.Generator().manual_seed(5), progress=False)
    gpu = sample_ddpm(denoise, x.cuda(), schedule, generator=torch.Generator().manual_seed(5), progress=False)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_training_targets_are_what_the_samplers_read_back(prediction):
    """The loss targets (kvideo.diffusion.losses) and the samplers' predict_x0 are one parametrisation:
    the target of a noised clip maps back to its clean latents, and prediction_from_x0 inverts predict_x0."""
    from kvideo.diffusion import cosine_schedule, diffusion_target, predict_x0, prediction_from_x0, q_sample

    schedule = cosine_schedule(1000)
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 3, 8, 8, generator=generator, dtype=torch.float64), \
        torch.randn(2, 4, 3, 8, 8, generator=generator, dtype=torch.float64)
    for t in (10, 500, 990):
        x_t = q_sample(x0, t, schedule, noise)
        target = diffusion_target(x0, noise, torch.tensor([t, t]), schedule, prediction).double()
        assert torch.allclose(predict_x0(target, x_t, t, schedule, prediction), x0, atol=1e-5)
        assert torch.allclose(prediction_from_x0(x0, x_t, t, schedule, prediction), target, atol=1e-5)
