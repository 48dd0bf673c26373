"""`kvideo recipe shapes OUT`: the whole shapes model from an empty folder, stage by stage, resumable.

data -> movq -> text -> cache-keyframe -> image -> keyframe (temporal layers only, the paper's recipe, for
comparison) and keyframe-all (every weight), each in phases (`KEYFRAME_PHASES`) -> keyframe-detail (keyframe-all
fine-tuned at low noise levels: the shipped one) -> cache-interpolation -> interpolation -> decoder -> model (the pipeline folder, fp16).
Each stage is kvideo's own command with a `shapes-*` preset (kvideo.shapes.presets); a finished stage is
skipped, an interrupted one resumes from its latest checkpoint. `OUT/records/<stage>.json` records
each stage's wall time, final loss and peak memory.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kvideo.checkpoint import atomic_path
from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.unet import UNet, UNetConfig
from kvideo.shapes.grammar import BACKGROUNDS, COLORS, DIRECTIONS, SHAPES, TEMPLATE, all_captions
from kvideo.shapes.presets import GENERATION, KEYFRAME_PHASES, STAGES
from kvideo.shapes.render import RenderSettings, check_folder, clip_caption, render_dataset
from kvideo.text import TextProjection, write_word_t5
from kvideo.train.cache import LatentCache, run_cache
from kvideo.train.checkpointing import load_trained_weights, read_weights, save_weights
from kvideo.train.config import CacheConfig, TrainConfig, check_seed
from kvideo.train.data import cover_crop_frames, read_captions
from kvideo.train.tracking import read_log
from kvideo.train.trainer import train
from kvideo.video_io import read_frames, video_info

TRAIN_VIDEOS = 864  # 4 clips of each of the 216 captions
TEXT_DIM = 64  # d_model of the shapes text encoder
LATENT_STD = 0.4  # std of the diffusion latents: |x0| then stays within the samplers' [-1, 1] thresholding
# The keyframe run the model ships: every weight trained (with the temporal layers alone the direction word never
# reached the motion: the text reaches them only through the frozen image UNet), then fine-tuned at low noise.
SHIPPED_KEYFRAME = ("keyframe-detail", "keyframe", "all")  # (stage, task, trained weights)
DATA_SETTINGS = RenderSettings(height=128, width=128, fps=24.0, seconds=10.0)  # the clips the data stage renders
# The interpolation model's second data set: the same motions in 3 s, so that a keyframe pair moves far enough
# (5-20 % of the frame) for the frames between to be placed along it (stage interpolation-motion).
MOTION_SETTINGS = RenderSettings(height=64, width=64, fps=24.0, seconds=3.0)
SHIPPED_INTERPOLATION = ("interpolation-motion", "interpolation", "all")
MODEL_FILES = ("keyframe_unet.safetensors", "interpolation_unet.safetensors", "video_movq.safetensors",
               "text_encoder")


class RecipePaths:
    """Where every stage of the recipe reads and writes: `root/<stage>` (e.g. paths.stage("movq"))."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data, self.model, self.text = root / "data", root / "model", root / "text"
        self.captions = self.data / "captions.csv"

    def stage(self, name: str) -> Path:
        return self.root / name

    def weights(self, stage: str, task: str, trained: str) -> Path:
        """The exported weights of a training stage: `root/<stage>/<task>-<trained>.safetensors`."""
        return self.root / stage / f"{task}-{trained}.safetensors"


class Recipe:
    """The stages of the shapes recipe over one output folder; `run()` does what is not done yet."""

    def __init__(self, root: str | Path, *, videos: int = TRAIN_VIDEOS, seed: int = 0, device: str = "auto",
                 steps_scale: float = 1.0, batch_scale: int = 1, progress: bool = True,
                 log: Callable[[str], None] = print) -> None:
        if videos < 1:
            raise ValueError(f"videos={videos}: the recipe needs at least one training video")
        if not (math.isfinite(steps_scale) and steps_scale > 0):
            raise ValueError(f"steps_scale={steps_scale} must be a finite number > 0")
        if isinstance(batch_scale, bool) or not isinstance(batch_scale, int) or batch_scale < 1:
            raise ValueError(f"batch_scale={batch_scale!r} must be a whole number >= 1")
        check_seed(seed)
        self.paths = RecipePaths(Path(root))
        self.videos, self.seed, self.device, self.steps_scale = videos, seed, device, steps_scale
        self.batch_scale = batch_scale
        self.progress, self.log = progress, log

    # -- bookkeeping ---------------------------------------------------------------------------------
    def records(self) -> dict[str, dict]:
        """What each finished stage recorded (`OUT/records/<stage>.json`: one file a stage, so stages
        of independent branches can run in parallel processes)."""
        folder = self.paths.root / "records"
        paths = {stage: folder / f"{stage}.json" for stage in STAGES}
        return {stage: _read_record(path) for stage, path in paths.items() if path.is_file()}

    def _record(self, stage: str, values: dict) -> None:
        folder = self.paths.root / "records"
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"{stage}.json") as tmp:
            tmp.write_text(json.dumps(values, indent=1))

    def run(self, stages: tuple[str, ...] = STAGES) -> Path:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown recipe stages {unknown}; the stages are {list(STAGES)}")
        self.check_before_work(stages)
        self.paths.root.mkdir(parents=True, exist_ok=True)
        for stage in stages:
            if stage in self.records():
                self.log(f"recipe: {stage} done before, skipped")
                continue
            self.log(f"recipe: {stage} ...")
            started = time.perf_counter()
            values = getattr(self, "stage_" + stage.replace("-", "_"))() or {}
            values["wall_s"] = round(time.perf_counter() - started, 1)
            self._record(stage, values)
            self.log(f"recipe: {stage} finished in {values['wall_s']:.0f} s {values}")
        return self.paths.model

    def check_before_work(self, stages: tuple[str, ...]) -> None:
        """Everything that would stop a stage, checked before the first one runs: the device, the captions
        of the keyframe phases, and the folders the data and model stages write (only into what they made)."""
        done = self.records()
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device {self.device!r}: expected auto, cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA GPU is available here; use --device cpu (or auto)")
        for stage in ("keyframe", "keyframe-all"):
            if stage in stages and stage not in done:
                self.check_phase_captions(stage)
        if "data" in stages and "data" not in done:
            check_folder(self.paths.data, self.seed, DATA_SETTINGS)
        if "model" in stages and "model" not in done:
            check_model_folder(self.paths.model)

    def check_phase_captions(self, stage: str) -> None:
        """Refuse, before any training, a data set whose clips lack the captions a phase of keyframe `stage`
        trains on (its `caption_pattern`): clip captions follow from (seed, index), so no clip is read."""
        for phase in KEYFRAME_PHASES:
            pattern = TrainConfig.preset(f"shapes-{stage}-{phase}").caption_pattern
            if pattern and not any(re.search(pattern, clip_caption(self.seed, i).text) for i in range(self.videos)):
                cycle = len(all_captions())
                raise ValueError(f"videos={self.videos}: the {stage} stage's {phase} phase trains on the captions "
                                 f"matching {pattern!r}, and none of the {self.videos} clips has one; render at least "
                                 f"{cycle} (every {cycle} clips hold each caption of the grammar once)")

    # -- configs -------------------------------------------------------------------------------------
    def train_config(self, preset: str, output: Path, **values) -> TrainConfig:
        base = TrainConfig.preset(preset)
        steps = max(1, round(base.steps * self.steps_scale))
        return TrainConfig.preset(preset, output_dir=str(output), resume="latest", device=self.device, seed=self.seed,
                                  steps=steps, save_every=min(base.save_every, steps), progress=self.progress,
                                  batch_size=base.batch_size * self.batch_scale, **values)

    def _train(self, cfg: TrainConfig) -> dict:
        result = train(cfg)
        log = read_log(cfg.output_dir)
        tail = [r["loss"] for r in log if r["step"] > result.step - 100]
        return {"steps": result.step, "final_loss": round(result.last_loss, 5), "weights": str(result.weights),
                "mean_loss_last_100_steps": round(sum(tail) / max(1, len(tail)), 5),
                "peak_memory_gb": max((r.get("memory_gb", 0.0) for r in log), default=0.0)}

    # -- stages --------------------------------------------------------------------------------------
    def stage_data(self) -> dict:
        render_dataset(self.paths.data, num_videos=self.videos, seed=self.seed, size=DATA_SETTINGS.height,
                       fps=DATA_SETTINGS.fps, seconds=DATA_SETTINGS.seconds, progress=self.progress)
        return {"videos": self.videos}

    def stage_movq(self) -> dict:
        record = self._train(self.train_config("shapes-movq", self.paths.stage("movq"), data=str(self.paths.data),
                                               captions=str(self.paths.captions)))
        record["latent_scale"] = calibrate_latent_scale(self.movq, self.paths.captions)
        return record

    @property
    def movq(self) -> Path:
        """The finished image MoVQ."""
        return self.paths.weights("movq", "movq", "all")

    def stage_text(self) -> dict:
        """The text encoder (a random word-level T5 over the grammar, frozen: the UNets' cross-attention
        learns to read it) and the image UNet's starting point, which carries the text projection and
        the null embedding every later stage inherits."""
        words = sorted({w for c in all_captions() for w in c.text.split()})
        write_word_t5(self.paths.text / "text_encoder", words, d_model=TEXT_DIM, num_layers=2, seed=self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            unet = UNet(UNetConfig.preset("shapes-image"))
            projection = TextProjection(TEXT_DIM, unet.config.context_dim)
            null = torch.randn(unet.config.context_dim) * 0.1
        extras = {"null_embedding": null, **{f"projections.{k}": v for k, v in projection.state_dict().items()}}
        unet.save_pretrained(self.paths.text / "image-init.safetensors", extras=extras)
        return {"vocabulary": len(words)}

    def _cache(self, preset: str, output: Path, data: Path | None = None, **values) -> dict:
        data = data or self.paths.data
        cfg = CacheConfig.preset(preset, videos=str(data), captions=str(data / "captions.csv"),
                                 output=str(output), movq=str(self.movq),
                                 device=self.device, seed=self.seed, progress=self.progress, **values)
        run_cache(cfg)
        return {}

    def stage_cache_keyframe(self) -> dict:
        return self._cache("shapes-keyframe", self.paths.stage("cache-keyframe"),
                           text_encoder=str(self.paths.text / "text_encoder"),
                           text_checkpoint=str(self.paths.text / "image-init.safetensors"))

    def stage_image(self) -> dict:
        return self._train(self.train_config("shapes-image", self.paths.stage("image"),
                                             data=str(self.paths.stage("cache-keyframe")),
                                             model=str(self.paths.text / "image-init.safetensors")))

    def stage_keyframe(self) -> dict:
        return self._train_phases("shapes-keyframe", "keyframe")

    def stage_keyframe_all(self) -> dict:
        return self._train_phases("shapes-keyframe-all", "keyframe-all")

    def stage_keyframe_detail(self) -> dict:
        """keyframe-all's model fine-tuned with its steps drawn mostly at low noise (preset shapes-keyframe-detail)."""
        return self._train(self.train_config(
            "shapes-keyframe-detail", self.paths.stage("keyframe-detail"),
            data=str(self.paths.stage("cache-keyframe")),
            model=str(self.paths.weights("keyframe-all", "keyframe", "all"))))

    def _train_phases(self, preset: str, stage: str) -> dict:
        """A keyframe stage: the phases of `KEYFRAME_PHASES` (preset `<preset>-<phase>`, folder
        `OUT/<stage>-<phase>`), then the preset's own run in `OUT/<stage>`, each started from the
        weights the one before exported."""
        runs = [(f"{preset}-{phase}", self.paths.stage(f"{stage}-{phase}")) for phase in KEYFRAME_PHASES]
        runs.append((preset, self.paths.stage(stage)))
        records, init = {}, ""
        for name, folder in runs:
            record = self._train(self.train_config(name, folder, data=str(self.paths.stage("cache-keyframe")),
                                                   model=str(self.paths.weights("image", "image", "all")),
                                                   init_weights=init))
            records[name] = record
            init = record["weights"]
        return {**records.pop(preset), "phases": records}

    def stage_cache_interpolation(self) -> dict:
        return self._cache("shapes-interpolation", self.paths.stage("cache-interpolation"))

    def stage_interpolation(self) -> dict:
        return self._train(self.train_config("shapes-interpolation", self.paths.stage("interpolation"),
                                             data=str(self.paths.stage("cache-interpolation"))))

    def stage_data_motion(self) -> dict:
        videos = max(1, self.videos // 2)
        render_dataset(self.paths.stage("data-motion"), num_videos=videos, seed=self.seed,
                       size=MOTION_SETTINGS.height, fps=MOTION_SETTINGS.fps, seconds=MOTION_SETTINGS.seconds,
                       progress=self.progress)
        return {"videos": videos}

    def stage_cache_interpolation_motion(self) -> dict:
        return self._cache("shapes-interpolation", self.paths.stage("cache-interpolation-motion"),
                           data=self.paths.stage("data-motion"))

    def stage_interpolation_motion(self) -> dict:
        """The interpolation model fine-tuned on the faster clips of data-motion (see MOTION_SETTINGS)."""
        return self._train(self.train_config(
            "shapes-interpolation-motion", self.paths.stage("interpolation-motion"),
            data=str(self.paths.stage("cache-interpolation-motion")),
            model=str(self.paths.weights("interpolation", "interpolation", "all"))))

    def stage_decoder(self) -> dict:
        return self._train(self.train_config("shapes-decoder", self.paths.stage("decoder"), data=str(self.paths.data),
                                             captions=str(self.paths.captions),
                                             model=str(self.movq)))

    def stage_model(self) -> dict:
        """The pipeline folder: full keyframe UNet, interpolation UNet, video MoVQ (fp16) + the text encoder."""
        folder = self.paths.model
        assemble_model(folder, image=self.paths.weights("image", "image", "all"),
                       keyframe=self.paths.weights(*SHIPPED_KEYFRAME),
                       interpolation=self.paths.weights(*SHIPPED_INTERPOLATION),
                       movq=self.movq,
                       decoder=self.paths.weights("decoder", "decoder", TrainConfig.preset("shapes-decoder").train),
                       text_encoder=self.paths.text / "text_encoder")
        write_model_card(folder, latent_range=measure_latent_range(self.paths.stage("cache-keyframe")))
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        return {"folder": str(folder), "megabytes": round(size / 2**20, 1)}


def _read_record(path: Path) -> dict:
    """A finished stage's record, or a one-line error naming it (delete it to run the stage again)."""
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not a recipe record ({error}); delete it to run that stage again") \
            from None
    if not isinstance(record, dict):
        raise ValueError(f"{str(path)!r} is not a recipe record (a {type(record).__name__}); delete it to run that "
                         "stage again")
    return record


def check_model_folder(folder: Path) -> None:
    """Refuse a model folder holding anything the model stage does not write (it replaces what it writes)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is a file; the recipe's model stage writes a folder there")
    ours = {*MODEL_FILES, "model.json"}
    foreign = sorted(p for p in folder.iterdir() if p.name not in ours and not _is_temporary(p)) \
        if folder.is_dir() else []
    if foreign:
        raise ValueError(f"{str(foreign[0])!r} was not written by kvideo recipe (its model stage writes only "
                         f"{', '.join(sorted(ours))} in {str(folder)!r}); move it away, nothing was changed")


def _is_temporary(path: Path) -> bool:
    """A temp file of an interrupted atomic write (`.NAME.<random>.tmp...`)."""
    return path.name.startswith(".") and ".tmp" in path.name


def assemble_model(folder: Path, *, image: Path, keyframe: Path, interpolation: Path, movq: Path, decoder: Path,
                   text_encoder: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Full models from the stages' outputs, written as a weights folder `KVideoPipeline.from_pretrained` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    keyframe_unet = full_keyframe_unet(image, keyframe)
    extras = {k: v.to(dtype) for k, v in UNet.read_checkpoint(image).extras.items()}
    keyframe_unet.to(dtype).save_pretrained(folder / MODEL_FILES[0], extras=extras)
    interp = UNet.read_checkpoint(interpolation)
    UNet.from_checkpoint(interp).to(dtype).save_pretrained(
        folder / MODEL_FILES[1], extras={k: v.to(dtype) for k, v in interp.extras.items()})
    _, _, info = read_weights(decoder)
    video = MoVQ.inflate(MoVQ.read_checkpoint(movq).state, MoVQConfig.from_json(info.model_config))
    load_trained_weights(video, decoder)
    video.to(dtype).save_pretrained(folder / MODEL_FILES[2])
    target = folder / MODEL_FILES[3]
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(text_encoder, target)
    return folder


def full_keyframe_unet(image: Path, keyframe: Path):
    """The image UNet inflated, with the trained weights of a keyframe run (temporal only, or all) loaded."""
    _, _, info = read_weights(keyframe)
    unet = UNet.inflate(UNet.read_checkpoint(image).state, UNetConfig.from_json(info.model_config))
    load_trained_weights(unet, keyframe)
    return unet


def prompt_pattern() -> str:
    """A regular expression that matches (lower-cased, stripped) prompts of the shapes grammar."""
    words = {name: "(" + "|".join(choices) + ")" for name, choices in
             (("color", COLORS), ("shape", SHAPES), ("direction", DIRECTIONS), ("background", BACKGROUNDS))}
    return TEMPLATE.replace(" ", r"\s+").replace(r"a\s+{color}", r"an?\s+{color}").format(**words)  # "an orange"


def measure_latent_range(cache: Path, clips: int | None = None) -> list[list[float]]:
    """[low, high] per latent channel over the clips of a latent cache (the first `clips`, or all), rounded
    outward to 0.01: the card's `latent_range`, to which sampling clips each x0 estimate
    (`GenerationOptions.latent_range`)."""
    data = LatentCache(cache)
    count = len(data) if clips is None else min(clips, len(data))
    latents = torch.stack([data[i]["latents"].float() for i in range(count)])  # (n, c, f, h, w)
    channels = latents.transpose(0, 1).reshape(latents.shape[1], -1)
    low, high = channels.min(dim=1).values, channels.max(dim=1).values
    return [[math.floor(v * 100) / 100 for v in low.tolist()], [math.ceil(v * 100) / 100 for v in high.tolist()]]


def write_model_card(folder: Path, latent_range: list[list[float]] | None = None) -> Path:
    """`model.json`: what the pipeline and `kvideo generate` need to know about the model besides weights."""
    card = {
        "name": "shapes",
        "description": "kvideo's own small text-to-video model, trained from scratch by `kvideo recipe shapes` "
                       "on rendered 64x64 clips of one colored shape moving on a plain background",
        "prompt_grammar": TEMPLATE,
        "prompt_words": {"color": list(COLORS), "shape": list(SHAPES), "direction": list(DIRECTIONS),
                         "background": list(BACKGROUNDS)},
        "prompt_pattern": prompt_pattern(),
        "generation": {**GENERATION, **({"latent_range": latent_range} if latent_range else {})},
    }
    with atomic_path(folder / "model.json") as tmp:
        tmp.write_text(json.dumps(card, indent=1) + "\n")
    return folder / "model.json"


def plot_loss_curves(root: str | Path, path: str | Path) -> Path:
    """One panel per training stage of a recipe folder: loss against step, from each stage's log.jsonl."""
    try:  # matplotlib is an optional extra (kvideo[train]): only the loss plot needs it
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install 'kvideo[train]' (or matplotlib)") from error
    root = Path(root)
    stages = [s for s in STAGES if (root / s / "log.jsonl").is_file()]
    if not stages:
        raise FileNotFoundError(f"{str(root)!r} holds no training logs (<stage>/log.jsonl); run kvideo recipe first")
    figure, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 2.8), squeeze=False)
    for axis, stage in zip(axes[0], stages):
        log = read_log(root / stage)
        axis.plot([r["step"] for r in log], [r["loss"] for r in log], linewidth=1)
        axis.set_title(stage, fontsize=10)
        axis.set_xlabel("step")
        axis.set_yscale("log")
    axes[0][0].set_ylabel("training loss")
    figure.tight_layout()
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return Path(path)


def calibrate_latent_scale(weights: Path, captions: Path, *, clips: int = 32, target_std: float = LATENT_STD) -> float:
    """Set the trained MoVQ's `latent_scale` so that its latents of `clips` training clips have std
    `target_std`, rewriting `weights` in place (atomically); a MoVQ already calibrated is left alone.

    The release's samplers clip (or rescale) predicted x0 to about [-1, 1] each step; latents trained
    to unit variance would be squashed by that, and sampling collapses. At std 0.4 the latents of white
    frames still reach 1.4, which is why the shapes model's card turns that thresholding off as well.
    """
    state, extras, info = read_weights(weights)
    config = MoVQConfig.from_json(info.model_config)
    if config.latent_scale != 1.0:
        return config.latent_scale
    movq = MoVQ(config)
    movq.load_state_dict(state)
    paths = [path for path, _ in read_captions(captions)[:clips]]
    frames = [read_frames(p, np.linspace(0, video_info(p).num_frames - 1, 4).round().astype(int).tolist())
              for p in paths]  # 4 frames spread over each clip
    images = cover_crop_frames(np.concatenate(frames), 64, 64).transpose(0, 1)  # (n, 3, 64, 64)
    with torch.no_grad():
        std = float(movq.eval().encode(images).std())
    scale = round(target_std / std, 6)
    config = dataclasses.replace(config, latent_scale=scale)
    save_weights(weights, state, dataclasses.replace(info, model_config=config.to_json()), extras)
    return scale
