"""The example scripts run: the tiny one end to end, the official one up to the meta-device models."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kvideo.video_io import video_info

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_tiny_cpu_example(tmp_path):
    out = tmp_path / "tiny.mp4"
    assert "57 frames at 8 fps" in run(str(EXAMPLES / "generate_tiny_cpu.py"), str(out))
    assert video_info(out).num_frames == 57


def test_official_gpu_example_builds_official_models_on_meta():
    printed = run(str(EXAMPLES / "generate_official_gpu.py"), "--dry-run")
    assert "keyframe UNet: 4,143,739,012 parameters" in printed
    assert "interpolation UNet: 3,872,572,046 parameters" in printed
    assert "video MoVQ: 666,131,275 parameters" in printed


# -- examples/train_shapes.sh: its lanes and their dependencies, with a stand-in `kvideo` -----------------
FAKE_KVIDEO = r'''#!/usr/bin/env bash
# kvideo recipe shapes OUT --quiet [...] --stages S...: record each stage after checking its inputs
set -e
out=$3; shift 3
while [ "$1" != "--stages" ]; do shift; done; shift
needs() { for s in "$@"; do [ -f "$out/records/$s.json" ] || { echo "$stage before $s" >&2; exit 3; }; done; }
mkdir -p "$out/records"
for stage in "$@"; do
    case $stage in
        movq) needs data ;; text|cache-interpolation|decoder) needs movq ;; cache-keyframe) needs text ;;
        image) needs cache-keyframe ;; keyframe|keyframe-all) needs image ;; interpolation) needs cache-interpolation ;;
        keyframe-detail) needs keyframe-all ;;
        cache-interpolation-motion) needs movq data-motion ;; interpolation-motion) needs cache-interpolation-motion interpolation ;;
        model) needs keyframe-detail interpolation-motion decoder ;;
    esac
    [ "$stage" = "${FAIL_STAGE:-}" ] && { echo "$stage broke" >&2; exit 1; }
    sleep 0.2
    echo "$stage" >> "$out/order"
    echo '{}' > "$out/records/$stage.json"
done
'''


def run_train_shapes(tmp_path, **env) -> subprocess.CompletedProcess:
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kvideo").write_text(FAKE_KVIDEO)
    (bin_dir / "kvideo").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "POLL_SECONDS": "0.2", **env}
    return subprocess.run(["bash", str(EXAMPLES / "train_shapes.sh"), str(tmp_path / "out"), "train"],
                          capture_output=True, text=True, timeout=120, env=env)


def test_train_shapes_script_runs_every_stage_after_its_inputs(tmp_path):
    result = run_train_shapes(tmp_path)
    assert result.returncode == 0, result.stderr
    order = (tmp_path / "out" / "order").read_text().split()
    assert sorted(order) == sorted(["data", "movq", "text", "cache-keyframe", "image", "keyframe-all", "keyframe-detail",
                                    "cache-interpolation", "decoder", "interpolation", "data-motion",
                                    "cache-interpolation-motion", "interpolation-motion", "keyframe", "model"])
    assert order[:2] == ["data", "movq"] and order[-1] in ("model", "keyframe")
    assert "recipe done" in result.stdout


def test_train_shapes_script_stops_when_a_stage_fails(tmp_path):
    result = run_train_shapes(tmp_path, FAIL_STAGE="decoder")
    assert result.returncode == 1
    assert "lane2 failed" in result.stderr and "logs/lane2.log" in result.stderr
    assert "decoder broke" in (tmp_path / "out" / "logs" / "lane2.log").read_text()
    records = {p.stem for p in (tmp_path / "out" / "records").iterdir()}
    assert "model" not in records and "keyframe" not in records  # nothing waits forever for the decoder
