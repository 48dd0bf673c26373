"""Frame-level measures of shapes clips: roughness, keyframe flicker, motion evenness, per-frame attributes."""
from __future__ import annotations

import numpy as np
import pytest

from kvideo.shapes.frames import keyframe_flicker, motion_evenness, roughness
from kvideo.shapes.grammar import parse_caption
from kvideo.shapes.render import ClipParams, RenderSettings, render_clip
from kvideo.shapes.score import score_clip, summarize

CAPTION = "a green circle moving right on a gray background"
SETTINGS = RenderSettings(64, 64, 8.0, 57 / 8)  # 57 frames: 15 keyframes and 3 frames between each pair


def clip(caption: str = CAPTION, velocity: float = 0.85) -> np.ndarray:
    """A rendered clip whose keyframe pairs each move 5.3 % of the frame (the evenness measure needs 5 %)."""
    params = ClipParams(parse_caption(caption), 14.0, (32.0, 8.5), (0.0, velocity), SETTINGS.num_frames)
    return render_clip(params, SETTINGS)


def test_roughness_of_flat_and_speckled_frames():
    flat = np.full((2, 16, 16, 3), 100, np.uint8)
    assert np.allclose(roughness(flat), 0)
    speckled = flat.copy()
    speckled[1, 8, 8] = 200  # one bright pixel: |4·100| at it, 100 at each of its 4 neighbours
    assert roughness(speckled)[1] == pytest.approx(800 * 3 / (14 * 14 * 3))


def test_flicker_flags_noisy_keyframes_and_passes_a_rendered_clip():
    frames = clip()
    rendered = score_clip(frames, CAPTION).frames
    assert rendered.flicker == pytest.approx(1.0, abs=0.05)
    noisy = frames.astype(np.int16)
    noise = np.random.default_rng(0).integers(-12, 13, noisy[::4].shape)
    noisy[::4] = np.clip(noisy[::4] + noise, 0, 255)
    flagged = score_clip(noisy.astype(np.uint8), CAPTION).frames
    assert flagged.flicker > 1.5
    assert flagged.roughness_keyframes > 1.5 * flagged.roughness_between
    assert keyframe_flicker(roughness(frames), 1) is None  # every frame a keyframe (fps low): no ratio


def test_evenness_of_constant_speed_and_of_a_hopping_object():
    frames = clip()
    assert score_clip(frames, CAPTION).frames.evenness < 0.05
    hopping = frames.copy()
    for start in range(0, len(frames) - 4, 4):
        hopping[start + 1:start + 4] = frames[start + 2]  # the frames between all sit at the middle
    assert score_clip(hopping, CAPTION).frames.evenness > 0.2
    centers = {t: np.array([32.0, 10.0]) for t in range(9)}  # no motion: no pair qualifies
    assert motion_evenness(centers, 9, (64, 64), 4) is None
    assert motion_evenness(centers, 9, (64, 64), 1) is None


def test_keyframes_of_another_colour_are_seen_frame_by_frame():
    """The clip-level median still reads green; the frame shares show the blue keyframes."""
    frames = clip()
    frames[::4] = clip("a blue circle moving right on a gray background")[::4]
    result = score_clip(frames, CAPTION)
    assert result.matches["object_color"]
    assert result.frames.color_keyframes == 0.0 and result.frames.color_between == 1.0
    assert result.frames.shape_between == 1.0
    totals = summarize([result.to_dict(), score_clip(clip(), CAPTION).to_dict()])
    assert totals["color_keyframes"] == 0.5 and totals["color_between"] == 1.0
    assert totals["flicker"] == pytest.approx(1.0, abs=0.1)


def test_keyframe_stride_1_reports_keyframes_only():
    result = score_clip(clip()[::4], CAPTION, keyframe_stride=1).frames
    assert result.color_keyframes == 1.0 and result.color_between is None
    assert result.flicker is None and result.evenness is None and result.roughness_between is None
    with pytest.raises(ValueError, match="stride"):
        score_clip(clip(), CAPTION, keyframe_stride=0)


def test_eval_shapes_reports_frame_measures(tmp_path):
    from kvideo.export import write_video
    from test_cli_errors import assert_one_line_error, kvideo

    write_video(tmp_path / "a.mp4", clip(), 8, progress=False)
    (tmp_path / "captions.csv").write_text(f"path,caption\na.mp4,{CAPTION}\n")
    result = kvideo("eval", "shapes", "--videos", tmp_path, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "keyframe flicker" in result.stdout and "colour right" in result.stdout
    import json

    report = json.loads((tmp_path / "shapes_score.json").read_text())
    assert report["clips"][0]["frames"]["keyframe_stride"] == 4 and report["totals"]["evenness"] < 0.1
    assert_one_line_error(kvideo("eval", "shapes", "--videos", tmp_path, "--keyframe-stride", "0"), "eval shapes",
                          "--keyframe-stride")


def test_background_shift_flags_keyframes_with_a_brighter_background():
    frames = clip()
    assert score_clip(frames, CAPTION).frames.background_shift < 2
    brighter = frames.astype(np.int16)
    brighter[::4] += 13  # every keyframe 13 levels brighter, object and background
    shifted = score_clip(np.clip(brighter, 0, 255).astype(np.uint8), CAPTION).frames
    assert shifted.background_shift == pytest.approx(13 * 3 ** 0.5, abs=1)
    assert score_clip(clip()[::4], CAPTION, keyframe_stride=1).frames.background_shift is None
