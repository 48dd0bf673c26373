"""Denoiser wrappers: prediction type (eps / v) -> x0 with dynamic thresholding, and guidance.

The interfaces, from the network up to the samplers:

- a *model* is `model(x, time) -> prediction`: `x` the noisy latents (b, ...), `time` a (b,)
  long tensor in the network's 0..1000 units, the prediction (eps or v) shaped like `x`.
  `TextGuidance` and `KeyframeGuidance` turn a UNet, whose call is
  `unet(x, time, context, context_mask, **kwargs)`, into such a model.
- a *denoiser* is `denoise(x, t) -> x0`: `t` an int step index of the schedule (0 .. N-1).
  `X0Denoiser(model, schedule, prediction)` turns a model into a denoiser: it calls the model
  with `time = t * schedule.time_scale` and converts its output to a (thresholded) x0.

The samplers in `kvideo.diffusion.samplers` take a denoiser.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
from einops import rearrange

from kvideo.diffusion.schedules import Schedule
from kvideo.text import pad_context

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Denoiser = Callable[[torch.Tensor, int], torch.Tensor]
PREDICTIONS = ("eps", "v")


# -- prediction type -----------------------------------------------------------------------------
def predict_x0(output: torch.Tensor, x: torch.Tensor, t: int, schedule: Schedule, prediction: str) -> torch.Tensor:
    """The clean latent implied by a model output at step t: from eps, (x - sigma·eps) / alpha;
    from v, alpha·x - sigma·v."""
    alpha, sigma = schedule.alpha_sigma(t)
    if prediction == "eps":
        return (x - sigma * output) / alpha
    if prediction == "v":
        return alpha * x - sigma * output
    raise ValueError(f"unknown prediction type {prediction!r}; choose one of {PREDICTIONS}")


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.98, max_value: float | None = None) -> torch.Tensor:
    """Per sample (dim 0): s = max(1, the `percentile` quantile of |x0|); returns clip(x0, -s, s) / s.

    `max_value` caps s as well (diffusers' `sample_max_value`); release 1.1 leaves it at 1.0, which
    makes its thresholding a plain clip of x0 to [-1, 1].
    """
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must be in (0, 1]; got {percentile!r}")
    if max_value is not None and max_value < 1.0:
        raise ValueError(f"max_value must be >= 1 (the quantile is floored at 1); got {max_value!r}")
    flat = rearrange(x0, "b ... -> b (...)").abs()
    scale = _quantile(flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat, percentile)
    scale = scale.clamp(1.0, max_value).to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))  # (b, 1, ...)
    return torch.maximum(torch.minimum(x0, scale), -scale) / scale


def _quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """Row-wise quantile with linear interpolation, as `torch.quantile` (which caps its input size)."""
    values = flat.sort(dim=1).values  # (b, n)
    position = q * (values.shape[1] - 1)
    low = int(position)
    high = min(low + 1, values.shape[1] - 1)
    return torch.lerp(values[:, low], values[:, high], position - low)


LatentRange = tuple[Sequence[float], Sequence[float]]


def check_latent_range(latent_range: LatentRange | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(low, high): per latent channel, the range of the latents a model was trained on (low < high), or None."""
    if latent_range is None:
        return None
    parts = tuple(latent_range) if isinstance(latent_range, (list, tuple)) else ()
    if len(parts) == 2 and all(isinstance(p, (list, tuple)) for p in parts) and len(parts[0]) == len(parts[1]) > 0 \
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    for p in parts for v in p) and all(lo < hi for lo, hi in zip(*parts)):
        return tuple(float(v) for v in parts[0]), tuple(float(v) for v in parts[1])
    raise ValueError(f"latent range {latent_range!r}: give ([low per channel], [high per channel]) of finite "
                     "numbers with low < high, e.g. ([-1.0, -1.2], [1.2, 1.1]), or None")


def clip_to_range(x0: torch.Tensor, latent_range: tuple[tuple[float, ...], tuple[float, ...]]) -> torch.Tensor:
    """Clip x0 (b, C, ...) channel by channel to `latent_range`; C may stack several latents (the interpolation
    model's k frames of c channels: C = k·c), each clipped alike."""
    low, high = (torch.tensor(v, dtype=x0.dtype, device=x0.device) for v in latent_range)
    if x0.shape[1] % len(low):
        raise ValueError(f"latents with {x0.shape[1]} channels do not stack a {len(low)}-channel latent range")
    shape = (1, x0.shape[1]) + (1,) * (x0.dim() - 2)
    repeats = x0.shape[1] // len(low)
    return torch.maximum(torch.minimum(x0, high.repeat(repeats).reshape(shape)), low.repeat(repeats).reshape(shape))


class X0Denoiser:
    """`denoise(x, t) -> x0` from a `model(x, time) -> eps | v`, with the release's dynamic thresholding.

    `percentile=None` turns thresholding off; `max_value` caps the threshold (release 1.1: 0.995
    and 1.0). `latent_range` (low, high per latent channel) clips x0 to the range of the latents the model
    was trained on first (guidance extrapolates x0 past it; the decoder renders such latents as specks). Video latents (b, c, f, h, w) are thresholded frame
    by frame when `per_frame` (the release sampled frames, or interpolation groups, as its batch);
    latents of any other rank per sample.
    """

    def __init__(self, model: Model, schedule: Schedule, prediction: str = "eps", *,
                 percentile: float | None = 0.98, max_value: float | None = None, per_frame: bool = True,
                 latent_range: LatentRange | None = None) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction type {prediction!r}; choose one of {PREDICTIONS}")
        self.model, self.schedule, self.prediction = model, schedule, prediction
        self.percentile, self.max_value, self.per_frame = percentile, max_value, per_frame
        self.latent_range = check_latent_range(latent_range)

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        time = torch.full((x.shape[0],), self.schedule.model_time(t), dtype=torch.long, device=x.device)
        output = self.model(x, time).to(x.dtype)
        x0 = predict_x0(output, x, t, self.schedule, self.prediction)
        return self.threshold(x0)

    def threshold(self, x0: torch.Tensor) -> torch.Tensor:
        if self.latent_range is not None:
            x0 = clip_to_range(x0, self.latent_range)
        if self.percentile is None:
            return x0
        if self.per_frame and x0.dim() == 5:
            frames = dynamic_threshold(rearrange(x0, "b c f h w -> (b f) c h w"), self.percentile, self.max_value)
            return rearrange(frames, "(b f) c h w -> b c f h w", b=x0.shape[0])
        return dynamic_threshold(x0, self.percentile, self.max_value)


# -- guidance ------------------------------------------------------------------------------------
def _batch(tensor: torch.Tensor, b: int, name: str) -> torch.Tensor:
    """A per-sample tensor with batch b (a batch of 1 is expanded)."""
    if tensor.shape[0] == b:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(b, *tensor.shape[1:])
    raise ValueError(f"{name} has batch {tensor.shape[0]}; the latents have batch {b} (use {b} or 1)")


def check_guidance_interval(interval: Sequence[float] | None) -> tuple[float, float] | None:
    """A guidance interval (low, high) of model times within [0, 1000], low <= high, or None (every step)."""
    if interval is None:
        return None
    values = tuple(interval) if isinstance(interval, (list, tuple)) else ()
    if (len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values)
            or not 0 <= values[0] <= values[1] <= 1000):
        raise ValueError(f"guidance interval {interval!r}: give (low, high) model times with "
                         "0 <= low <= high <= 1000 (the noisiest step is near 1000), or None for every step")
    return float(values[0]), float(values[1])


def rescale_guided(guided: torch.Tensor, cond: torch.Tensor, factor: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed"):
    the guided output scaled to the conditional output's standard deviation, mixed in by `factor` (0: off).
    The deviation is taken per sample, and per frame for video (b, c, f, h, w)."""
    if factor == 0:
        return guided
    dims = (1, 3, 4) if guided.dim() == 5 else tuple(range(1, guided.dim()))
    ratio = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-8)
    return factor * guided * ratio + (1.0 - factor) * guided


class _TwoBranchGuidance:
    """Runs the conditional and unconditional branches as one batched forward of the model.

    `interval` (low, high): guidance only at model times low <= t <= high; outside it the conditional
    branch runs alone (one forward of half the batch). `rescale`: see `rescale_guided`.
    """

    def __init__(self, model: Callable[..., torch.Tensor], scale: float, context: torch.Tensor | None,
                 context_mask: torch.Tensor | None, batch_kwargs: Mapping[str, torch.Tensor] | None,
                 model_kwargs: Mapping[str, Any],
                 uncond_batch_kwargs: Mapping[str, torch.Tensor] | None = None, *,
                 interval: Sequence[float] | None = None, rescale: float = 0.0) -> None:
        if not 0.0 <= rescale <= 1.0:
            raise ValueError(f"guidance rescale {rescale!r}: must be in [0, 1] (0: off)")
        self.interval, self.rescale = check_guidance_interval(interval), float(rescale)
        self.model, self.scale = model, float(scale)
        self.context, self.context_mask = context, context_mask
        self.batch_kwargs = dict(batch_kwargs or {})
        self.uncond_batch_kwargs = dict(uncond_batch_kwargs or {})  # per-sample values of the unconditional branch
        unknown = sorted(set(self.uncond_batch_kwargs) - set(self.batch_kwargs))
        if unknown:
            raise ValueError(f"uncond_batch_kwargs {unknown} have no conditional value in batch_kwargs")
        self.model_kwargs = dict(model_kwargs)

    def _forward(self, cond_x: torch.Tensor, uncond_x: torch.Tensor | None, time: torch.Tensor,
                 contexts: tuple[torch.Tensor | None, torch.Tensor | None]) -> torch.Tensor:
        """`contexts` = ((context, mask) of the conditional branch, the same of the unconditional one or None)."""
        b = cond_x.shape[0]
        kwargs = {k: _batch(v, b, k) for k, v in self.batch_kwargs.items()}
        if uncond_x is None:  # scale 0: the conditional branch alone
            context, mask = contexts[0]
            return self.model(cond_x, time, context, mask, **kwargs, **self.model_kwargs)
        (context, mask), (uncond_context, uncond_mask) = contexts
        uncond_kwargs = {k: _batch(self.uncond_batch_kwargs.get(k, v), b, k) for k, v in kwargs.items()}
        output = self.model(
            torch.cat([cond_x, uncond_x]), torch.cat([time, time]),
            None if context is None else torch.cat([context, uncond_context]),
            None if mask is None else torch.cat([mask, uncond_mask]),
            **{k: torch.cat([v, uncond_kwargs[k]]) for k, v in kwargs.items()}, **self.model_kwargs,
        )
        cond, uncond = output.chunk(2)
        return rescale_guided((1.0 + self.scale) * cond - self.scale * uncond, cond, self.rescale)

    def guided(self, time: torch.Tensor) -> bool:
        """Whether this step runs both branches: a non-zero scale, and the step's time inside the interval."""
        if self.scale == 0:
            return False
        if self.interval is None:
            return True
        t = float(time.reshape(-1)[0])
        return self.interval[0] <= t <= self.interval[1]


class TextGuidance(_TwoBranchGuidance):
    """Classifier-free guidance on text: out = (w + 1)·cond - w·uncond, one batched forward.

    Wraps `unet(x, time, context, context_mask, **kwargs)` into `model(x, time)`. The two contexts
    ((b or 1, n, d) and (b or 1, n', d), masks (b or 1, n) bool) are padded to a common length with
    masked zero tokens. `batch_kwargs` are per-sample tensors (b, ...) repeated for both branches
    (e.g. skip_frames); other keyword arguments go to the UNet unchanged (e.g. frame_positions (f,)).
    With `scale == 0`, or outside the guidance `interval`, only the conditional branch runs.
    """

    def __init__(self, model: Callable[..., torch.Tensor], context: torch.Tensor, context_mask: torch.Tensor,
                 uncond_context: torch.Tensor, uncond_context_mask: torch.Tensor, scale: float, *,
                 batch_kwargs: Mapping[str, torch.Tensor] | None = None, interval: Sequence[float] | None = None,
                 rescale: float = 0.0, **model_kwargs: Any) -> None:
        length = max(context.shape[1], uncond_context.shape[1])
        context, context_mask = pad_context(context, context_mask, length)
        uncond_context, uncond_context_mask = pad_context(uncond_context, uncond_context_mask, length)
        super().__init__(model, scale, context, context_mask, batch_kwargs, model_kwargs,
                         interval=interval, rescale=rescale)
        self.uncond_context, self.uncond_context_mask = uncond_context, uncond_context_mask

    def __call__(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        cond = (_batch(self.context, b, "context"), _batch(self.context_mask, b, "context_mask"))
        if not self.guided(time):
            return self._forward(x, None, time, (cond, None))
        uncond = (_batch(self.uncond_context, b, "uncond_context"),
                  _batch(self.uncond_context_mask, b, "uncond_context_mask"))
        return self._forward(x, x, time, (cond, uncond))


class KeyframeGuidance(_TwoBranchGuidance):
    """Keyframe-context guidance for interpolation: out = (1 + w)·cond - w·uncond, one batched forward.

    The model input is [left keyframes | x | right keyframes] on the channel axis (dim 1); the
    unconditional branch has both keyframes zeroed. `left`/`right` are shaped like x except for
    the channels (e.g. (b, 4, g, h, w) around x (b, 12, g, h, w)). Both branches get the same
    `context` / `context_mask` (release 1.0: the interpolation model's null context) unless
    `uncond_context` / `uncond_context_mask` are given (release 1.1: prompt vs null text);
    `uncond_batch_kwargs` replace `batch_kwargs` entries in the unconditional branch (release 1.1:
    temporal_mask 0). With `scale == 0`, or outside the guidance `interval`, only the conditional branch runs.
    """

    def __init__(self, model: Callable[..., torch.Tensor], left: torch.Tensor, right: torch.Tensor,
                 scale: float = 0.25, *, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                 uncond_context: torch.Tensor | None = None, uncond_context_mask: torch.Tensor | None = None,
                 batch_kwargs: Mapping[str, torch.Tensor] | None = None,
                 uncond_batch_kwargs: Mapping[str, torch.Tensor] | None = None, interval: Sequence[float] | None = None,
                 rescale: float = 0.0, **model_kwargs: Any) -> None:
        if left.shape != right.shape:
            raise ValueError(f"left and right keyframes differ in shape: {tuple(left.shape)} vs {tuple(right.shape)}")
        super().__init__(model, scale, context, context_mask, batch_kwargs, model_kwargs, uncond_batch_kwargs,
                         interval=interval, rescale=rescale)
        self.left, self.right = left, right
        self.uncond_context = context if uncond_context is None else uncond_context
        self.uncond_context_mask = context_mask if uncond_context_mask is None else uncond_context_mask

    def __call__(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        left, right = _batch(self.left, b, "left keyframes"), _batch(self.right, b, "right keyframes")
        if left.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"keyframes {tuple(left.shape)} do not fit latents {tuple(x.shape)} outside the channel axis")
        cond_x = torch.cat([left, x, right], dim=1)  # (b, c_left + c + c_right, ...)
        context = None if self.context is None else _batch(self.context, b, "context")
        mask = None if self.context_mask is None else _batch(self.context_mask, b, "context_mask")
        if not self.guided(time):
            return self._forward(cond_x, None, time, ((context, mask), None))
        uncond_x = torch.cat([torch.zeros_like(left), x, torch.zeros_like(right)], dim=1)
        uncond_context = None if self.uncond_context is None else _batch(self.uncond_context, b, "uncond_context")
        uncond_mask = None if self.uncond_context_mask is None else _batch(self.uncond_context_mask, b,
                                                                             "uncond_context_mask")
        return self._forward(cond_x, uncond_x, time, ((context, mask), (uncond_context, uncond_mask)))


class ConditionChannels:
    """`model(x, time, ...)` with fixed condition channels appended to x on dim 1 (batch of 1 expanded).

    Release 1.1's keyframe UNet reads [noisy latent 4 | condition latent 4 | mask 1]; the first
    frame is drawn with a zero condition and mask.
    """

    def __init__(self, model: Callable[..., torch.Tensor], condition: torch.Tensor) -> None:
        self.model, self.condition = model, condition

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        condition = _batch(self.condition, x.shape[0], "condition").to(x.dtype)
        return self.model(torch.cat([x, condition], dim=1), *args, **kwargs)


class FirstFrameGuidance:
    """Release 1.1 keyframe guidance over three branches in one batched forward:

    out = (1 - wi)·e(null text, no frame) + (wi - wt)·e(null text, frame) + wt·e(text, frame)

    with wt = `text_scale` (prompt weight) and wi = `image_scale`. `condition` (b or 1, k, ...)
    are the channels appended to x for the branches that see the first frame ([latent | mask]);
    the third branch gets zeros. `batch_kwargs` are per-sample tensors repeated for every branch;
    other keyword arguments go to the UNet unchanged.
    """

    def __init__(self, model: Callable[..., torch.Tensor], condition: torch.Tensor, context: torch.Tensor,
                 context_mask: torch.Tensor, uncond_context: torch.Tensor, uncond_context_mask: torch.Tensor, *,
                 text_scale: float = 5.0, image_scale: float = 3.0,
                 batch_kwargs: Mapping[str, torch.Tensor] | None = None, **model_kwargs: Any) -> None:
        length = max(context.shape[1], uncond_context.shape[1])
        self.context, self.context_mask = pad_context(context, context_mask, length)
        self.uncond_context, self.uncond_context_mask = pad_context(uncond_context, uncond_context_mask, length)
        self.model, self.condition = model, condition
        self.text_scale, self.image_scale = float(text_scale), float(image_scale)
        self.batch_kwargs, self.model_kwargs = dict(batch_kwargs or {}), model_kwargs

    def __call__(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        condition = _batch(self.condition, b, "condition").to(x.dtype)
        with_frame = torch.cat([x, condition], dim=1)
        without = torch.cat([x, torch.zeros_like(condition)], dim=1)
        context = _batch(self.context, b, "context")
        uncond = _batch(self.uncond_context, b, "uncond_context")
        mask, uncond_mask = _batch(self.context_mask, b, "context_mask"), _batch(self.uncond_context_mask, b,
                                                                                 "uncond_context_mask")
        kwargs = {k: torch.cat([_batch(v, b, k)] * 3) for k, v in self.batch_kwargs.items()}
        output = self.model(torch.cat([with_frame, with_frame, without]), torch.cat([time] * 3),
                            torch.cat([context, uncond, uncond]), torch.cat([mask, uncond_mask, uncond_mask]),
                            **kwargs, **self.model_kwargs)
        full, image_only, neither = output.chunk(3)
        wt, wi = self.text_scale, self.image_scale
        return (1.0 - wi) * neither + (wi - wt) * image_only + wt * full
