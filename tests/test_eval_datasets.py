"""Evaluation datasets in the UCF-101, MSR-VTT and folder layouts, written by the tests themselves."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kvideo.eval.datasets import (
    SkipVideo, class_prompt_name, generated_folder, load_dataset, msrvtt, read_clip, read_template, ucf101, video_folder,
)
from kvideo.eval.generate import benchmark_prompts
from test_eval_support import UCF_CLASSES, frames, make_generated, make_msrvtt, make_ucf101, write_mp4


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory):
    return make_ucf101(tmp_path_factory.mktemp("ucf"))


@pytest.fixture(scope="module")
def msrvtt_root(tmp_path_factory):
    return make_msrvtt(tmp_path_factory.mktemp("msrvtt"))


def test_class_names_become_prompts():
    assert class_prompt_name("ApplyEyeMakeup") == "apply eye makeup"
    assert class_prompt_name("YoYo") == "yo yo"
    assert class_prompt_name("PlayingDaf") == "playing daf"


@pytest.mark.parametrize("split, count", [("all", 9), ("train", 6), ("test", 3)])
def test_ucf101_splits(ucf_root, split, count):
    data = ucf101(ucf_root, split=split)
    assert len(data.items) == count and not data.missing
    assert data.class_names == list(UCF_CLASSES)
    # the split list says HandstandPushups/v_HandStandPushups_...: matched whatever the case
    hand = [item for item in data.items if item.label == 1]
    assert hand and all(item.caption == "handstand pushups" and item.path.is_file() for item in hand)


def test_ucf101_template_file(ucf_root, tmp_path):
    template = tmp_path / "prompts.txt"
    template.write_text("# my prompts\na video of a person doing {name}\nYoYo: someone playing with a yo-yo\n")
    captions = {item.label: item.caption for item in ucf101(ucf_root, split="test", template=template).items}
    assert captions == {0: "a video of a person doing apply eye makeup",
                        1: "a video of a person doing handstand pushups", 2: "someone playing with a yo-yo"}
    template.write_text("no placeholder here\n")
    with pytest.raises(ValueError, match="ClassName: prompt"):
        read_template(template)


def test_ucf101_wrong_layout_is_explained(tmp_path):
    (tmp_path / "videos").mkdir()
    with pytest.raises(ValueError, match="classInd.txt"):
        ucf101(tmp_path)
    with pytest.raises(FileNotFoundError):
        ucf101(tmp_path / "nope")
    with pytest.raises(ValueError, match="split"):
        ucf101(tmp_path, split="val")


def test_msrvtt_first_caption_and_all(msrvtt_root):
    data = msrvtt(msrvtt_root)
    assert [item.key for item in data.items] == [f"video{7010 + i}" for i in range(6)]
    assert data.items[0].caption == "caption 0 of video7010"  # lowest sen_id, not file order
    assert len(msrvtt(msrvtt_root, captions="all").items) == 12


def test_msrvtt_missing_annotations(tmp_path):
    write_mp4(tmp_path / "video1.mp4", frames(0, 4))
    with pytest.raises(ValueError, match="annotation JSON"):
        msrvtt(tmp_path)
    (tmp_path / "test_videodatainfo.json").write_text(json.dumps({"videos": []}))
    with pytest.raises(ValueError, match="not an MSR-VTT annotation file"):
        msrvtt(tmp_path)


def test_corrupt_and_short_videos_are_skipped_with_a_reason(ucf_root):
    reasons = {}
    for item in ucf101(ucf_root, split="train").items:
        try:
            assert read_clip(item.path, 16).shape == (16, 48, 64, 3)
        except SkipVideo as error:
            reasons[item.key] = str(error)
    assert len(reasons) == 2
    assert any("unreadable" in r for r in reasons.values()) and any("too short" in r for r in reasons.values())


def test_random_offset_is_seeded(ucf_root):
    path = ucf101(ucf_root, split="test").items[0].path
    a = read_clip(path, 4, rng=np.random.default_rng([0, 1]))
    b = read_clip(path, 4, rng=np.random.default_rng([0, 1]))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 48, 64, 3)


def test_folder_with_csv_and_jsonl_captions(tmp_path):
    for name in ("a.mp4", "sub/b.mp4"):
        write_mp4(tmp_path / "videos" / name, frames(len(name), 4))
    (tmp_path / "captions.csv").write_text("video,caption\na.mp4,first clip\nsub/b.mp4,second clip\n")
    data = video_folder(tmp_path / "videos", captions=tmp_path / "captions.csv")
    assert {i.key: i.caption for i in data.items} == {"a.mp4": "first clip", "sub/b.mp4": "second clip"}
    (tmp_path / "captions.jsonl").write_text('{"video": "a", "text": "by stem"}\n')
    assert video_folder(tmp_path / "videos", captions=tmp_path / "captions.jsonl").items[0].caption == "by stem"
    (tmp_path / "bad.csv").write_text("name,words\na.mp4,x\n")
    with pytest.raises(ValueError, match="video column"):
        video_folder(tmp_path / "videos", captions=tmp_path / "bad.csv")


def test_generated_folder_and_auto_format(tmp_path):
    make_generated(tmp_path / "gen", num_videos=3, num_frames=4)
    (tmp_path / "gen" / "00001.mp4").unlink()
    data = load_dataset("auto", tmp_path / "gen")
    assert data.name == "generated" and [i.key for i in data.items] == ["00000.mp4", "00002.mp4"]
    assert data.missing == ["00001.mp4"]
    with pytest.raises(FileNotFoundError, match="manifest"):
        generated_folder(tmp_path)


def test_ucf101_prompts_follow_a_seeded_draw(ucf_root):
    data = ucf101(ucf_root, split="train")
    jobs = benchmark_prompts(data, 14, seed=3)
    assert len(jobs) == 14 and [j.seed for j in jobs] == list(range(3, 17))
    assert [j.prompt for j in jobs] == [j.prompt for j in benchmark_prompts(data, 14, seed=3)]
    assert {j.key for j in jobs[:6]} == {i.key for i in data.items}  # one full pass before repeating
