"""Text conditioning: projection, context helpers and the T5 TextEncoder on a tiny offline T5."""
from __future__ import annotations

import json

import pytest
import torch

from kvideo.checkpoint import CheckpointError
from kvideo.text import (
    TextEncoder,
    TextProjection,
    check_prompts,
    null_context,
    pad_context,
    trim_padding,
    write_tiny_t5,
)

TEXT_DIM, CONTEXT_DIM = 32, 24


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    """A tiny random T5 encoder and a byte-level tokenizer, built offline."""
    return write_tiny_t5(tmp_path_factory.mktemp("tiny_t5"), d_model=TEXT_DIM)


@pytest.fixture()
def encoder(t5_dir):
    torch.manual_seed(0)
    return TextEncoder.from_pretrained(t5_dir, TextProjection(TEXT_DIM, CONTEXT_DIM), torch.randn(CONTEXT_DIM))


def reference_context(text_encoder, prompts):
    """What the release computes: pad to 128, encode, project, zero padding rows, cut to longest + 1."""
    tokens = text_encoder.tokenizer(prompts, max_length=128, padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = text_encoder.encoder(**tokens).last_hidden_state
        context = text_encoder.projection.t5(hidden)
    mask = tokens["attention_mask"]
    context[mask == 0] = 0
    keep = int(mask.sum(-1).max()) + 1
    return context[:, :keep], mask[:, :keep].bool()


# -- projection and context helpers -------------------------------------------------------------
def test_trim_padding_zeroes_and_cuts():
    context, mask = torch.randn(2, 10, 4), torch.zeros(2, 10, dtype=torch.long)
    mask[0, :3], mask[1, :6] = 1, 1
    out, out_mask = trim_padding(context, mask)
    assert out.shape == (2, 7, 4) and out_mask.dtype == torch.bool and out_mask.sum().item() == 9
    assert not out[0, 3:].any() and torch.equal(out[1, :6], context[1, :6])


def test_projection_state_keys_and_strict_loading():
    projection = TextProjection(TEXT_DIM, CONTEXT_DIM)
    assert sorted(projection.state_dict()) == ["t5.0.weight", "t5.1.bias", "t5.1.weight"]
    loaded = TextProjection.from_state_dict(projection.state_dict())
    assert (loaded.text_dim, loaded.context_dim) == (TEXT_DIM, CONTEXT_DIM)
    with pytest.raises(CheckpointError, match="missing"):
        TextProjection.from_state_dict({"t5.0.weight": torch.zeros(CONTEXT_DIM, TEXT_DIM)})


def test_null_context_and_padding():
    null = torch.randn(CONTEXT_DIM)
    context, mask = null_context(null, batch=3, length=4)
    assert context.shape == (3, 4, CONTEXT_DIM) and torch.equal(context[:, 0], null.expand(3, -1))
    assert not context[:, 1:].any() and mask.tolist() == [[True, False, False, False]] * 3
    padded, padded_mask = pad_context(context, mask, 6)
    assert padded.shape == (3, 6, CONTEXT_DIM) and not padded[:, 4:].any() and not padded_mask[:, 4:].any()
    with pytest.raises(ValueError, match="pad"):
        pad_context(context, mask, 2)


@pytest.mark.parametrize("bad", ["", "   ", [], ["a cat", ""], 3, None, ["a cat", 7]])
def test_bad_prompts_are_rejected(bad):
    with pytest.raises(ValueError, match="prompt"):
        check_prompts(bad)


# -- the encoder ---------------------------------------------------------------------------------
def test_encode_matches_the_reference_computation(encoder):
    prompts = ["a red panda eating bamboo", "fire"]
    context, mask = encoder.encode(prompts)
    ref_context, ref_mask = reference_context(encoder, prompts)
    assert context.shape == ref_context.shape == (2, len(prompts[0].encode()) + 2, CONTEXT_DIM)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(context, ref_context, atol=1e-5, rtol=1e-5)


def test_cache_serves_repeated_prompts(encoder):
    expected = reference_context(encoder, ["a cat surfing", "a dog"])[0]
    calls = []
    encoder.encoder.register_forward_hook(lambda module, args, output: calls.append(1))
    first = encoder.encode("a cat surfing")
    again = encoder.encode(["a cat surfing", "a dog"])
    assert len(calls) == 2  # "a dog" was the only new prompt
    torch.testing.assert_close(again.context[:1, : first.context.shape[1]], first.context)
    torch.testing.assert_close(again.context, expected, atol=1e-5, rtol=1e-5)
    encoder.cache_size = 1
    encoder.encode("something else")
    encoder.encode("a cat surfing")
    assert len(calls) == 4  # evicted


def test_a_batch_of_more_prompts_than_the_cache_holds_is_encoded(encoder):
    """Cached prompts of a call must not be evicted by its new ones before the call returns."""
    encoder.cache_size = 2
    encoder.encode(["a cat", "a dog"])
    batch = ["a cat", "a bird", "a fish", "a dog", "a cat"]
    context = encoder.encode(batch).context
    torch.testing.assert_close(context, reference_context(encoder, batch)[0], atol=1e-5, rtol=1e-5)
    assert list(encoder._cache) == ["a bird", "a fish"]  # the newest two


def test_negative_prompt_is_encoded_on_its_own(encoder):
    cond, uncond = encoder.encode_pair("a boat", negative="blurry, low quality, watermark")
    alone = encoder.encode("blurry, low quality, watermark")
    assert cond.context.shape == uncond.context.shape == alone.context.shape
    torch.testing.assert_close(uncond.context, alone.context)
    assert cond.mask.sum().item() == len("a boat") + 1 and uncond.mask.sum().item() == alone.mask.sum().item()


def test_unconditional_context_without_negative(encoder):
    cond, uncond = encoder.encode_pair(["a boat", "the sea at night"])
    assert uncond.context.shape == cond.context.shape
    torch.testing.assert_close(uncond.context[:, 0], encoder.null_embedding.expand(2, -1))
    assert uncond.mask.sum(dim=1).tolist() == [1, 1] and bool(uncond.mask[:, 0].all())


def test_offload_keeps_the_encoder_on_cpu(t5_dir):
    encoder = TextEncoder.from_pretrained(t5_dir, TextProjection(TEXT_DIM, CONTEXT_DIM), torch.randn(CONTEXT_DIM),
                                          offload=True)
    before = encoder.encode("a lighthouse").context
    assert next(encoder.encoder.parameters()).device.type == "cpu"
    encoder.clear_cache()
    torch.testing.assert_close(encoder.encode("a lighthouse").context, before)


def test_progress_false_hides_the_loading_bar_and_restores_the_setting(t5_dir, capfd):
    import transformers.utils.logging as hf_logging

    hf_logging.enable_progress_bar()
    TextEncoder.from_pretrained(t5_dir, TextProjection(TEXT_DIM, CONTEXT_DIM), torch.randn(CONTEXT_DIM),
                                progress=False)
    assert "Loading" not in capfd.readouterr().err and hf_logging.is_progress_bar_enabled()


def test_long_prompts_are_truncated_with_a_warning(encoder):
    with pytest.warns(UserWarning, match="truncated"):
        context, mask = encoder.encode("x" * 300)
    assert context.shape[1] == 128 and bool(mask.all())


def test_missing_and_non_t5_directories(tmp_path, t5_dir):
    projection, null = TextProjection(TEXT_DIM, CONTEXT_DIM), torch.zeros(CONTEXT_DIM)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextEncoder.from_pretrained(tmp_path / "nowhere", projection, null)
    with pytest.raises(FileNotFoundError, match="config.json"):
        TextEncoder.from_pretrained(tmp_path, projection, null)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="T5-family"):
        TextEncoder.from_pretrained(tmp_path, projection, null)
    with pytest.raises(ValueError, match="projection takes"):
        TextEncoder.from_pretrained(t5_dir, TextProjection(TEXT_DIM * 2, CONTEXT_DIM), null)


@pytest.mark.gpu
def test_gpu_encoder_in_bfloat16_with_offload(t5_dir, encoder):
    gpu = TextEncoder.from_pretrained(t5_dir, TextProjection.from_state_dict(encoder.projection.state_dict()),
                                      encoder.null_embedding.cpu(), device="cuda", offload=True)
    assert next(gpu.encoder.parameters()).dtype == torch.bfloat16
    context, mask = gpu.encode("a red panda")
    assert context.device.type == "cuda" and next(gpu.encoder.parameters()).device.type == "cpu"
    reference = encoder.encode("a red panda").context
    assert float((context.cpu() - reference).norm() / reference.norm()) < 0.05  # bf16 encoder


def test_an_incomplete_folder_is_refused_before_the_weights_load(t5_dir, tmp_path):
    import shutil

    projection, null = TextProjection(TEXT_DIM, CONTEXT_DIM), torch.zeros(CONTEXT_DIM)
    folder = shutil.copytree(t5_dir, tmp_path / "t5")
    (folder / "tokenizer.json").unlink()  # transformers would build an empty default tokenizer: all <unk>
    with pytest.raises(FileNotFoundError, match="has no tokenizer"):
        TextEncoder.from_pretrained(folder, projection, null)
    shutil.copy(t5_dir / "tokenizer.json", folder / "tokenizer.json")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 4 * config["vocab_size"]}))
    with pytest.raises(ValueError, match="its tokenizer has 259 tokens .* vocabulary of 1036"):
        TextEncoder.from_pretrained(folder, projection, null)
