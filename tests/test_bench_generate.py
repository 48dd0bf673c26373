"""benchmarks/bench_generate.py on tiny random models on the CPU: both modes, parity and FLOPs, the JSON."""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_generate


def test_both_modes_parity_and_flops_write_the_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    results = bench_generate.main([
        "--device", "cpu", "--preset", "tiny", "--size", "64", "--frames", "3", "--steps", "2",
        "--warmup-steps", "1", "--repeats", "2", "--dtype", "bf16", "--parity", "--flops", "--flops-iters", "1",
        "--json-out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file
    for mode, attention in (("kvideo", "sdpa"), ("reference", "math")):
        r = results["modes"][mode]
        assert "error" not in r and r["attention"] == attention
        assert set(r["stages"]) == {"text", "keyframes", "interpolation", "decode"}
        assert all(s["seconds"] > 0 and len(s["all"]) == 2 and s["peak_gb"] is None for s in r["stages"].values())
        assert r["clip"]["frames"] == 4 * 3 - 3 and r["clip"]["seconds"] >= r["stages"]["keyframes"]["seconds"]
    assert results["modes"]["kvideo"]["parameters"] == results["modes"]["reference"]["parameters"]
    assert results["speedup"] > 0
    flops = results["flops"]
    assert flops["flops_per_step"] > 0 and flops["tflops"] > 0 and flops["peak_tflops"] == 989.0
    parity = results["parity"]
    assert parity["kvideo"]["finite"] and parity["reference"]["finite"]
    # bf16 vs fp32: random weights amplify round-off through the deep net (~0.1-0.8 here), so only a loose bound
    assert 0 < parity["kvideo"]["keyframes"] < 2
    assert 0 < parity["reference"]["keyframe_unet_step"] < 1e-3  # fp32 math vs fp32 SDPA: round-off only
    table = capsys.readouterr().out
    assert "| clip |" in table and "parity vs fp32" in table and "GFLOP" in table


def test_a_failing_mode_is_recorded_and_the_run_goes_on(monkeypatch):
    def out_of_memory(args, mode):
        if mode == "reference":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(args, mode)

    real = bench_generate.measure_mode
    monkeypatch.setattr(bench_generate, "measure_mode", out_of_memory)
    results = bench_generate.main(["--device", "cpu", "--preset", "tiny", "--size", "64", "--frames", "2",
                                   "--fps", "low", "--steps", "1", "--warmup-steps", "1", "--repeats", "1"])
    assert "OutOfMemoryError" in results["modes"]["reference"]["error"]
    assert "error" not in results["modes"]["kvideo"] and "speedup" not in results


def test_same_weights_in_every_mode():
    args = bench_generate.parse_args(["--device", "cpu", "--preset", "tiny"])
    a, b = bench_generate.build_unet(args, 0, torch.float32), bench_generate.build_unet(args, 0, torch.bfloat16)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x.to(torch.bfloat16), y), name
    assert not [n for n, p in a.named_parameters() if (p.dim() > 1 or p.numel() == 1) and not p.any()]  # woken up
