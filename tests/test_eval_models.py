"""Detector networks: official I3D key set, 'SAME' padding, C3D, detector files (TorchScript and state dicts)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from golden_dir import golden_path
from kvideo.eval.c3d import C3D, C3DConfig
from kvideo.eval.detectors import c3d_input, i3d_input, load_c3d_detector, load_i3d_detector
from kvideo.eval.i3d import I3DConfig, InceptionI3d, same_padding
from kvideo.eval.networks import DetectorNetwork
from kvideo.eval.videomae import VideoMAEv2
from kvideo.models.base import Checkpoint
from test_eval_support import tiny_c3d_file, tiny_i3d_file


def meta_i3d(**config) -> InceptionI3d:
    with torch.device("meta"):
        return InceptionI3d(I3DConfig(**config))


def test_official_i3d_has_the_piergiaj_key_set():
    state = meta_i3d().state_dict()
    assert len(state) == 287  # 57 conv+BN units x 5, logits weight + bias; no num_batches_tracked
    assert sum(math.prod(t.shape) for t in state.values()) == 12_711_824
    assert tuple(state["Conv3d_1a_7x7.conv3d.weight"].shape) == (64, 3, 7, 7, 7)
    assert tuple(state["Mixed_5c.b1b.conv3d.weight"].shape) == (384, 192, 3, 3, 3)
    assert tuple(state["Mixed_4b.b3b.bn.running_var"].shape) == (64,)
    assert tuple(state["logits.conv3d.bias"].shape) == (400,)


def test_official_i3d_keys_equal_the_golden_state():
    from safetensors import safe_open

    with safe_open(str(golden_path("i3d.safetensors")), "pt") as handle:
        golden = {k[6:]: tuple(handle.get_slice(k).get_shape()) for k in handle.keys() if k.startswith("state.")}
    assert {k: tuple(v.shape) for k, v in meta_i3d().state_dict().items()} == golden


def test_same_padding_matches_tensorflow():
    assert same_padding(224, 7, 2) == (2, 3)  # TF puts the odd pixel at the back
    assert same_padding(16, 3, 1) == (1, 1)
    assert same_padding(5, 3, 2) == (1, 1)
    assert same_padding(8, 1, 1) == (0, 0)


def test_tiny_i3d_shapes_and_checks():
    torch.manual_seed(0)
    model = InceptionI3d(I3DConfig.preset("tiny")).eval()
    x = torch.rand(2, 3, 16, 64, 64) * 2 - 1
    with torch.no_grad():
        logits, pooled = model(x), model.pooled(x)
    assert logits.shape == (2, 400, 1) and pooled.shape == (2, model.num_features)
    with pytest.raises(ValueError, match="resize the frames"):
        model(torch.zeros(1, 3, 16, 32, 32))
    with pytest.raises(ValueError, match="9 frames"):
        model(torch.zeros(1, 3, 8, 64, 64))


def test_i3d_loads_a_piergiaj_style_pickle(tmp_path):
    torch.manual_seed(0)
    model = InceptionI3d(I3DConfig(num_classes=7, width_divisor=8, input_size=64)).eval()
    state = model.official_state_dict()
    state.update({k.replace("running_var", "num_batches_tracked"): torch.tensor(5) for k in state if "running_var" in k})
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "i3d.pt")
    loaded = InceptionI3d.from_pretrained(tmp_path / "i3d.pt", I3DConfig(num_classes=7, width_divisor=8, input_size=64))
    x = torch.rand(1, 3, 16, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert InceptionI3d.read_checkpoint(tmp_path / "i3d.pt").state.keys() == model.state_dict().keys()


def test_c3d_shapes_and_chainer_files(tmp_path):
    torch.manual_seed(0)
    model = C3D(C3DConfig.preset("tiny")).eval()
    arrays = {f"{n}/{'W' if p == 'weight' else 'b'}": t.detach().numpy() for n, m in model.named_children()
              for p, t in m.named_parameters()}
    np.savez(tmp_path / "c3d.npz", **arrays)
    mean = np.random.default_rng(0).uniform(80, 120, size=(3, 1, 16, 128, 171)).astype(np.float32)
    np.savez(tmp_path / "mean.npz", mean=mean)
    loaded = C3D.from_chainer(tmp_path / "c3d.npz", tmp_path / "mean.npz")
    torch.testing.assert_close(loaded.mean, torch.from_numpy(mean[:, 0, :, 8:120, 29:141]))
    x = torch.rand(2, 3, 16, 112, 112) * 255
    with torch.no_grad():
        model.mean.copy_(loaded.mean)
        torch.testing.assert_close(loaded(x), model(x))
        assert loaded.probabilities(x).sum(-1).allclose(torch.ones(2))


def test_preprocessing_conventions():
    clips = torch.full((1, 3, 16, 48, 64), 255, dtype=torch.uint8)
    clips[:, 0] = 0  # red channel 0
    x = i3d_input(clips)
    assert x.shape == (1, 3, 16, 224, 224)  # bilinear weights may leave round-off: compare to 1e-5
    assert torch.allclose(x[:, 0], torch.tensor(-1.0), atol=1e-5)
    assert torch.allclose(x[:, 1:], torch.tensor(1.0), atol=1e-5)
    y = c3d_input(clips)  # BGR: red is the last channel; 128 * x + 128
    assert y.shape == (1, 3, 16, 112, 112)
    assert torch.allclose(y[:, 2], torch.tensor(0.0), atol=1e-3)
    assert torch.allclose(y[:, :2], torch.tensor(256.0), atol=1e-3)


class ScriptedI3D(torch.nn.Module):
    """A stand-in for StyleGAN-V's i3d_torchscript.pt (same call signature)."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        assert x.dtype == torch.uint8 and rescale and resize and return_features
        return x.float().mean(dim=(2, 3, 4)).repeat(1, 2)


def test_torchscript_detector_is_called_as_stylegan_v_does(tmp_path):
    torch.jit.script(ScriptedI3D()).save(str(tmp_path / "i3d_torchscript.pt"))
    with pytest.raises(ValueError, match="--trust-detector"):  # not a published file: its code does not run
        load_i3d_detector(tmp_path / "i3d_torchscript.pt")
    detector = load_i3d_detector(tmp_path / "i3d_torchscript.pt", trust=True)
    clips = torch.randint(0, 255, (2, 3, 16, 20, 24), dtype=torch.uint8)
    assert detector.kind == "torchscript" and len(detector.sha256) == 64
    torch.testing.assert_close(detector.run(clips), clips.float().mean(dim=(2, 3, 4)).repeat(1, 2))


def test_state_dict_detectors_and_bad_files(tmp_path):
    i3d = load_i3d_detector(tiny_i3d_file(tmp_path / "i3d.safetensors"))
    c3d = load_c3d_detector(tiny_c3d_file(tmp_path / "c3d.safetensors"))
    clips = torch.randint(0, 255, (2, 3, 16, 48, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert i3d.run(clips).shape == (2, 400)
        assert c3d.run(clips).sum(-1).allclose(torch.ones(2, dtype=torch.float32))
    with pytest.raises(FileNotFoundError, match="i3d_torchscript.pt"):
        load_i3d_detector(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="c3d_ucf101.pt"):
        load_c3d_detector(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="not .*I3D|c3d"):
        load_i3d_detector(tmp_path / "c3d.safetensors")
    torch.save({"conv1a.weight": torch.zeros(1)}, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="C3D"):
        load_c3d_detector(tmp_path / "broken.pt")


def test_trusted_unknown_torchscript_needs_its_range_for_prepared_frames(tmp_path):
    from kvideo.eval.protocol import FVDProtocol, detector_runner

    torch.jit.script(ScriptedI3D()).save(str(tmp_path / "mine.pt"))
    detector = load_i3d_detector(tmp_path / "mine.pt", trust=True)
    assert detector_runner(detector, FVDProtocol.preset("fvd-styleganv")) is detector.run  # it rescales itself
    with pytest.raises(ValueError, match="--detector-range"):
        detector_runner(detector, FVDProtocol.preset("fvd-tf"))
    stated = load_i3d_detector(tmp_path / "mine.pt", trust=True, input_range=(-1.0, 1.0))
    assert detector_runner(stated, FVDProtocol.preset("fvd-tf")) is stated.run_prepared


@pytest.mark.parametrize("cls", [InceptionI3d, C3D, VideoMAEv2])
def test_the_detectors_share_one_from_checkpoint_that_reads_the_config_from_the_weights(cls):
    torch.manual_seed(0)
    tiny = cls(cls.config_class.preset("tiny")).eval()
    model = cls.from_checkpoint(Checkpoint(tiny.state_dict()))
    assert issubclass(cls, DetectorNetwork) and "from_checkpoint" not in vars(cls)
    assert model.config == cls.config_class.from_state_dict(tiny.state_dict())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tiny.state_dict().items())
