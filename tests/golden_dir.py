"""Where the reference golden files live, and what a test does when they are absent.

The golden folder is not part of the repository: it sits beside the clone at ../shared/golden
(or wherever KVIDEO_GOLDEN_DIR points). Without it the parity tests skip with one reason; with
KVIDEO_REQUIRE_GOLDEN=1 (set by .ci/run) a missing folder or file is a failure instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

GOLDEN_DIR = Path(os.environ.get("KVIDEO_GOLDEN_DIR", Path(__file__).resolve().parents[2] / "shared" / "golden"))
SKIP_REASON = ("golden files not found (../shared/golden beside the clone, or KVIDEO_GOLDEN_DIR): "
               "the reference-parity tests are skipped")


def golden_required() -> bool:
    return os.environ.get("KVIDEO_REQUIRE_GOLDEN") == "1"


def golden_path(name: str = "") -> Path:
    """`GOLDEN_DIR / name` if it exists; otherwise skip the test, or fail it when the golden files are required."""
    path = GOLDEN_DIR / name
    if path.exists():
        return path
    if golden_required():
        pytest.fail(f"golden file {path} not found and KVIDEO_REQUIRE_GOLDEN=1: "
                    "put the golden folder at ../shared/golden or set KVIDEO_GOLDEN_DIR", pytrace=False)
    _skip()


def skip_module_without_golden() -> None:
    """At module level: skip the whole module when the golden folder is absent. When it is required the
    module is collected as usual, so its tests fail one by one instead of stopping the collection."""
    if not GOLDEN_DIR.is_dir() and not golden_required():
        _skip()


def _skip() -> None:
    pytest.skip(SKIP_REASON, allow_module_level=True)  # one place, so pytest -rs folds every skip into one line
