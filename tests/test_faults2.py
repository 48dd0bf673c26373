"""Faults and bad input, round two (issue 29): each case in a subprocess, as a user meets it: exit status 2, one
line naming the file or flag, nothing written, and the user's own files byte-identical afterwards."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

from test_cli_errors import assert_one_line_error, kvideo, snapshot
from test_train_helpers import keyframe_setup, videos  # noqa: F401 (fixtures)


def user_data_set(folder: Path) -> Path:
    """A captioned set of the user's own: captions.csv and videos/00000.mp4, no render.json."""
    (folder / "videos").mkdir(parents=True)
    (folder / "captions.csv").write_text("path,caption\nvideos/00000.mp4,my holiday\n")
    (folder / "videos" / "00000.mp4").write_bytes(b"the user's own video, not rendered by kvideo")
    return folder


# -- never touch what kvideo did not make ------------------------------------------------------------
def test_data_shapes_refuses_a_folder_holding_the_users_own_data_set(tmp_path):
    folder = user_data_set(tmp_path / "mine")
    before = snapshot(folder)
    result = kvideo("data", "shapes", folder, "--videos", "2", "--size", "32", "--seconds", "0.5", "--quiet")
    assert_one_line_error(result, "data shapes", "captions.csv' was not written by kvideo data shapes",
                          "no render.json")
    assert snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == ["captions.csv", "videos"]


def test_data_shapes_refuses_a_video_of_the_users_in_an_otherwise_empty_folder(tmp_path):
    (tmp_path / "set" / "videos").mkdir(parents=True)
    (tmp_path / "set" / "videos" / "00000.mp4").write_bytes(b"mine")
    result = kvideo("data", "shapes", tmp_path / "set", "--videos", "1", "--size", "32", "--seconds", "0.5",
                    "--quiet")
    assert_one_line_error(result, "data shapes", "00000.mp4' was not written by kvideo data shapes")
    assert snapshot(tmp_path / "set") == {"videos/00000.mp4": b"mine"}


def test_data_shapes_names_an_unreadable_render_json(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "render.json").write_bytes(b"\xff\xfe{not json")
    result = kvideo("data", "shapes", tmp_path / "set", "--videos", "1", "--size", "32", "--seconds", "0.5",
                    "--quiet")
    assert_one_line_error(result, "data shapes", "render.json' is not a kvideo render settings file")
    assert snapshot(tmp_path / "set") == {"render.json": b"\xff\xfe{not json"}


@pytest.mark.parametrize("flags, needle", [
    (["--size", "100000"], "100000x100000 frames at 24 fps for 10 s: a clip of 240 frames needs about 13411.0 GiB"),
    (["--fps", "1e9"], "a clip of 10000000000 frames needs about"),
])
def test_data_shapes_refuses_clips_larger_than_memory_before_writing(tmp_path, flags, needle):
    result = kvideo("data", "shapes", tmp_path / "set", "--videos", "1", "--quiet", *flags)
    assert_one_line_error(result, "data shapes", needle, "lower --size, --fps or --seconds")
    assert not (tmp_path / "set").exists()


def test_recipe_data_stage_refuses_someone_elses_captions(tmp_path):
    user_data_set(tmp_path / "out" / "data")
    before = snapshot(tmp_path / "out")
    result = kvideo("recipe", "shapes", tmp_path / "out", "--stages", "data", "--videos", "2", "--quiet")
    assert_one_line_error(result, "recipe shapes", "captions.csv' was not written by kvideo data shapes")
    assert snapshot(tmp_path / "out") == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["data"]  # no records, no stage folders


def test_recipe_model_stage_refuses_a_model_folder_holding_other_files(tmp_path):
    (tmp_path / "out" / "model").mkdir(parents=True)
    (tmp_path / "out" / "model" / "notes.txt").write_text("mine")
    result = kvideo("recipe", "shapes", tmp_path / "out", "--stages", "model", "--quiet")
    assert_one_line_error(result, "recipe shapes", "notes.txt' was not written by kvideo recipe")
    assert snapshot(tmp_path / "out") == {"model/notes.txt": b"mine"}


def test_recipe_checks_the_device_before_any_stage(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is available: --device cuda is valid here")
    result = kvideo("recipe", "shapes", tmp_path / "out", "--stages", "data", "--videos", "2", "--device", "cuda",
                    "--quiet")
    assert_one_line_error(result, "recipe shapes", "--device cuda", "no CUDA GPU")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def ucf(tmp_path_factory) -> Path:
    from test_eval_support import make_ucf101

    return make_ucf101(tmp_path_factory.mktemp("ucf"), per_class=3, num_frames=4)


def test_eval_generate_refuses_an_unrelated_video_in_a_folder_without_manifest(ucf, tmp_path):
    out = tmp_path / "gen"
    out.mkdir()
    (out / "00000.mp4").write_bytes(b"an unrelated clip")
    result = kvideo("eval", "generate", "--benchmark", "ucf101", "--data", ucf, "--split", "test", "--out", out,
                    "--num-videos", "2", "--preset", "tiny", "--quiet")
    assert_one_line_error(result, "eval generate", "00000.mp4' was not written by kvideo eval generate",
                          "no manifest.json")
    assert snapshot(out) == {"00000.mp4": b"an unrelated clip"}
    result = kvideo("eval", "generate", "--benchmark", "ucf101", "--data", tmp_path / "no-data", "--out", out,
                    "--preset", "tiny", "--quiet")  # refused before the (missing) dataset is read
    assert_one_line_error(result, "eval generate", "00000.mp4' was not written by kvideo eval generate")


def test_eval_generate_names_an_unreadable_manifest(ucf, tmp_path):
    out = tmp_path / "gen"
    out.mkdir()
    (out / "manifest.json").write_text('{"videos": [')
    result = kvideo("eval", "generate", "--benchmark", "ucf101", "--data", ucf, "--split", "test", "--out", out,
                    "--num-videos", "2", "--preset", "tiny", "--quiet")
    assert_one_line_error(result, "eval generate", "manifest.json' is not a manifest kvideo eval generate can read")
    assert snapshot(out) == {"manifest.json": b'{"videos": ['}


@pytest.fixture(scope="module")
def clip_and_set(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny CLIP folder and a generated set of two clips."""
    from test_eval_support import make_generated, tiny_clip_dir

    root = tmp_path_factory.mktemp("clipsim")
    return tiny_clip_dir(root / "clip"), make_generated(root / "set", num_videos=2, num_frames=4)


@pytest.mark.parametrize("change, needle", [
    (lambda m: m.pop("videos"), "manifest.json' is not a manifest of kvideo eval generate: it has no 'videos' list"),
    (lambda m: m["videos"][1].pop("prompt"), "manifest.json': videos[1] needs a 'file' and a 'prompt' (strings)"),
    (lambda m: m["videos"].__setitem__(0, "00000.mp4"), "manifest.json': videos[0] needs a 'file' and a 'prompt'"),
])
def test_a_generated_set_whose_manifest_lacks_videos_or_prompts_is_one_line(clip_and_set, tmp_path, change, needle):
    import shutil

    clip, source = clip_and_set
    shutil.copytree(source, tmp_path / "set")
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    change(manifest)
    (tmp_path / "set" / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(tmp_path)
    result = kvideo("eval", "clipsim", "--fake", tmp_path / "set", "--clip", clip, "--device", "cpu")
    assert_one_line_error(result, "eval clipsim", needle)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name, content, needle", [
    ("captions.jsonl", b'{"video": "00000.mp4", "caption": "x"}\n["a list"]\n',
     "captions.jsonl' line 2 holds a list, not an object"),
    ("captions.csv", b"video,caption\n00000.mp4,a caf\xe9\n", "captions.csv' line 2: not valid UTF-8 (byte 0xe9"),
    ("captions.jsonl", b'{"video": "00000.mp4", "caption": 3}\n', "captions.jsonl': a row's video must be a name"),
])
def test_eval_caption_files_name_the_file_and_line(clip_and_set, tmp_path, name, content, needle):
    clip, videos = clip_and_set
    (tmp_path / name).write_bytes(content)
    result = kvideo("eval", "clipsim", "--fake", videos, "--fake-format", "folder", "--fake-captions",
                    tmp_path / name, "--clip", clip, "--device", "cpu")
    assert_one_line_error(result, "eval clipsim", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


# -- training ---------------------------------------------------------------------------------------

def train_args(setup, run: Path, *extra) -> list:
    cache, unet = setup
    return ["train", "keyframe", "--preset", "tiny-keyframe", "--model", unet, "--data", cache, "--output-dir", run,
            "--progress", "false", "--tensorboard", "false", *extra]


def test_training_stops_at_the_first_non_finite_loss_and_exports_nothing(keyframe_setup, tmp_path):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    result = kvideo(*train_args(keyframe_setup, run, "--lr", "1e30", "--steps", "6", "--save-every", "1"))
    line = assert_one_line_error(result, "train keyframe", "loss became nan at step",
                                 "the last good checkpoint is")
    assert not list(run.glob("*.safetensors"))  # no export
    for weights in run.glob("checkpoints/step-*/*.safetensors"):  # every checkpoint written is finite
        assert all(bool(t.isfinite().all()) for t in load_file(weights).values()), weights
    folder = line.split("the last good checkpoint is '")[1].split("'")[0]
    assert Path(folder).is_dir(), line


@pytest.mark.parametrize("flag, value, needle", [
    ("--max-grad-norm", "-1", "max_grad_norm=-1.0 must be > 0"),
    ("--adam-eps", "0", "adam_eps=0.0 must be > 0"),
])
def test_training_numbers_out_of_range_are_refused_before_work(keyframe_setup, tmp_path, flag, value, needle):
    result = kvideo(*train_args(keyframe_setup, tmp_path / "run", flag, value))
    assert_one_line_error(result, "train keyframe", needle)
    assert not (tmp_path / "run").exists()


def test_a_batch_larger_than_the_data_is_capped_with_a_notice(keyframe_setup, tmp_path):
    run = tmp_path / "run"
    result = kvideo(*train_args(keyframe_setup, run, "--batch-size", "100000", "--steps", "1", "--save-every", "1"))
    assert result.returncode == 0, result.stderr
    assert "batch_size=100000 is more than the 4 samples of the data; training with batch_size=4" in result.stderr
    assert json.loads((run / "config.json").read_text())["batch_size"] == 4


@pytest.mark.parametrize("name, text, needle", [
    ("c.yaml", "lr: 1e-3\n", "lr='1e-3' is a string; expected a number (YAML reads an exponent without a dot"),
    ("c.json", '{"steps": "2"}', "steps='2' is a string; expected a whole number (write it without quotes)"),
    ("c.json", '{"clip": {"height": 64.5}}', "clip.height=64.5 is a number; expected a whole number"),
    ("c.json", '{"adam_betas": [0.9, "x"]}', "adam_betas=[0.9, 'x'] is a list; expected a list of 2 numbers"),
    ("c.json", '{"steps": 2,}', "is not JSON"),
    ("c.yaml", "steps: [\n", "is not YAML"),
    ("c.json", b'{"model": "\xff"}', "is not UTF-8 text"),
])
def test_config_file_values_are_type_checked_naming_the_file_and_key(keyframe_setup, tmp_path, name, text, needle):
    config = tmp_path / name
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = kvideo(*train_args(keyframe_setup, tmp_path / "run", "--config", config))
    assert_one_line_error(result, "train keyframe", f"config file {str(config)!r}", needle)
    assert not (tmp_path / "run").exists()


# -- checkpoints verify their bytes -------------------------------------------------------------------
@pytest.fixture
def finished_run(keyframe_setup, tmp_path) -> tuple[list, Path]:
    """(train flags, run folder) of a finished 4-step run with checkpoints at steps 2 and 4 (and an EMA)."""
    run = tmp_path / "run"
    flags = train_args(keyframe_setup, run, "--steps", "4", "--save-every", "2", "--ema-decay", "0.5")
    result = kvideo(*flags)
    assert result.returncode == 0, result.stderr
    return flags, run


def damage_tensor_bytes(path: Path) -> None:
    """Flip bytes of the tensor data at the end of a safetensors file; the header stays intact."""
    data = bytearray(path.read_bytes())
    for offset in range(1, 33):
        data[-offset] ^= 0x5A
    path.write_bytes(bytes(data))


def resume(flags: list, *extra) -> "subprocess.CompletedProcess":
    return kvideo(*flags[:-6], "--steps", "6", "--save-every", "2", "--ema-decay", "0.5", "--resume", "latest",
                  *extra)


@pytest.mark.parametrize("name", ["trained.safetensors", "ema.safetensors"])
def test_resume_skips_a_checkpoint_whose_tensor_bytes_are_damaged(finished_run, name):
    from kvideo.train.checkpointing import read_weights

    flags, run = finished_run
    step4 = run / "checkpoints/step-00000004"
    read_weights(step4 / name)  # loads before the damage
    damage_tensor_bytes(step4 / name)
    result = resume(flags)
    assert result.returncode == 0, result.stderr
    assert f"skipped checkpoint {str(step4)!r}" in result.stderr
    assert f"{name}' is damaged: its tensor data does not match the checksum" in result.stderr
    assert "resuming from" in result.stderr and "step-00000002" in result.stderr


def test_resume_skips_a_checkpoint_whose_state_bytes_are_damaged(finished_run):
    flags, run = finished_run
    state = run / "checkpoints/step-00000004/state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the pickled optimizer state
    state.write_bytes(bytes(data))
    result = resume(flags)
    assert result.returncode == 0, result.stderr
    assert "state.pt' is damaged: its bytes do not match the checksum" in result.stderr
    assert "resuming from" in result.stderr and "step-00000002" in result.stderr


def test_an_explicit_damaged_resume_folder_is_one_line(finished_run, tmp_path):
    flags, run = finished_run
    step4 = run / "checkpoints/step-00000004"
    damage_tensor_bytes(step4 / "trained.safetensors")
    before = snapshot(run)
    result = kvideo(*flags[:-6], "--steps", "6", "--ema-decay", "0.5", "--resume", step4)
    assert_one_line_error(result, "train keyframe", "trained.safetensors' is damaged")
    assert snapshot(run) == before


def test_resume_drops_a_torn_last_log_line_and_says_so(finished_run):
    flags, run = finished_run
    with (run / "log.jsonl").open("a") as handle:
        handle.write('{"step": 5, "loss": 0.1, "ti')
    result = resume(flags)
    assert result.returncode == 0, result.stderr
    assert "dropped the torn last line 5 of" in result.stderr and "log.jsonl" in result.stderr
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_bad_log_line_before_the_last_is_one_line_naming_it(finished_run):
    flags, run = finished_run
    lines = (run / "log.jsonl").read_text().splitlines()
    lines[1] = "garbage"
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    before = snapshot(run)
    result = resume(flags)
    assert_one_line_error(result, "train keyframe", "log.jsonl' line 2 is not a JSON log record")
    assert snapshot(run) == before


@pytest.mark.parametrize("pointer", [b"\x80\xfe\xff binary", b"../../elsewhere\n", b"\x00\x00"])
def test_resume_ignores_a_garbage_latest_pointer(finished_run, pointer):
    flags, run = finished_run
    (run / "checkpoints/latest").write_bytes(pointer)
    result = resume(flags)
    assert result.returncode == 0, result.stderr
    assert "ignored the latest pointer" in result.stderr
    assert "trained 6 steps" in result.stdout
    assert (run / "checkpoints/latest").read_text() == "step-00000006\n"


# -- non-finite weights never load ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from test_pipeline import write_tiny_weights

    folder = tmp_path_factory.mktemp("weights")
    write_tiny_weights(folder)
    return folder


def poisoned_copy(weights: Path, target: Path, name: str, value: float) -> str:
    """`weights` with one tensor of file `name` filled with `value` (the others linked); returns its key."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    target.mkdir()
    for item in weights.iterdir():
        if item.name != name:
            (target / item.name).symlink_to(item)
    tensors = load_file(weights / name)
    with safe_open(str(weights / name), "pt") as handle:
        metadata = handle.metadata()
    key = sorted(k for k, v in tensors.items() if v.is_floating_point())[-1]
    tensors[key] = torch.full_like(tensors[key], value)
    save_file(tensors, str(target / name), metadata=metadata)
    return key


@pytest.mark.parametrize("name, value, kind", [("video_movq.safetensors", float("nan"), "nan"),
                                               ("keyframe_unet.safetensors", float("inf"), "inf")])
def test_a_weights_folder_holding_non_finite_values_is_refused_naming_the_tensor(weights, tmp_path, name, value,
                                                                                  kind):
    key = poisoned_copy(weights, tmp_path / "weights", name, value)
    result = kvideo("generate", "a cat", "-o", tmp_path / "clip.mp4", "--weights", tmp_path / "weights",
                    "--fps", "low", "--steps", "2", "--frames", "2", "--quiet")
    assert_one_line_error(result, "generate", f"{name}' holds {kind} values in tensor {key!r}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]


def test_temporal_weights_holding_nan_are_refused_before_any_model_loads(tmp_path):
    import torch

    from kvideo.models.unet import UNet, UNetConfig
    from kvideo.train.checkpointing import WeightsInfo, save_weights

    unet = UNet(UNetConfig.preset("tiny-keyframe"))
    state = {k: torch.full_like(v, float("nan")) for k, v in unet.temporal_state_dict().items()}
    info = WeightsInfo(unet.model_type, unet.config.to_json(), "keyframe", "temporal", 3)
    save_weights(tmp_path / "bad.safetensors", state, info)
    result = kvideo("generate", "a cat", "-o", tmp_path / "clip.mp4", "--temporal-weights",
                    tmp_path / "bad.safetensors", "--fps", "low", "--steps", "2", "--frames", "2", "--quiet")
    assert_one_line_error(result, "generate", "bad.safetensors' holds nan values in tensor")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]


def test_resume_skips_a_checkpoint_holding_nan_weights(finished_run):
    import torch

    from kvideo.train import checkpointing as ckpt

    flags, run = finished_run
    step4 = run / "checkpoints/step-00000004"
    state, extras, info = ckpt.read_weights(step4 / "trained.safetensors")
    metadata = ckpt.read_metadata(step4 / "trained.safetensors")
    first = sorted(state)[0]
    state[first] = torch.full_like(state[first], float("nan"))
    ckpt.save_weights(step4 / "trained.safetensors", state, info, extras, metadata["train_config"],
                      {ckpt.STATE_CHECKSUM_KEY: metadata[ckpt.STATE_CHECKSUM_KEY]})
    result = resume(flags)
    assert result.returncode == 0, result.stderr
    assert f"holds nan values in tensor {first!r}" in result.stderr and "step-00000002" in result.stderr


# -- a text encoder folder must be complete ---------------------------------------------------------------
def with_text_encoder(weights: Path, target: Path, change) -> Path:
    """`weights` (other files linked) with a copy of its text_encoder/ that `change(folder)` alters."""
    import shutil

    target.mkdir()
    for item in weights.iterdir():
        if item.name != "text_encoder":
            (target / item.name).symlink_to(item)
    shutil.copytree(weights / "text_encoder", target / "text_encoder")
    change(target / "text_encoder")
    return target


def edit_json(path: Path, **values) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def pickle_that_runs_code(folder: Path) -> None:
    import torch

    (folder / "model.safetensors").unlink()
    torch.save({"x": Marker(str(folder.parent.parent / "pwned"))}, folder / "pytorch_model.bin")


class Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("change, needle", [
    (lambda d: (d / "tokenizer.json").unlink(), "has no tokenizer (tokenizer.json or spiece.model)"),
    (lambda d: (d / "tokenizer.json").write_text("{garbage"), "has no usable tokenizer"),
    (lambda d: edit_json(d / "config.json", vocab_size=1000), "its tokenizer has 259 tokens"),
    (lambda d: edit_json(d / "config.json", d_model=64), "holds a 64-d encoder but the projection takes 32-d"),
    (lambda d: edit_json(d / "config.json", d_model="32"), "config.json' is not a t5 config"),
    (lambda d: (d / "config.json").write_text("{"), "config.json' is not a JSON config"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 999), "the encoder weights cannot be loaded"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:4000]),
     "the encoder weights cannot be loaded"),
    (lambda d: edit_json(d / "config.json", num_heads=2, d_kv=4), "sizes do not match its config.json"),
    (pickle_that_runs_code, "a pickle that torch.load(weights_only=True) refuses"),
], ids=["no-tokenizer", "bad-tokenizer", "vocab", "d-model", "config-type", "config-json", "random-bytes",
        "truncated", "sizes", "pickle"])
def test_an_incomplete_text_encoder_folder_is_one_line(weights, tmp_path, change, needle):
    folder = with_text_encoder(weights, tmp_path / "weights", change)
    result = kvideo("generate", "a cat", "-o", tmp_path / "clip.mp4", "--weights", folder, "--fps", "low",
                    "--steps", "2", "--frames", "2", "--quiet")
    assert_one_line_error(result, "generate", "text_encoder", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]  # no video, and no 'pwned'


def test_a_text_encoder_asking_for_remote_code_loads_without_it_and_says_so(weights, tmp_path):
    def ask_for_code(folder: Path) -> None:
        marker = tmp_path / "pwned"
        (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                        "from transformers import T5Config\nclass EvilConfig(T5Config):\n    pass\n")
        edit_json(folder / "config.json", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
        edit_json(folder / "tokenizer_config.json", auto_map={"AutoTokenizer": ["evil.EvilTokenizer", None]})

    folder = with_text_encoder(weights, tmp_path / "weights", ask_for_code)
    result = kvideo("generate", "a cat", "-o", tmp_path / "clip.mp4", "--weights", folder, "--fps", "low",
                    "--steps", "2", "--frames", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "auto_map" in line]
    assert len(notices) == 2 and all("none of the folder's code runs" in line for line in notices), result.stderr
    assert (tmp_path / "clip.mp4").is_file() and not (tmp_path / "pwned").exists()


def test_generate_does_not_show_transformers_loading_bar(weights, tmp_path):
    result = kvideo("generate", "a cat", "-o", tmp_path / "clip.mp4", "--weights", weights, "--fps", "low",
                    "--steps", "2", "--frames", "2")
    assert result.returncode == 0, result.stderr
    assert "Loading weights" not in result.stderr and "Loading checkpoint" not in result.stderr


# -- seeds, caption lists -----------------------------------------------------------------------------------
BIG = str(2**64)


def test_seeds_past_64_bits_are_refused_before_work(keyframe_setup, ucf, tmp_path):
    result = kvideo(*train_args(keyframe_setup, tmp_path / "run", "--seed", BIG))
    assert_one_line_error(result, "train keyframe", f"seed={BIG} must lie in [0, 2**63 - 1]")
    result = kvideo("recipe", "shapes", tmp_path / "recipe", "--seed", BIG, "--stages", "data", "--quiet")
    assert_one_line_error(result, "recipe shapes", "--seed: expected a seed in [0, 2**63 - 1]")
    result = kvideo("eval", "generate", "--benchmark", "ucf101", "--data", ucf, "--split", "test", "--out",
                    tmp_path / "gen", "--num-videos", "2", "--preset", "tiny", "--seed", str(2**63 - 1), "--quiet")
    assert_one_line_error(result, "eval generate", "video 1 would use seed 9223372036854775808, past 2**63 - 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, content, needle", [
    ("bad.csv", b"path,caption\nvideo-000.mp4,a caf\xe9\n", "bad.csv' line 2: not valid UTF-8 (byte 0xe9"),
    ("bad.jsonl", b'{"path": "video-000.mp4", "caption": "x"}\n["a list"]\n',
     "bad.jsonl' line 2 holds a list, not an object"),
    ("bad.jsonl", b'{"path": "video-000.mp4", "caption": "x"}\n{"path": \n', "bad.jsonl' line 2 is not JSON"),
])
def test_caption_lists_name_the_file_and_line(videos, tmp_path, name, content, needle):
    captions = videos.parent / name  # beside the videos (their own list is captions.csv)
    captions.write_bytes(content)
    try:
        result = kvideo("train", "decoder", "--preset", "tiny-decoder", "--data", videos.parent, "--captions",
                        captions, "--output-dir", tmp_path / "run", "--progress", "false")
    finally:
        captions.unlink()
    assert_one_line_error(result, "train decoder", needle)
    assert not (tmp_path / "run").exists()


# -- a full disk during a checkpoint save or a convert ---------------------------------------------------------
def files_up_to(size: int):
    """A subprocess preexec_fn: writes past `size` bytes fail with EFBIG, as on a full disk."""
    def limit() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def test_convert_onto_a_full_disk_is_one_line_and_leaves_nothing_at_the_name(tmp_path):
    import os
    import subprocess
    import sys

    from test_convert import write_official_interpolation

    write_official_interpolation(tmp_path / "interp.pt")
    (tmp_path / "out").mkdir()
    args = ["convert", tmp_path / "interp.pt", "-o", tmp_path / "out" / "model.safetensors", "--model-preset",
            "tiny-interpolation"]
    result = subprocess.run([sys.executable, "-m", "kvideo", *map(str, args)], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, preexec_fn=files_up_to(20_000))
    assert_one_line_error(result, "convert", f"writing {str(tmp_path / 'out' / 'model.safetensors')!r} failed (",
                          "File too large", "MiB free there); nothing was written at that name")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_checkpoint_save_that_runs_out_of_space_is_one_line_and_keeps_the_previous(finished_run):
    import os
    import subprocess
    import sys

    flags, run = finished_run
    step4 = run / "checkpoints/step-00000004"
    before = snapshot(step4)
    args = [*flags[:-6], "--steps", "6", "--save-every", "2", "--ema-decay", "0.5", "--resume", "latest"]
    result = subprocess.run([sys.executable, "-m", "kvideo", *map(str, args)], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
                            preexec_fn=files_up_to(800_000))  # state.pt is larger
    assert_one_line_error(result, "train keyframe", "writing checkpoint 6 into", "failed (",
                          f"the last checkpoint, {str(step4)!r}, is intact")
    assert snapshot(step4) == before and (run / "checkpoints/latest").read_text() == "step-00000004\n"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-00000002", "step-00000004"]


# -- types inside files: pickles that are not state dicts, kvideo metadata without a usable config -----------
def not_a_state_dict(case: str) -> dict:
    import torch

    return {"non-tensor": {"unet": {"in_layer.weight": torch.ones(2), "step": 3}},
            "int keys": {1: torch.ones(2), 2: torch.ones(3)},
            "nested int key": {"unet": {1: torch.ones(2)}}}[case]


@pytest.mark.parametrize("case, needle", [
    ("non-tensor", "its entry 'step' holds 3 (int), not a tensor"),
    ("int keys", "it holds the key 1 (an int), where a state dict names its tensors with strings"),
    ("nested int key", "it holds the key 1 (an int) inside 'unet'"),
])
def test_info_and_convert_refuse_a_pickle_that_is_not_a_state_dict(tmp_path, case, needle):
    import torch

    torch.save(not_a_state_dict(case), tmp_path / "odd.pt")
    assert_one_line_error(kvideo("info", tmp_path / "odd.pt"), "info", "odd.pt' is not a state dict", needle)
    result = kvideo("convert", tmp_path / "odd.pt", "-o", tmp_path / "out.safetensors")
    assert_one_line_error(result, "convert", "odd.pt' is not a state dict", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.pt"]


@pytest.mark.parametrize("metadata, needle", [
    ({"model_type": "unet"}, "model.safetensors' is a kvideo unet file without its config in the metadata"),
    ({"config": "{}"}, "cannot tell which Kandinsky Video model"),  # no model_type: read as official
    ({"model_type": "unet", "config": "{nope"}, "the config in its metadata cannot be used: UNetConfig: not JSON"),
    ({"model_type": "unet", "config": "[1]"}, "UNetConfig: expected a JSON object of its fields, got a list"),
    ({"model_type": "unet", "config": '{"model_channels": "x"}'},
     "UNetConfig.model_channels='x' is a string; expected a whole number"),
    ({"model_type": "movq", "config": '{"groups": 0}'}, "MoVQConfig.groups=0 must be a size from 1 to"),
])
def test_kvideo_metadata_without_a_usable_config_is_one_line(tmp_path, metadata, needle):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "model.safetensors"), metadata=metadata)
    assert_one_line_error(kvideo("info", tmp_path / "model.safetensors"), "info", needle)


@pytest.mark.parametrize("config, needle", [
    ('{"model_channels": "x"}', "UNetConfig.model_channels='x' is a string; expected a whole number"),
    ("{nope", "its metadata config is not JSON"),
])
def test_temporal_weights_with_an_unusable_config_are_refused_before_any_model_loads(tmp_path, config, needle):
    import torch
    from safetensors.torch import save_file

    metadata = {"model_type": "unet", "config": config, "task": "keyframe", "kvideo_weights": "temporal"}
    save_file({"w": torch.ones(2)}, str(tmp_path / "t.safetensors"), metadata=metadata)
    result = kvideo("generate", "a cat", "-o", tmp_path / "clip.mp4", "--temporal-weights", tmp_path / "t.safetensors",
                    "--fps", "low", "--steps", "2", "--frames", "2", "--quiet")
    assert_one_line_error(result, "generate", "t.safetensors'", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]


@pytest.mark.parametrize("text, needle", [
    (b'{"model_channels": "x"}', "config.json': UNetConfig.model_channels='x' is a string; expected a whole number"),
    (b'{"dim_mult": [1, 2]', "config.json' is not JSON (Expecting"),
    (b"[1, 2]", "config.json': UNetConfig: expected a JSON object of its fields, got a list"),
    (b"\xff\xfe{}", "config.json' is not UTF-8 text"),
])
def test_convert_config_files_that_cannot_be_used_are_one_line_naming_the_file(tmp_path, text, needle):
    from test_convert import write_official_interpolation

    write_official_interpolation(tmp_path / "interp.pt")
    (tmp_path / "config.json").write_bytes(text)
    result = kvideo("convert", tmp_path / "interp.pt", "-o", tmp_path / "out.safetensors", "--config",
                    tmp_path / "config.json")
    assert_one_line_error(result, "convert", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "interp.pt"]


# -- an output that cannot be replaced fails before the work, naming the output -------------------------------
@contextlib.contextmanager
def unwritable(path: Path):
    """`path` made immutable (chattr +i, where this runs as root) or read-only (chmod) while the block runs."""
    import os
    import subprocess

    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here, and root writes read-only files")
        undo = ["chattr", "-i", str(path)]
    else:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        undo = None
    try:
        yield path
    finally:
        subprocess.run(undo, check=True) if undo else path.chmod(mode)


def test_convert_onto_an_output_that_cannot_be_replaced_fails_before_the_work(tmp_path):
    from test_convert import write_official_interpolation

    write_official_interpolation(tmp_path / "interp.pt")
    (tmp_path / "model.safetensors").write_bytes(b"the user's")
    with unwritable(tmp_path / "model.safetensors"):
        result = kvideo("convert", tmp_path / "interp.pt", "-o", tmp_path / "model.safetensors", "--model-preset",
                        "tiny-interpolation")
    assert_one_line_error(result, "convert", f"output {str(tmp_path / 'model.safetensors')!r} exists and cannot be "
                          "replaced (it is read-only or immutable)")
    assert ".tmp" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["interp.pt", "model.safetensors"]
    assert (tmp_path / "model.safetensors").read_bytes() == b"the user's"


@pytest.mark.parametrize("target, needle", [
    ("captions.csv", "captions file '{out}/captions.csv' exists and cannot be replaced"),
    ("videos", "videos folder '{out}/videos' cannot be written"),
    (".", "output folder '{out}' cannot be written"),
])
def test_data_shapes_into_a_set_that_cannot_be_written_fails_before_any_clip(tmp_path, target, needle):
    out = tmp_path / "set"
    flags = ["--size", "32", "--seconds", "0.5", "--quiet"]
    assert kvideo("data", "shapes", out, "--videos", "1", *flags).returncode == 0
    before = snapshot(out)
    with unwritable(out / target):
        result = kvideo("data", "shapes", out, "--videos", "2", *flags)
    assert_one_line_error(result, "data shapes", needle.format(out=out))
    assert snapshot(out) == before and sorted(p.name for p in (out / "videos").iterdir()) == ["00000.mp4"]


def test_an_eval_report_that_cannot_be_replaced_fails_before_the_work(clip_and_set, tmp_path):
    clip, videos = clip_and_set
    (tmp_path / "report.json").write_text("{}")
    with unwritable(tmp_path / "report.json"):
        result = kvideo("eval", "clipsim", "--fake", videos, "--clip", clip, "--device", "cpu", "--report",
                        tmp_path / "report.json")
    assert_one_line_error(result, "eval clipsim", "report.json' exists and cannot be replaced")
    assert snapshot(tmp_path) == {"report.json": b"{}"}


def test_resuming_a_run_whose_exported_weights_cannot_be_replaced_fails_before_training(finished_run):
    flags, run = finished_run
    exported = run / "keyframe-temporal.safetensors"
    before = snapshot(run)
    with unwritable(exported):
        result = kvideo(*flags[:-6], "--steps", "6", "--save-every", "2", "--ema-decay", "0.5", "--resume", "latest")
    assert_one_line_error(result, "train keyframe", f"the run's file {str(exported)!r} exists and cannot be replaced")
    assert snapshot(run) == before


# -- deterministic encoding ------------------------------------------------------------------------------------
def test_generate_writes_the_same_bytes_for_the_same_seed(tmp_path):
    """generate encodes with the renderer's reproducible x264 options (tests/test_export.py checks the options)."""
    flags = ["--weights", "tiny", "--fps", "low", "--steps", "2", "--frames", "2", "--seed", "3", "--quiet"]
    for name in ("a.mp4", "b.mp4"):
        result = kvideo("generate", "a red ball", "-o", tmp_path / name, *flags)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


# -- malformed files, property style: every wrong value is one expected error, never a traceback ----------------
WRONG_VALUES = ["1e-3", "", None, True, [], [1, "x"], {}, {"a": 1}, -1, 0, 2**70, 1.5, float("nan"), "nan"]


def test_training_config_files_with_any_wrong_value_give_an_expected_error(tmp_path):
    import dataclasses
    import random

    from kvideo.errors import is_expected
    from kvideo.train.config import CacheConfig, TrainConfig, load_config

    rng = random.Random(29)
    for cls, preset in ((TrainConfig, "tiny-keyframe"), (CacheConfig, "keyframe")):
        names = [f.name for f in dataclasses.fields(cls)] + ["clip.height", "clip.keyframes", "clip.task"]
        for trial in range(120):
            name, value = rng.choice(names), rng.choice(WRONG_VALUES)
            head, _, tail = name.partition(".")
            values = {head: {tail: value}} if tail else {head: value}
            path = tmp_path / f"{trial}.json"
            path.write_text(json.dumps(values))
            try:
                load_config(cls, path, preset)
            except Exception as error:  # noqa: BLE001 (sorted below)
                assert is_expected(error), (values, repr(error))
                assert "\n" not in str(error) and (name.split(".")[-1] in str(error) or str(path) in str(error)), \
                    (values, str(error))


def test_trained_weights_files_with_any_malformed_metadata_give_an_expected_error(tmp_path):
    import random

    import torch
    from safetensors.torch import save_file

    from kvideo.errors import is_expected
    from kvideo.train.checkpointing import read_weights

    good = {"model_type": "unet", "config": "{}", "task": "keyframe", "kvideo_weights": "temporal", "step": "3"}
    wrong = ["", "x", "{", "[]", "null", "-1", "1.5", "all", "{\"dim\": \"x\"}"]
    rng = random.Random(29)
    for trial in range(60):
        metadata = dict(good)
        for key in rng.sample(sorted(good), rng.randint(1, 3)):
            if rng.random() < 0.3:
                del metadata[key]
            else:
                metadata[key] = rng.choice(wrong)
        path = tmp_path / f"{trial}.safetensors"
        save_file({"w": torch.ones(2)}, str(path), metadata=metadata)
        try:
            read_weights(path)
        except Exception as error:  # noqa: BLE001 (sorted below)
            assert is_expected(error) and str(path) in str(error), (metadata, repr(error))


@pytest.mark.parametrize("state, needle", [
    ({"step": "4", "optimizer": {}, "scheduler": {}, "rng": {}}, "step='4'"),
    ({"step": 4, "optimizer": [], "scheduler": {}, "rng": {}}, "optimizer is not a mapping"),
    ({"step": 4, "optimizer": {}, "scheduler": 1, "rng": 2}, "scheduler, rng are not a mapping"),
])
def test_a_training_state_of_the_wrong_types_is_refused_naming_the_file(tmp_path, state, needle):
    import torch

    from kvideo.errors import UnreadableCheckpointError
    from kvideo.train.checkpointing import load_state

    torch.save(state, tmp_path / "state.pt")
    with pytest.raises(UnreadableCheckpointError, match=f"state.pt' is not a kvideo training state .*{needle}"):
        load_state(tmp_path / "state.pt")


def test_a_damaged_recipe_record_is_one_line_naming_it(tmp_path):
    (tmp_path / "out" / "records").mkdir(parents=True)
    (tmp_path / "out" / "records" / "data.json").write_text('{"videos": ')
    result = kvideo("recipe", "shapes", tmp_path / "out", "--stages", "data", "--videos", "2", "--quiet")
    assert_one_line_error(result, "recipe shapes", "data.json' is not a recipe record",
                          "delete it to run that stage again")
    assert snapshot(tmp_path / "out") == {"records/data.json": b'{"videos": '}


def test_the_torch_floor_is_past_the_weights_only_bypass():
    """torch.load(weights_only=True) could be bypassed up to 2.5.1 (CVE-2025-32434)."""
    import re

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()  # tomllib needs Python 3.11
    assert re.findall(r'^\s*"(torch[<>=!~].*?)"', pyproject, flags=re.M) == ["torch>=2.6"]
