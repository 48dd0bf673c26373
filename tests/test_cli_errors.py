"""Every mistake and fault gets one line `kvideo <command>: error: ...`, exit status 2 and no output written;
finished outputs are kept, half-written ones redone, and the same frames always give the same mp4 bytes."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kvideo.models.unet import UNet, UNetConfig
from test_pipeline import write_tiny_weights
from test_train_helpers import keyframe_setup, videos  # noqa: F401 (fixtures)

QUICK = ["--fps", "low", "--steps", "2", "--frames", "2", "--quiet"]


def kvideo(*args, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "kvideo", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=300, cwd=cwd)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(result: subprocess.CompletedProcess, command: str, *needles: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in lines if line.startswith(f"kvideo {command}: error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


class Payload:
    """A pickle that would run code when loaded without weights_only."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    (folder / "random.pt").write_bytes(random.Random(0).randbytes(2000))
    (folder / "random.safetensors").write_bytes(random.Random(1).randbytes(2000))
    (folder / "empty.pt").write_bytes(b"")
    torch.save({"weight": Payload()}, folder / "code.pt")
    UNet(UNetConfig.preset("tiny-keyframe")).save_pretrained(folder / "unet.safetensors")
    data = (folder / "unet.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    torch.save({"Conv3d_1a_7x7.conv3d.weight": torch.zeros(1), "Mixed_3b.b0.weight": torch.zeros(1)},
               folder / "i3d.pt")
    return folder


# -- checkpoints kvideo cannot read ------------------------------------------------------------------
@pytest.mark.parametrize("name, reason", [
    ("random.pt", "neither safetensors nor a PyTorch pickle"),
    ("empty.pt", "neither safetensors nor a PyTorch pickle"),
    ("code.pt", "torch.load(weights_only=True) refuses it"),
    ("random.safetensors", "a damaged or truncated safetensors file"),
    ("truncated.safetensors", "a damaged or truncated safetensors file"),
])
def test_info_and_convert_name_a_file_they_cannot_read(bad_files, tmp_path, name, reason):
    path = bad_files / name
    for command, args in (("info", [path]), ("convert", [path, "-o", tmp_path / "out.safetensors"])):
        result = kvideo(command, *args, cwd=tmp_path)
        assert_one_line_error(result, command, f"{str(path)!r} is not a checkpoint kvideo can read", reason)
    assert not any(tmp_path.iterdir())  # no output, and the pickle's code never ran


def test_convert_checks_its_output_before_reading(bad_files, tmp_path):
    (tmp_path / "out.safetensors").mkdir()
    result = kvideo("convert", bad_files / "random.pt", "-o", tmp_path / "out.safetensors")
    assert_one_line_error(result, "convert", "out.safetensors' is a folder; name the .safetensors file to write")


def test_a_checkpoint_of_another_model_lists_keys_and_a_guess(bad_files):
    result = kvideo("info", bad_files / "i3d.pt")
    assert_one_line_error(result, "info", "cannot tell which Kandinsky Video model", "Conv3d_1a_7x7.conv3d.weight",
                          "they look like an I3D checkpoint")


def test_train_model_and_resume_files_it_cannot_read(bad_files, keyframe_setup, tmp_path):
    cache, unet_path = keyframe_setup
    common = ["--preset", "tiny-keyframe", "--data", cache, "--output-dir", tmp_path / "run", "--progress", "false"]
    result = kvideo("train", "keyframe", "--model", bad_files / "random.pt", *common)
    assert_one_line_error(result, "train keyframe", "random.pt' is not a checkpoint kvideo can read")
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "trained.safetensors").write_bytes((bad_files / "truncated.safetensors").read_bytes())
    (folder / "state.pt").write_bytes(b"")
    result = kvideo("train", "keyframe", "--model", unet_path, "--resume", folder, *common)
    assert_one_line_error(result, "train keyframe", "trained.safetensors' is not a checkpoint kvideo can read",
                          "damaged or truncated")
    assert not (tmp_path / "run").exists()


# -- generate ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    write_tiny_weights(folder)
    return folder


def test_guidance_nan_is_refused_before_work(tmp_path):
    for flag in ("--guidance", "--interpolation-guidance"):
        result = kvideo("generate", "a cat", "-o", tmp_path / "clip.mp4", flag, "nan")
        assert_one_line_error(result, "generate", "expected a finite number, got 'nan'")
    assert not any(tmp_path.iterdir())


def test_a_bad_threshold_is_refused_before_work(tmp_path):
    for value, needle in (("1.5", "'1.5': a quantile in (0, 1], e.g. 0.98, or off"), ("none?", "expected a number")):
        result = kvideo("generate", "a cat", "-o", tmp_path / "clip.mp4", "--threshold", value)
        assert_one_line_error(result, "generate", needle)
    assert not any(tmp_path.iterdir())


def test_an_empty_negative_prompt_is_refused_before_work(tmp_path):
    result = kvideo("generate", "a cat", "-o", tmp_path / "clip.mp4", "--negative", " ", *QUICK)
    assert_one_line_error(result, "generate", "--negative is empty")
    assert "RANDOM weights" not in result.stderr and not any(tmp_path.iterdir())


def test_an_existing_folder_named_like_the_video_is_refused_before_work(tmp_path):
    (tmp_path / "existing.mp4").mkdir()
    result = kvideo("generate", "a cat", "-o", tmp_path / "existing.mp4", *QUICK)
    assert_one_line_error(result, "generate", "is a folder; cannot replace it with a mp4 file")
    assert "RANDOM weights" not in result.stderr  # refused before the models load
    assert snapshot(tmp_path) == {}


def test_read_only_output_folder_is_refused_before_work(tmp_path, monkeypatch, capsys):
    from kvideo import checkpoint, generate_cli
    from kvideo.cli import main

    real_access = os.access
    monkeypatch.setattr(checkpoint.os, "access",  # as a non-root user sees a read-only folder
                        lambda path, mode: False if Path(path) == tmp_path else real_access(path, mode))
    monkeypatch.setattr(generate_cli, "load_pipeline", lambda *a: pytest.fail("loaded the models"))
    assert main(["generate", "a cat", "-o", str(tmp_path / "clip.mp4")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"kvideo generate: error: output folder {str(tmp_path)!r} cannot be written ({str(tmp_path)!r} is not a "
        "writable folder)")
    (tmp_path / "prompts.txt").write_text("a cat\n")
    assert main(["generate", "--prompts-file", str(tmp_path / "prompts.txt"), "-o", str(tmp_path / "out")]) == 2
    assert "cannot be written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]


def test_keyframe_weights_in_the_interpolation_slot_fail_before_sampling(weights, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    for item in weights.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "interpolation_unet.safetensors").unlink()
    (folder / "interpolation_unet.safetensors").symlink_to(weights / "keyframe_unet.safetensors")
    result = kvideo("generate", "a cat", "-o", tmp_path / "clip.mp4", "--weights", folder, *QUICK)
    assert_one_line_error(result, "generate", "interpolation_unet.safetensors' holds a keyframe UNet",
                          "put the interpolation UNet there")
    assert not (tmp_path / "clip.mp4").exists()


def test_weights_folder_and_temporal_weights_files_it_cannot_read(weights, bad_files, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    for item in weights.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "video_movq.safetensors").unlink()
    (folder / "video_movq.safetensors").symlink_to(bad_files / "truncated.safetensors")
    result = kvideo("generate", "a cat", "-o", tmp_path / "a.mp4", "--weights", folder, *QUICK)
    assert_one_line_error(result, "generate", "video_movq.safetensors' is not a checkpoint kvideo can read")
    result = kvideo("generate", "a cat", "-o", tmp_path / "b.mp4", "--temporal-weights", bad_files / "random.pt",
                    *QUICK)
    assert_one_line_error(result, "generate", "random.pt' is not a checkpoint kvideo can read")
    assert "RANDOM weights" not in result.stderr  # checked before the models load
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]


def test_non_finite_latents_stop_sampling_and_nothing_is_written(weights, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    for item in weights.iterdir():
        if item.name != "keyframe_unet.safetensors":
            (folder / item.name).symlink_to(item)
    checkpoint = UNet.read_checkpoint(weights / "keyframe_unet.safetensors")
    unet = UNet.from_checkpoint(checkpoint, None)
    with torch.no_grad():
        unet.out_layer[-1].bias.fill_(3e38)  # finite in the file (the load check passes), inf from the first step on
    unet.save_pretrained(folder / "keyframe_unet.safetensors", extras=checkpoint.extras)
    result = kvideo("generate", "a cat", "-o", tmp_path / "clip.mp4", "--weights", folder, *QUICK)
    assert_one_line_error(result, "generate", "sampling diverged at step 1 of 2 of stage 'keyframes'",
                          "nothing was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]


# -- prompts files -------------------------------------------------------------------------------------
@pytest.mark.parametrize("content, needle", [
    (b"a cat\n\xff\xfe a dog\n", "prompts.txt:2: not valid UTF-8 (byte 0xff at column 1)"),
    (b"a cat\n\na dog\n" + b"x" * 5000 + b"\n", "prompts.txt:4: a line of 5000 characters"),
    (b"a cat\x00\n", "prompts.txt:1: control character '\\x00'"),
    (b"\n  \n", "holds no prompt"),
])
def test_prompts_file_errors_name_the_file_and_line(tmp_path, content, needle):
    (tmp_path / "prompts.txt").write_bytes(content)
    result = kvideo("generate", "--prompts-file", tmp_path / "prompts.txt", "-o", tmp_path / "out", *QUICK)
    assert_one_line_error(result, "generate", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]


def test_batch_redoes_empty_and_half_written_outputs_and_says_what_it_skips(tmp_path):
    long_prompt = "a cat " * 40  # 239 bytes + end token: more than the tiny byte-level encoder's 128 tokens
    (tmp_path / "prompts.txt").write_text(f"a dog\n\n\n{long_prompt}\n")
    args = ["generate", "--prompts-file", tmp_path / "prompts.txt", "-o", tmp_path / "out", "--seed", "3", *QUICK]
    first = kvideo(*args)
    assert first.returncode == 0, first.stderr
    assert "prompts.txt: skipped 2 blank lines" in first.stderr
    assert f"{tmp_path / 'prompts.txt'}:4: the prompt is 240 tokens, more than the 128" in first.stderr
    assert "UserWarning" not in first.stderr
    finished = snapshot(tmp_path / "out")
    names = sorted(finished)
    (tmp_path / "out" / names[0]).write_bytes(b"")  # a 0-byte output
    (tmp_path / "out" / names[1]).unlink()
    leftover = tmp_path / "out" / f".{names[1]}.k1ll3d.tmp.mp4"  # what a killed write leaves
    leftover.write_bytes(b"half")
    again = kvideo(*args)
    assert again.returncode == 0, again.stderr
    assert snapshot(tmp_path / "out") == finished  # redone, byte for byte: deterministic encoding
    assert not leftover.exists()
    third = kvideo(*args)
    assert third.stderr.count("exists, skipped") == 2 and snapshot(tmp_path / "out") == finished


# -- encoding ------------------------------------------------------------------------------------------
def test_the_same_frames_give_the_same_mp4_bytes(tmp_path):
    from kvideo.export import write_video

    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (12, 256, 256, 3), dtype=torch.uint8, generator=generator).cumsum(0) // 12
    digests = set()
    for i in range(2):
        path = write_video(tmp_path / f"{i}.mp4", frames.to(torch.uint8), 8, progress=False)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    assert b" threads=1 " in path.read_bytes()  # one encoder thread: the same bytes on any machine


# -- debugging ---------------------------------------------------------------------------------------------
def test_debug_flag_and_environment_show_the_traceback(bad_files):
    plain = kvideo("info", bad_files / "random.pt")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    path = bad_files / "random.pt"
    for result in (kvideo("info", path, "--debug"), kvideo("--debug", "info", path),
                   kvideo("info", path, env={"KVIDEO_DEBUG": "1"})):
        assert "Traceback" in result.stderr and "UnreadableCheckpointError" in result.stderr


# -- kvideo train help -----------------------------------------------------------------------------------
def test_every_train_flag_has_help_and_its_default_and_both_spellings_work(tmp_path):
    from kvideo.cli import build_parser

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    steps = train._subparsers._group_actions[0].choices
    for name, sub in steps.items():
        for action in sub._actions:
            if action.help == "==SUPPRESS==" or action.dest == "help":
                continue
            assert action.help and "(default:" in action.help, (name, action.option_strings)
            assert all("_" not in flag for flag in action.option_strings), (name, action.option_strings)
    args = parser.parse_args(["train", "keyframe", "--output_dir", "a", "--clip.reference_fps", "30"])
    dashed = parser.parse_args(["train", "keyframe", "--output-dir", "a", "--clip.reference-fps", "30"])
    assert vars(args) == vars(dashed) and vars(args)["cfg:output_dir"] == "a"
    result = kvideo("train", "keyframe", "--lr", "inf", "--output-dir", tmp_path / "run")
    assert_one_line_error(result, "train keyframe", "argument --lr: expected a finite number, got 'inf'")
    assert not (tmp_path / "run").exists()


def test_release_11_sampling_stops_on_non_finite_latents_too():
    from kvideo.errors import SamplingDivergedError
    from kvideo.generation import KVideo11Pipeline

    pipe = KVideo11Pipeline.from_preset("tiny", seed=0, progress=False)
    with torch.no_grad():
        pipe.unet.out_layer[-1].bias.fill_(3e38)
    with pytest.raises(SamplingDivergedError, match="sampling diverged at step 1 of 2 of stage 'first frame'"):
        pipe("a cat", fps="low", seed=0, width=64, height=64, steps=2, first_frame_steps=2, interpolation_steps=2)


# -- kvideo generate flags and GenerationOptions -----------------------------------------------------------
def test_generate_flags_come_from_the_options_fields_and_default_to_not_given():
    """Every options field with a flag is on the parser, with its help and default; a flag not given is absent, so
    the model card's or the release's default applies, and a flag given wins over the card."""
    from kvideo.cli import build_parser
    from kvideo.generation import GenerationOptions, resolve_options
    from kvideo.generation.flags import generation_flags, given_options

    def given(*flags):
        return given_options(build_parser().parse_args(["generate", "a cat", "-o", "clip.mp4", *flags]))

    parser = build_parser()
    generate = parser._subparsers._group_actions[0].choices["generate"]
    helps = {flag: action.help for action in generate._actions for flag in action.option_strings}
    for name, meta in generation_flags().items():
        assert helps[meta.flag] == meta.help and "(default:" in meta.help, name
    assert given() == {}
    assert resolve_options("1.0") == GenerationOptions()  # the official defaults are the dataclass's
    assert resolve_options("1.0", {"timestep_spacing": "leading"}, **given("--timestep-spacing", "trailing")) \
        .timestep_spacing == "trailing"  # the flag wins over the model card's default
    card = {"threshold": None}  # the shapes model's card turns thresholding off
    assert resolve_options("1.0", card, **given()).threshold is None
    for flag, value in (("off", None), ("0.995", 0.995)):
        assert resolve_options("1.0", card, **given("--threshold", flag)).threshold == value
        assert resolve_options("1.0", {}, **given("--threshold", flag)).threshold == value
    assert given("--size", "128x64") == {"width": 128, "height": 64}


@pytest.mark.parametrize("flags, needle", [
    (["--interpolation-steps", "0"], "interpolation_steps=0"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "--device cuda"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "--device cuda"),
    (["--device", "nonsense"], "--device 'nonsense'"),
    (["--seed", str(2**64)], "--seed"),
])
def test_generate_refuses_before_loading_anything(tmp_path, flags, needle):
    result = kvideo("generate", "a cat", "-o", tmp_path / "clip.mp4", "--weights", "tiny", "--fps", "medium",
                    "--steps", "2", "--frames", "2", "--quiet", *flags)
    assert_one_line_error(result, "generate", needle)
    assert snapshot(tmp_path) == {}


def test_non_finite_decoded_frames_never_become_a_file():
    from kvideo.errors import SamplingDivergedError
    from kvideo import KVideoPipeline

    pipe = KVideoPipeline.from_preset("tiny", seed=0, progress=False)
    with torch.no_grad():
        for parameter in pipe.decoder.decoder.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(SamplingDivergedError, match="video decoder gave NaN"):
        pipe("a cat", fps="low", seed=0, width=64, height=64, steps=2)


@pytest.mark.parametrize("change, needle", [
    ({"generation": {"width": 64, "colour": "red"}}, "unknown generation key(s) ['colour']"),
    ({"generation": {"steps": "many"}}, "a bad generation default"),
    ({"prompt_pattern": "a (red"}, "is not a regular expression"),
    ({"prompt_words": ["red", "green"]}, "prompt_words must map each slot"),
])
def test_a_bad_model_card_is_one_line(tmp_path, change, needle):
    import json
    import shutil

    from kvideo.generation.weights import builtin_model_dir

    weights = tmp_path / "weights"
    shutil.copytree(builtin_model_dir("shapes"), weights)
    card = json.loads((weights / "model.json").read_text())
    (weights / "model.json").write_text(json.dumps({**card, **change}))
    out = tmp_path / "out"
    out.mkdir()
    result = kvideo("generate", "a red circle moving right on a white background", "-o", out / "clip.mp4",
                    "--weights", weights, "--quiet")
    assert_one_line_error(result, "generate", needle)
    assert snapshot(out) == {}


def test_a_legal_long_output_name_is_written(tmp_path):
    """A 250-character name is legal; its temp file must be too (it was name + 18 characters, past 255)."""
    from kvideo.checkpoint import NAME_MAX, atomic_path, temp_prefix

    path = tmp_path / ("v" * 246 + ".mp4")
    assert len(temp_prefix(path, ".tmp.mp4")) + 8 + len(".tmp.mp4") <= NAME_MAX
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"x")
    assert path.read_bytes() == b"x"
    result = kvideo("generate", "a cat", "-o", path, "--weights", "tiny", *QUICK)
    assert result.returncode == 0, result.stderr
    assert snapshot(tmp_path).keys() == {path.name}


def test_first_frame_out_onto_a_folder_is_refused_before_the_video_is_made(tmp_path):
    """(A read-only folder is refused by the same `check_writable_folder` as -o; as root it cannot be tested.)"""
    out = tmp_path / "out"
    out.mkdir()
    (out / "first.png").mkdir()
    result = kvideo("generate", "a cat", "-o", out / "clip.mp4", "--weights", "tiny", "--motion", "low",
                    "--first-frame-out", out / "first.png", *QUICK)
    assert_one_line_error(result, "generate", "--first-frame-out", "is a folder")
    assert not (out / "clip.mp4").exists()


def test_batch_never_adopts_or_replaces_a_file_it_did_not_write(tmp_path):
    """A video already at a batch output name that no kvideo batch wrote (a user's own, readable or not) is refused
    before any work, byte for byte untouched; the manifest of a finished batch lets its rerun adopt its own."""
    (tmp_path / "prompts.txt").write_text("a dog\na cat\n")
    args = ["generate", "--prompts-file", tmp_path / "prompts.txt", "-o", tmp_path / "out", "--seed", "3", *QUICK]
    own = kvideo(*args)
    assert own.returncode == 0, own.stderr
    finished = snapshot(tmp_path / "out")
    assert json.loads(finished["kvideo-batch.json"]) == {"videos": ["0000-a-dog.mp4", "0001-a-cat.mp4"]}
    again = kvideo(*args)
    assert again.returncode == 0 and again.stderr.count("exists, skipped") == 2, again.stderr
    for content in (finished["0000-a-dog.mp4"], b"", b"my own notes"):  # a real video, an empty file, other bytes
        user = tmp_path / "user"
        shutil.rmtree(user, ignore_errors=True)
        user.mkdir()
        (user / "0001-a-cat.mp4").write_bytes(content)
        result = kvideo("generate", "--prompts-file", tmp_path / "prompts.txt", "-o", user, *QUICK)
        assert_one_line_error(result, "generate", str(user / "0001-a-cat.mp4"), "no kvideo batch wrote it")
        assert snapshot(user) == {"0001-a-cat.mp4": content}


@pytest.mark.parametrize("manifest", [b"not json", b"[1, 2]", b'{"videos": "0000-a-dog.mp4"}', b"\xff\xfe"])
def test_a_batch_folder_whose_manifest_is_not_kvideos_is_one_line(tmp_path, manifest):
    (tmp_path / "prompts.txt").write_text("a dog\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kvideo-batch.json").write_bytes(manifest)
    result = kvideo("generate", "--prompts-file", tmp_path / "prompts.txt", "-o", tmp_path / "out", *QUICK)
    assert_one_line_error(result, "generate", str(tmp_path / "out" / "kvideo-batch.json"), "not a kvideo batch manifest")
    assert snapshot(tmp_path / "out") == {"kvideo-batch.json": manifest}
