"""Content-debiased FVD: the VideoMAE-v2 ViT against a plain re-implementation written here, the official key
layout, loading an OpenGVLab-layout pickle, its frame geometry, and `kvideo eval fvd --protocol fvd-videomae`."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from kvideo.cli import main
from kvideo.eval.detectors import load_videomae_detector
from kvideo.eval.preprocess import prepare_clip
from kvideo.eval.protocol import FVDProtocol
from kvideo.eval.videomae import VideoMAEConfig, VideoMAEv2
from test_eval_protocols import SHAPES, bilinear_half_pixel, random_clip
from test_eval_support import make_generated, make_ucf101


def reference_features(state: dict, x: torch.Tensor, heads: int, eps: float = 1e-6) -> torch.Tensor:
    """VideoMAE-v2 forward_features from the state dict alone (explicit softmax attention, NumPy positions)."""
    weight = state["patch_embed.proj.weight"]
    tokens = torch.nn.functional.conv3d(x, weight, state["patch_embed.proj.bias"], stride=weight.shape[2:])
    tokens = tokens.flatten(2).transpose(1, 2)  # (b, n, d)
    n, d = tokens.shape[1:]
    angles = np.array([[p / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for p in range(n)])
    angles[:, 0::2], angles[:, 1::2] = np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])
    tokens = tokens + torch.tensor(angles, dtype=torch.float32)
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        p = {k[len(f"blocks.{i}."):]: v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        h = torch.nn.functional.layer_norm(tokens, (d,), p["norm1.weight"], p["norm1.bias"], eps)
        bias = torch.cat([p["attn.q_bias"], torch.zeros_like(p["attn.v_bias"]), p["attn.v_bias"]])
        qkv = (h @ p["attn.qkv.weight"].T + bias).reshape(h.shape[0], n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        attn = ((qkv[0] * (d // heads) ** -0.5) @ qkv[1].transpose(-2, -1)).softmax(-1)
        out = (attn @ qkv[2]).transpose(1, 2).reshape(h.shape[0], n, d)
        tokens = tokens + out @ p["attn.proj.weight"].T + p["attn.proj.bias"]
        h = torch.nn.functional.layer_norm(tokens, (d,), p["norm2.weight"], p["norm2.bias"], eps)
        h = torch.nn.functional.gelu(h @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"])
        tokens = tokens + h @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
    return torch.nn.functional.layer_norm(tokens.mean(1), (d,), state["fc_norm.weight"], state["fc_norm.bias"], eps)


def randomized(model: VideoMAEv2, seed: int = 0) -> VideoMAEv2:
    torch.manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(torch.randn_like(tensor) * 0.3)
    return model.eval()


def test_tiny_model_equals_the_reference_forward():
    config = VideoMAEConfig.preset("tiny")
    model = randomized(VideoMAEv2(config))
    x = torch.rand(2, 3, config.num_frames, config.image_size, config.image_size)
    with torch.no_grad():
        got = model.features(x)
        expected = reference_features(model.state_dict(), x, config.num_heads)
        logits = model(x)
    assert got.shape == (2, config.embed_dim) and logits.shape == (2, config.num_classes)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="VideoMAE-v2 takes"):
        model.features(torch.rand(1, 3, config.num_frames, 32, 32))


def test_official_layout_is_vit_g_14_with_the_ssv2_head():
    with torch.device("meta"):
        state = VideoMAEv2(VideoMAEConfig.preset("official")).state_dict()
    d, hidden = 1408, int(1408 * 48 / 11)
    assert hidden == 6144 and VideoMAEConfig().mlp_dim == hidden
    assert tuple(state["patch_embed.proj.weight"].shape) == (d, 3, 2, 14, 14)
    assert tuple(state["blocks.39.mlp.fc1.weight"].shape) == (hidden, d) and "blocks.40.norm1.weight" not in state
    assert tuple(state["blocks.0.attn.qkv.weight"].shape) == (3 * d, d) and "blocks.0.attn.qkv.bias" not in state
    assert tuple(state["head.weight"].shape) == (174, d) and tuple(state["fc_norm.bias"].shape) == (d,)
    per_block = 4 * d + 3 * d * d + 2 * d + d * d + d + hidden * d + hidden + d * hidden + d
    expected = d * 3 * 2 * 14 * 14 + d + 40 * per_block + 2 * d + 174 * d + 174
    assert sum(math.prod(t.shape) for t in state.values()) == expected  # about 1.01 billion
    assert VideoMAEConfig.from_state_dict(state) == VideoMAEConfig.preset("official")


def test_an_opengvlab_layout_pickle_loads_and_gives_the_reference_features(tmp_path):
    config = VideoMAEConfig(embed_dim=32, depth=2, mlp_dim=40, num_classes=7)  # official geometry and heads, narrow
    model = randomized(VideoMAEv2(config), seed=1)
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "vit_g_like.pth")
    detector = load_videomae_detector(tmp_path / "vit_g_like.pth")
    assert detector.model.config == config and detector.convention.name == "videomae-v2 (other weights)"
    clips = torch.randint(0, 256, (1, 3, 16, 224, 224), dtype=torch.uint8)
    with torch.no_grad():
        got = detector.run_prepared(clips)
        expected = reference_features(model.state_dict(), clips.float() / 255, config.num_heads)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.save({"model": {"not": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="VideoMAE"):
        load_videomae_detector(tmp_path / "other.pth")


@pytest.mark.parametrize("h, w", SHAPES)
def test_videomae_geometry_is_a_bilinear_squash_to_224(h, w):
    clip = random_clip(h, w, f=2)
    expected = np.stack([bilinear_half_pixel(frame.astype(np.float64), 224, 224) for frame in clip])
    got = prepare_clip(clip, "bilinear-squash", 224).permute(1, 2, 3, 0).double().numpy()
    np.testing.assert_allclose(got, expected, atol=5e-3)  # float32 arithmetic on values up to 255


def test_fvd_videomae_end_to_end(tmp_path):
    protocol = FVDProtocol.preset("fvd-videomae")
    assert (protocol.geometry, protocol.size, protocol.covariance_ddof, protocol.features) == (
        "bilinear-squash", 224, 0, "videomae-v2")
    weights = tmp_path / "videomae_tiny.safetensors"
    randomized(VideoMAEv2(VideoMAEConfig.preset("tiny"))).save_pretrained(weights)
    real, fake = make_ucf101(tmp_path / "ucf"), make_generated(tmp_path / "fake", num_videos=6)
    out = tmp_path / "fvd.json"
    assert main(["eval", "fvd", "--protocol", "fvd-videomae", "--real", str(real), "--fake", str(fake),
                 "--detector", str(weights), "--num-videos", "6", "--num-frames", "4", "--allow-fewer", "--quiet",
                 "--report", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["protocol"]["name"] == "fvd-videomae" and report["value"] > 0
    assert report["protocol"]["changed_from_preset"] == {"num_frames": 4, "num_videos": 6}
    assert report["detector"]["convention"]["input_range"] == [0.0, 1.0] and not report["comparability"]["comparable"]
