"""A clone without the golden folder skips the parity tests with one reason; KVIDEO_REQUIRE_GOLDEN=1 fails them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import golden_dir

TESTS = Path(__file__).resolve().parent


def test_present_file_is_returned(tmp_path, monkeypatch):
    (tmp_path / "a.safetensors").write_bytes(b"")
    monkeypatch.setattr(golden_dir, "GOLDEN_DIR", tmp_path)
    assert golden_dir.golden_path("a.safetensors") == tmp_path / "a.safetensors"
    assert golden_dir.golden_path() == tmp_path


def test_missing_folder_skips_unless_required(tmp_path, monkeypatch):
    monkeypatch.setattr(golden_dir, "GOLDEN_DIR", tmp_path / "absent")
    monkeypatch.delenv("KVIDEO_REQUIRE_GOLDEN", raising=False)
    with pytest.raises(pytest.skip.Exception, match="golden files not found"):
        golden_dir.golden_path("movq.safetensors")
    monkeypatch.setenv("KVIDEO_REQUIRE_GOLDEN", "1")
    with pytest.raises(pytest.fail.Exception, match="KVIDEO_REQUIRE_GOLDEN=1"):
        golden_dir.golden_path("movq.safetensors")


def test_module_skip_only_when_the_folder_is_absent_and_not_required(tmp_path, monkeypatch):
    monkeypatch.setattr(golden_dir, "GOLDEN_DIR", tmp_path)
    golden_dir.skip_module_without_golden()  # present: nothing happens
    monkeypatch.setattr(golden_dir, "GOLDEN_DIR", tmp_path / "absent")
    monkeypatch.setenv("KVIDEO_REQUIRE_GOLDEN", "1")
    golden_dir.skip_module_without_golden()  # required: the module's tests run and fail one by one
    monkeypatch.delenv("KVIDEO_REQUIRE_GOLDEN")
    with pytest.raises(pytest.skip.Exception, match="golden files not found"):
        golden_dir.skip_module_without_golden()


def run_pytest(tmp_path, required: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "KVIDEO_GOLDEN_DIR": str(tmp_path / "absent")}
    env.pop("KVIDEO_REQUIRE_GOLDEN", None)
    if required:
        env["KVIDEO_REQUIRE_GOLDEN"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_golden.py"],
                          cwd=TESTS, env=env, capture_output=True, text=True, timeout=120)


def test_parity_module_skips_with_one_reason_without_the_folder(tmp_path):
    result = run_pytest(tmp_path, required=False)
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: the module's only outcome is its skip
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 1 and golden_dir.SKIP_REASON in skips[0], result.stdout


def test_parity_module_fails_without_the_folder_when_required(tmp_path):
    result = run_pytest(tmp_path, required=True)
    assert result.returncode == 1, result.stdout  # test failures, not an interrupted collection
    assert "KVIDEO_REQUIRE_GOLDEN=1" in result.stdout and "absent" in result.stdout, result.stdout
