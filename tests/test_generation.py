"""kvideo.generation: one options type for both releases, the flags built from it, cards, refusals, resources."""
from __future__ import annotations

import json
import struct
import zlib

import pytest
import torch

from kvideo.cli import main
from kvideo.generation import GenerationOptions, KVideo11Pipeline, KVideoPipeline, resolve_options
from kvideo.generation import base as generation_base
from kvideo.generation.base import BasePipeline
from kvideo.generation.flags import generation_flags
from test_kv11_pipeline import write_kv11_folder
from test_pipeline import write_tiny_weights

# A value for every generate flag the options declare (a new flag must be added here: the test below runs it).
FLAG_VALUES = {
    "--size": ["--size", "64x64"], "--fps": ["--fps", "low"], "--frames": ["--frames", "3"],
    "--steps": ["--steps", "1"], "--interpolation-steps": ["--interpolation-steps", "1"],
    "--first-frame-steps": ["--first-frame-steps", "1"], "--sampler": ["--sampler", "ddpm"],
    "--interpolation-sampler": ["--interpolation-sampler", "ddpm"],
    "--timestep-spacing": ["--timestep-spacing", "trailing"], "--threshold": ["--threshold", "0.9"],
    "--latent-range": ["--latent-range=-2,-2,-2,-2:2,2,2,2"], "--guidance": ["--guidance", "3"],
    "--interpolation-guidance": ["--interpolation-guidance", "0.3"], "--image-guidance": ["--image-guidance", "2"],
    "--first-frame-guidance": ["--first-frame-guidance", "4"],
    "--guidance-interval": ["--guidance-interval", "300:1000"], "--guidance-rescale": ["--guidance-rescale", "0.5"],
    "--cache-interval": ["--cache-interval", "2"], "--motion": ["--motion", "high"],
    "--noise-augmentation": ["--noise-augmentation", "30"], "--upscale-image": ["--upscale-image"],
    "--decode-window": ["--decode-window", "2"], "--compile": ["--compile"],
    "--text-encoder-int8": ["--text-encoder-int8"],
}
LOAD_FLAGS = {"--compile", "--text-encoder-int8"}  # they change the pipeline itself: each gets a pipeline of its own
REFUSED_BY_11 = {"--timestep-spacing", "--threshold", "--latent-range", "--guidance-interval", "--guidance-rescale"}
ONLY_11 = {"--first-frame-steps", "--image-guidance", "--first-frame-guidance", "--motion", "--noise-augmentation",
           "--upscale-image"}
QUICK_PAIRS = {"--size": "64x64", "--fps": "low", "--steps": "1", "--frames": "2"}
QUICK = [*(word for pair in QUICK_PAIRS.items() for word in pair), "--quiet"]


def test_from_kvideo_import_the_pipelines():
    import kvideo
    from kvideo import KVideoPipeline as imported

    assert imported is KVideoPipeline and kvideo.open_pipeline is not None
    # siblings on one base: the 1.1 pipeline does not inherit 1.0's keyframes / interpolate with other signatures
    assert issubclass(KVideo11Pipeline, BasePipeline) and not issubclass(KVideo11Pipeline, KVideoPipeline)
    assert not hasattr(KVideo11Pipeline, "keyframes") and not hasattr(KVideo11Pipeline, "interpolate")


def test_every_flag_of_the_test_is_a_generate_flag():
    assert {meta.flag for meta in generation_flags().values()} == set(FLAG_VALUES)


@pytest.fixture(scope="module")
def kv11_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kv11")
    write_kv11_folder(folder)
    return folder


@pytest.fixture(scope="module")
def kv11_pipe(kv11_weights):
    return KVideoPipeline.from_pretrained(kv11_weights, progress=False)


@pytest.mark.parametrize("flag", sorted(FLAG_VALUES))
def test_every_generate_flag_with_11_weights_works_or_is_refused(flag, kv11_weights, kv11_pipe, tmp_path, capsys,
                                                                  monkeypatch):
    """A flag either reaches the 1.1 pipeline (the clip is made with it) or is refused in one line naming the
    release, before anything loads; never silently ignored."""
    import kvideo.generate_cli as generate_cli

    calls = []
    pipe = KVideoPipeline.from_pretrained(kv11_weights, progress=False) if flag in LOAD_FLAGS else kv11_pipe
    if flag == "--compile":  # compilation itself is tested in test_compile.py; here, that the flag reaches the call
        monkeypatch.setattr(generation_base, "check_compiler", lambda device: None)
        monkeypatch.setattr(generation_base, "compile_blocks", lambda *args, **kwargs: 0)

    class Recording:
        text_encoder = pipe.text_encoder

        def __call__(self, *args, **options):
            calls.append(options)
            return pipe(*args, **options)

    monkeypatch.setattr(generate_cli, "load_pipeline", lambda *a: Recording())
    out = tmp_path / "clip.mp4"
    quick = [*(word for pair in QUICK_PAIRS.items() if pair[0] != flag for word in pair), "--quiet"]
    code = main(["generate", "a cat", "-o", str(out), "--weights", str(kv11_weights), *quick, *FLAG_VALUES[flag]])
    err = capsys.readouterr().err
    if flag in REFUSED_BY_11:
        assert code == 2 and f"{flag}: release 1.1 " in err and len(err.strip().splitlines()) == 1
        assert not calls and not out.exists()
        return
    assert code == 0 and out.exists(), err
    name = next(name for name, meta in generation_flags().items() if meta.flag == flag)
    assert name in calls[0], (flag, calls[0])
    if flag in LOAD_FLAGS:  # and it took effect
        assert pipe.compiled if flag == "--compile" else pipe.text_encoder.int8


def test_11_sampler_other_than_ddpm_is_refused(kv11_weights, tmp_path, capsys):
    code = main(["generate", "a cat", "-o", str(tmp_path / "c.mp4"), "--weights", str(kv11_weights), "--sampler",
                 "ddim", *QUICK])
    assert code == 2 and "--sampler: release 1.1 samples with ddpm only" in capsys.readouterr().err


@pytest.mark.parametrize("flag", sorted(ONLY_11))
def test_11_flags_with_10_weights_are_refused(flag, tmp_path, capsys):
    weights = tmp_path / "weights"
    write_tiny_weights(weights)
    out = tmp_path / "clip.mp4"
    assert main(["generate", "a cat", "-o", str(out), "--weights", str(weights), *QUICK, *FLAG_VALUES[flag]]) == 2
    err = capsys.readouterr().err
    assert f"{flag} needs release 1.1 weights" in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_cards_guidance_takes_effect(tmp_path):
    weights = tmp_path / "weights"
    write_tiny_weights(weights)
    (weights / "model.json").write_text(json.dumps({"name": "t", "generation": {"guidance_scale": 9.0}}))
    pipe = KVideoPipeline.from_pretrained(weights, progress=False)
    quick = dict(fps="low", steps=2, width=64, height=64, seed=0)
    carded = pipe("a cat", **quick).latents
    pipe.card = {}
    assert torch.equal(pipe("a cat", guidance_scale=9.0, **quick).latents, carded)
    assert not torch.equal(pipe("a cat", **quick).latents, carded)  # the release's 5.0


def test_the_cli_passes_only_the_flags_given_so_the_card_applies(tmp_path, monkeypatch):
    import kvideo.generate_cli as generate_cli

    calls = []

    class Stop(Exception):
        pass

    class Recording:
        text_encoder = KVideoPipeline.from_preset("tiny", progress=False).text_encoder

        def __call__(self, *args, **options):
            calls.append(options)
            raise Stop

    monkeypatch.setattr(generate_cli, "load_pipeline", lambda *a: Recording())
    with pytest.raises(Stop):
        main(["generate", "a red circle moving left on a black background", "-o", str(tmp_path / "c.mp4"),
              "--weights", "shapes", "--fps", "low", "--quiet"])
    assert calls == [{"fps": "low", "seed": 0}]


def tall_png(path, width, height):
    """A PNG header declaring width x height (no pixel data: PIL reads the size before any pixel)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("flags, needle", [
    (["--size", "65536x65536"], "need at least"),
    (["--frames", "1000000"], "3999997 frames of 64x64 need at least"),
    (["--image", "{tmp}/huge.png"], "is 20000x20000 (400 M pixels"),
    (["--steps", "5000"], "steps=5000: must be an integer in 1..1000"),
])
def test_resources_are_refused_up_front(tmp_path, capsys, monkeypatch, flags, needle):
    import kvideo.generate_cli as generate_cli

    monkeypatch.setattr(generate_cli, "load_pipeline", lambda *a: pytest.fail("loaded the models"))
    tall_png(tmp_path / "huge.png", 20000, 20000)
    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(tmp=tmp_path) for a in flags]
    assert main(["generate", "a cat", "-o", str(out / "clip.mp4"), "--weights", "tiny", "--fps", "medium",
                 "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and err.startswith("kvideo generate: error: ")
    assert not any(out.iterdir())


def test_the_library_refuses_the_same(tmp_path):
    pipe = KVideoPipeline.from_preset("tiny", progress=False)
    with pytest.raises(ValueError, match="need at least"):
        pipe("a cat", width=65536, height=65536)
    with pytest.raises(ValueError, match="motion: release 1.0"):
        pipe("a cat", motion="high")
    with pytest.raises(ValueError, match="threshold: release 1.1"):
        resolve_options("1.1", threshold=0.9)
    assert resolve_options("1.1", sampler="ddpm").sampler == "ddpm"
    tall_png(tmp_path / "huge.png", 20000, 20000)
    from kvideo.generation.images import load_image

    with pytest.raises(ValueError, match="kvideo reads pictures up to"):
        load_image(tmp_path / "huge.png")


def test_steps_follow_steps_unless_given():
    assert GenerationOptions(steps=7).interpolation_steps == 7 and GenerationOptions(steps=7).first_frame_steps == 7
    assert resolve_options("1.1", steps=7).interpolation_steps == 10  # the 1.1 release's own
    assert resolve_options("1.0", {"interpolation_steps": 4}, steps=7).interpolation_steps == 4  # a card's


@pytest.mark.parametrize("argv", [
    ["generate", "a cat"], ["generate", "a cat", "-o", "c.mp4", "--fps", "fast"], ["eval", "fvd"],
    ["train", "keyframe", "--lr", "x"], ["bogus"], ["generate", "a", "-o", "c.mp4", "--size", "big"],
])
def test_usage_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and ": error: " in err, err
    assert "usage:" not in err


def test_usage_errors_of_the_torchrun_entry_are_one_line(capsys):
    from kvideo.train.cli import main as train_main

    with pytest.raises(SystemExit) as exit_:
        train_main(["keyframe", "--lr", "x"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err == "kvideo train keyframe: error: argument --lr: expected a number, got 'x'\n"


def test_the_base_pipeline_names_the_release_classes_instead_of_loading(tmp_path):
    from kvideo.generation.base import BasePipeline

    with pytest.raises(NotImplementedError, match="KVideoPipeline.load or KVideo11Pipeline.load"):
        BasePipeline.load(tmp_path)
