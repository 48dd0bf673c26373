"""The shapes quality measurement: grammar prompts x seeds, batched resumable generation, scoring, FVD helpers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kvideo.shapes.grammar import parse_caption
from kvideo.shapes.quality import (
    detector_accuracy,
    fvd,
    measure_quality,
    passes_bar,
    quality_jobs,
    quality_prompts,
    temporal_off,
)


def test_quality_prompts_are_distinct_grammar_captions_and_jobs_give_each_its_seeds():
    prompts = quality_prompts(96)
    assert len(set(prompts)) == 96 and all(parse_caption(p) is not None for p in prompts)
    assert quality_prompts(5) == prompts[:5]
    jobs = quality_jobs(prompts[:3], seeds=2, first_seed=10)
    assert [(j.prompt, j.seed) for j in jobs] == [(p, 10 + i) for i, p in enumerate(prompts[:3] * 2)]
    with pytest.raises(ValueError, match="choose 1..216"):
        quality_prompts(217)
    with pytest.raises(ValueError, match="seeds=0"):
        quality_jobs(prompts, 0)


def test_measure_quality_generates_in_batches_resumes_and_scores(tmp_path):
    from kvideo import KVideoPipeline

    torch.set_num_threads(1)
    pipe = KVideoPipeline.from_preset("tiny", progress=False)
    options = dict(width=64, height=64, steps=2, interpolation_steps=2, fps="low")
    report = measure_quality(pipe, tmp_path, prompts=3, seeds=1, batch_size=2, progress=False, **options)
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["00000.mp4", "00001.mp4", "00002.mp4"]
    assert report["totals"]["scored"] == 3 and report["settings"]["prompts"] == 3
    assert (tmp_path / "report.json").is_file() and (tmp_path / "captions.csv").is_file()
    before = (tmp_path / "00001.mp4").stat().st_mtime_ns
    measure_quality(pipe, tmp_path, prompts=3, seeds=1, batch_size=2, progress=False, **options)
    assert (tmp_path / "00001.mp4").stat().st_mtime_ns == before  # kept, not generated again
    measure_quality(pipe, tmp_path, prompts=4, seeds=1, batch_size=2, progress=False, **options)  # one more job
    assert (tmp_path / "00001.mp4").stat().st_mtime_ns == before and (tmp_path / "00003.mp4").is_file()
    with pytest.raises(ValueError, match=r"00002.mp4.*use an empty folder"):  # job 2 is now another prompt
        measure_quality(pipe, tmp_path, prompts=2, seeds=2, batch_size=2, progress=False, **options)
    with pytest.raises(ValueError, match="generated with .*'steps': 2.*use an empty folder"):
        measure_quality(pipe, tmp_path, prompts=4, seeds=1, progress=False, **{**options, "steps": 3})


def test_quality_bar_and_frechet_helper():
    totals = {"object_color": 0.9, "background": 0.95, "direction": 0.8, "shape": 0.69, "found": 1.0}
    assert passes_bar(totals) == {"object_color": True, "background": True, "direction": True, "shape": False,
                                  "found": True}
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 4)), rng.normal(size=(500, 4))
    assert fvd(a, a) == 0.0 and 0 < fvd(a, b) < 0.2 and fvd(a, b + 3) > 30  # mean shift 3 in 4 dims: ~36


def test_detector_accuracy_reads_each_clips_caption(tmp_path):
    from kvideo.shapes.detector import shape_motion_classes

    (tmp_path / "videos").mkdir()
    rows = [("videos/00001.mp4", "a red square moving up on a black background"),
            ("videos/00000.mp4", "a blue circle moving left on a gray background")]
    (tmp_path / "captions.csv").write_text("path,caption\n" + "".join(f"{p},{c}\n" for p, c in rows))
    for path, _ in rows:
        (tmp_path / path).write_bytes(b"")
    classes = shape_motion_classes()
    features = np.zeros((2, len(classes)))
    features[0, classes.index("circle left")] = 1  # clips in name order: 00000 (circle left), then 00001
    features[1, classes.index("square down")] = 1
    assert detector_accuracy(features, tmp_path) == 0.5
    with pytest.raises(ValueError, match="3 feature rows for the 2 clips"):
        detector_accuracy(np.zeros((3, len(classes))), tmp_path)
    (tmp_path / "videos" / "00002.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match=r"has no caption for \['00002.mp4'\]"):
        detector_accuracy(features, tmp_path)


def test_clip_features_read_frames_spread_over_the_whole_clip(tmp_path):
    from kvideo.export import write_video
    from kvideo.shapes.quality import clip_features, spread_frames

    assert spread_frames(57, 16)[:3] == [0, 4, 7] and spread_frames(57, 16)[-1] == 56
    assert spread_frames(16, 16) == list(range(16))
    with pytest.raises(ValueError, match="16 distinct frames of a 15-frame clip"):
        spread_frames(15, 16)

    class FrameBrightness:  # a stand-in detector whose features are the brightness of each frame it is given
        config = type("Config", (), {"input_size": 64})

        def logits_mean(self, clips):
            return clips.mean(dim=(1, 3, 4))

    frames = np.repeat(np.linspace(0, 255, 40).round().astype(np.uint8), 64 * 64 * 3).reshape(40, 64, 64, 3)
    write_video(tmp_path / "00000.mp4", frames, fps=8)
    features = clip_features(FrameBrightness(), tmp_path)  # (1, 16): frames 0, 3, 5, ... 39
    assert features.shape == (1, 16)
    assert features[0, 0] < -0.95 and features[0, -1] > 0.95  # the clip's first (black) and last (white) frames


def test_temporal_off_keeps_spatial_weights_and_resets_the_temporal_ones():
    from kvideo.models.unet import UNet, UNetConfig

    torch.manual_seed(0)
    unet = UNet(UNetConfig.preset("tiny-keyframe"))
    with torch.no_grad():
        for p in unet.temporal_parameters():
            p.normal_()
    off = temporal_off(unet)
    temporal = set(unet.temporal_state_dict())
    state, off_state = unet.state_dict(), off.state_dict()
    assert all(torch.equal(state[k], off_state[k]) for k in state if k not in temporal)
    x, t = torch.randn(1, 4, 3, 8, 8), torch.tensor([500])
    context, mask = torch.randn(1, 3, 24), torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():  # temporal parts at their identity: each frame denoised alone
        whole = off(x, t, context, mask)
        alone = torch.cat([off(x[:, :, i:i + 1], t, context, mask) for i in range(3)], dim=2)
    assert torch.allclose(whole, alone, atol=1e-5)
