"""Golden runner: release 1.1 samplers (zero-SNR cosine, leading / trailing steps, 0.995 thresholding)."""
from __future__ import annotations

import json

import torch

from kvideo.diffusion import (
    add_noise,
    ddpm_step,
    dynamic_threshold,
    predict_x0,
    zero_snr_cosine_alphas_cumprod,
    zero_snr_cosine_schedule,
)

KIND = "kv11_diffusion"
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v"}


def _sampler(golden, name: str) -> dict[str, torch.Tensor]:
    config = golden.config
    settings = config[name]
    schedule = zero_snr_cosine_schedule(settings["steps"], settings["timestep_spacing"])
    prediction = PREDICTIONS[settings["prediction_type"]]
    produced = {
        f"{name}.alphas_cumprod": zero_snr_cosine_alphas_cumprod(config["num_train_timesteps"]),
        f"{name}.timesteps": schedule.timesteps.flip(0),  # diffusers lists them noisiest first
    }
    step = 0
    while f"{name}.step{step}.x" in golden.inputs:
        given = {k: golden.inputs[f"{name}.step{step}.{k}"] for k in ("x", "model_output", "noise", "t")}
        index = int((schedule.timesteps == int(given["t"])).nonzero())
        x = given["x"].float()
        x0 = predict_x0(given["model_output"].float(), x, index, schedule, prediction)
        x0 = dynamic_threshold(x0, config["dynamic_thresholding_ratio"], max_value=1.0)
        produced[f"{name}.step{step}.pred_original_sample"] = x0
        produced[f"{name}.step{step}.prev_sample"] = ddpm_step(x0, x, index, schedule, given["noise"].float())
        step += 1
    return produced


def run(golden) -> dict[str, torch.Tensor]:
    assert golden.config["variance_type"] == "fixed_small_log", json.dumps(golden.config)
    produced = {**_sampler(golden, "keyframe"), **_sampler(golden, "interpolation")}
    inputs = golden.inputs
    produced["augment.frame"] = add_noise(inputs["augment.frame"].float(), inputs["augment.uniform_noise"].float(),
                                          int(inputs["augment.t"]))
    return produced
