"""benchmarks/bench_flops.py counts what a clip does: guided steps twice, cached steps cheaper, fewer steps fewer.

Run at the tiny size on CPU tensors with 3 keyframes and a few steps (the official-size count runs the same code
on the meta device)."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_flops.py"
SMALL = dict(num_frames=3, steps=3, interpolation_steps=2)


@pytest.fixture(scope="module")
def flops(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("bench_flops", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ROWS = {"release": SMALL, "cache-2": {**SMALL, "cache_interval": 2},
                   "interp-unguided": {**SMALL, "interpolation_guidance_scale": 0.0},
                   "fast": {**module.FAST, "num_frames": 3, "steps": 2, "interpolation_steps": 1}}
    out = tmp_path_factory.mktemp("flops") / "flops.json"
    module.main(["--preset", "tiny", "--device", "cpu", "--size", "64", "--json-out", str(out)])
    return json.loads(out.read_text())["rows"]


def test_release_row_counts_both_guidance_branches(flops):
    release = flops["release"]
    assert release["keyframe_calls"] == 3 and release["keyframe_rows"] == 6  # guidance 5: two branches a step
    assert release["interpolation_calls"] == 2 and release["interpolation_rows"] == 4  # keyframe guidance 0.25
    assert release["frames"] == 4 * 3 - 3  # fps medium: one interpolation pass, 3 frames between each pair
    assert release["total_tflop"] == pytest.approx(
        release["keyframe_tflop"] + release["interpolation_tflop"] + release["decode_tflop"])


def test_each_fast_option_cuts_its_stage(flops):
    release, cached, unguided, fast = flops["release"], flops["cache-2"], flops["interp-unguided"], flops["fast"]
    assert cached["keyframe_calls"] == release["keyframe_calls"]  # a cached step still calls the UNet ...
    assert cached["keyframe_tflop"] < 0.9 * release["keyframe_tflop"]  # ... which runs only its outer levels
    assert unguided["interpolation_rows"] == unguided["interpolation_calls"] == 2  # one branch a step
    assert unguided["interpolation_tflop"] == pytest.approx(release["interpolation_tflop"] / 2)
    assert unguided["keyframe_tflop"] == release["keyframe_tflop"]
    assert fast["decode_tflop"] == release["decode_tflop"]  # decoding does not depend on the sampler
    assert fast["keyframe_calls"] == 2 and fast["interpolation_calls"] == 1
    assert fast["total_tflop"] < release["total_tflop"]
