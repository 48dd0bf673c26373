"""Parity with the reference implementation: every golden file, run through kvideo's public API."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from golden_dir import GOLDEN_DIR, golden_path, skip_module_without_golden
from golden_runners import GoldenFile, load_runners

skip_module_without_golden()
TOLERANCE = 1e-4
RUNNERS = load_runners()
FILES = sorted(GOLDEN_DIR.glob("*.safetensors"))


def relative_l2(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.double(), ref.double()
    return float((ours - ref).norm() / ref.norm().clamp_min(1e-300))


def test_golden_files_present():
    golden_path()  # fails here, naming the folder, when KVIDEO_REQUIRE_GOLDEN=1 and it is absent
    assert FILES, f"no golden files in {GOLDEN_DIR}; set KVIDEO_GOLDEN_DIR to the golden folder"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden(path: Path, request: pytest.FixtureRequest) -> None:
    golden = GoldenFile.load(path)
    runner = RUNNERS.get(golden.kind)
    if runner is None:
        request.applymarker(
            pytest.mark.xfail(strict=True, reason=f"golden kind {golden.kind!r} is not handled by kvideo yet")
        )
        pytest.fail(f"no kvideo runner for golden kind {golden.kind!r}")
    with torch.no_grad():
        produced = runner(golden)
    missing = sorted(set(golden.outputs) - set(produced))
    assert not missing, f"{path.name}: the runner produced no value for out.{missing}"
    assert produced, f"{path.name}: the runner compared nothing"
    for name, ours in produced.items():
        ref = golden.expected(name)
        assert ref is not None, f"{path.name}: {name!r} is not in the file"
        assert tuple(ours.shape) == tuple(ref.shape), f"{path.name}:{name} shape {tuple(ours.shape)} != {tuple(ref.shape)}"
        error = relative_l2(ours, ref)
        assert error < TOLERANCE, f"{path.name}:{name} relative L2 error {error:.3e} >= {TOLERANCE}"
