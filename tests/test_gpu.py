"""CUDA paths on tiny random models: dtypes, offload, device parity, batched decoding, a training step.

Every test here needs a GPU and is skipped (with the reason shown) where none is available; CI has none.
"""
import pytest
import torch

from kvideo import attention
from kvideo.diffusion import cosine_schedule
from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.unet import UNet, UNetConfig
from kvideo import KVideoPipeline
from kvideo.train.keyframe import keyframe_loss

pytestmark = pytest.mark.gpu
QUICK = dict(steps=2, interpolation_steps=2, width=64, height=64, sampler="ddim", interpolation_sampler="ddim")


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm())


@pytest.fixture
def no_tf32():
    """Plain fp32 on the GPU: cuDNN convolutions use TF32 (10-bit mantissa) by default."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_fp32_on_the_gpu_gives_the_cpu_clip(no_tf32):
    """Seeds drive CPU generators, so a seed gives the same clip on the GPU as on the CPU (to round-off)."""
    cpu = KVideoPipeline.from_preset("tiny", seed=0, progress=False)
    gpu = KVideoPipeline.from_preset("tiny", seed=0, progress=False, device="cuda")
    gpu_out = gpu("a cat", fps="medium", seed=3, **QUICK)
    cpu_out = cpu("a cat", fps="medium", seed=3, **QUICK)
    assert gpu_out.frames.shape == cpu_out.frames.shape == (57, 64, 64, 3)
    # different kernels sum in different orders; a different seed is ~1.3 away
    assert relative_l2(gpu_out.latents, cpu_out.latents) < 1e-3


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_and_offload_on_the_gpu(dtype):
    plain = KVideoPipeline.from_preset("tiny", seed=0, progress=False, device="cuda", dtype=dtype)
    offloaded = KVideoPipeline.from_preset("tiny", seed=0, progress=False, device="cuda", dtype=dtype,
                                           offload="model")
    assert next(offloaded.unet.parameters()).device.type == "cpu"
    a = plain("a cat", fps="medium", seed=1, **QUICK)
    b = offloaded("a cat", fps="medium", seed=1, **QUICK)
    assert torch.isfinite(a.latents).all() and a.frames.shape == (57, 64, 64, 3)
    assert torch.equal(a.latents, b.latents)
    assert next(offloaded.unet.parameters()).device.type == "cpu"  # moved back after its stage


def test_sdpa_and_math_attention_agree_in_bf16():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 77, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mask = torch.ones(2, 77, dtype=torch.bool, device="cuda")
    mask[1, 40:] = False
    fast = attention.attention(q, k, v, mask)
    with attention.backend("math"):
        slow = attention.attention(q, k, v, mask)
    assert relative_l2(fast, slow) < 1e-2


def test_bf16_video_decoding_agrees_with_fp32_on_the_gpu():
    torch.manual_seed(0)
    with torch.device("cuda"):
        movq = MoVQ(MoVQConfig.preset("tiny-video")).eval()
    latents = torch.randn(1, movq.config.latent_channels, 9, 8, 8, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        batched = movq.decode(latents)
    with torch.no_grad():
        full = movq.decode(latents)
    assert batched.shape == full.shape and torch.isfinite(batched).all()
    assert relative_l2(batched, full) < 5e-2


def test_a_bf16_temporal_training_step_updates_only_temporal_weights():
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet(UNetConfig.preset("tiny-keyframe"))
    unet.freeze_spatial()
    unet.set_gradient_checkpointing(True)
    unet.train()
    cfg = unet.config
    trained = {name: p.detach().clone() for name, p in unet.named_parameters() if p.requires_grad}
    frozen = {name: p.detach().clone() for name, p in unet.named_parameters() if not p.requires_grad}
    assert trained and frozen
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-3)
    batch = {
        "latents": torch.randn(2, cfg.latent_channels, 4, 8, 8, device="cuda"),
        "context": torch.randn(2, 8, cfg.context_dim, device="cuda"),
        "context_mask": torch.ones(2, 8, dtype=torch.bool, device="cuda"),
        "step": torch.full((2,), cfg.frame_stride, device="cuda"),
    }
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = keyframe_loss(unet, batch, torch.Generator().manual_seed(0), schedule=cosine_schedule(1000),
                             null_embedding=torch.zeros(cfg.context_dim, device="cuda"), uncond_prob=0.1)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    params = dict(unet.named_parameters())
    assert any(not torch.equal(params[name], before) for name, before in trained.items())
    assert all(torch.equal(params[name], before) for name, before in frozen.items())
