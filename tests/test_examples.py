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
