"""Release 1.1 samplers: zero-terminal-SNR cosine schedule, leading / trailing steps, clipped thresholding."""
from __future__ import annotations

import math

import pytest
import torch

from kvideo.diffusion import (
    X0Denoiser,
    add_noise,
    dynamic_threshold,
    rescale_zero_terminal_snr,
    sample_ddpm,
    spaced_timesteps,
    zero_snr_cosine_alphas_cumprod,
    zero_snr_cosine_schedule,
)


def test_zero_terminal_snr():
    acp = zero_snr_cosine_alphas_cumprod()
    assert acp.shape == (1000,) and acp.dtype == torch.float64
    assert float(acp[-1]) == 0.0 and bool((acp[1:] <= acp[:-1]).all())
    alpha_bar = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert float(acp[0]) == pytest.approx(alpha_bar(1 / 1000) / alpha_bar(0), rel=1e-9)  # the start is kept


def test_rescale_keeps_the_first_alpha_and_zeroes_the_last():
    betas = torch.linspace(1e-4, 0.02, 100, dtype=torch.float64)
    rescaled = rescale_zero_terminal_snr(betas)
    assert float(rescaled[0]) == pytest.approx(float(betas[0]), rel=1e-9) and float(rescaled[-1]) == 1.0


def test_leading_and_trailing_timesteps():
    assert spaced_timesteps(50, "leading").tolist() == list(range(0, 1000, 20))
    assert spaced_timesteps(10, "trailing").tolist() == [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]
    with pytest.raises(ValueError, match="spacing 'linspace'"):
        spaced_timesteps(10, "linspace")


def test_subset_schedule_steps_between_its_timesteps():
    full = zero_snr_cosine_schedule(1000)
    schedule = zero_snr_cosine_schedule(10, "trailing")
    assert [schedule.model_time(i) for i in (0, 9)] == [99, 999]
    assert float(schedule.alphas_cumprod_prev[0]) == 1.0
    assert float(schedule.alphas_cumprod_prev[5]) == float(full.alphas_cumprod[499])
    assert float(schedule.betas[-1]) == 1.0  # the noisiest step starts from pure noise
    with pytest.raises(ValueError, match="ascending"):
        type(schedule).from_timesteps(full.alphas_cumprod, torch.tensor([5, 3]))


def test_release_thresholding_is_a_clip():
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 5
    torch.testing.assert_close(dynamic_threshold(x, 0.995, max_value=1.0), x.clamp(-1, 1))
    with pytest.raises(ValueError, match="max_value"):
        dynamic_threshold(x, 0.995, max_value=0.5)


def test_add_noise_at_t20():
    x0, noise = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 0.5)
    a = float(zero_snr_cosine_alphas_cumprod()[20])
    torch.testing.assert_close(add_noise(x0, noise, 20), x0 * math.sqrt(a) + noise * math.sqrt(1 - a))


@pytest.mark.parametrize("steps, spacing, prediction", [(50, "leading", "eps"), (10, "trailing", "v")])
def test_sampling_reaches_a_fixed_target(steps, spacing, prediction):
    """A model that always points at one x0 (inside [-1, 1]) is followed to it exactly."""
    schedule = zero_snr_cosine_schedule(steps, spacing)
    target = torch.rand(2, 4, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    times = []

    def model(x, time):
        times.append(int(time[0]))
        i = int((schedule.timesteps == int(time[0])).nonzero())
        alpha, sigma = schedule.alpha_sigma(i)
        eps = (x - alpha * target) / max(sigma, 1e-12)
        return eps if prediction == "eps" else alpha * eps - sigma * target

    denoise = X0Denoiser(model, schedule, prediction, percentile=0.995, max_value=1.0)
    x = torch.randn(target.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = sample_ddpm(denoise, x, schedule, generator=torch.Generator().manual_seed(3), progress=False)
    torch.testing.assert_close(out, target)
    assert times == schedule.timesteps.flip(0).tolist()


# -- release 1.1 guidance wrappers ---------------------------------------------------------------------
def test_first_frame_guidance_is_three_branches_in_one_forward():
    from kvideo.diffusion import FirstFrameGuidance

    calls = []

    def model(x, time, context, mask, **kwargs):  # answers a different constant per branch
        calls.append((x, time, context, mask, kwargs))
        return torch.stack([torch.full_like(x[0, :4], float(context[i, 0, 0]) + float(x[i, 4:].sum()))
                            for i in range(x.shape[0])])

    x = torch.zeros(1, 4, 3, 2, 2)
    condition = torch.zeros(1, 5, 3, 2, 2)
    condition[:, 4, 0] = 1.0  # mask on frame 0: 4 ones, so branches with the frame add 4
    text, null = torch.full((1, 2, 8), 10.0), torch.full((1, 1, 8), 1.0)
    guide = FirstFrameGuidance(model, condition, text, torch.ones(1, 2, dtype=torch.bool), null,
                               torch.ones(1, 1, dtype=torch.bool), text_scale=5.0, image_scale=3.0,
                               batch_kwargs={"motion_score": torch.tensor([50])}, mode="video")
    out = guide(x, torch.tensor([980]))
    assert len(calls) == 1
    x_in, time, context, mask, kwargs = calls[0]
    assert x_in.shape == (3, 9, 3, 2, 2) and time.tolist() == [980] * 3 and context.shape == (3, 2, 8)
    assert not bool(mask[1:, 1].any())  # the null text is padded with masked tokens
    assert kwargs["motion_score"].tolist() == [50] * 3 and kwargs["mode"] == "video"
    full, image_only, neither = 10.0 + 4, 1.0 + 4, 1.0
    expected = (1 - 3.0) * neither + (3.0 - 5.0) * image_only + 5.0 * full
    torch.testing.assert_close(out, torch.full_like(x, expected))


def test_keyframe_guidance_with_release_11_unconditional_branch():
    from kvideo.diffusion import KeyframeGuidance

    seen = {}

    def model(x, time, context, mask, **kwargs):
        seen.update(context=context, mask=kwargs["temporal_mask"], x=x)
        return torch.zeros(x.shape[0], 4, *x.shape[2:])

    left, right = torch.ones(1, 2, 3, 2, 2), torch.ones(1, 2, 3, 2, 2)
    text, null = torch.full((1, 2, 8), 7.0), torch.zeros(1, 2, 8)
    guide = KeyframeGuidance(model, left, right, 0.5, context=text, context_mask=torch.ones(1, 2, dtype=torch.bool),
                             uncond_context=null, uncond_context_mask=torch.ones(1, 2, dtype=torch.bool),
                             batch_kwargs={"temporal_mask": torch.ones(1)},
                             uncond_batch_kwargs={"temporal_mask": torch.zeros(1)})
    guide(torch.zeros(1, 4, 3, 2, 2), torch.tensor([999]))
    assert seen["mask"].tolist() == [1.0, 0.0]
    assert float(seen["context"][0].mean()) == 7.0 and float(seen["context"][1].abs().sum()) == 0.0
    assert float(seen["x"][1, :2].abs().sum()) == 0.0 and float(seen["x"][0, :2].sum()) > 0  # keyframes zeroed
