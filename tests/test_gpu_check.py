"""benchmarks/gpu_check.sh in its CPU test form (tiny models, seconds): every part runs and writes its JSON keys."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

CLIP_KEYS = {"clip_s", "stages", "frames", "steps", "interpolation_steps", "sampler", "cache_interval", "part_s"}
STAGES = {"text", "keyframes", "interpolation", "decode"}
# compiled and compiled_fast need inductor's compile (minutes on a CPU): test_compile.py covers compilation
TINY_PARTS = [p for p in gpu_check.PARTS if not p.startswith("compiled")]


def test_the_script_runs_in_its_tiny_cpu_form_and_writes_every_part(tmp_path):
    command = ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path), "--preset", "tiny", "--device",
               "cpu", "--parts", ",".join(TINY_PARTS)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = results["parts"]
    assert list(parts) == TINY_PARTS and not [p for p, r in parts.items() if "error" in r or "skipped" in r]
    assert {"device", "torch", "cuda", "preset", "peak_tflops", "command"} <= set(results["environment"])
    for name in ("kvideo", "reference", "fast", "low_memory"):
        assert CLIP_KEYS <= set(parts[name]) and set(parts[name]["stages"]) == STAGES, name
        assert parts[name]["frames"] == 57 and parts[name]["clip_s"] > 0
    assert parts["fast"]["sampler"] == "dpmpp_2m" and parts["fast"]["cache_interval"] == 2
    assert parts["low_memory"]["text_encoder"] == "int8"
    assert parts["flops"]["gflop"] > 0 and parts["flops"]["tflops"] > 0 and "percent_of_peak" in parts["flops"]
    assert parts["decode"]["speedup"] > 0 and {"s", "peak_gb"} <= set(parts["decode"]["batched"])
    assert all(0 < r["relative_l2"] < 2 and r["finite"] for r in parts["parity"].values() if isinstance(r, dict))
    text = parts["text_int8"]
    assert 0 < text["relative_l2_vs_bf16"] < 0.05 and text["int8_bytes"] < text["bf16_bytes"]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| keyframes |" in table and "decode 57 frames" in table and "reference / kvideo" in table
    assert results["total_s"] < 600


def test_a_part_past_the_budget_is_skipped_and_a_failing_one_recorded(tmp_path, monkeypatch):
    def broken(run):  # takes most of the budget, then fails
        time.sleep(1.0)
        raise RuntimeError("CUDA error: simulated")

    monkeypatch.setitem(gpu_check.PART_FUNCTIONS, "flops", broken)
    results = gpu_check.main(["--preset", "tiny", "--device", "cpu", "--parts", "flops,decode", "--budget-s", "1.6",
                              "--json-out", str(tmp_path / "g.json"), "--markdown-out", str(tmp_path / "g.md")])
    assert results["parts"]["flops"]["error"] == "RuntimeError: CUDA error: simulated"
    assert "budget" in results["parts"]["decode"]["skipped"]  # a tiny part is given 1 s
    assert json.loads((tmp_path / "g.json").read_text())["parts"].keys() == {"flops", "decode"}


def test_unknown_parts_are_refused():
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--parts", "kvideo,warp"])
