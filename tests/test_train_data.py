"""Training data: caption lists, fps-aware clips, resize + crop, unreadable / short / missing videos, sample order."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kvideo.train.config import ClipConfig
from kvideo.train.data import (
    CaptionSubset,
    StreamSampler,
    VideoTextDataset,
    clip_indices,
    collate_clips,
    cover_crop_frames,
    read_captions,
    scan_videos,
)
from test_train_helpers import one_thread, videos  # noqa: F401 (fixtures)

KEYFRAME = ClipConfig(task="keyframe", keyframes=4, height=64, width=64)
INTERPOLATION = ClipConfig(task="interpolation", keyframes=3, max_skip=12, height=64, width=64)


# -- clip sampling ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fps, stride", [(24, 12), (30, 15), (12, 6), (60, 30)])
def test_keyframe_clips_are_two_fps_at_any_frame_rate(fps, stride):
    generator = torch.Generator().manual_seed(0)
    indices, step = clip_indices(200, fps, KEYFRAME, generator)
    assert step == 12 and np.diff(indices).tolist() == [stride] * 3


def test_clip_start_is_random_and_in_range():
    generator = torch.Generator().manual_seed(0)
    starts = {clip_indices(60, 24, KEYFRAME, generator)[0][0] for _ in range(40)}
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 60 - 1 - 36


@settings(max_examples=60, deadline=None)
@given(num_frames=st.integers(9, 400), fps=st.floats(5, 60), seed=st.integers(0, 2**31))
def test_interpolation_clips_fit_the_video(num_frames, fps, seed):
    clip = INTERPOLATION
    generator = torch.Generator().manual_seed(seed)
    try:
        indices, skip = clip_indices(num_frames, fps, clip, generator)
    except ValueError as error:  # too short even for skip 1
        assert "needs" in str(error) and round(8 * fps / 24) > num_frames - 1
        return
    assert len(indices) == 9 and 1 <= skip <= 12
    assert indices == sorted(indices) and 0 <= indices[0] and indices[-1] <= num_frames - 1
    spacing = np.diff(indices)
    assert np.all(np.abs(spacing - skip * fps / 24) <= 1)


def test_interpolation_skip_covers_the_feasible_range():
    generator = torch.Generator().manual_seed(0)
    skips = {clip_indices(100, 24, INTERPOLATION, generator)[1] for _ in range(200)}
    assert skips == set(range(1, 13))  # 8 gaps * 12 = 96 <= 99 frames
    skips = {clip_indices(40, 24, INTERPOLATION, generator)[1] for _ in range(100)}
    assert skips == {1, 2, 3, 4}  # only skips whose clip fits in 40 frames


# -- pixels -----------------------------------------------------------------------------------------
def test_cover_crop_frames_keeps_the_center():
    frames = np.zeros((2, 40, 80, 3), dtype=np.uint8)
    frames[:, :, 20:60] = 255  # a white band in the middle half of a wide frame
    out = cover_crop_frames(frames, 64, 64)
    assert out.shape == (3, 2, 64, 64) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    assert out[:, :, :, 2:-2].min() > 0.9  # the crop shows the band only


def test_cover_crop_frames_values_map_to_minus_one_one():
    frames = np.stack([np.full((8, 8, 3), 0, np.uint8), np.full((8, 8, 3), 255, np.uint8)])
    out = cover_crop_frames(frames, 64, 64)
    assert torch.allclose(out[:, 0], torch.full_like(out[:, 0], -1))
    assert torch.allclose(out[:, 1], torch.ones_like(out[:, 1]))


# -- caption lists ----------------------------------------------------------------------------------
def test_captions_csv_and_jsonl_and_webvid_layout(tmp_path):
    (tmp_path / "010").mkdir()
    for name in ("a.mp4", "010/123.mp4"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.csv").write_text("path,caption\na.mp4,first\n")
    (tmp_path / "list.jsonl").write_text(json.dumps({"video": "a.mp4", "text": "second"}) + "\n")
    (tmp_path / "webvid.csv").write_text("videoid,name,page_dir\n123,third,010\n")
    assert read_captions(tmp_path / "list.csv") == [(tmp_path / "a.mp4", "first")]
    assert read_captions(tmp_path / "list.jsonl") == [(tmp_path / "a.mp4", "second")]
    assert read_captions(tmp_path / "webvid.csv", tmp_path) == [(tmp_path / "010" / "123.mp4", "third")]


def test_captions_for_missing_files_are_an_error(tmp_path):
    (tmp_path / "list.csv").write_text("path,caption\nthere.mp4,x\ngone.mp4,y\n")
    (tmp_path / "there.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match=r"1 of 2 videos .*gone\.mp4"):
        read_captions(tmp_path / "list.csv")
    with pytest.raises(FileNotFoundError, match="no-such-list"):
        read_captions(tmp_path / "no-such-list.csv")


def test_captions_without_a_caption_column_are_an_error(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "list.csv").write_text("path,title\na.mp4,x\n")
    with pytest.raises(ValueError, match="caption column"):
        read_captions(tmp_path / "list.csv")


# -- probing videos ---------------------------------------------------------------------------------
def test_unreadable_videos_are_skipped_and_counted(videos, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 50)
    pairs = read_captions(videos) + [(broken, "broken")]
    records, skipped = scan_videos(pairs, KEYFRAME)
    assert len(records) == 4 and [path for path, _ in skipped] == [str(broken)]


def test_no_readable_video_is_an_error(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"junk" * 100)
    with pytest.raises(ValueError, match="none of the 1 videos can be read"):
        scan_videos([(broken, "x")], KEYFRAME)


def test_clip_longer_than_the_video_is_an_error(videos):
    too_long = ClipConfig(task="keyframe", keyframes=16, height=64, width=64)  # 15 * 12 + 1 = 181 frames
    with pytest.raises(ValueError, match=r"shorter than one clip .* has 40 frames at 24 fps and needs 181"):
        scan_videos(read_captions(videos), too_long)


# -- dataset ----------------------------------------------------------------------------------------
def test_dataset_clips_are_reproducible_per_epoch(videos):
    dataset = VideoTextDataset.from_captions(videos, None, INTERPOLATION, seed=3)
    first, again, other_epoch = dataset[1, 0], dataset[1, 0], dataset[1, 1]
    assert first["frames"].shape == (3, 9, 64, 64)
    assert torch.equal(first["frames"], again["frames"]) and first["step"] == again["step"]
    assert first["caption"] == "a green square moving right"
    draws = {(dataset[1, e]["step"], float(dataset[1, e]["frames"].sum())) for e in range(6)}
    assert len(draws) > 1 and other_epoch["frames"].shape == first["frames"].shape


def test_caption_subset_keeps_the_matching_samples_under_either_key(videos):
    dataset = VideoTextDataset.from_captions(videos, None, KEYFRAME, seed=3)
    assert dataset.captions == ["a red square moving right", "a green square moving right", "a blue square moving right",
                                "a yellow square moving right"]  # the 4-video set: every square moves right
    subset = CaptionSubset(dataset, r"(green|yellow) square")
    assert len(subset) == 2 and subset.captions == ["a green square moving right", "a yellow square moving right"]
    assert torch.equal(subset[1, 2]["frames"], dataset[3, 2]["frames"]) and subset[0]["caption"] == dataset[1]["caption"]
    with pytest.raises(ValueError, match=r"caption_pattern='purple' matches none of the 4 samples' captions "
                                         r"\(e.g. 'a blue square moving right'"):
        CaptionSubset(dataset, "purple")


def test_collate_drops_clips_that_fail_to_decode(videos):
    dataset = VideoTextDataset.from_captions(videos, None, KEYFRAME)
    good = dataset[0]
    batch = collate_clips([good, {"error": "damaged", "index": 3, "path": "x.mp4"}])
    assert batch["frames"].shape == (1, 3, 4, 64, 64) and batch["skipped"] == ["x.mp4"]
    assert "frames" not in collate_clips([{"error": "damaged", "index": 3, "path": "x.mp4"}])


# -- sampling order -------------------------------------------------------------------------------
def test_stream_sampler_splits_each_epoch_across_ranks():
    ranks = [StreamSampler(10, 1, rank=r, world_size=2, seed=0) for r in range(2)]
    seen = [key for micro in range(5) for sampler in ranks for key in sampler.batch(micro)]
    assert sorted(index for index, _ in seen) == list(range(10)) and {epoch for _, epoch in seen} == {0}
    later = [key for micro in range(5, 10) for sampler in ranks for key in sampler.batch(micro)]
    assert {epoch for _, epoch in later} == {1} and [i for i, _ in later] != [i for i, _ in seen]


def test_stream_sampler_resumes_where_it_stopped():
    full = StreamSampler(7, 3, rank=1, world_size=2, seed=5)
    resumed = StreamSampler(7, 3, rank=1, world_size=2, seed=5, start=4)
    stream = iter(full)
    expected = [next(stream) for _ in range(8)][4:]
    resumed_stream = iter(resumed)
    assert [next(resumed_stream) for _ in range(4)] == expected
