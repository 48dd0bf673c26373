"""kvideo.shapes: the caption grammar, the clip renderer and `kvideo data shapes` (tiny sizes, short clips)."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from kvideo.cli import main
from kvideo.shapes.grammar import (
    BACKGROUNDS, COLORS, DIRECTIONS, SHAPES, Caption, all_captions, check_prompt_in_grammar, parse_caption,
)
from kvideo.shapes.render import (
    OBJECT_SIZE, RenderSettings, clip_caption, clip_params, coverage, render_clip, render_dataset,
)
from kvideo.video_io import read_frames, video_info


def rows(captions: Path) -> list[dict]:
    with captions.open(newline="") as handle:
        return list(csv.DictReader(handle))


def decoded(folder: Path) -> list[np.ndarray]:
    return [read_frames(folder / row["path"]) for row in rows(folder / "captions.csv")]


# -- grammar -------------------------------------------------------------------------------------
def test_grammar_values_are_the_documented_public_api():
    assert COLORS == {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220),
                      "yellow": (230, 210, 40), "purple": (140, 60, 200), "orange": (240, 140, 30)}
    assert BACKGROUNDS == {"black": (20, 20, 20), "gray": (128, 128, 128), "white": (235, 235, 235)}
    assert SHAPES == ("circle", "square", "triangle") and DIRECTIONS == ("left", "right", "up", "down")
    assert Caption("red", "circle", "left", "black").text == "a red circle moving left on a black background"


def test_every_caption_round_trips_and_there_are_216():
    captions = all_captions()
    assert len(captions) == len(set(captions)) == 216
    assert len({c.text for c in captions}) == 216
    for caption in captions:
        assert parse_caption(caption.text) == caption
    assert parse_caption("  A Red   CIRCLE moving left on a black background ") == Caption("red", "circle", "left", "black")


@pytest.mark.parametrize("text", [
    "", "a red circle", "a pink circle moving left on a black background",
    "a red hexagon moving left on a black background", "a red circle moving sideways on a black background",
    "a red circle moving left on a blue background", "a red circle moving left on a black background now",
    "the red circle moving left on a black background", "a red circle running left on a black background",
    "a red circle moving left in a black background", "a red circle moving left on a black floor", None, 3,
    "an red circle moving left on a black background", "a orange square moving down on an black background",
    "the orange square moving down on a black background",
])
def test_text_outside_the_grammar_does_not_parse(text):
    assert parse_caption(text) is None


def test_an_before_a_vowel_is_in_the_grammar():
    expected = Caption("orange", "square", "down", "black")
    assert parse_caption("an orange square moving down on a black background") == expected
    assert parse_caption("An Orange square moving down on a black background") == expected
    assert parse_caption(expected.text) == expected  # the template's own "a orange" still parses
    assert check_prompt_in_grammar("an orange square moving down on a black background") is None


def test_grammar_notice_only_outside_the_grammar():
    assert check_prompt_in_grammar("a blue square moving up on a gray background") is None
    notice = check_prompt_in_grammar("a cat playing piano")
    assert notice and "\n" not in notice and "a cat playing piano" in notice and "triangle" in notice


def test_caption_refuses_words_outside_the_grammar():
    with pytest.raises(ValueError, match="pink"):
        Caption("pink", "circle", "left", "black")
    with pytest.raises(ValueError, match="diagonal"):
        Caption("red", "circle", "diagonal", "black")


# -- clip parameters -----------------------------------------------------------------------------
def test_captions_are_balanced_every_216_clips():
    first = [clip_caption(7, i) for i in range(432)]
    assert set(first[:216]) == set(all_captions())
    assert set(Counter(first).values()) == {2}
    assert first[:216] != first[216:]  # each cycle is its own permutation
    assert [clip_caption(8, i) for i in range(216)] != first[:216]


@pytest.mark.parametrize("size, seconds", [(64, 1.0), (128, 10.0), ((64, 128), 2.0), ((128, 32), 0.5), (16, 0.1)])
def test_every_clip_keeps_the_shape_visible_and_travels_enough(size, seconds):
    settings = RenderSettings.from_size(size, fps=24, seconds=seconds)
    extents = np.array([settings.height, settings.width])
    for index in range(600):
        params = clip_params(3, index, settings)
        half = params.object_size / 2
        short = min(settings.height, settings.width)
        assert OBJECT_SIZE[0] * short <= params.object_size <= OBJECT_SIZE[1] * short
        centers = params.centers()  # linear: the extremes are the first and last frames
        assert np.all(centers - half >= 0) and np.all(centers + half <= extents)
        direction = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[params.caption.direction]
        motion = centers[-1] - centers[0]
        axis = int(np.argmax(np.abs(direction)))
        assert motion[1 - axis] == 0 and np.sign(motion[axis]) == direction[axis]
        assert abs(motion[axis]) >= 0.3 * extents[axis] - 1e-9


def test_clip_parameters_are_random_per_clip_and_fixed_by_seed():
    settings = RenderSettings.from_size(64, seconds=1)
    assert clip_params(0, 5, settings) == clip_params(0, 5, settings)
    assert clip_params(0, 5, settings) != clip_params(1, 5, settings)
    sizes = {round(clip_params(0, i, settings).object_size, 3) for i in range(50)}
    assert len(sizes) == 50


# -- drawing -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, area", [("circle", np.pi / 4), ("square", 1.0), ("triangle", 0.5)])
def test_coverage_is_anti_aliased_and_has_the_shape_area(shape, area):
    alpha = coverage(shape, 20.0, (16.3, 16.7), slice(0, 32), slice(0, 32))
    assert alpha.sum() == pytest.approx(area * 400, rel=0.02)
    assert ((alpha > 0) & (alpha < 1)).any()  # soft edges
    assert alpha.min() == 0 and alpha.max() == 1


def test_rendered_frames_are_background_at_the_border_and_show_the_shape():
    settings = RenderSettings.from_size(64, seconds=1)
    for index in range(30):
        params = clip_params(0, index, settings)
        frames = render_clip(params, settings)
        background = np.array(BACKGROUNDS[params.caption.background], dtype=np.uint8)
        border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)
        assert (border == background).all()
        inner = np.abs(frames.astype(int) - background).sum(-1) > 0
        covered = inner.reshape(len(frames), -1).sum(1)
        assert covered.min() > 0.25 * (OBJECT_SIZE[0] * 64) ** 2  # the shape is in every frame
        assert (frames == np.array(COLORS[params.caption.color], dtype=np.uint8)).all(-1).any()


# -- a set on disk -------------------------------------------------------------------------------
def test_same_seed_same_set_and_a_prefix_of_a_bigger_set_is_the_smaller_set(tmp_path):
    render_dataset(tmp_path / "a", 3, seed=4, size=32, seconds=0.5, progress=False)
    render_dataset(tmp_path / "b", 5, seed=4, size=32, seconds=0.5, progress=False)
    render_dataset(tmp_path / "c", 3, seed=5, size=32, seconds=0.5, progress=False)
    a, b, c = (rows(tmp_path / name / "captions.csv") for name in "abc")
    assert a == b[:3] and len(b) == 5
    assert [r["caption"] for r in a] != [r["caption"] for r in c]
    for row in a:  # byte for byte
        assert (tmp_path / "a" / row["path"]).read_bytes() == (tmp_path / "b" / row["path"]).read_bytes()
    for left, right in zip(decoded(tmp_path / "a"), decoded(tmp_path / "b")):
        np.testing.assert_array_equal(left, right)


def test_set_layout_is_what_training_reads(tmp_path):
    from kvideo.train.data import read_captions

    captions = render_dataset(tmp_path, 2, seed=0, size=32, fps=12, seconds=1, progress=False)
    table = rows(captions)
    assert list(table[0])[:6] == ["path", "caption", "color", "shape", "direction", "background"]
    assert all(parse_caption(r["caption"]) == Caption(r["color"], r["shape"], r["direction"], r["background"])
               for r in table)
    pairs = read_captions(captions)
    assert [p.name for p, _ in pairs] == ["00000.mp4", "00001.mp4"]
    info = video_info(pairs[0][0])
    assert (info.num_frames, info.fps, info.height, info.width) == (12, 12.0, 32, 32)


def test_rendering_resumes_without_redoing_finished_clips(tmp_path):
    render_dataset(tmp_path, 2, seed=0, size=32, seconds=0.5, progress=False)
    first = tmp_path / "videos" / "00000.mp4"
    stamp = first.stat().st_mtime_ns
    (tmp_path / "videos" / "00001.mp4").unlink()  # as if the run had stopped there
    render_dataset(tmp_path, 3, seed=0, size=32, seconds=0.5, progress=False)
    assert first.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["00000.mp4", "00001.mp4", "00002.mp4"]
    with pytest.raises(ValueError, match="another folder"):
        render_dataset(tmp_path, 3, seed=1, size=32, seconds=0.5, progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_videos=0), "at least 1 video"), (dict(size=60), "multiples of 8"), (dict(size=8), "at least 16"),
    (dict(size=(64, 30)), "width=30"), (dict(fps=0), "fps=0"), (dict(seconds=-1), "seconds=-1"),
    (dict(fps=1, seconds=1), "2 frames"), (dict(seed=-1), "seed=-1"), (dict(fps=float("nan")), "fps=nan"),
])
def test_bad_settings_are_errors_naming_the_value(tmp_path, kwargs, match):
    options = dict(num_videos=1, seed=0, size=32, fps=24, seconds=0.5, progress=False) | kwargs
    with pytest.raises(ValueError, match=match):
        render_dataset(tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()  # nothing written


def test_data_shapes_command(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["data", "shapes", str(out), "--videos", "2", "--size", "32", "--seconds", "0.5", "--quiet"]) == 0
    assert len(rows(out / "captions.csv")) == 2
    assert main(["data", "shapes", str(out), "--videos", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("kvideo data") and "at least 1 video" in error and "\n" not in error


def test_recipe_command_runs_the_stages_asked_and_names_those_left(tmp_path, capsys):
    out = tmp_path / "recipe"
    assert main(["recipe", "shapes", str(out), "--videos", "2", "--stages", "data", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert len(rows(out / "data" / "captions.csv")) == 2 and (out / "records" / "data.json").is_file()
    assert "stages still to run: movq text" in printed and "model folder" not in printed
    assert main(["recipe", "shapes", str(out), "--videos", "2", "--stages", "data", "--quiet"]) == 0
    assert "data done before, skipped" in capsys.readouterr().out


# -- scorer: pure steps ----------------------------------------------------------------------------
def test_nearest_names_and_border_color():
    from kvideo.shapes.score import border_color, nearest_name

    assert nearest_name(np.array([200.0, 60, 50]), COLORS) == "red"
    assert nearest_name(np.array([120.0, 120, 140]), BACKGROUNDS) == "gray"
    frames = np.full((3, 16, 16, 3), 20, dtype=np.uint8)
    frames[:, 4:12, 4:12] = 255
    frames[:, 0, :3] = 255  # a few odd border pixels do not move the median
    np.testing.assert_array_equal(border_color(frames), [20, 20, 20])


@pytest.mark.parametrize("shape, fill, skew", [("circle", np.pi / 4, 0.0), ("square", 1.0, 0.0),
                                               ("triangle", 0.5, 2 * np.sqrt(2) / 5)])
def test_fill_ratio_and_profile_skew_of_each_shape(shape, fill, skew):
    from kvideo.shapes.score import classify_shape, fill_ratio, profile_skew

    alpha = coverage(shape, 24.0, (20.4, 19.8), slice(0, 40), slice(0, 40))
    assert fill_ratio(alpha) == pytest.approx(fill, abs=0.05)
    assert abs(profile_skew(alpha)) == pytest.approx(skew, abs=0.05)
    assert classify_shape(fill_ratio(alpha), profile_skew(alpha)) == shape


def test_direction_from_net_motion():
    from kvideo.shapes.score import classify_direction, net_motion

    times = np.arange(10)
    centers = np.stack([20 - 2.0 * times, np.full(10, 5.0)], axis=1)  # up, 18 px
    np.testing.assert_allclose(net_motion(times, centers), [-18, 0], atol=1e-9)
    assert classify_direction(np.array([-18.0, 0]), 64, 64) == "up"
    assert classify_direction(np.array([1.0, 30]), 64, 64) == "right"
    assert classify_direction(np.array([3.0, -2]), 64, 64) == "none"  # under 10 % of the frame
    assert classify_direction(net_motion(times[:1], centers[:1]), 64, 64) == "none"


def test_a_blob_of_another_colour_is_tracked_by_its_mask(recwarn):
    """A frame whose blob has nothing of the clip's object colour (generated clips do this) still gives a
    finite centre: its mask's, not a division by zero."""
    from kvideo.shapes.score import _track

    background, red, cyan = np.array([128.0] * 3), np.array([220.0, 40, 40]), np.array([40, 220, 220])
    frames = np.full((2, 32, 32, 3), 128.0)
    frames[0, 4:10, 4:10], frames[1, 4:10, 20:26] = red, cyan
    masks = {t: np.abs(frames[t] - background).sum(axis=-1) > 60 for t in range(2)}
    fills, _, centers = _track(frames, background, red, masks)
    np.testing.assert_allclose(centers, [[7, 7], [7, 23]])
    assert fills == [1.0, 1.0] and not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


# -- scorer: rendered clips ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Every caption once at 64x64 (12 frames each) and 24 clips at 128x128."""
    root = tmp_path_factory.mktemp("shapes")
    render_dataset(root / "small", 216, seed=11, size=64, fps=12, seconds=1, progress=False)
    render_dataset(root / "large", 24, seed=12, size=128, fps=12, seconds=1, progress=False)
    return root


@pytest.mark.parametrize("name", ["small", "large"])
def test_scorer_recovers_the_caption_of_rendered_clips(rendered, name):
    from kvideo.shapes.score import score_folder

    totals = score_folder(rendered / name, progress=False)["totals"]
    assert totals["scored"] == totals["clips"] and totals["unparseable"] == 0
    for key in ("background", "object_color", "shape", "direction", "all", "found"):
        assert totals[key] >= 0.99, (key, totals)


def _first_clip(rendered) -> tuple[np.ndarray, Caption]:
    first = rows(rendered / "small" / "captions.csv")[0]
    return read_frames(rendered / "small" / first["path"]), parse_caption(first["caption"])


def test_scorer_marks_the_attribute_a_wrong_caption_gets_wrong(rendered):
    from dataclasses import replace

    from kvideo.shapes.score import score_clip

    frames, caption = _first_clip(rendered)
    assert score_clip(frames, caption).all_match
    others = {"background": ("background", BACKGROUNDS), "object_color": ("color", COLORS),
              "shape": ("shape", SHAPES), "direction": ("direction", DIRECTIONS)}
    for attribute, (field_name, words) in others.items():
        wrong = next(w for w in words if w != getattr(caption, field_name))
        matches = score_clip(frames, replace(caption, **{field_name: wrong})).matches
        assert matches == {name: name != attribute for name in others}


def test_scorer_fails_static_reversed_and_empty_clips(rendered):
    from kvideo.shapes.score import score_clip

    frames, caption = _first_clip(rendered)
    static = score_clip(np.repeat(frames[:1], len(frames), axis=0), caption)
    assert static.direction == "none" and static.matches["direction"] is False
    assert static.matches["shape"] and static.matches["object_color"] and static.matches["background"]
    assert score_clip(frames[::-1], caption).matches["direction"] is False
    empty = score_clip(np.repeat(frames[:, :1, :1], 64, axis=1).repeat(64, axis=2), caption)  # background only
    assert empty.found == 0 and empty.object_color is None and not empty.all_match


def test_score_folder_counts_bad_captions_and_unreadable_clips(rendered, tmp_path):
    from kvideo.shapes.score import score_folder

    videos = rendered / "small" / "videos"
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "list.csv").write_text(
        "path,caption\n"
        f"videos/00000.mp4,{rows(rendered / 'small' / 'captions.csv')[0]['caption']}\n"
        "videos/00001.mp4,a cat playing the piano\n"
        "videos/00002.mp4,\n"
        f"{tmp_path / 'broken.mp4'},a red circle moving left on a black background\n")
    report = score_folder(videos.parent, tmp_path / "list.csv", progress=False)  # paths relative to --videos
    totals = report["totals"]
    assert (totals["clips"], totals["scored"], totals["unparseable"], totals["unreadable"]) == (4, 2, 2, 1)
    assert totals["all"] == 0.5 and totals["found"] == 0.5
    assert report["clips"][1]["in_grammar"] is False and report["clips"][1]["matches"] is None
    (tmp_path / "missing.csv").write_text("path,caption\nnothing.mp4,a red circle\n")
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        score_folder(videos.parent, tmp_path / "missing.csv", progress=False)


def test_eval_shapes_command_writes_the_report(rendered, tmp_path, capsys):
    import json

    report = tmp_path / "report.json"
    assert main(["eval", "shapes", "--videos", str(rendered / "large"), "--report", str(report), "--quiet"]) == 0
    totals = json.loads(report.read_text())["totals"]
    assert totals["clips"] == 24 and totals["all"] >= 0.99
    assert "all four" in capsys.readouterr().out
    assert main(["eval", "shapes", "--videos", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_largest_blob_and_opening():
    from kvideo.shapes.score import largest_blob, open_mask

    mask = np.zeros((20, 20), dtype=bool)
    mask[2:9, 2:9] = True  # 49 pixels
    mask[12:16, 12:16] = True  # 16
    mask[0, 19] = True  # a speck
    mask[18, :] = True  # a one-pixel line
    opened = open_mask(mask)
    assert not opened[0, 19] and not opened[18].any() and opened[2:9, 2:9].all() and opened[12:16, 12:16].all()
    blob = largest_blob(opened)
    assert blob.sum() == 49 and blob[2:9, 2:9].all()


def test_scorer_ignores_specks_and_blobs_beside_the_object(rendered):
    from kvideo.shapes.score import score_clip

    frames, caption = _first_clip(rendered)
    noisy = frames.copy()
    noisy[:, 1:5, 1:5] = 255 - noisy[:, 1:5, 1:5]  # a small blob of another colour in a corner
    noisy[:, ::7, ::5] = 255 - noisy[:, ::7, ::5]  # scattered single pixels
    assert score_clip(noisy, caption).all_match


def test_recipe_refuses_too_few_clips_for_the_keyframe_phases_before_training(tmp_path, capsys):
    """The keyframe stages begin on four captions: a set without them fails at once, not after hours."""
    out = tmp_path / "recipe"
    assert main(["recipe", "shapes", str(out), "--videos", "8", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "videos=8" in error and "render at least 216" in error and not out.exists()
    assert main(["recipe", "shapes", str(out), "--videos", "8", "--stages", "data", "--quiet"]) == 0
