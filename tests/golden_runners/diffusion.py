"""Golden runner: cosine schedules, dynamic thresholding and single ancestral DDPM steps."""
from __future__ import annotations

import re

import torch

from kvideo.diffusion import Schedule, cosine_schedule, ddpm_step, dynamic_threshold, predict_x0

KIND = "diffusion"
SCHEDULE_KEY = re.compile(r"schedule(\d+)\.(\w+)$")
STEP_KEY = re.compile(r"step\.(eps|v)\.t(\d+)\.x_prev$")


def _call_number(call: str, pattern: str) -> float:
    """A number the metadata `call` states, e.g. 'percentile=0.98' or 'at 50 steps'."""
    match = re.search(pattern, call)
    assert match, f"the golden call does not state {pattern!r}: {call}"
    return float(match.group(1))


def _schedules(golden) -> dict[str, torch.Tensor]:
    produced = {}
    for key in golden.tensors:
        match = SCHEDULE_KEY.match(key)
        if match:
            schedule = cosine_schedule(int(match.group(1)))
            produced[key] = getattr(schedule, match.group(2))
    return produced


def _steps(golden, schedule: Schedule, percentile: float) -> dict[str, torch.Tensor]:
    produced = {}
    for key in golden.tensors:
        match = STEP_KEY.match(key)
        if not match:
            continue
        prefix, prediction, t = key.removesuffix(".x_prev"), match.group(1), int(match.group(2))
        x_t, output, noise = (golden.tensors[f"{prefix}.{name}"].float() for name in ("x_t", "model_out", "noise"))
        x0 = dynamic_threshold(predict_x0(output, x_t, t, schedule, prediction), percentile)
        produced[key] = ddpm_step(x0, x_t, t, schedule, noise)
    return produced


def run(golden) -> dict[str, torch.Tensor]:
    call = golden.metadata["call"]
    percentile = _call_number(call, r"percentile=([0-9.]+)")
    step_schedule = cosine_schedule(int(_call_number(call, r"at (\d+) steps")))
    produced = _schedules(golden)
    produced["threshold.out"] = dynamic_threshold(golden.tensors["threshold.in"].float(), percentile)
    produced.update(_steps(golden, step_schedule, percentile))
    return produced
