"""Property: a malformed file of any structure (checkpoints, kvideo metadata, training configs, eval manifests,
model cards) ends in one expected error naming the file (one line, exit status 2 on the command line), never a
traceback: hypothesis draws the structures, types and values."""
from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvideo.errors import is_expected, one_line

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# JSON values of every type, small, with the numbers that break arithmetic (0, negatives, huge, nan, inf).
SCALARS = (st.none() | st.booleans() | st.sampled_from([0, -1, 1, 2, 3, 4, 7, 8, 16, 2**31, 2**70, -2**70])
           | st.integers(-5, 70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(["", "x", "1e-3", "keyframe", "interpolation", "image", "1.1", "v", "all"]))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(string.ascii_lowercase, max_size=6), inner, max_size=3),
                           max_leaves=8)


def expect_one_error_naming(path: Path, call) -> None:
    """`call()` either succeeds or raises an expected error whose one line names `path`."""
    try:
        call()
    except Exception as error:  # noqa: BLE001 (sorted below)
        assert is_expected(error), repr(error)
        assert str(path) in one_line(error) or path.name in one_line(error), one_line(error)


# -- checkpoints: any nesting of mappings, lists, tensors and scalars, with names or numbers for keys -----------
KEYS = st.sampled_from(["unet", "null_embedding", "projections", "encoder.conv_in.weight", "decoder.conv_out.weight",
                        "projection_base", "image_in_layer.weight", "in_layer.weight", 1, 0, -3])
TENSORS = st.builds(lambda shape, dtype, fill: torch.full(shape, fill).to(dtype),
                    st.lists(st.integers(0, 3), max_size=3).map(tuple),
                    st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool]),
                    st.sampled_from([0.0, 1.0, float("nan"), float("inf")]))
CONTENTS = st.recursive(TENSORS | SCALARS | st.text(max_size=4),
                        lambda inner: st.dictionaries(KEYS | st.text(max_size=5), inner, max_size=4)
                        | st.lists(inner, max_size=3),
                        max_leaves=10)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("malformed")


@SETTINGS
@given(contents=CONTENTS)
def test_checkpoints_of_any_structure_give_one_expected_error(folder, contents):
    from kvideo.convert import convert, info
    from kvideo.models.movq import MoVQ
    from kvideo.models.unet import UNet

    path = folder / "checkpoint.pt"
    torch.save(contents, path)
    expect_one_error_naming(path, lambda: info(path))
    expect_one_error_naming(path, lambda: UNet.read_checkpoint(path))
    expect_one_error_naming(path, lambda: MoVQ.read_checkpoint(path))
    out = folder / "out.safetensors"
    expect_one_error_naming(path, lambda: convert(path, out))
    out.unlink(missing_ok=True)  # where the checkpoint happened to convert


STATES = st.fixed_dictionaries({}, optional={"step": SCALARS, "optimizer": CONTENTS, "scheduler": CONTENTS,
                                            "rng": CONTENTS}) | CONTENTS


@SETTINGS
@given(state=STATES)
def test_training_states_of_any_structure_give_one_expected_error(folder, state):
    from kvideo.train.checkpointing import load_state

    path = folder / "state.pt"
    torch.save(state, path)
    expect_one_error_naming(path, lambda: load_state(path))


# -- kvideo metadata: model_type, config (any JSON, or not JSON), model -------------------------------------------
def config_values(model_type: str):
    """A config of the model type's real fields with values of any type, or any JSON, or text that is not JSON."""
    from dataclasses import fields

    from kvideo.models.movq import MoVQConfig
    from kvideo.models.unet import UNetConfig

    names = [f.name for f in fields(UNetConfig if model_type == "unet" else MoVQConfig)]
    real = st.dictionaries(st.sampled_from(names), JSON_VALUES, max_size=3)
    return st.one_of(real.map(json.dumps), JSON_VALUES.map(json.dumps), st.sampled_from(["", "{", "nan", "[1"]))


METADATA = st.sampled_from(["unet", "movq", "", "i3d", "x"]).flatmap(
    lambda model_type: st.fixed_dictionaries({"model_type": st.just(model_type)}, optional={
        "config": config_values(model_type),
        "model": st.sampled_from(["keyframe", "interpolation", "movq", "video-movq", "kv11-keyframe", "x", ""]),
    }))


@SETTINGS
@given(metadata=METADATA)
def test_kvideo_files_with_any_metadata_give_one_expected_error(folder, metadata):
    from safetensors.torch import save_file

    from kvideo.convert import info
    from kvideo.models.movq import MoVQ
    from kvideo.models.unet import UNet

    path = folder / "model.safetensors"
    save_file({"w": torch.ones(2)}, str(path), metadata=metadata)
    expect_one_error_naming(path, lambda: info(path))
    expect_one_error_naming(path, lambda: UNet.read_checkpoint(path))
    expect_one_error_naming(path, lambda: MoVQ.read_checkpoint(path))


# -- config files: convert --config and training configs --------------------------------------------------------
@SETTINGS
@given(values=st.dictionaries(st.sampled_from(["model_channels", "dim_mult", "context_dim", "kind", "groups",
                                               "num_blocks", "head_dim", "release", "x"]), JSON_VALUES, max_size=3)
       | JSON_VALUES)
def test_model_config_files_of_any_values_give_one_expected_error(folder, values):
    from kvideo.models.unet import UNetConfig

    path = folder / "config.json"
    path.write_text(json.dumps(values))
    expect_one_error_naming(path, lambda: UNetConfig.from_file(path))


@SETTINGS
@given(values=st.dictionaries(st.sampled_from(["lr", "steps", "batch_size", "adam_betas", "clip", "max_grad_norm",
                                               "ema_decay", "seed", "precision", "task", "progress", "x"]),
                              JSON_VALUES, max_size=3) | JSON_VALUES)
def test_training_config_files_of_any_values_give_one_expected_error(folder, values):
    from kvideo.train.config import TrainConfig, load_config

    path = folder / "train.json"
    path.write_text(json.dumps(values))
    expect_one_error_naming(path, lambda: load_config(TrainConfig, path, "tiny-keyframe"))


# -- eval manifests: any structure, entries of any type ------------------------------------------------------------
ENTRIES = st.fixed_dictionaries({}, optional={"file": st.sampled_from(["00000.mp4", "missing.mp4", "", "."])
                                              | JSON_VALUES,
                                              "prompt": st.text(max_size=5) | JSON_VALUES,
                                              "index": JSON_VALUES})
MANIFESTS = (st.fixed_dictionaries({}, optional={"videos": st.lists(ENTRIES | JSON_VALUES, max_size=3) | JSON_VALUES,
                                                 "benchmark": JSON_VALUES})
             | JSON_VALUES)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    from test_eval_support import make_generated

    return make_generated(tmp_path_factory.mktemp("generated") / "set", num_videos=1, num_frames=2)


@SETTINGS
@given(manifest=MANIFESTS)
def test_eval_manifests_of_any_structure_give_one_expected_error(generated, manifest):
    from kvideo.eval.datasets import load_dataset

    path = generated / "manifest.json"
    path.write_text(json.dumps(manifest))
    expect_one_error_naming(path, lambda: load_dataset("generated", generated))


# -- model cards: a weights folder's model.json of any structure ----------------------------------------------------
CARDS = st.fixed_dictionaries({}, optional={
    "generation": st.dictionaries(st.sampled_from(["steps", "guidance_scale", "width", "height", "sampler", "fps",
                                                   "num_frames", "threshold", "latent_range", "interpolation_steps",
                                                   "cache_interval", "guidance_interval", "motion", "bogus"]),
                                  JSON_VALUES, max_size=3) | JSON_VALUES,
    "prompt_pattern": st.sampled_from([r"^an? (?P<color>\w+) (?P<shape>\w+)$", "(", "[a-", "(?P<x>"]) | JSON_VALUES,
    "prompt_words": st.dictionaries(st.sampled_from(["color", "shape"]), st.lists(st.text(max_size=4), max_size=2)
                                    | JSON_VALUES, max_size=2) | JSON_VALUES,
    "name": JSON_VALUES, "description": JSON_VALUES,
}) | JSON_VALUES


@SETTINGS
@given(card=CARDS)
def test_model_cards_of_any_structure_give_one_line_errors(folder, card, capsys):
    """The card is read before the weights: a bad one is one line; a good one gets as far as the (missing) weights."""
    from kvideo.cli import main

    weights = folder / "weights"
    weights.mkdir(exist_ok=True)
    (weights / "model.json").write_text(json.dumps(card))
    code = main(["generate", "a red ball", "--weights", str(weights), "-o", str(folder / "clip.mp4"), "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("kvideo generate: error: ")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert str(weights) in lines[0], lines[0]  # the card (or, for a good card, the folder missing its weights)
    assert not (folder / "clip.mp4").exists()


def test_a_card_whose_size_cannot_fit_names_the_card(tmp_path, capsys):
    """A size from the card (no flag given) that no memory holds is refused naming the card, not a flag."""
    from kvideo.cli import main

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.json").write_text(json.dumps({"generation": {"width": 2**31}}))
    code = main(["generate", "a red ball", "--weights", str(weights), "-o", str(tmp_path / "clip.mp4"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(weights / "model.json") in err and "GiB" in err, err
    assert not (tmp_path / "clip.mp4").exists()
