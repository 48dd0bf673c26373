"""Progressive step distillation with the teacher's guidance folded in (`kvideo train distill`).

A student UNet, started from its teacher's weights, learns to take in one DDIM step what the frozen
teacher takes in two, guided (Salimans & Ho 2022, "Progressive distillation for fast sampling of
diffusion models"; Meng et al. 2023, "On distillation of guided diffusion models"). The student then
samples N trailing DDIM steps with guidance scale 0 (one UNet pass a step) where the teacher took 2N
guided ones (two passes a step).

For a student step from grid point j to j - 1 (alpha, sigma = a, s at j and a', s' at j - 1): the
teacher steps x_t -> x_mid -> x_next over the two points of its grid between them; the target x0~ is
the clean latent for which one DDIM step of the student lands on x_next,

    x_next = a'·x0~ + s'·(x_t - a·x0~) / s   =>   x0~ = (x_next - (s'/s)·x_t) / (a' - (s'/s)·a),

and x0~ = x_next on the last step (to clean). The student's loss is the MSE of its prediction (eps or v)
to the one x0~ implies.
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from kvideo.diffusion import (
    KeyframeGuidance, Schedule, TextGuidance, X0Denoiser, cosine_schedule, ddim_step, diffusion_mse,
    distillation_x0, prediction_from_x0, q_sample,
)
from kvideo.errors import BadInputError, CheckpointError
from kvideo.models.unet import UNet, UNetConfig
from kvideo.text import null_context
from kvideo.train.cache import LatentCache, collate_cached
from kvideo.train.config import DISTILL_KINDS, TrainConfig
from kvideo.train.interpolation import CONTEXT_TOKENS, interpolation_inputs, split_clip
from kvideo.train.keyframe import check_cache
from kvideo.train.task import Task, select_trainable, unet_from_checkpoint, unet_shard_types

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # model(x, time) -> eps | v


# -- the step grids --------------------------------------------------------------------------------
def step_grids(student_steps: int) -> tuple[Schedule, Schedule]:
    """(student, teacher) schedules: `student_steps` and twice as many trailing steps of the cosine schedule."""
    student = cosine_schedule(student_steps, spacing="trailing")
    teacher = cosine_schedule(2 * student_steps, spacing="trailing")
    check_nested(student, teacher)
    return student, teacher


def check_nested(student: Schedule, teacher: Schedule) -> None:
    """The student's grid is every other point of the teacher's: student index j is teacher index 2j + 1
    (equal alpha_cumprod), so two teacher steps span one student step; else a ValueError naming the first
    point that differs."""
    n = len(student)
    if len(teacher) != 2 * n:
        raise ValueError(f"the teacher takes {len(teacher)} steps; a {n}-step student needs a {2 * n}-step teacher")
    matching = teacher.alphas_cumprod[1::2]
    differ = (student.alphas_cumprod - matching).abs() > 1e-12 * matching.abs().clamp_min(1.0)
    if bool(differ.any()):
        j = int(differ.nonzero()[0])
        raise ValueError(f"the student's {n}-step grid is not every other point of the teacher's {2 * n}-step grid: "
                         f"student step {j} has alpha_cumprod {float(student.alphas_cumprod[j]):.6g}, teacher step "
                         f"{2 * j + 1} {float(matching[j]):.6g} (use trailing spacing for both)")


# -- the target ------------------------------------------------------------------------------------
def teacher_two_steps(denoise: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, j: int,
                      teacher: Schedule) -> torch.Tensor:
    """Two DDIM steps of the teacher from student grid point j (its own point 2j + 1) to student point
    j - 1 (its 2j - 1), or to clean latents from j = 0."""
    for t in (2 * j + 1, 2 * j):
        x = ddim_step(denoise(x, t), x, t, teacher)
    return x


@dataclass
class DistillBatch:
    """One batch seen by both models: the clean latents the student learns to denoise (b, c, f, h, w),
    the student as `model(x, time)` (unguided: its conditional branch) on every row, and `teacher(rows)`:
    the guided teacher as `model(x, time)` on the rows a (b,) bool mask selects."""

    x0: torch.Tensor
    student: Model
    teacher: Callable[[torch.Tensor], Model]


def distillation_loss(batch: DistillBatch, generator: torch.Generator, *, student_grid: Schedule,
                      teacher_grid: Schedule, prediction: str, snr_gamma: float = 0.0) -> torch.Tensor:
    """Each sample at a random student grid point j (x_t with fresh noise); the guided teacher's two DDIM
    steps give the target, the student's one prediction is compared with it (MSE; min-SNR-gamma weighted
    over the student's grid when `snr_gamma` > 0). Samples at the same j share the teacher's calls."""
    x0 = batch.x0
    device = x0.device
    j = torch.randint(len(student_grid), (x0.shape[0],), generator=generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    x_t = q_sample(x0, j, student_grid, noise)
    target = torch.empty_like(x_t)
    with torch.no_grad():
        for step in j.unique().tolist():
            rows = j == step
            denoise = X0Denoiser(batch.teacher(rows), teacher_grid, prediction, percentile=None)
            x_next = teacher_two_steps(denoise, x_t[rows], step, teacher_grid)
            x0_target = distillation_x0(x_t[rows], x_next, step, student_grid)
            target[rows] = prediction_from_x0(x0_target, x_t[rows], step, student_grid, prediction)
    output = batch.student(x_t, student_grid.timesteps.to(device)[j])
    return diffusion_mse(output, target, j, student_grid, snr_gamma, prediction)


# -- the two kinds of UNet -------------------------------------------------------------------------
def keyframe_batch(student: nn.Module, teacher: nn.Module, batch: dict[str, Any], *, null_embedding: torch.Tensor,
                   guidance: float) -> DistillBatch:
    """Keyframes: the student reads the caption; the teacher is text-guided against the null context of the
    same length (as the training's text dropout builds it), frame positions from the clips' steps."""
    x0 = batch["latents"]  # (b, c, f, h, w)
    context, mask = batch["context"], batch["context_mask"]
    positions = torch.arange(x0.shape[2], device=x0.device)[None] * batch["step"][:, None]  # (b, f)
    null, null_mask = null_context(null_embedding.to(x0.device, context.dtype), *mask.shape)

    def student_model(x, time):
        return student(x, time, context, mask, frame_positions=positions)

    def teacher_model(rows):
        return TextGuidance(teacher, context[rows], mask[rows], null[rows], null_mask[rows], guidance,
                            batch_kwargs={"frame_positions": positions[rows]})

    return DistillBatch(x0, student_model, teacher_model)


def interpolation_batch(student: nn.Module, teacher: nn.Module, batch: dict[str, Any], *,
                        null_embedding: torch.Tensor, guidance: float, between: int) -> DistillBatch:
    """Frames between keyframes: clean keyframes on both sides (as at generation), the null context, the
    clip's skip; the teacher's keyframe guidance zeroes the keyframes of its unconditional branch."""
    keyframes, x0 = split_clip(batch["latents"], between)
    context, mask = null_context(null_embedding.to(x0.device), x0.shape[0], CONTEXT_TOKENS)
    skip = batch["step"]

    def student_model(x, time):
        return student(interpolation_inputs(keyframes, x), time, context, mask, skip_frames=skip)

    def teacher_model(rows):
        return KeyframeGuidance(teacher, keyframes[rows, :, :-1], keyframes[rows, :, 1:], guidance,
                                context=context[rows], context_mask=mask[rows],
                                batch_kwargs={"skip_frames": skip[rows]})

    return DistillBatch(x0, student_model, teacher_model)


# -- the task --------------------------------------------------------------------------------------
def load_teacher(cfg: TrainConfig) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(teacher UNet, its extras) from `cfg.teacher`; a file that is not a keyframe / interpolation UNet
    is a one-line error naming it."""
    try:
        checkpoint = UNet.read_checkpoint(cfg.teacher)
    except CheckpointError as error:
        raise CheckpointError(f"--teacher: {error}; distill takes a keyframe or interpolation UNet") from None
    config = checkpoint.config or (UNetConfig.preset(cfg.model_preset) if cfg.model_preset else None)
    if config is None:
        raise BadInputError(f"teacher {cfg.teacher!r} is an official checkpoint without a config: give "
                            "--model-preset official-keyframe or official-interpolation")
    if config.kind not in DISTILL_KINDS or config.release != "1.0":
        raise BadInputError(f"teacher {cfg.teacher!r} is a release-{config.release} {config.kind} UNet; distill "
                            f"takes a release-1.0 (or shapes) keyframe or interpolation UNet")
    return unet_from_checkpoint(cfg.teacher, checkpoint, config, config.kind)


def check_interpolation_clips(cache: LatentCache, between: int) -> None:
    frames = cache[0]["latents"].shape[1]
    if frames < between + 2 or (frames - 1) % (between + 1):
        raise ValueError(f"cached clips have {frames} frames; the teacher fills {between} frames between keyframes, "
                         f"so clips need (keyframes - 1)·{between + 1} + 1 frames")


def build(cfg: TrainConfig) -> Task:
    """The student (a copy of the teacher, trained), the frozen teacher, and the cache of the teacher's kind."""
    cache = LatentCache(cfg.data)  # data first: a bad folder fails before a large model loads
    student, extras = load_teacher(cfg)
    kind, config = student.config.kind, student.config
    check_cache(cache, kind, config.latent_channels)
    if kind == "keyframe" and not cache.has_text:
        raise ValueError(f"the cache {cfg.data!r} has no text embeddings; rebuild it with a text encoder")
    if kind == "interpolation":
        check_interpolation_clips(cache, config.interpolated_frames)
        if cfg.teacher_guidance == TrainConfig.teacher_guidance:
            print(f"kvideo train: teacher_guidance={cfg.teacher_guidance} is the keyframe default; generation guides "
                  "interpolation at 0.25 (--teacher-guidance 0.25, as the *-distill-interpolation presets)",
                  file=sys.stderr)
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    select_trainable(student, cfg.train)
    student.set_gradient_checkpointing(cfg.gradient_checkpointing)
    student_grid, teacher_grid = step_grids(cfg.student_steps)
    null_embedding = extras["null_embedding"]

    def loss(module, batch, generator):
        teacher.to(batch["latents"].device)  # the trainer moves the student only (a no-op after the first call)
        if kind == "keyframe":
            pair = keyframe_batch(module, teacher, batch, null_embedding=null_embedding, guidance=cfg.teacher_guidance)
        else:
            pair = interpolation_batch(module, teacher, batch, null_embedding=null_embedding,
                                       guidance=cfg.teacher_guidance, between=config.interpolated_frames)
        return distillation_loss(pair, generator, student_grid=student_grid, teacher_grid=teacher_grid,
                                 prediction=config.predicts, snr_gamma=cfg.snr_gamma)

    return Task("distill", student, student, loss, cache, collate_cached, "latents", extras, unet_shard_types())
