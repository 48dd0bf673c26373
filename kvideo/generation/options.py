"""One generation's options: each field declares its default, help, command-line flag, check and releases once."""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import resource
from dataclasses import dataclass
from typing import Any, Callable

from kvideo.argtypes import parse_float, parse_int
from kvideo.diffusion.samplers import SAMPLERS as SAMPLER_TABLE
from kvideo.diffusion.schedules import COSINE_SPACINGS
from kvideo.diffusion.wrappers import check_guidance_interval, check_latent_range

FPS_MODES = {"low": (), "medium": (3,), "high": (3, 1)}  # skip_frames of each interpolation pass
NOMINAL_FPS = {"low": 2, "medium": 8, "high": 32}
SAMPLERS = tuple(SAMPLER_TABLE)  # ddpm, ddim, dpmpp_2m: the samplers kvideo.diffusion registers
MOTION_SCORES = {"low": 1, "medium": 10, "high": 50, "extreme": 100}
RELEASES = ("1.0", "1.1")  # the pipelines: 1.0 (and kvideo's own models, which share its design) and 1.1
KEYFRAMES = {"1.0": 15, "1.1": 12}  # each release's keyframes (its UNet's num_frames), for checks before loading
MAX_STEPS = 1000  # the training schedule's length: more sampling steps than that add nothing
DDPM_ONLY = "samples with ddpm only"
NEEDS_11 = "has no image conditioning or motion score (a release 1.1 option)"


@dataclass(frozen=True)
class Option:
    """How one options field meets the user: its help, its check, its flag (None: library only) and parser, and the
    releases that refuse it (release -> why; `accepts` lists values such a release takes anyway, e.g. 1.1's
    sampler ddpm)."""

    help: str
    check: Callable[[str, Any], Any] | None = None  # (name, value) -> None or the normalised value
    flag: str | None = None
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    choices: tuple | None = None
    refused: dict[str, str] = dataclasses.field(default_factory=dict)
    accepts: tuple = ()


def option(default: Any, help: str, **flag: Any) -> Any:
    """A field of `GenerationOptions` with its `Option` metadata."""
    return dataclasses.field(default=default, metadata={"option": Option(help, **flag)})


def only_11(default: Any, help: str, **flag: Any) -> Any:
    """A field the 1.1 pipeline alone has (image conditioning, motion score): release 1.0 refuses it."""
    return option(default, help, refused={"1.0": NEEDS_11}, **flag)


def no_11(default: Any, help: str, why: str, **flag: Any) -> Any:
    """A field the 1.1 pipeline has no counterpart for: refused there rather than ignored."""
    return option(default, help, refused={"1.1": why}, **flag)


# -- text -> value parsers of the flags ----------------------------------------------------------
def parse_size(text: str) -> dict[str, int]:
    """--size WIDTHxHEIGHT -> {"width": W, "height": H} (both fields from one flag)."""
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 512x512, got {text!r}")
    return {"width": int(match[1]), "height": int(match[2])}


def off_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A parser that also takes "off" (or "none"), meaning None: the feature turned off."""
    def parse_or_off(text: str) -> Any:
        return None if text.strip().lower() in ("off", "none") else parse(text)
    parse_or_off.__name__ = parse.__name__
    return parse_or_off


def parse_threshold(text: str) -> float:
    """A quantile in (0, 1]."""
    value = parse_float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: a quantile in (0, 1], e.g. 0.98, or off")
    return value


def parse_latent_range(text: str) -> tuple[list[float], list[float]]:
    """LOW,LOW,...:HIGH,HIGH,... (one number per latent channel)."""
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW,...:HIGH,... (one number a channel), or off")
    low, high = ([parse_float(v) for v in part.split(",")] for part in parts)
    if len(low) != len(high) or not all(lo < hi for lo, hi in zip(low, high)):
        raise argparse.ArgumentTypeError(f"{text!r}: as many LOW as HIGH values, each LOW < its HIGH")
    return low, high


def parse_guidance_interval(text: str) -> tuple[float, float]:
    """LOW:HIGH model times in 0..1000."""
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW:HIGH, e.g. 300:1000, or off")
    low, high = parse_float(parts[0]), parse_float(parts[1])
    if not 0 <= low <= high <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= LOW <= HIGH <= 1000 (model times)")
    return low, high


# -- field checks: (name, value) -> None, or the normalised value; a ValueError shows the bad value ----
def _integer(low: int, high: int | None = None, none: bool = False, why: str = "") -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if none and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            span = f"in {low}..{high}" if high is not None else f">= {low}"
            raise ValueError(f"{name}={value!r}: must be an integer {span}{why}")
    return check


def _size(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 64:
        raise ValueError(f"{name}={value!r}: sizes must be positive multiples of 64 (e.g. 512x512, 640x384)")


def _one_of(choices) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{name}={value!r}: choose one of {list(choices)}")
    return check


def _finite(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: must be a finite number")


def _threshold(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0):
        raise ValueError(f"{name}={value!r}: a quantile in (0, 1] (the release's 0.98), or None for no thresholding")


def _rescale(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r}: a number in [0, 1] (0: off)")


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: must be True or False")


def _keyframes(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}={value!r}: must be an integer >= 1")


_steps = _integer(1, MAX_STEPS, why=f" (the training schedule has {MAX_STEPS} steps)")


def _latent_range(name: str, value: Any) -> Any:
    return check_latent_range(value)


def _guidance_interval(name: str, value: Any) -> Any:
    return check_guidance_interval(value)


# -- the options -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenerationOptions:
    """Every knob of one generation (release 1.0 and 1.1), validated before any heavy work starts.

    A field's default is release 1.0's; `RELEASE_DEFAULTS` holds 1.1's own, a weights folder's model card
    overrides both (`resolve_options`). `interpolation_steps` and `first_frame_steps` of None follow `steps`.
    """

    width: int = option(
        512, "WIDTHxHEIGHT in pixels, multiples of 64 (default: the model's; 512x512 official, 64x64 shapes and tiny)",
        check=_size, flag="--size", metavar="WxH", parse=parse_size)
    height: int = option(512, "video height in pixels (set with --size)", check=_size)
    fps: str = option(
        "medium", "frames at low / medium / high (nominal 2 / 8 / 32 fps): 15 / 57 / 225 with release 1.0 and the "
                  "shapes model, 12 / 45 / 177 with release 1.1 (default: medium)",
        check=_one_of(FPS_MODES), flag="--fps", choices=tuple(sorted(FPS_MODES)))
    num_frames: int | None = option(
        None, "number of keyframes (default: the model's: 15 for release 1.0 and the shapes model, 12 for release 1.1)",
        check=_keyframes, flag="--frames", parse=parse_int)
    steps: int = option(
        50, "keyframe sampling steps (default: the model's: 50 official (1.0 and 1.1), 8 shapes, 10 tiny)",
        check=_steps, flag="--steps", parse=parse_int)
    interpolation_steps: int | None = option(
        None, "interpolation sampling steps (default: the model's: 4 shapes, 10 release 1.1; else --steps: 50 "
              "official 1.0, 10 tiny)", check=_steps, flag="--interpolation-steps", parse=parse_int)
    first_frame_steps: int | None = only_11(
        None, "sampling steps of the drawn first frame, release 1.1 (default: --steps)",
        check=_steps, flag="--first-frame-steps", parse=parse_int)
    sampler: str = option(
        "ddpm", "keyframe sampler (default: the model's; ddpm official, dpmpp_2m shapes)",
        check=_one_of(SAMPLERS), flag="--sampler", choices=SAMPLERS, refused={"1.1": DDPM_ONLY}, accepts=("ddpm",))
    interpolation_sampler: str = option(
        "ddpm", "interpolation sampler (default: the model's; ddpm official)",
        check=_one_of(SAMPLERS), flag="--interpolation-sampler", choices=SAMPLERS, refused={"1.1": DDPM_ONLY},
        accepts=("ddpm",))
    timestep_spacing: str = no_11(
        "direct", "the samplers' steps: direct (N cosine steps, the release's), or the training schedule's own "
                  "steps, trailing (ending at its noisiest) or leading (default: the model's; direct official)",
        "keeps its own steps (leading for the keyframes, trailing for the interpolation)",
        check=_one_of(COSINE_SPACINGS), flag="--timestep-spacing", choices=COSINE_SPACINGS)
    threshold: float | None = no_11(
        0.98, "dynamic thresholding of each step's x0 estimate at the quantile Q of |x0|, or off (default: the "
              "model's; 0.98 official, off for shapes)",
        "clips each x0 estimate to [-1, 1] as the release does; it takes no quantile",
        check=_threshold, flag="--threshold", metavar="Q|off", parse=off_or(parse_threshold))
    latent_range: tuple[tuple[float, ...], tuple[float, ...]] | None = no_11(
        None, "clip each x0 estimate per latent channel to the range the model was trained on, e.g. "
              "--latent-range=-1,-1.2,-1.2,-1.4:1.2,1.1,0.9,1.4, or off (default: the model's; the shapes card holds "
              "its latents' range, off official)", "clips each x0 estimate to [-1, 1] as the release does",
        check=_latent_range, flag="--latent-range", metavar="LOW,..:HIGH,..|off", parse=off_or(parse_latent_range))
    guidance_scale: float = option(
        5.0, "text guidance scale w: (w+1)·cond - w·uncond (default: the model's; 5.0 official (1.0 and 1.1), "
             "2.0 shapes)", check=_finite, flag="--guidance", parse=parse_float)
    interpolation_guidance_scale: float = option(
        0.25, "keyframe guidance scale of the interpolation model (default: the model's; 0.25 official, 0.5 release "
              "1.1, 0 shapes)", check=_finite, flag="--interpolation-guidance", parse=parse_float)
    image_guidance_scale: float = only_11(
        3.0, "image guidance scale of the keyframes' three-branch guidance, release 1.1 (default: 3.0)",
        check=_finite, flag="--image-guidance", parse=parse_float)
    first_frame_guidance_scale: float = only_11(
        5.0, "text guidance scale of the drawn first frame, release 1.1 (default: 5.0)",
        check=_finite, flag="--first-frame-guidance", parse=parse_float)
    guidance_interval: tuple[float, float] | None = no_11(
        None, "text guidance only at model times LOW..HIGH (0..1000, the noisiest steps near 1000); the other steps "
              "run one UNet branch instead of two, or off: every step (default: the model's; off official)",
        "guides its keyframes over three branches at every step",
        check=_guidance_interval, flag="--guidance-interval", metavar="LOW:HIGH|off",
        parse=off_or(parse_guidance_interval))
    guidance_rescale: float = no_11(
        0.0, "scale the guided prediction back toward the conditional one's deviation, 0..1 (default: the model's; "
             "0 official)", "guides its keyframes over three branches, with no rescale",
        check=_rescale, flag="--guidance-rescale", metavar="F", parse=parse_float)
    cache_interval: int = option(
        1, "step caching: the UNets' deep levels run every N-th step and are reused between; 1 is off and exact "
           "(default: the model's; 1 official, 2 shapes)",
        check=_integer(1, why=" (1: no step caching)"), flag="--cache-interval", metavar="N", parse=parse_int)
    motion: str = only_11(
        "medium", "how much the clip moves, release 1.1 (default: medium)",
        check=_one_of(MOTION_SCORES), flag="--motion", choices=tuple(MOTION_SCORES))
    noise_augmentation: int = only_11(
        20, "noise added to the first frame's latent before it conditions the keyframes, a model time in 0..999, "
            "release 1.1 (default: 20)", check=_integer(0, 999), flag="--noise-augmentation", metavar="T",
        parse=parse_int)
    upscale_image: bool = only_11(
        False, "enlarge an --image smaller than the video instead of padding it with black, release 1.1 "
               "(default: off, as the release)", check=_boolean, flag="--upscale-image")
    seed: int | None = option(None, "seed of the noise (None: random)")
    decode_window: int | None = option(
        None, "frames decoded together by the video decoder (default: all)",
        check=_integer(1, none=True), flag="--decode-window", parse=parse_int)
    compile: bool = option(
        False, "torch.compile the UNets' and the video decoder's repeated blocks (static shapes): the first clip "
               "of a size pays the compile time, later ones run compiled; the pipeline stays compiled (default: off)",
        check=_boolean, flag="--compile")
    text_encoder_int8: bool = option(
        False, "hold the T5 text encoder's linear weights in int8 (weight-only, a scale per output channel): half "
               "its bf16 memory, a quarter of fp32's; the pipeline keeps it so (default: off)",
        check=_boolean, flag="--text-encoder-int8")

    def __post_init__(self) -> None:
        for name, value in (("interpolation_steps", self.interpolation_steps),
                            ("first_frame_steps", self.first_frame_steps)):
            if value is None:
                object.__setattr__(self, name, self.steps)
        for field in dataclasses.fields(self):
            check = field.metadata["option"].check
            fixed = check(field.name, getattr(self, field.name)) if check else None
            if fixed is not None:
                object.__setattr__(self, field.name, fixed)
        if self.num_frames is not None and self.num_frames < 2 and self.fps != "low":
            raise ValueError(f"num_frames={self.num_frames}: interpolation needs at least 2 keyframes")


# Release 1.1's own defaults where they differ from 1.0's (the fields' defaults).
RELEASE_DEFAULTS = {"1.0": {}, "1.1": {"interpolation_steps": 10, "interpolation_guidance_scale": 0.5}}
FIELDS = tuple(f.name for f in dataclasses.fields(GenerationOptions))


def option_of(name: str) -> Option:
    """The `Option` metadata of a field."""
    return GenerationOptions.__dataclass_fields__[name].metadata["option"]


def check_release(release: str, given: dict[str, Any], names: dict[str, str] | None = None) -> None:
    """Every given option works for `release` or is refused with its reason (never silently ignored).

    `names` maps a field to what the user called it (its flag) in the message."""
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown generation option(s) {unknown}; known: {sorted(FIELDS)}")
    for name, value in given.items():
        meta = option_of(name)
        if release in meta.refused and value not in meta.accepts:
            shown = (names or {}).get(name, name)
            raise ValueError(f"{shown}: release {release} {meta.refused[release]}")


def resolve_options(release: str, card: dict[str, Any] | None = None, **given: Any) -> GenerationOptions:
    """The options of one generation: the release's defaults, then the model card's, then the given ones."""
    if release not in RELEASES:
        raise ValueError(f"release={release!r}: choose one of {list(RELEASES)}")
    check_release(release, given)
    opts = GenerationOptions(**{**RELEASE_DEFAULTS[release], **(card or {}), **given})
    if release == "1.1" and opts.num_frames is not None and opts.num_frames < 2:
        raise ValueError(f"num_frames={opts.num_frames!r}: needs at least 2 keyframes (frame 0 is the first frame)")
    return opts


def release_options(opts: GenerationOptions, release: str) -> dict[str, Any]:
    """The fields of resolved options that `release` takes (less the seed), to pass on to its pipeline."""
    fields = {name: getattr(opts, name) for name in FIELDS if name != "seed"}
    return {name: value for name, value in fields.items()
            if release not in option_of(name).refused or value in option_of(name).accepts}


# -- resources -------------------------------------------------------------------------------------
def clip_frames(fps: str, keyframes: int) -> int:
    """Frames of a clip of `keyframes` keyframes: each interpolation pass puts 3 new frames between each pair."""
    frames = keyframes
    for _ in FPS_MODES[fps]:
        frames = 4 * frames - 3
    return frames


def memory_limit() -> int:
    """Bytes this process may use: the machine's memory, or less under an address-space limit (ulimit -v)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return min(total, soft) if soft not in (resource.RLIM_INFINITY, -1) else total


def check_memory(opts: GenerationOptions, keyframes: int) -> None:
    """Refuse, before any allocation, a clip whose decoded frames alone (float32 and uint8 copies) pass the
    memory this process may use."""
    frames = clip_frames(opts.fps, opts.num_frames or keyframes)
    needed = frames * opts.width * opts.height * 3 * (4 + 1)
    limit = memory_limit()
    if needed > limit:
        raise ValueError(f"{frames} frames of {opts.width}x{opts.height} need at least {needed / 2**30:.1f} GiB for "
                         f"the decoded video alone; this process may use {limit / 2**30:.1f} GiB. Use a smaller "
                         "size, fewer frames or a lower fps")
