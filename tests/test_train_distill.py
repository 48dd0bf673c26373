"""Step distillation (`kvideo train distill`): grids, the target's math, runs that resume exactly, bad input, export."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from kvideo.checkpoint import CheckpointError
from kvideo.diffusion import cosine_schedule, distillation_x0, q_sample
from kvideo.errors import BadInputError
from kvideo.models.unet import UNet
from kvideo.train import checkpointing as ckpt
from kvideo.train.config import TrainConfig
from kvideo.train.distill import DistillBatch, check_nested, distillation_loss, step_grids
from kvideo.train.seeding import seeded_generator
from kvideo.train.trainer import train
from test_train_helpers import (  # noqa: F401 (fixtures)
    CONTEXT_DIM, keyframe_setup, make_cache, one_thread, save_unet, tiny_movq, videos,
)

FULL = cosine_schedule(1000)  # the schedule the trailing grids are points of


def distill_config(tmp, kind: str = "keyframe", **values) -> TrainConfig:
    base = dict(output_dir=str(tmp / "run"), steps=4, save_every=2, progress=False, tensorboard=False)
    return TrainConfig.preset(f"tiny-distill-{kind}", **(base | values))


@pytest.fixture(scope="module")
def interpolation_setup(tmp_path_factory, videos):
    folder = tmp_path_factory.mktemp("interpolation")
    return (make_cache(folder / "cache", videos, task="interpolation"),
            save_unet(folder / "unet.safetensors", kind="interpolation"))


# -- grids and the target --------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2, 5, 12, 25])
def test_the_students_trailing_grid_is_every_other_point_of_the_teachers(steps):
    student, teacher = step_grids(steps)
    assert torch.equal(student.alphas_cumprod, teacher.alphas_cumprod[1::2])
    assert torch.equal(student.timesteps, teacher.timesteps[1::2]) and int(student.timesteps[-1]) == 999


def test_grids_that_do_not_nest_are_refused():
    with pytest.raises(ValueError, match="not every other point of the teacher's 24-step grid"):
        check_nested(cosine_schedule(12, spacing="trailing"), cosine_schedule(24, spacing="leading"))
    with pytest.raises(ValueError, match="a 12-step student needs a 24-step teacher"):
        check_nested(cosine_schedule(12, spacing="trailing"), cosine_schedule(25, spacing="trailing"))


def test_the_target_of_exact_teacher_steps_is_the_clean_latent():
    student, _ = step_grids(6)
    x0, noise = torch.randn(2, 4, 3, 8, 8, dtype=torch.float64), torch.randn(2, 4, 3, 8, 8, dtype=torch.float64)
    for j in range(6):  # DDIM with the true x0 stays on x_t = a·x0 + s·noise, so the target is x0 itself
        x_t, x_next = q_sample(x0, j, student, noise), (q_sample(x0, j - 1, student, noise) if j else x0)
        assert torch.allclose(distillation_x0(x_t, x_next, j, student), x0, atol=1e-9), j


def oracle(x0: torch.Tensor, noise: torch.Tensor, prediction: str):
    """model(x, time) that predicts, at any model time of the 1000-step schedule, the eps / v of x0 and noise."""
    def model(x, time):
        a = FULL.alphas_cumprod[time.long()].float().sqrt().reshape(-1, 1, 1, 1, 1)
        s = (1 - a**2).sqrt()
        return noise * a - x0 * s if prediction == "v" else noise
    return model


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_a_student_that_predicts_the_clean_latent_has_no_loss_when_the_teacher_does(prediction):
    student, teacher = step_grids(4)
    x0 = torch.randn(5, 4, 2, 8, 8)
    draw = seeded_generator(11)
    torch.randint(4, (5,), generator=draw)
    noise = torch.randn(x0.shape, generator=draw)  # the noise the loss draws after its step indices

    def teacher_for(rows):
        return oracle(x0[rows], noise[rows], prediction)

    exact = DistillBatch(x0, oracle(x0, noise, prediction), teacher_for)
    kwargs = dict(student_grid=student, teacher_grid=teacher, prediction=prediction)
    assert float(distillation_loss(exact, seeded_generator(11), **kwargs)) < 1e-9
    wrong = DistillBatch(x0, lambda x, time: oracle(x0, noise, prediction)(x, time) + 0.1, teacher_for)
    assert abs(float(distillation_loss(wrong, seeded_generator(11), **kwargs)) - 0.01) < 1e-5


def test_the_teacher_is_guided_and_the_student_is_not():
    from kvideo.text import null_context
    from kvideo.train.distill import interpolation_batch, keyframe_batch

    def unet(x, time, context, mask, **kwargs):  # depends on the input, the context and the time, row by row
        scale = 1 + context.sum(dim=(1, 2)) + time  # (b,)
        shift = x[:, :4].mean(dim=(1, 2, 3, 4))  # (b,): the left keyframes of an interpolation input
        return x * scale[:, None, None, None, None] + shift[:, None, None, None, None]

    null_embedding, x, time, rows = torch.randn(CONTEXT_DIM), torch.randn(3, 4, 2, 4, 4), torch.tensor([5, 5, 5]), \
        torch.tensor([True, False, True])
    text = {"latents": torch.randn(3, 4, 2, 4, 4), "step": torch.tensor([12, 12, 12]),
            "context": torch.randn(3, 5, CONTEXT_DIM), "context_mask": torch.ones(3, 5, dtype=torch.bool)}
    pair = keyframe_batch(unet, unet, text, null_embedding=null_embedding, guidance=5.0)
    cond = unet(x, time, text["context"], text["context_mask"])
    uncond = unet(x, time, *null_context(null_embedding, 3, 5))
    assert torch.equal(pair.student(x, time), cond)
    assert torch.allclose(pair.teacher(rows)(x[rows], time[rows]), (6 * cond - 5 * uncond)[rows], atol=1e-5)

    clip = {"latents": torch.randn(3, 4, 9, 4, 4), "step": torch.tensor([1, 2, 1])}  # 3 keyframes, 3 between each
    pair = interpolation_batch(unet, unet, clip, null_embedding=null_embedding, guidance=0.25, between=3)
    keyframes = clip["latents"][:, :, ::4]
    middle = torch.randn(3, 12, 2, 4, 4)
    context = null_context(null_embedding, 3, 2)
    cond = unet(torch.cat([keyframes[:, :, :-1], middle, keyframes[:, :, 1:]], dim=1), time, *context)
    uncond = unet(torch.cat([torch.zeros(3, 4, 2, 4, 4), middle, torch.zeros(3, 4, 2, 4, 4)], dim=1), time, *context)
    assert pair.x0.shape == (3, 12, 2, 4, 4) and torch.equal(pair.student(middle, time), cond)
    assert torch.allclose(pair.teacher(rows)(middle[rows], time[rows]), (1.25 * cond - 0.25 * uncond)[rows],
                          atol=1e-5)


# -- runs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["keyframe", "interpolation"])
def test_distill_runs_and_resumes_to_the_uninterrupted_result(kind, keyframe_setup, interpolation_setup, tmp_path):
    cache, teacher = keyframe_setup if kind == "keyframe" else interpolation_setup
    values = dict(teacher=str(teacher), data=str(cache), batch_size=2)
    whole = train(distill_config(tmp_path / "a", kind, **values))
    train(distill_config(tmp_path / "b", kind, steps=2, **values))  # stopped after its first checkpoint
    resumed = train(distill_config(tmp_path / "b", kind, resume="latest", **values))
    assert whole.step == resumed.step == 4 and whole.weights.name == "distill-all.safetensors"
    a, extras, info = ckpt.read_weights(whole.weights)
    b, _, _ = ckpt.read_weights(resumed.weights)
    assert (info.task, info.weights, ckpt.pipeline_task(info)) == ("distill", "all", kind)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    before = UNet.from_pretrained(teacher).state_dict()
    assert any(not torch.equal(before[k], a[k]) for k in a) and "null_embedding" in extras
    assert whole.last_loss == resumed.last_loss and math.isfinite(whole.last_loss)


def test_the_exported_student_loads_into_the_pipeline_and_samples_unguided(tmp_path, keyframe_setup):
    from kvideo import KVideoPipeline

    cache, _ = keyframe_setup
    pipeline = KVideoPipeline.from_preset("tiny", progress=False)
    teacher = tmp_path / "teacher.safetensors"
    pipeline.unet.save_pretrained(teacher, extras={"null_embedding": torch.randn(CONTEXT_DIM)})
    result = train(distill_config(tmp_path, teacher=str(teacher), data=str(cache), steps=1))
    ckpt.load_into_pipeline(pipeline, result.weights)
    trained, _, _ = ckpt.read_weights(result.weights)
    state = pipeline.unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items())
    clip = pipeline("a red square moving right", width=64, height=64, fps="low", num_frames=2, seed=0,
                    guidance_scale=0.0, steps=2, sampler="ddim", timestep_spacing="trailing")
    assert clip.frames.shape == (2, 64, 64, 3) and torch.isfinite(clip.latents).all()


# -- bad input -------------------------------------------------------------------------------------
def distill_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvideo", "train", "distill", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def test_distill_without_its_teacher_is_one_line_before_any_work(keyframe_setup, tmp_path):
    cache, _ = keyframe_setup
    common = ("--preset", "tiny-distill-keyframe", "--data", str(cache), "--output-dir", str(tmp_path / "run"))
    result = distill_cli(*common)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvideo train distill: error: no --teacher given")
    assert "kvideo recipe shapes OUT" in lines[0] and "kvideo train keyframe" in lines[0]
    missing = tmp_path / "keyframe_unet.safetensors"
    result = distill_cli(*common, "--teacher", str(missing))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kvideo train distill: error: teacher {str(missing)!r} does not exist")
    assert "kvideo recipe shapes OUT" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_teacher_that_is_no_keyframe_or_interpolation_unet_is_refused(keyframe_setup, tmp_path):
    cache, _ = keyframe_setup
    movq = tmp_path / "movq.safetensors"
    tiny_movq().save_pretrained(movq)
    with pytest.raises(CheckpointError, match="--teacher: .*movq.*not a unet.*keyframe or interpolation UNet"):
        train(distill_config(tmp_path, teacher=str(movq), data=str(cache)))
    image = save_unet(tmp_path / "image.safetensors", kind="image")
    with pytest.raises(BadInputError, match="release-1.0 image UNet; distill takes"):
        train(distill_config(tmp_path, teacher=str(image), data=str(cache)))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("values, needle", [
    (dict(student_steps=0), "student_steps=0 must lie in 1..500"),
    (dict(student_steps=501), "student_steps=501"),
    (dict(model="unet.safetensors"), "starts the student from --teacher"),
])
def test_bad_distill_settings_are_refused(values, needle, tmp_path):
    with pytest.raises(ValueError, match=needle):
        distill_config(tmp_path, **values)
    with pytest.raises(ValueError, match="read by task='distill' only"):
        TrainConfig.preset("tiny-keyframe", teacher="unet.safetensors")
