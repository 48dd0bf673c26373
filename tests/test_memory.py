"""Memory at official size, on tiny models: the int8 weight-only linear layer, the int8 T5 text encoder, the staged
text encoder, and staged loading (offload="disk": every model read from its file at its stage, freed after)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kvideo.cli import main
from kvideo.generation import KVideo11Pipeline, KVideoPipeline
from kvideo.quantize import Int8Linear, is_quantized, quantize_linears, quantize_weight, weight_bytes
from kvideo.text import TextEncoder, TextProjection, write_tiny_t5
from test_kv11_pipeline import write_kv11_folder
from test_pipeline import write_tiny_weights

QUICK = dict(steps=2, interpolation_steps=1, fps="medium", num_frames=2, width=64, height=64)


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


# -- the int8 linear layer --------------------------------------------------------------------------
def test_quantized_weights_are_within_half_a_step_of_the_float_ones():
    weight = torch.randn(48, 40) * torch.logspace(-3, 1, 48)[:, None]  # rows of very different sizes
    weight[5] = 0.0
    original = weight.clone()
    q, scale = quantize_weight(weight)
    assert torch.equal(weight, original)  # the float weight is left as it was
    assert q.dtype == torch.int8 and scale.shape == (48,) and int(q.abs().max()) == 127
    assert torch.equal(q[5], torch.zeros(40, dtype=torch.int8)) and scale[5] == 1.0
    error = (q.float() * scale[:, None] - weight).abs()
    assert bool((error <= scale[:, None] / 2 * (1 + 1e-6)).all())
    assert torch.equal(q.abs().amax(dim=1)[weight.abs().amax(dim=1) > 0], torch.full((47,), 127, dtype=torch.int8))


def test_int8_linear_computes_with_its_dequantized_weight():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(3, 5, 64)
    assert torch.allclose(layer(x), F.linear(x, layer.dequantized(), linear.bias), atol=1e-5)
    assert relative_l2(layer(x), linear(x)) < 1e-2  # 8 bits of a Gaussian row: ~0.5 % of its size
    assert layer.weight.dtype == torch.int8 and layer(x.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="float"):
        quantize_weight(torch.ones(3, 4, dtype=torch.int8))


def test_quantize_linears_replaces_every_linear_and_quarters_their_memory():
    model = nn.Sequential(nn.Linear(256, 512, bias=False), nn.GELU(), nn.Sequential(nn.Linear(512, 256)))
    before = weight_bytes(model)
    assert quantize_linears(model) == 2 and quantize_linears(model) == 0  # once
    assert is_quantized(model) and not any(type(m) is nn.Linear for m in model.modules())
    # int8 weights plus a float32 scale per output channel (and the float bias)
    assert weight_bytes(model) == 2 * 256 * 512 + 4 * (512 + 256) + 4 * 256 < before / 3.9


# -- the int8 text encoder --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    return write_tiny_t5(tmp_path_factory.mktemp("t5") / "text_encoder", d_model=32)


def encoder_from(folder, **kwargs) -> TextEncoder:
    torch.manual_seed(0)
    projection = TextProjection(32, 24)
    return TextEncoder.from_pretrained(folder, projection, torch.randn(24), progress=False, **kwargs)


def test_an_int8_text_encoder_gives_the_float_context_within_a_bound(t5_folder):
    float_text, int8_text = encoder_from(t5_folder), encoder_from(t5_folder, int8=True)
    assert int8_text.int8 and not float_text.int8
    linears = [m for m in int8_text.encoder.modules() if isinstance(m, Int8Linear)]
    assert linears and all(m.weight.dtype == torch.int8 for m in linears)
    assert int8_text.encoder.shared.weight.dtype == torch.float32  # the rest computes in the asked dtype (CPU: fp32)
    prompts = ["a red circle moving left", "a green square moving up on a white background"]
    fp32, int8 = float_text.encode(prompts), int8_text.encode(prompts)
    assert torch.equal(fp32.mask, int8.mask)
    error = relative_l2(int8.context, fp32.context)
    assert 0 < error < 0.03, error  # measured 0.0077 on this tiny random encoder (flan-ul2 width: benchmarks)
    float_linears = sum(weight_bytes(m) for m in float_text.encoder.modules() if type(m) is nn.Linear)
    assert sum(weight_bytes(m) for m in linears) < 0.3 * float_linears  # int8 + a float scale per row


def test_a_staged_text_encoder_holds_no_weights_between_encodings(t5_folder, monkeypatch):
    text, staged = encoder_from(t5_folder), encoder_from(t5_folder, staged=True)
    assert all(p.is_meta for p in staged.encoder.parameters())
    loads = []
    real = staged._reload
    monkeypatch.setattr(staged, "_reload", lambda int8: loads.append(int8) or real(int8))
    assert torch.equal(staged.encode("a cat").context, text.encode("a cat").context)
    assert staged.encode("a cat") is not None and loads == [False]  # the second time from the context cache
    staged.quantize_int8()
    staged.encode("a dog")
    assert loads == [False, True] and all(p.is_meta for p in staged.encoder.parameters())


def test_int8_where_there_is_nothing_to_quantize_is_one_line():
    class Embedder(nn.Module):
        config = type("Config", (), {"d_model": 8})

        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(300, 8)

    text = TextEncoder(Embedder(), None, TextProjection(8, 4), torch.zeros(4))
    with pytest.raises(ValueError, match="no float nn.Linear layers") as caught:
        text.quantize_int8()
    assert len(str(caught.value).splitlines()) == 1 and not text.int8


def test_text_encoder_int8_as_a_call_option_and_at_load(tmp_path):
    pipe = KVideoPipeline.from_preset("tiny", seed=0, progress=False)
    plain = pipe("a cat", seed=1, **QUICK)
    context = pipe.text_encoder.encode("a cat").context
    assert not is_quantized(pipe.text_encoder.encoder)
    quantized = pipe("a cat", seed=1, text_encoder_int8=True, **QUICK)
    assert is_quantized(pipe.text_encoder.encoder)
    assert 0 < relative_l2(pipe.text_encoder.encode("a cat").context, context) < 0.03  # not the cached context
    assert not torch.equal(quantized.latents, plain.latents)
    assert torch.equal(pipe("a cat", seed=1, **QUICK).latents, quantized.latents)  # it stays int8
    write_tiny_weights(tmp_path)
    loaded = KVideoPipeline.from_pretrained(tmp_path, progress=False, text_encoder_int8=True)
    assert is_quantized(loaded.text_encoder.encoder) and loaded.options().text_encoder_int8


# -- staged loading -----------------------------------------------------------------------------------
def is_meta(model: nn.Module) -> bool:
    return all(t.is_meta for t in [*model.parameters(), *model.buffers()])


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    write_tiny_weights(folder)
    return folder


def test_staged_loading_holds_one_model_at_a_time_and_gives_the_same_clip(tiny_folder):
    pipe = KVideoPipeline.from_pretrained(tiny_folder, progress=False)
    staged = KVideoPipeline.from_pretrained(tiny_folder, progress=False, offload="disk")
    models = {"keyframes": staged.unet, "interpolation": staged.interpolation_unet}
    assert all(is_meta(m) for m in (*models.values(), staged.decoder, staged.text_encoder.encoder))
    seen = set()

    def check(stage, info):  # during a sampling stage, only that stage's model holds weights
        name = stage.split()[0]
        assert not is_meta(models[name]) and all(is_meta(m) for n, m in models.items() if n != name)
        assert is_meta(staged.decoder) and is_meta(staged.text_encoder.encoder)
        seen.add(name)

    clip = staged("a cat", seed=3, callback=check, **QUICK)
    assert seen == set(models)
    assert all(is_meta(m) for m in (*models.values(), staged.decoder))  # freed after their stages
    assert torch.equal(clip.latents, pipe("a cat", seed=3, **QUICK).latents)
    assert (clip.frames == pipe("a cat", seed=3, **QUICK).frames).all()


def test_staged_loading_refuses_weights_that_would_be_lost(tiny_folder):
    staged = KVideoPipeline.from_pretrained(tiny_folder, progress=False, offload="disk")
    with pytest.raises(ValueError, match="offload='disk'"):
        staged.unet.load_state_dict(staged.weight_files["unet"]())
    with pytest.raises(ValueError, match="offload='disk' reads each model from its file"):
        KVideoPipeline.from_preset("tiny", progress=False, offload="disk")


def test_staged_loading_of_a_release_11_folder(tmp_path):
    write_kv11_folder(tmp_path)
    pipe = KVideo11Pipeline.from_pretrained(tmp_path, progress=False)
    staged = KVideo11Pipeline.from_pretrained(tmp_path, progress=False, offload="disk")
    assert is_meta(staged.movq) and is_meta(staged.unet)
    quick = dict(steps=1, interpolation_steps=1, first_frame_steps=1, fps="low", num_frames=2, width=64, height=64)
    assert torch.equal(staged("a cat", seed=2, **quick).latents, pipe("a cat", seed=2, **quick).latents)
    assert is_meta(staged.movq) and is_meta(staged.decoder)


def test_cli_offload_disk_and_its_refusal_with_trained_weights(tiny_folder, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    args = ["generate", "a cat", "-o", str(out), "--weights", str(tiny_folder), "--fps", "low", "--steps", "1",
            "--frames", "2", "--quiet"]
    assert main([*args, "--offload", "disk", "--text-encoder-int8"]) == 0 and out.exists()
    trained = tmp_path / "trained.safetensors"
    trained.write_bytes(b"")
    code = main([*args, "--offload", "disk", "--temporal-weights", str(trained), "-o", str(tmp_path / "b.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--offload disk" in err[0], err

