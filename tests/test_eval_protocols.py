"""Named evaluation protocols: each preprocessing against an independent re-computation, IS of every protocol
against a hand-written formula, CLIP preprocessing and truncation as OpenAI's, detector conventions and trust,
and `kvideo eval ... --protocol NAME` end to end (outputs checked before any work)."""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kvideo.cli import main
from kvideo.eval.detectors import KNOWN_DETECTORS, KnownFile, VIDEOGPT_I3D, file_hashes, load_i3d_detector
from kvideo.eval.preprocess import clip_pixels, prepare_clip
from kvideo.eval.protocol import CLIPSIMProtocol, FVDProtocol, ISProtocol, protocol_inception_score
from test_eval_support import make_generated, make_ucf101, tiny_c3d_file, tiny_clip_dir, tiny_i3d_file

SHAPES = [(240, 320), (512, 512)]


def random_clip(h: int, w: int, f: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.linspace(0, 200, w)[None, None, :, None] + np.linspace(0, 50, h)[None, :, None, None]
    return np.clip(smooth + rng.normal(0, 20, size=(f, h, w, 3)), 0, 255).astype(np.uint8)


# -- frame geometry of each FVD protocol ---------------------------------------------------------
@pytest.mark.parametrize("h, w", SHAPES)
def test_styleganv_geometry_is_pil_lanczos_shorter_side_then_center_crop(h, w):
    clip = random_clip(h, w)
    short = min(h, w)
    new_w, new_h = round(w * 256 / short), round(h * 256 / short)
    left, top = (new_w - 256) // 2, (new_h - 256) // 2
    expected = [np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.LANCZOS))[top:top + 256, left:left + 256]
                for frame in clip]
    got = prepare_clip(clip, "lanczos-crop", 256)  # (3, f, 256, 256) uint8
    assert got.dtype == torch.uint8 and got.shape == (3, 3, 256, 256)
    np.testing.assert_array_equal(got.permute(1, 2, 3, 0).numpy(), np.stack(expected))


def bilinear_half_pixel(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres, edge-clamped, no antialias (written out by hand)."""
    h, w = image.shape[:2]
    ys = np.clip((np.arange(out_h) + 0.5) * h / out_h - 0.5, 0, None)
    xs = np.clip((np.arange(out_w) + 0.5) * w / out_w - 0.5, 0, None)
    y0, x0 = np.minimum(ys.astype(int), h - 1), np.minimum(xs.astype(int), w - 1)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
    bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


@pytest.mark.parametrize("h, w", SHAPES)
def test_videogpt_geometry_is_bilinear_shorter_side_224_rounded_up_then_center_crop(h, w):
    clip = random_clip(h, w).astype(np.float64)
    scale = 224 / min(h, w)
    new_h, new_w = (224, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), 224)
    top, left = (new_h - 224) // 2, (new_w - 224) // 2
    expected = np.stack([bilinear_half_pixel(frame, new_h, new_w)[top:top + 224, left:left + 224] for frame in clip])
    got = prepare_clip(clip.astype(np.uint8), "bilinear-crop", 224).permute(1, 2, 3, 0).double().numpy()
    np.testing.assert_allclose(got, expected, atol=5e-3)  # float32 arithmetic on values up to 255


def tf1_resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """TF1 tf.image.resize_bilinear(align_corners=False, half_pixel_centers=False), pixel by pixel."""
    h, w = image.shape[:2]
    out = np.zeros((size, size, image.shape[2]))
    for i in range(size):
        y = i * h / size
        y0 = int(math.floor(y))
        y1, dy = min(y0 + 1, h - 1), y - y0
        for j in range(size):
            x = j * w / size
            x0 = int(math.floor(x))
            x1, dx = min(x0 + 1, w - 1), x - x0
            top = image[y0, x0] * (1 - dx) + image[y0, x1] * dx
            bottom = image[y1, x0] * (1 - dx) + image[y1, x1] * dx
            out[i, j] = top * (1 - dy) + bottom * dy
    return out


@pytest.mark.parametrize("h, w", SHAPES)
def test_tf_geometry_is_tf1_bilinear_of_the_whole_frame(h, w):
    clip = random_clip(h, w, f=1)
    expected = tf1_resize_bilinear(clip[0].astype(np.float64), 224)
    got = prepare_clip(clip, "tf1-bilinear", 224)[:, 0].permute(1, 2, 0).double().numpy()
    np.testing.assert_allclose(got, expected, atol=2e-3)


# -- IS of every protocol against a hand-written formula ----------------------------------------
def hand_is(probs: np.ndarray) -> float:
    marginal = probs.mean(axis=0)
    return float(np.exp(np.mean([np.sum(p * (np.log(p) - np.log(marginal))) for p in probs])))


@pytest.mark.parametrize("name", ISProtocol.presets())
def test_inception_score_of_every_protocol_equals_the_hand_formula(name):
    protocol = ISProtocol.preset(name)
    logits = np.random.default_rng(3).normal(0, 3, size=(protocol.total_videos, 101))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if name == "is-styleganv":  # StyleGAN-V: np.random.RandomState(42).shuffle, then 10 consecutive splits
        shuffled = probs.copy()
        np.random.RandomState(42).shuffle(shuffled)
        n = len(shuffled)
        scores = [hand_is(shuffled[i * n // 10:(i + 1) * n // 10]) for i in range(10)]
    elif name == "is-tganv2":  # 10 runs of 2048, one split each
        scores = [hand_is(probs[r * 2048:(r + 1) * 2048]) for r in range(10)]
    else:  # is-tganv1: 10,000 videos, one split
        scores = [hand_is(probs)]
    mean, std, got = protocol_inception_score(probs, protocol)
    np.testing.assert_allclose(got, scores, rtol=1e-10)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10) and std == pytest.approx(np.std(scores), abs=1e-10)


def test_protocol_presets_are_frozen_and_complete():
    assert FVDProtocol.presets() == ["fvd-styleganv", "fvd-tf", "fvd-videogpt", "fvd-videomae"]
    assert ISProtocol.presets() == ["is-styleganv", "is-tganv1", "is-tganv2"]
    assert CLIPSIMProtocol.presets() == ["clipsim"]
    styleganv, videogpt = FVDProtocol.preset("fvd-styleganv"), FVDProtocol.preset("fvd-videogpt")
    assert (styleganv.covariance_ddof, videogpt.covariance_ddof, FVDProtocol.preset("fvd-tf").covariance_ddof) == (0, 1, 1)
    assert styleganv.real_selection == "first-sorted" and styleganv.geometry == "lanczos-crop" and styleganv.size == 256
    assert (ISProtocol.preset("is-tganv2").total_videos, ISProtocol.preset("is-tganv1").total_videos) == (20480, 10000)
    with pytest.raises(Exception):
        styleganv.num_videos = 3  # frozen


# -- CLIP ----------------------------------------------------------------------------------------
def openai_clip_transform(frame: np.ndarray, size: int = 224) -> np.ndarray:
    """OpenAI CLIP's _transform: Resize(size, BICUBIC) (torchvision: long side int(size·long/short)),
    CenterCrop(size) (torchvision: offsets int(round((side - size) / 2))), ToTensor, Normalize."""
    h, w = frame.shape[:2]
    new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    image = Image.fromarray(frame).resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    x = np.asarray(image, dtype=np.float32)[top:top + size, left:left + size] / 255.0
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    return ((x - mean) / std).transpose(2, 0, 1)


def test_clip_preprocessing_equals_openai_on_a_320x576_frame():
    frame = random_clip(320, 576, f=1)[0]
    got = clip_pixels(frame[None])[0].numpy()
    np.testing.assert_allclose(got, openai_clip_transform(frame), atol=1e-6)
    # the long side becomes int(224 * 576 / 320) = 403; OpenAI rounds the offset 89.5 to 90, a floor gives 89
    resized = np.asarray(Image.fromarray(frame).resize((403, 224), Image.BICUBIC), dtype=np.float32) / 255.0
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    crop = lambda left: ((resized[:, left:left + 224] - mean) / std).transpose(2, 0, 1)  # noqa: E731
    np.testing.assert_allclose(got, crop(90), atol=1e-6)
    assert np.abs(got - crop(89)).max() > 0.1


def test_captions_are_cut_to_77_tokens_as_clip_tokenize_truncate(tmp_path):
    from kvideo.eval.clipsim import ClipScorer

    scorer = ClipScorer(tiny_clip_dir(tmp_path / "clip"))
    long_caption = " ".join(["abc"] * 120)  # far more than 77 tokens with the tiny tokenizer
    full = scorer.tokenizer(long_caption, truncation=False, verbose=False)["input_ids"]
    ids = scorer.token_ids(long_caption)
    assert len(full) > 77 and len(ids) == 77
    assert ids[:76] == full[:76] and ids[-1] == scorer.tokenizer.eos_token_id and scorer.truncated == 1
    assert scorer.token_ids("a cat") == scorer.tokenizer("a cat")["input_ids"] and scorer.truncated == 1
    assert torch.isfinite(scorer.text_embedding(long_caption)).all()


# -- detector conventions ------------------------------------------------------------------------
def test_file_hashes_are_sha256_and_the_git_blob_id(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"some detector bytes" * 1000)
    data = path.read_bytes()
    sha256, blob = file_hashes(path)
    assert sha256 == hashlib.sha256(data).hexdigest()
    assert blob == hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()  # `git hash-object`


def piergiaj_pickle(path: Path) -> Path:
    """A tiny I3D saved as a plain state-dict pickle (no kvideo config): conventions unknown."""
    from kvideo.eval.i3d import I3DConfig, InceptionI3d

    torch.manual_seed(0)
    torch.save(InceptionI3d(I3DConfig.preset("tiny")).state_dict(), path)
    return path


def test_unknown_state_dict_needs_its_conventions_stated(tmp_path):
    path = piergiaj_pickle(tmp_path / "i3d_unknown.pt")
    with pytest.raises(ValueError, match="--detector-range"):
        load_i3d_detector(path)
    with pytest.raises(ValueError, match="--detector-range"):
        load_i3d_detector(path, input_range=(-1, 1))  # eps missing
    detector = load_i3d_detector(path, input_range=(-0.5, 0.5), bn_eps=1e-5)
    assert detector.convention.name == "stated" and detector.convention.bn_eps == 1e-5
    assert detector.known is None and detector.describe()["convention"]["input_range"] == (-0.5, 0.5)


def test_a_known_file_brings_its_conventions(tmp_path, monkeypatch):
    import kvideo.eval.detectors as detectors
    from kvideo.eval.i3d import BatchNorm3d, InceptionI3d

    path = piergiaj_pickle(tmp_path / "i3d_pretrained_400.pt")
    _, blob = file_hashes(path)
    monkeypatch.setattr(detectors, "KNOWN_DETECTORS", (*KNOWN_DETECTORS, KnownFile(path.name, VIDEOGPT_I3D, git_blob=blob)))
    detector = load_i3d_detector(path)  # no conventions stated: the known file brings them
    assert detector.known == "i3d_pretrained_400.pt" and detector.convention == VIDEOGPT_I3D
    assert {m.eps for m in detector.model.modules() if isinstance(m, BatchNorm3d)} == {1e-5}
    seen = []
    monkeypatch.setattr(InceptionI3d, "logits_mean", lambda self, x: seen.append(x) or x.mean((2, 3, 4)))
    clips = torch.zeros(1, 3, 16, 64, 64)
    clips[:, :, :, :, 32:] = 255
    detector.run_prepared(clips)
    assert (seen[0].min().item(), seen[0].max().item()) == pytest.approx((-0.5, 0.5), abs=1e-6)  # VideoGPT: [-0.5, 0.5]


# -- the CLI -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocols")
    return {
        "ucf": make_ucf101(root / "ucf"),
        "fake": make_generated(root / "fake", num_videos=6, prompts=["red", "blue", "a cat", "a dog", "rain", "sun"]),
        "i3d": tiny_i3d_file(root / "i3d.safetensors"),
        "c3d": tiny_c3d_file(root / "c3d.safetensors"),
    }


def run(*args) -> int:
    return main(["eval", *map(str, args)])


@pytest.mark.parametrize("name", ["fvd-styleganv", "fvd-videogpt", "fvd-tf"])
def test_fvd_protocols_end_to_end(data, tmp_path, name):
    out = tmp_path / "fvd.json"
    assert run("fvd", "--protocol", name, "--real", data["ucf"], "--fake", data["fake"], "--detector", data["i3d"],
               "--num-videos", 6, "--allow-fewer", "--quiet", "--report", out) == 0
    report = json.loads(out.read_text())
    preset = FVDProtocol.preset(name).to_dict()
    assert report["protocol"]["name"] == name and report["value"] > 0
    assert {k: report["protocol"][k] for k in preset} == {**preset, "num_videos": 6}
    assert report["protocol"]["changed_from_preset"] == {"num_videos": 6} and report["comparability"]["comparable"] is False


@pytest.mark.parametrize("name, extra", [("is-styleganv", ["--splits", 2]), ("is-tganv2", ["--num-videos", 3, "--runs", 2]),
                                         ("is-tganv1", [])])
def test_is_protocols_end_to_end(data, tmp_path, name, extra):
    out = tmp_path / "is.json"
    args = ["is", "--protocol", name, "--fake", data["fake"], "--detector", data["c3d"], "--quiet", "--report", out]
    if "--num-videos" not in extra:
        extra = ["--num-videos", 6, *extra]
    assert run(*args, *extra) == 0
    report = json.loads(out.read_text())
    assert report["protocol"]["name"] == name and set(ISProtocol().to_dict()) <= set(report["protocol"])
    assert report["num_videos"] == {"fake": 6} and len(report["scores"]) == (1 if name == "is-tganv1" else 2)
    assert 1.0 <= report["value"] <= 101


def test_clipsim_protocol_end_to_end(data, tmp_path):
    out = tmp_path / "clipsim.json"
    assert run("clipsim", "--protocol", "clipsim", "--fake", data["fake"], "--clip", tiny_clip_dir(tmp_path / "clip"),
               "--max-frames", 2, "--quiet", "--report", out) == 0
    report = json.loads(out.read_text())
    assert report["protocol"]["context_length"] == 77 and report["protocol"]["image_preprocessing"] == "openai-clip"
    assert report["captions_truncated"] == 0


def test_read_only_report_folder_fails_before_any_work(data, tmp_path, capsys, monkeypatch):
    import kvideo.checkpoint

    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access  # a read-only folder (chmod does not stop root, so the permission answer is stubbed)
    monkeypatch.setattr(kvideo.checkpoint.os, "access",
                        lambda p, mode: False if Path(p) == folder.absolute() else real_access(p, mode))
    assert run("is", "--fake", data["fake"], "--detector", tmp_path / "missing.pt", "--report", folder / "is.json") == 2
    err = capsys.readouterr().err
    assert "cannot be written" in err and "missing.pt" not in err


@pytest.mark.parametrize("metric", ["fvd", "is", "clipsim"])
def test_bad_report_paths_fail_before_the_detector_is_read(data, tmp_path, capsys, metric):
    missing = tmp_path / "no-such-detector.pt"  # would fail later, if the report path were not checked first
    inputs = {"fvd": ["--real", data["ucf"], "--detector", missing], "is": ["--detector", missing],
              "clipsim": ["--clip", tmp_path / "no-clip"]}[metric]
    for report, message in ((tmp_path, "is a folder"), (tmp_path / "absent" / "r.json", "does not exist")):
        assert run(metric, "--fake", data["fake"], *inputs, "--quiet", "--report", report) == 2
        err = capsys.readouterr().err
        assert message in err and "--report" in err and "no-such-detector" not in err


def test_stats_out_and_real_stats_paths_are_checked_first(data, tmp_path, capsys):
    missing = tmp_path / "no-such-detector.pt"
    assert run("stats", "--real", data["ucf"], "--detector", missing, "--out", tmp_path) == 2
    assert "--out" in capsys.readouterr().err
    assert run("fvd", "--real", data["ucf"], "--fake", data["fake"], "--detector", missing,
               "--real-stats", tmp_path, "--report", tmp_path / "r.json") == 2
    assert "--real-stats" in capsys.readouterr().err


def test_untrusted_torchscript_detector_is_refused_on_the_command_line(data, tmp_path, capsys):
    class Scripted(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.float().mean(dim=(2, 3, 4))

    torch.jit.script(Scripted()).save(str(tmp_path / "c3d_ucf101.pt"))
    out = tmp_path / "is.json"
    assert run("is", "--fake", data["fake"], "--detector", tmp_path / "c3d_ucf101.pt", "--num-videos", 6,
               "--splits", 1, "--quiet", "--report", out) == 2
    assert "--trust-detector" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("command", ["generate", "stats", "fvd", "is", "clipsim"])
def test_every_flag_says_its_default_and_takes_the_underscore_spelling(command):
    import argparse

    from kvideo.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["eval"]._subparsers._group_actions[0].choices[command]
    shown = [a for a in sub._actions if a.option_strings and a.help != argparse.SUPPRESS and a.dest != "help"]
    assert shown and all(("default" in a.help) or ("required" in a.help) for a in shown), \
        [a.option_strings for a in shown if "default" not in a.help and "required" not in a.help]
    dashed = [f for a in shown for f in a.option_strings if f.startswith("--") and "-" in f[2:]]
    assert dashed and all(f"--{f[2:].replace('-', '_')}" in sub._option_string_actions for f in dashed)


def test_eval_flags_are_built_in_that_voice_with_no_rewriting_step():
    """Each flag is made with its help and alias by kvideo's flag builder: a parser that holds only what one of
    eval's argument builders added already reads so (nothing rewrites parsers afterwards)."""
    import argparse

    from kvideo.eval import cli as eval_cli

    def helps(build):
        parser = argparse.ArgumentParser()
        build(parser)
        return {f: a.help for a in parser._actions for f in a.option_strings}, parser._option_string_actions

    run, actions = helps(eval_cli._run_args)
    assert run["--quiet"] == "no progress bars (default: off)" and run["--batch-size"] == "clips per detector call " \
        "(default 8)" and run["--allow_fewer"] == argparse.SUPPRESS and actions["--allow_fewer"].dest == "allow_fewer"
    fake, _ = helps(eval_cli._fake_args)
    assert fake["--fake"] == "folder of generated videos (from `kvideo eval generate`) (required)"
    assert fake["--fake-format"].endswith("(a reference value) (default: auto)")
    assert fake["--fake-captions"] == "captions CSV/JSONL for a --fake folder without manifest (default: none)"
    assert not hasattr(eval_cli, "_one_voice")


def test_underscore_flags_parse_like_dashed_ones(data):
    from kvideo.cli import build_parser

    common = ["eval", "is", "--fake", str(data["fake"]), "--detector", "c3d.pt"]
    dashed = build_parser().parse_args([*common, "--num-videos", "6", "--allow-fewer", "--fake-format", "folder"])
    underscored = build_parser().parse_args([*common, "--num_videos", "6", "--allow_fewer", "--fake_format", "folder"])
    assert vars(dashed) == vars(underscored) and dashed.batch_size == 8 and dashed.num_videos == 6


def bilinear_corner_aligned(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize with the corners aligned (chainer's resize_images), written out by hand."""
    h, w = image.shape[:2]
    ys, xs = np.arange(size) * (h - 1) / (size - 1), np.arange(size) * (w - 1) / (size - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
    bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


@pytest.mark.parametrize("h, w", SHAPES)
def test_is_input_is_tgans_bgr_128x_plus_128_corner_aligned_112(h, w):
    from kvideo.eval.detectors import c3d_input

    clip = random_clip(h, w, f=2)
    x = clip.astype(np.float64) / 127.5 - 1.0
    expected = np.stack([bilinear_corner_aligned(128 * frame[..., ::-1] + 128, 112) for frame in x])  # BGR
    got = c3d_input(torch.from_numpy(clip).permute(3, 0, 1, 2)[None])[0].permute(1, 2, 3, 0).double().numpy()
    np.testing.assert_allclose(got, expected, atol=5e-3)


@pytest.mark.parametrize("h, w", SHAPES)
def test_clip_preprocessing_equals_openai_on_other_sizes(h, w):
    frame = random_clip(h, w, f=1)[0]
    np.testing.assert_allclose(clip_pixels(frame[None])[0].numpy(), openai_clip_transform(frame), atol=1e-6)


def test_every_metric_is_registered_once_with_its_protocol_extractor_and_statistic():
    """`kvideo eval fvd | is | clipsim` come from kvideo.eval.metrics.METRICS: each command's --protocol offers
    exactly its metric's presets, and its extractor reads the protocol (fvd-videomae: VideoMAE-v2)."""
    from kvideo.cli import build_parser
    from kvideo.eval.metrics import BY_NAME, METRICS, fvd_extractor

    assert [metric.name for metric in METRICS] == ["fvd", "is", "clipsim"] and len(BY_NAME) == len(METRICS)
    assert [metric.compares_real for metric in METRICS] == [True, False, False]
    for metric in METRICS:
        args = {"fvd": ["--real", "r", "--fake", "f", "--detector", "d"], "is": ["--fake", "f", "--detector", "d"],
                "clipsim": ["--fake", "f", "--clip", "c"]}[metric.name]
        for name in metric.protocol.presets():
            assert build_parser().parse_args(["eval", metric.name, *args, "--protocol", name]).protocol == name
        assert callable(metric.extractor) and callable(metric.statistic)
    with pytest.raises(FileNotFoundError, match="VideoMAE-v2"):
        fvd_extractor("missing.pth", "cpu", FVDProtocol.preset("fvd-videomae"))
    with pytest.raises(FileNotFoundError, match="Kinetics-400 I3D"):
        fvd_extractor("missing.pth", "cpu", FVDProtocol.preset("fvd-styleganv"))
