"""`kvideo eval` mistakes and faults through the real command line (a subprocess): exit status 2, one line
`kvideo eval <metric>: error: ...`, no traceback, and no report, statistics or video written."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_cli_errors import Payload, assert_one_line_error, kvideo, snapshot
from test_eval_support import make_generated, make_ucf101, tiny_c3d_file, tiny_i3d_file


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("eval_errors")
    torch.jit.script(Scripted()).save(str(root / "c3d_ucf101.pt"))  # a published name, not a published file
    torch.save({"weight": Payload()}, root / "code.pt")
    return SimpleNamespace(ucf=make_ucf101(root / "ucf"), fake=make_generated(root / "fake", num_videos=6),
                           i3d=tiny_i3d_file(root / "i3d.safetensors"), c3d=tiny_c3d_file(root / "c3d.safetensors"),
                           scripted=root / "c3d_ucf101.pt", code=root / "code.pt")


class Scripted(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(2, 3, 4))


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write: chmod for a normal user; root ignores modes, so a read-only mount."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o555)
        return folder
    for candidate in (Path("/proc/sys"), Path("/sys/fs/cgroup")):
        if candidate.is_dir() and not os.access(candidate, os.W_OK):
            return candidate
    pytest.skip("running as root and no read-only folder found")


@pytest.mark.parametrize("detector, needle", [
    ("scripted", "--trust-detector"),  # TorchScript runs code from the file: only published hashes, or trusted
    ("code", "is not a checkpoint kvideo can read"),  # a pickle with code in it: weights_only refuses it
])
def test_detectors_that_would_run_code_are_refused(data, tmp_path, detector, needle):
    result = kvideo("eval", "is", "--fake", data.fake, "--detector", getattr(data, detector), "--num-videos", 6,
                    "--splits", 1, "--quiet", "--report", tmp_path / "is.json", cwd=tmp_path)
    assert_one_line_error(result, "eval is", needle)
    assert snapshot(tmp_path) == {}  # no report, and the pickle's code never ran (no 'pwned')


@pytest.mark.parametrize("where, needle", [
    ("folder", "--report {report!r} is a folder; give a file path"),
    ("no-parent", "folder {parent!r} does not exist"),
    ("read-only", "cannot be written ({parent!r} is not a writable folder)"),
])
def test_report_paths_are_refused_before_the_detector_is_read(data, tmp_path, where, needle):
    report = {"folder": tmp_path, "no-parent": tmp_path / "absent" / "is.json",
              "read-only": read_only_folder(tmp_path) / "is.json"}[where]
    missing = tmp_path / "no-such-detector.pt"  # the error would name it, were the report checked after
    before = snapshot(tmp_path)
    result = kvideo("eval", "is", "--fake", data.fake, "--detector", missing, "--quiet", "--report", report)
    line = assert_one_line_error(result, "eval is", needle.format(report=str(report), parent=str(report.parent)))
    assert "no-such-detector" not in line and snapshot(tmp_path) == before


def test_stats_and_generate_outputs_are_refused_before_any_work(data, tmp_path):
    missing = tmp_path / "no-such-detector.pt"
    result = kvideo("eval", "stats", "--real", data.ucf, "--detector", missing, "--out", tmp_path)
    assert_one_line_error(result, "eval stats", f"--out {str(tmp_path)!r} is a folder")
    (tmp_path / "file").write_text("x")
    result = kvideo("eval", "generate", "--benchmark", "ucf101", "--data", tmp_path / "no-data",
                    "--out", tmp_path / "file", "--preset", "tiny", "--quiet")
    assert_one_line_error(result, "eval generate", f"--out {str(tmp_path / 'file')!r} is a file, not a folder")
    assert snapshot(tmp_path) == {"file": b"x"}


@pytest.mark.parametrize("flags, needle", [
    (["--detector-bn-eps", "nan"], "argument --detector-bn-eps: expected a finite number, got 'nan'"),
    (["--detector-range=-inf,inf"], "argument --detector-range: LOW and HIGH must be finite numbers"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
])
def test_bad_numbers_are_refused_before_any_work(data, tmp_path, flags, needle):
    result = kvideo("eval", "fvd", "--real", data.ucf, "--fake", data.fake, "--detector", data.i3d, *flags,
                    "--report", tmp_path / "fvd.json", "--quiet")
    assert_one_line_error(result, "eval fvd", needle)
    assert snapshot(tmp_path) == {}


def test_a_killed_writes_leftovers_are_not_counted_as_bad_videos(data, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    for item in data.fake.glob("*.mp4"):
        (fake / item.name).symlink_to(item)
    (fake / ".00006.mp4.k1ll3d.tmp.mp4").write_bytes(b"half")  # what a killed `kvideo generate` leaves
    result = kvideo("eval", "is", "--fake", fake, "--fake-format", "folder", "--detector", data.c3d,
                    "--num-videos", 6, "--splits", 1, "--quiet", "--report", tmp_path / "is.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "is.json").read_text())
    assert report["num_videos"] == {"fake": 6} and report["fake"]["num_skipped"] == 0
