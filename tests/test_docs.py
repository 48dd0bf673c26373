"""The README's commands are the ones CI runs, its links and the model card's resolve, the gallery script lays
out its strip, and the LICENSE is the one pyproject names."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def quick_start() -> list[str]:
    """The lines of the first bash block of the README's quick start."""
    section = README.split("## Quick start", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S)[1].strip().splitlines()


def test_quick_start_is_two_commands_and_ci_runs_them():
    install, tests = quick_start()
    assert tests == "python -m pytest -q" and re.search(r"^python3 -m pytest -q$", CI, re.M)
    torch_pin = re.match(r"pip install (torch==[\d.]+) && ", install)[1]
    assert f'pip install --quiet "{torch_pin}"\n' in CI
    assert 'pip install -e ".[test,eval]"' in install and 'pip install --quiet -e ".[test,eval]"' in CI
    assert "kvideo generate" in install
    assert re.search(r"^export KVIDEO_REQUIRE_GOLDEN=1$", CI, re.M)  # CI never skips the golden tests


def test_readme_gives_the_cpu_only_torch_line_for_the_same_version():
    torch_pin = re.match(r"pip install (torch==[\d.]+) ", quick_start()[0])[1]
    assert f"pip install {torch_pin} --index-url https://download.pytorch.org/whl/cpu" in README


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def local_links(path: Path) -> list[tuple[Path, str]]:
    """(target file, anchor) of every relative link in a markdown file."""
    links = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    out = []
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        out.append(((path.parent / target).resolve() if target else path, anchor))
    return out


@pytest.mark.parametrize("name", ["README.md", "docs/model-card.md"])
def test_local_links_and_anchors_resolve(name):
    links = local_links(ROOT / name)
    assert links
    for target, anchor in links:
        assert target.exists(), f"{name}: {target} does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            assert anchor in {github_anchor(h) for h in headings}, f"{name}: no heading #{anchor} in {target.name}"


def test_readme_shows_the_gallery_and_the_command_that_makes_it():
    assert "](docs/gallery.png)" in README and "`python docs/make_gallery.py`" in README
    assert (ROOT / "docs" / "gallery.png").stat().st_size > 0
    assert "](docs/model-card.md)" in README


def load_gallery_script():
    spec = importlib.util.spec_from_file_location("make_gallery", ROOT / "docs" / "make_gallery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gallery_strip_puts_each_clip_s_first_frames_in_its_row():
    gallery = load_gallery_script()
    clips = [np.full((20, 4, 6, 3), 40 * (i + 1), np.uint8) for i in range(3)]
    for clip in clips:
        clip[:, 0, 0] = np.arange(20)[:, None]  # frame index in the corner pixel
    sheet = np.asarray(gallery.strip(clips, ("a", "b", "c"), frames=17))
    row = 4 + gallery.LABEL_HEIGHT
    assert sheet.shape == (3 * row, 17 * 6, 3)
    for i in range(3):
        top = i * row + gallery.LABEL_HEIGHT
        assert [sheet[top, 6 * k, 0] for k in range(17)] == list(range(17))
        assert (sheet[top + 1:top + 4, 1:6] == 40 * (i + 1)).all()


def test_license_is_the_apache_2_text_pyproject_names():
    text = (ROOT / "LICENSE").read_text()
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 10_000
