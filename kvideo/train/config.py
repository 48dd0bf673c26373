"""Training and cache configs: frozen dataclasses with presets, file loading and command-line overrides."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import typing
from pathlib import Path
from typing import Any

from kvideo.argtypes import MAX_SEED
from kvideo.config import Config, check, described, expected_type, has_type
from kvideo.errors import BadInputError
from kvideo.flags import add_config_flags, add_flag, given_settings, setting

TASKS = ("movq", "image", "keyframe", "interpolation", "decoder", "detector", "distill")
DISTILL_KINDS = ("keyframe", "interpolation")  # the UNets `distill` takes as teachers
CACHE_TASKS = ("keyframe", "interpolation")
STORAGE_DTYPES = ("float16", "bfloat16", "float32")
VIDEO_STAGES = ("movq", "decoder", "detector")  # the tasks that read videos (clips, captions), not a cache
DIFFUSION_STAGES = ("image", "keyframe", "interpolation")  # the tasks that train a UNet on noised latents


def check_finite(config: Config, prefix: str = "") -> None:
    """Every float value of `config` (nested ones too) is finite: nan and inf are refused before work."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, Config):
            check_finite(value, prefix=f"{prefix}{field.name}.")
            continue
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, float) and not math.isfinite(item):
                raise BadInputError(f"{prefix}{field.name}={value}: must be a finite number")


def check_seed(seed: int) -> None:
    check(0 <= seed <= MAX_SEED, f"seed={seed} must lie in [0, 2**63 - 1] (torch takes 64-bit signed seeds)")


@dataclasses.dataclass(frozen=True)
class ClipConfig(Config):
    """What one training clip is, in frames of a `reference_fps` video (fps-aware sampling).

    keyframe (and image, which trains on the frames of keyframe clips): `keyframes` frames
    `keyframe_step` reference frames apart (12 at 24 fps = 2 fps).
    interpolation: `keyframes` keyframes with `interpolated_frames` frames between each pair,
    consecutive frames `s` reference frames apart, s drawn from 1..max_skip per clip.
    decoder (and movq, which trains on single frames, and detector): `decoder_frames` frames
    `decoder_step` reference frames apart.
    """

    task: str = setting("keyframe", "which model the clips are for")
    height: int = setting(512, "clip height in pixels (a multiple of 64)")
    width: int = setting(512, "clip width in pixels (a multiple of 64)")
    keyframes: int = setting(16, "keyframe clips: frames per clip; interpolation clips: keyframes per clip")
    keyframe_step: int = setting(12, "reference frames between keyframes (12 at 24 fps = 2 fps)")
    interpolated_frames: int = setting(3, "interpolation: frames between each pair of keyframes")
    max_skip: int = setting(12, "interpolation: largest distance in reference frames between consecutive frames")
    decoder_frames: int = setting(8, "decoder (and movq) clips: frames per clip")
    decoder_step: int = setting(1, "decoder (and movq) clips: reference frames between consecutive frames")
    reference_fps: float = setting(24.0, "the frame rate the steps above are counted in")

    def validate(self) -> None:
        check_finite(self, prefix="clip.")
        check(self.task in TASKS, f"task={self.task!r}; expected one of {TASKS}")
        for name in ("height", "width"):
            value = getattr(self, name)
            check(value > 0 and value % 64 == 0,
                  f"{name}={value}: pixel sizes must be positive multiples of 64 "
                  "(latents are 1/8 of them and the UNet halves those 3 times)")
        for name in ("keyframes", "keyframe_step", "interpolated_frames", "max_skip", "decoder_frames", "decoder_step"):
            check(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        check(self.task != "interpolation" or self.keyframes >= 2,
              f"keyframes={self.keyframes}: interpolation clips need at least 2 keyframes")
        check(self.reference_fps > 0, f"reference_fps={self.reference_fps} must be > 0")

    @property
    def clip_frames(self) -> int:
        """Frames read per clip."""
        if self.task in ("keyframe", "image"):
            return self.keyframes
        if self.task == "interpolation":
            return (self.keyframes - 1) * (self.interpolated_frames + 1) + 1
        return self.decoder_frames

    @property
    def steps(self) -> tuple[int, ...]:
        """Candidate distances (in reference frames) between consecutive frames of a clip."""
        if self.task in ("keyframe", "image"):
            return (self.keyframe_step,)
        if self.task == "interpolation":
            return tuple(range(1, self.max_skip + 1))
        return (self.decoder_step,)


@dataclasses.dataclass(frozen=True)
class CacheConfig(Config):
    """`kvideo train cache`: videos + captions -> MoVQ latents and text embeddings in safetensors shards."""

    videos: str = setting("", "folder the captions' video paths are relative to", metavar="PATH")
    captions: str = setting("", "video list with captions: CSV (WebVid results.csv) or JSONL", metavar="PATH")
    output: str = setting("", "cache folder to write (a rerun with the same settings resumes it)", metavar="PATH")
    movq: str = setting("", "MoVQ checkpoint that encodes the frames (official movq.pt or kvideo .safetensors)",
                        metavar="PATH")
    movq_preset: str = setting("", "MoVQ architecture: for official pickles, or random weights when --movq is empty")
    text_encoder: str = setting("", "Hugging Face T5 encoder folder (keyframe caches)", metavar="PATH")
    text_checkpoint: str = setting("", "keyframe checkpoint holding the text projection and the null embedding",
                                   metavar="PATH")
    clip: ClipConfig = ClipConfig()
    clips_per_video: int = setting(1, "clips drawn from each video")
    shard_size: int = setting(64, "clips per safetensors shard")
    batch_size: int = setting(4, "clips encoded together")
    dtype: str = setting("float16", "storage dtype of the latents: float16, bfloat16 or float32")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    seed: int = setting(0, "seed of the clip positions")
    progress: bool = setting(True, "show a progress bar", hidden=True)  # --quiet turns it off

    def validate(self) -> None:
        check_finite(self)
        check(self.clip.task in CACHE_TASKS,
              f"clip.task={self.clip.task!r}: caches are built for {CACHE_TASKS} (the decoder trains on videos)")
        for name in ("clips_per_video", "shard_size", "batch_size"):
            check(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        check(self.dtype in STORAGE_DTYPES, f"dtype={self.dtype!r}; expected one of {STORAGE_DTYPES}")
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
              f"device={self.device!r}; expected auto, cpu, cuda or cuda:N")
        check_seed(self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "clip": self.clip.to_dict()}


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """One fine-tuning run: keyframe, interpolation or video-decoder model (see docs/training.md)."""

    task: str = setting("keyframe", "which model to train")
    model: str = setting(
        "", "checkpoint to fine-tune: an official .pt or a kvideo .safetensors (empty: --model-preset)",
        metavar="PATH")
    init_weights: str = setting(
        "", "trained weights of an earlier run (its export, or a checkpoint's trained / ema file; temporal or all) "
            "loaded onto --model before the first step: the next phase of a curriculum (a resumed run restores its "
            "own checkpoint instead)", metavar="PATH")
    model_preset: str = setting(
        "", "architecture preset: for official pickles, random weights when --model is empty, or the temporal layout "
            "when a keyframe task inflates an image UNet")
    data: str = setting("", "cache folder (keyframe, interpolation) or video folder (decoder, movq, image)",
                        metavar="PATH")
    captions: str = setting("", "decoder: the video list (CSV / JSONL) of --data", metavar="PATH", stages=VIDEO_STAGES)
    caption_pattern: str = setting(
        "", "train only on the samples whose caption matches this regular expression (re.search; empty: every "
            "sample), e.g. a few captions first, then the whole set")
    output_dir: str = setting("runs/train", "run folder: config, log, checkpoints and the trained weights",
                              metavar="PATH")
    clip: ClipConfig = setting(ClipConfig(), "clip sampling from the videos", stages=VIDEO_STAGES)
    train: str = setting("temporal", "temporal (the temporal layers only) or all (every weight)")
    steps: int = setting(1000, "optimizer steps in the whole run")
    batch_size: int = setting(1, "clips per process and micro-step (capped, with a notice, at what the data holds)")
    grad_accum: int = setting(2, "micro-steps accumulated per optimizer step")
    lr: float = setting(1e-4, "AdamW learning rate (finite, > 0)")
    warmup_steps: int = setting(0, "linear learning-rate warm-up steps (0: none)")
    lr_schedule: str = setting(
        "constant", "learning rate after the warm-up: constant, or cosine (decays to min_lr_ratio * lr at the end)")
    min_lr_ratio: float = setting(0.1, "cosine schedule: the last step's learning rate as a fraction of lr")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    adam_betas: tuple[float, float] = setting((0.9, 0.999), "AdamW betas, two comma-separated numbers")
    adam_eps: float = setting(1e-8, "AdamW epsilon")
    max_grad_norm: float = setting(0.0, "clip the gradient norm to this, > 0 (0: no clipping)")
    precision: str = setting("bf16", "bf16 (autocast, float32 master weights) or fp32")
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass to save memory")
    ema_decay: float = setting(
        0.0, "decay of an exponential moving average of the weights, in [0, 1) (0: no EMA); over the first steps "
             "it ramps up as min(decay, (1 + step) / (10 + step))")
    num_train_timesteps: int = setting(1000, "diffusion timesteps of the training schedule",
                                       stages=DIFFUSION_STAGES)
    uncond_prob: float = setting(0.1, "probability of dropping the text (for classifier-free guidance), in [0, 1]",
                                 stages=DIFFUSION_STAGES)
    max_perturbation: int = setting(
        250, "interpolation: largest noise timestep added to the conditioning keyframes", stages=("interpolation",))
    snr_gamma: float = setting(
        0.0, "image/keyframe/interpolation: weight each sample's loss by min-SNR-gamma (Hang et al. 2023; 5 is "
             "usual): steps with SNR above gamma, whose large losses otherwise drive the gradient, are damped (0: "
             "plain MSE, as the release)", stages=(*DIFFUSION_STAGES, "distill"))
    timestep_shift: float = setting(
        1.0, "image/keyframe/interpolation: draw training steps as shift·u / (1 + (shift - 1)·u), u uniform (Esser "
             "et al. 2024); > 1 trains the noisy steps, where a clip's layout and motion are decided, more often (1: "
             "uniform, as the release)", stages=DIFFUSION_STAGES)
    decoder_loss: str = setting("l1", "decoder reconstruction loss: l1 or mse", stages=("decoder",))
    crop_size: int = setting(
        0, "movq: train on random square crops of this many pixels, a multiple of 8 (0: whole frames)",
        stages=("movq",))
    detail_weight: float = setting(
        0.0, "movq: pixel loss weight 1 + this x distance from the frame's median colour; image/keyframe: the same "
             "on the clean latents (emphasises small objects; 0: plain loss, the release)",
        stages=("movq", "image", "keyframe"))
    latent_noise: float = setting(
        0.0, "decoder: add Gaussian noise of a random std up to this to the (scaled) latents, so that the decoder "
             "learns to clean up sampled latents (0: exact latents)", stages=("decoder",))
    strategy: str = setting("ddp", "multi-GPU strategy: ddp or fsdp")
    zero: bool = setting(True, "ddp: shard the optimizer state across processes (ZeRO-1)")
    device: str = setting("auto", "auto, cpu or cuda")
    seed: int = setting(0, "seed of the weights' noise, the data order and the diffusion noise")
    num_workers: int = setting(2, "data loader worker processes")
    log_every: int = setting(10, "steps between log lines")
    save_every: int = setting(500, "steps between checkpoints")
    keep_checkpoints: int = setting(3, "checkpoints kept (the lowest steps are removed; never the latest)")
    resume: str = setting("", "'latest' (this run's newest checkpoint that loads) or a checkpoints/step-* folder",
                          metavar="latest|PATH")
    progress: bool = setting(True, "show a progress bar", hidden=True)  # --quiet turns it off
    tensorboard: bool = setting(True, "also write TensorBoard logs (needs tensorboard)")
    teacher: str = setting(
        "", "distill: the keyframe or interpolation UNet to distill (its weights also start the student)",
        metavar="PATH", stages=("distill",))
    student_steps: int = setting(
        12, "distill: DDIM steps of the student, 1..500 (the teacher takes 2x as many; trailing spacing)",
        stages=("distill",))
    teacher_guidance: float = setting(
        5.0, "distill: the teacher's guidance scale, folded into the student: text guidance of a keyframe teacher "
             "(the release: 5), keyframe guidance of an interpolation one (0.25)", stages=("distill",))

    def validate(self) -> None:
        check_finite(self)
        check(self.task in TASKS, f"task={self.task!r}; expected one of {TASKS}")
        check(1 <= self.student_steps <= 500, f"student_steps={self.student_steps} must lie in 1..500 (the teacher "
              "takes twice as many steps of the 1000-step schedule)")
        check(not self.teacher or self.task == "distill",
              f"teacher={self.teacher!r} is read by task='distill' only; task={self.task!r} fine-tunes --model")
        check(not self.model or self.task != "distill",
              f"model={self.model!r}: task='distill' starts the student from --teacher; leave --model empty")
        check(self.clip.task == self.task, f"clip.task={self.clip.task!r} differs from task={self.task!r}")
        check(self.train in ("temporal", "all"), f"train={self.train!r}; expected 'temporal' or 'all'")
        check(self.precision in ("bf16", "fp32"), f"precision={self.precision!r}; expected 'bf16' or 'fp32'")
        check(self.strategy in ("ddp", "fsdp"), f"strategy={self.strategy!r}; expected 'ddp' or 'fsdp'")
        check(self.crop_size >= 0 and self.crop_size % 8 == 0,
              f"crop_size={self.crop_size} must be 0 (whole frames) or a positive multiple of 8")
        check(self.crop_size <= min(self.clip.height, self.clip.width),
              f"crop_size={self.crop_size} is larger than the {self.clip.height}x{self.clip.width} clips")
        check(self.decoder_loss in ("l1", "mse"), f"decoder_loss={self.decoder_loss!r}; expected 'l1' or 'mse'")
        for name in ("steps", "batch_size", "grad_accum", "num_train_timesteps", "log_every", "save_every",
                     "keep_checkpoints"):
            check(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        check(self.lr > 0, f"lr={self.lr} must be > 0")
        check(0 <= self.uncond_prob <= 1, f"uncond_prob={self.uncond_prob} must lie in [0, 1]")
        check(0 <= self.ema_decay < 1, f"ema_decay={self.ema_decay} must lie in [0, 1) (0 = no EMA)")
        check(0 <= self.max_perturbation < self.num_train_timesteps,
              f"max_perturbation={self.max_perturbation} must lie in [0, num_train_timesteps)")
        check(self.snr_gamma >= 0, f"snr_gamma={self.snr_gamma} must be >= 0 (0: plain MSE)")
        check(math.isfinite(self.timestep_shift) and self.timestep_shift > 0,
              f"timestep_shift={self.timestep_shift} must be a finite number > 0 (1: uniform, as the release)")
        try:
            re.compile(self.caption_pattern)
        except re.error as error:
            raise ValueError(f"caption_pattern={self.caption_pattern!r} is not a regular expression: {error}") from None
        check(len(self.adam_betas) == 2, f"adam_betas={self.adam_betas} needs two values")
        check(self.detail_weight >= 0, f"detail_weight={self.detail_weight} must be >= 0")
        check(not self.detail_weight or self.task in ("movq", "image", "keyframe"),
              f"detail_weight={self.detail_weight} weights the movq, image and keyframe losses; task={self.task!r} "
              f"has none to weight (set it to 0)")
        check(self.latent_noise >= 0, f"latent_noise={self.latent_noise} must be >= 0")
        check(self.max_grad_norm >= 0, f"max_grad_norm={self.max_grad_norm} must be > 0 (or 0: no clipping); a "
              "negative norm would turn the gradient around")
        check(self.adam_eps > 0 and self.weight_decay >= 0,
              f"adam_eps={self.adam_eps} must be > 0 and weight_decay={self.weight_decay} >= 0")
        check(self.lr_schedule in ("constant", "cosine"),
              f"lr_schedule={self.lr_schedule!r}; expected 'constant' or 'cosine'")
        check(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio={self.min_lr_ratio} must lie in [0, 1]")
        check(self.num_workers >= 0 and self.warmup_steps >= 0, "num_workers and warmup_steps must be >= 0")
        check(self.device in ("auto", "cpu", "cuda"), f"device={self.device!r}; expected auto, cpu or cuda")
        check_seed(self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "clip": self.clip.to_dict()}

    @property
    def trained_weights(self) -> str:
        return "temporal" if self.train == "temporal" else "all"


# -- presets: the paper's recipes (SPEC "Training") and tiny CPU ones -----------------------------
TrainConfig.register_preset("keyframe", task="keyframe", model_preset="official-keyframe", grad_accum=2,
                            clip=ClipConfig(task="keyframe", keyframes=16))
TrainConfig.register_preset("interpolation", task="interpolation", model_preset="official-interpolation",
                            clip=ClipConfig(task="interpolation", height=256, width=256, keyframes=9))
TrainConfig.register_preset("decoder", task="decoder", model_preset="official-video", grad_accum=1,
                            clip=ClipConfig(task="decoder", decoder_frames=8, height=256, width=256))
_TINY = dict(steps=20, grad_accum=1, lr=1e-3, precision="fp32", num_workers=0, log_every=1, save_every=10)
TrainConfig.register_preset("tiny-keyframe", task="keyframe", model_preset="tiny-keyframe", **_TINY,
                            clip=ClipConfig(task="keyframe", keyframes=4, height=64, width=64))
TrainConfig.register_preset("tiny-interpolation", task="interpolation", model_preset="tiny-interpolation", **_TINY,
                            clip=ClipConfig(task="interpolation", keyframes=3, max_skip=2, height=64, width=64))
TrainConfig.register_preset("tiny-decoder", task="decoder", model_preset="tiny-video", **_TINY,
                            clip=ClipConfig(task="decoder", decoder_frames=4, height=64, width=64))
TrainConfig.register_preset("movq", task="movq", model_preset="official", train="all", grad_accum=1,
                            clip=ClipConfig(task="movq", decoder_frames=4, decoder_step=24, height=256, width=256))
TrainConfig.register_preset("image", task="image", model_preset="official-image", train="all",
                            clip=ClipConfig(task="image", keyframes=16))
# Step distillation: the student starts from --teacher and learns one DDIM step for two of the teacher's.
_DISTILL_CLIP = ClipConfig(task="distill", height=64, width=64)  # the clips are the cache's; nothing reads these
TrainConfig.register_preset("tiny-distill-keyframe", task="distill", train="all", student_steps=2,
                            teacher_guidance=5.0, **_TINY, clip=_DISTILL_CLIP)
TrainConfig.register_preset("tiny-distill-interpolation", task="distill", train="all", student_steps=2,
                            teacher_guidance=0.25, **_TINY, clip=_DISTILL_CLIP)
CacheConfig.register_preset("keyframe", clip=ClipConfig(task="keyframe", keyframes=16))
CacheConfig.register_preset("interpolation", clip=ClipConfig(task="interpolation", keyframes=9, height=256,
                                                             width=256))
# The shapes model's presets are in kvideo.shapes.presets.


# -- inputs: what each stage reads, and the command that makes it --------------------------------
MODEL_SOURCES = {
    "movq": "`kvideo train movq` writes one (movq-all.safetensors)",
    "image": "`kvideo train image` writes one; `kvideo recipe shapes OUT --stages data movq text` the starting point",
    "keyframe": "`kvideo train image` writes the text-to-image UNet to inflate (image-all.safetensors); "
                "an official kandinsky_video.pt also works",
    "interpolation": "`kvideo train interpolation` writes one; an official kandinsky_video_interpolation.pt "
                     "also works",
    "decoder": "`kvideo train movq` writes the image MoVQ to inflate (movq-all.safetensors); an official "
               "video_movq.pt also works",
    "detector": "`kvideo train detector` writes one",
    "distill": "distill reads --teacher, not --model",
}
TEACHER_SOURCE = ("a keyframe or interpolation UNet to distill: `kvideo recipe shapes OUT` writes "
                  "OUT/model/keyframe_unet.safetensors and interpolation_unet.safetensors (the built-in shapes "
                  "model's are in kvideo/weights/shapes/), `kvideo train keyframe` / `kvideo train interpolation` "
                  "write <task>-all.safetensors; an official kandinsky_video*.pt works with --model-preset")
VIDEO_SOURCE = "render a set with `kvideo data shapes DIR --videos N`, or give a folder of your videos"


def _require(path: str, what: str, source: str, *, folder: bool = False) -> None:
    if path and not (Path(path).is_dir() if folder else Path(path).is_file()):
        kind = "folder" if folder else "file"
        raise FileNotFoundError(f"{what} {path!r} does not exist (or is not a {kind}); {source}")


def check_inputs(config: TrainConfig | CacheConfig) -> None:
    """Each input file / folder the config names exists, checked before any model is built; a
    missing one is named with the command that makes it."""
    if isinstance(config, CacheConfig):
        _require(config.videos, "videos", VIDEO_SOURCE, folder=True)
        _require(config.captions, "captions", VIDEO_SOURCE)
        _require(config.movq, "movq", MODEL_SOURCES["movq"])
        _require(config.text_encoder, "text_encoder", "a T5 encoder folder in Hugging Face format (the recipe's "
                 "`text` stage writes one: `kvideo recipe shapes OUT --stages data movq text`)", folder=True)
        _require(config.text_checkpoint, "text_checkpoint", "a UNet checkpoint holding the text projection: "
                 "the recipe's `text` stage writes one (text/image-init.safetensors), `kvideo train image` too")
        return
    _require(config.model, "model", MODEL_SOURCES[config.task])
    if config.task == "distill":
        if not config.teacher:
            raise BadInputError(f"no --teacher given: distill needs {TEACHER_SOURCE}")
        _require(config.teacher, "teacher", f"give {TEACHER_SOURCE}")
        cache = ("the latent cache of the teacher's kind: `kvideo train cache --preset shapes-keyframe ...` for a "
                 "keyframe teacher, `--preset shapes-interpolation` for an interpolation one")
        if not config.data:
            raise BadInputError(f"no --data given: distill reads {cache}")
        _require(config.data, "data", f"build {cache}", folder=True)
        return
    _require(config.init_weights, "init_weights", "give the export of an earlier `kvideo train` run "
             "(<task>-<temporal|all>.safetensors) or a checkpoint's trained.safetensors / ema.safetensors")
    if config.task in CACHE_TASKS or config.task == "image":
        task = "keyframe" if config.task == "image" else config.task
        _require(config.data, "data", f"build a cache with `kvideo train cache --clip.task {task} --videos DIR "
                 "--captions FILE --movq MOVQ --output DIR`", folder=True)
    else:
        _require(config.data, "data", VIDEO_SOURCE, folder=True)
        _require(config.captions, "captions", VIDEO_SOURCE)


# -- files ----------------------------------------------------------------------------------------
def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML file (YAML needs PyYAML) -> dict; a file that does not parse is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadInputError(f"config file {str(path)!r} is not UTF-8 text ({error.reason} at byte {error.start})") \
            from None
    if path.suffix in (".yaml", ".yml"):
        data = _parse_yaml(path, text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise BadInputError(f"config file {str(path)!r} is not JSON: {error} (YAML files need a .yaml or "
                                ".yml name)") from None
    if not isinstance(data, dict):
        raise BadInputError(f"config file {str(path)!r} must hold a mapping, not {type(data).__name__}")
    return data


def _parse_yaml(path: Path, text: str) -> Any:
    try:  # PyYAML is an optional extra (kvideo[train]): JSON configs need no more
        import yaml
    except ImportError as error:
        raise ImportError("reading YAML configs needs PyYAML: pip install 'kvideo[train]' (or pyyaml), "
                          "or use a .json config") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())
        raise BadInputError(f"config file {str(path)!r} is not YAML: {reason}") from None


def check_file_types(cls: type[Config], values: dict[str, Any], path: str | Path, prefix: str = "") -> None:
    """Each key of a config file is a field and each value has its field's type (a number for lr, a whole number
    for steps, ...), else a one-line error naming the file and the key."""
    hints = typing.get_type_hints(cls)
    names = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(str(key) for key in values if key not in names)
    if unknown:
        where = f" of {prefix[:-1]}" if prefix else ""
        raise BadInputError(f"config file {str(path)!r}: unknown field(s) {unknown}{where}; valid fields are "
                            f"{sorted(names)}")
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        value, annotation, key = values[field.name], hints[field.name], prefix + field.name
        if isinstance(annotation, type) and issubclass(annotation, Config):
            if not isinstance(value, dict):
                raise BadInputError(f"config file {str(path)!r}: {key} must be a mapping of its fields, "
                                    f"not {value!r}")
            check_file_types(annotation, value, path, prefix=f"{key}.")
        elif not has_type(value, annotation):
            raise BadInputError(f"config file {str(path)!r}: {key}={value!r} is {described(value)}; expected "
                                f"{expected_type(annotation)}{_quote_hint(value, annotation, path)}")


def _quote_hint(value: Any, annotation: Any, path: str | Path) -> str:
    """A number written as a string: say how to write it (YAML 1.1 reads `1e-3`, without a dot, as a string)."""
    if annotation not in (float, int) or not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    if Path(path).suffix in (".yaml", ".yml"):
        return " (YAML reads an exponent without a dot as a string: write 1.0e-3, not 1e-3)"
    return " (write it without quotes)"


def load_config(cls: type[Config], path: str | Path | None = None, preset: str | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Preset values, then a file's, then overrides (`clip.height` style keys reach the clip)."""
    if preset and preset not in cls._presets:
        raise ValueError(f"{cls.__name__}: unknown preset {preset!r}; available presets: {cls.presets()}")
    values = dict(cls._presets[preset]) if preset else {}
    from_file = read_config_file(path) if path else {}
    check_file_types(cls, from_file, path)
    values = _merge(_as_plain(values), from_file)
    values = _merge(values, _nest(overrides or {}))
    return cls.from_dict(values)


def _as_plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.to_dict() if isinstance(v, Config) else v for k, v in values.items()}


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        head, _, tail = key.partition(".")
        if tail:
            nested.setdefault(head, {})[tail] = value
        else:
            nested[key] = value
    return nested


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


# -- command line ---------------------------------------------------------------------------------
def add_config_arguments(parser: argparse.ArgumentParser, cls: type[Config], stage: str | None = None,
                         skip: tuple[str, ...] = (), preset: str | None = None) -> None:
    """`--config`, `--preset` and one flag per field (`--clip.height 256`) from its `setting` metadata, each with
    its help and the default it has when not given (`preset`: the preset used then); with `stage`, the fields
    only other stages read stay out of --help."""
    add_flag(parser, "--config", metavar="PATH", default=None,
             help="JSON or YAML file with config values; unknown keys are errors")
    add_flag(parser, "--preset", metavar="NAME", default=None, show=preset,
             help=f"start from a named preset: {', '.join(cls.presets())}")
    group = parser.add_argument_group("config values (override the file and preset)")
    add_config_flags(group, cls.preset(preset) if preset else cls(), stage=stage, skip=skip)


def config_from_args(cls: type[Config], args: argparse.Namespace, **fixed: Any) -> Config:
    config = load_config(cls, args.config, args.preset, {**given_settings(args), **fixed})
    check_finite(config)
    return config

