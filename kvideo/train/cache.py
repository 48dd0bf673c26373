"""Latent / text caches: MoVQ latents and text embeddings in resumable safetensors shards, and their dataset."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from kvideo.checkpoint import atomic_path, save_safetensors
from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.unet import UNet
from kvideo.text import TextEncoder, TextProjection
from kvideo.train.config import CacheConfig, check_inputs
from kvideo.train.data import VideoRecord, VideoTextDataset, collate_clips, read_captions, scan_videos

INDEX = "index.json"
VIDEOS = "videos.json"
FORMAT = "kvideo-train-cache"
VERSION = 1
CONTENT_FIELDS = ("videos", "captions", "movq", "movq_preset", "text_encoder", "text_checkpoint", "clip",
                  "clips_per_video", "shard_size", "dtype", "seed")  # what a resumed cache must agree on

VideoEncoder = Callable[[torch.Tensor], torch.Tensor]  # (b, 3, f, H, W) in [-1, 1] -> (b, 4, f, h, w)
TextEncoderFn = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]  # captions -> (context, mask)


# -- writing --------------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def _load_index(folder: Path, config: CacheConfig) -> dict[str, Any]:
    """The existing index (resume), checked against `config`, or a fresh one."""
    content = {k: v for k, v in config.to_dict().items() if k in CONTENT_FIELDS}
    path = folder / INDEX
    if not path.exists():
        return {"format": FORMAT, "version": VERSION, "task": config.clip.task, "config": content,
                "shards": {}, "skipped": []}
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT or index.get("config") != content:
        changed = sorted(k for k in content if index.get("config", {}).get(k) != content[k])
        raise ValueError(f"{str(folder)!r} holds a cache built with other settings ({changed}); "
                         "resume with the same settings or write to a new --output folder")
    return index


def _records(folder: Path, config: CacheConfig) -> list[VideoRecord]:
    """Probe the videos once; a resumed run reuses the probe stored in `videos.json`."""
    path = folder / VIDEOS
    if path.exists():
        return [VideoRecord(Path(r["path"]), r["caption"], r["num_frames"], r["fps"])
                for r in json.loads(path.read_text())["records"]]
    pairs = read_captions(config.captions, config.videos or None)
    records, skipped = scan_videos(pairs, config.clip, progress=config.progress)
    rows = [{"path": str(r.path), "caption": r.caption, "num_frames": r.num_frames, "fps": r.fps} for r in records]
    _write_json(path, {"records": rows, "skipped": skipped})
    return records


def shard_items(num_records: int, config: CacheConfig) -> list[list[tuple[int, int]]]:
    """(video index, clip number) pairs, cut into shards of `shard_size`."""
    items = [(v, k) for v in range(num_records) for k in range(config.clips_per_video)]
    return [items[i:i + config.shard_size] for i in range(0, len(items), config.shard_size)]


def build_cache(config: CacheConfig, encode_video: VideoEncoder, encode_text: TextEncoderFn | None = None
                ) -> Path:
    """Write the cache under `config.output`; shards already written (same settings) are kept.

    Each shard holds per sample `<i>.latents` (c, f, h, w) and, when `encode_text` is given,
    `<i>.context` (n, d) of the valid tokens + 1 padding row; captions and clip steps sit in
    its metadata. Videos that fail to decode are skipped and counted in `index.json`.
    """
    folder = Path(config.output)
    if not config.output:
        raise ValueError("the cache needs an output folder (output=...)")
    folder.mkdir(parents=True, exist_ok=True)
    index = _load_index(folder, config)
    dataset = VideoTextDataset(_records(folder, config), config.clip, seed=config.seed)
    shards = shard_items(len(dataset), config)
    todo = [i for i in range(len(shards)) if _shard_name(i) not in index["shards"]]
    for number in tqdm(todo, desc="caching shards", disable=not config.progress):
        count, skipped = _write_shard(folder / _shard_name(number), dataset, shards[number], config,
                                      encode_video, encode_text)
        index["shards"][_shard_name(number)] = count
        index["skipped"] += skipped
        _write_json(folder / INDEX, index)
    _write_json(folder / INDEX, index)
    return folder


def _shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def _write_shard(path: Path, dataset: VideoTextDataset, items: list[tuple[int, int]], config: CacheConfig,
                 encode_video: VideoEncoder, encode_text: TextEncoderFn | None) -> tuple[int, list[str]]:
    tensors: dict[str, torch.Tensor] = {}
    samples: list[dict[str, Any]] = []
    skipped: list[str] = []
    for start in range(0, len(items), config.batch_size):
        batch = collate_clips([dataset.sample(v, k) for v, k in items[start:start + config.batch_size]])
        skipped += batch["skipped"]
        if "frames" in batch:
            _encode_batch(batch, tensors, samples, config, encode_video, encode_text)
    save_safetensors(path, tensors, {"samples": samples, "task": config.clip.task})
    return len(samples), skipped


@torch.no_grad()
def _encode_batch(batch: dict[str, Any], tensors: dict[str, torch.Tensor], samples: list[dict[str, Any]],
                  config: CacheConfig, encode_video: VideoEncoder, encode_text: TextEncoderFn | None) -> None:
    dtype = getattr(torch, config.dtype)
    latents = encode_video(batch["frames"])  # (b, 4, f, h, w)
    contexts = _text_rows(encode_text, batch["caption"]) if encode_text else [None] * len(latents)
    for latent, context, caption, step, path in zip(latents, contexts, batch["caption"], batch["step"].tolist(),
                                                    batch["path"]):
        key = str(len(samples))
        tensors[f"{key}.latents"] = latent.to("cpu", dtype)
        if context is not None:
            tensors[f"{key}.context"] = context.to("cpu", dtype)
        samples.append({"caption": caption, "step": step, "video": path})


def _text_rows(encode_text: TextEncoderFn, captions: list[str]) -> list[torch.Tensor]:
    """Per caption: its valid token rows plus one zero row (what a single-prompt encode gives)."""
    context, mask = encode_text(captions)  # (b, n, d), (b, n)
    rows = []
    for sample, valid in zip(context, mask.bool()):
        length = int(valid.sum())
        padded = torch.zeros(length + 1, sample.shape[-1], dtype=sample.dtype, device=sample.device)
        padded[:length] = sample[valid]
        rows.append(padded)
    return rows


# -- reading --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CachedSample:
    shard: Path
    key: str
    caption: str
    step: int


class LatentCache(torch.utils.data.Dataset):
    """The samples of a cache folder: `{"latents": (c, f, h, w), "context": (n, d) or absent, "step", "caption"}`.

    Tensors come back as float32.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        path = self.folder / INDEX
        if not path.is_file():
            raise FileNotFoundError(f"{str(self.folder)!r} is not a training cache (no {INDEX}); "
                                    "build one with `kvideo train cache`")
        self.index = json.loads(path.read_text())
        self.task = self.index["task"]
        self.samples = [s for name in sorted(self.index["shards"]) for s in self._shard_samples(name)]
        if not self.samples:
            raise ValueError(f"the cache {str(self.folder)!r} holds no samples (all videos skipped?)")

    def _shard_samples(self, name: str) -> list[CachedSample]:
        with safe_open(str(self.folder / name), "pt") as handle:
            rows = json.loads(handle.metadata()["samples"])
        return [CachedSample(self.folder / name, str(i), row["caption"], row["step"]) for i, row in enumerate(rows)]

    @property
    def has_text(self) -> bool:
        with safe_open(str(self.samples[0].shard), "pt") as handle:
            return f"{self.samples[0].key}.context" in handle.keys()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def captions(self) -> list[str]:
        return [sample.caption for sample in self.samples]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """`cache[i]`, or `cache[i, epoch]` as the trainer asks (a cached clip is the same every epoch)."""
        sample = self.samples[key[0] if isinstance(key, tuple) else key]
        item: dict[str, Any] = {"caption": sample.caption, "step": sample.step}
        with safe_open(str(sample.shard), "pt") as handle:
            item["latents"] = handle.get_tensor(f"{sample.key}.latents").float()
            if f"{sample.key}.context" in handle.keys():
                item["context"] = handle.get_tensor(f"{sample.key}.context").float()
        return item


def collate_cached(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack latents; pad contexts with zero rows to the longest, with a mask of the real rows."""
    batch: dict[str, Any] = {
        "latents": torch.stack([item["latents"] for item in items]),  # (b, c, f, h, w)
        "step": torch.tensor([item["step"] for item in items]),
        "caption": [item["caption"] for item in items],
    }
    if all("context" in item for item in items):
        batch["context"], batch["context_mask"] = pad_contexts([item["context"] for item in items])
    return batch


def pad_contexts(contexts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_i, d) rows (the last of each a padding row) -> (b, n, d) and a (b, n) mask of the valid rows."""
    length = max(c.shape[0] for c in contexts)
    context = torch.zeros(len(contexts), length, contexts[0].shape[-1])
    mask = torch.zeros(len(contexts), length, dtype=torch.bool)
    for i, rows in enumerate(contexts):
        context[i, :rows.shape[0]] = rows
        mask[i, :rows.shape[0] - 1] = True
    return context, mask


# -- encoders from a config -------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def video_encoder(config: CacheConfig) -> VideoEncoder:
    """The MoVQ encoder of `config.movq` (or a random `movq_preset` model, for trials)."""
    device = _device(config.device)
    preset = MoVQConfig.preset(config.movq_preset) if config.movq_preset else None
    if config.movq:
        movq = MoVQ.from_pretrained(config.movq, preset, device=device)
    elif preset is not None:
        movq = MoVQ(preset).to(device).eval()
    else:
        raise ValueError("the cache needs movq=<MoVQ checkpoint> (movq.pt / video_movq.pt) to encode the videos")
    movq.requires_grad_(False)
    return lambda frames: movq.encode(frames.to(device, movq.post_quant_conv.weight.dtype), batch_size=16)


def text_encoder(config: CacheConfig) -> TextEncoderFn:
    """T5 encoder (`text_encoder` folder) + the projection and null embedding of the keyframe checkpoint
    (`text_checkpoint`, e.g. kandinsky_video.pt)."""
    if not config.text_encoder or not config.text_checkpoint:
        raise ValueError("keyframe caches need text_encoder=<T5 folder> and text_checkpoint=<keyframe UNet checkpoint "
                         "holding the text projection, e.g. kandinsky_video.pt>")
    extras = UNet.read_checkpoint(config.text_checkpoint).extras
    projection_state = {k[len("projections."):]: v for k, v in extras.items() if k.startswith("projections.")}
    if not projection_state or "null_embedding" not in extras:
        raise ValueError(f"{config.text_checkpoint!r} holds no text projection / null embedding "
                         "(expected the official kandinsky_video.pt or its kvideo conversion)")
    encoder = TextEncoder.from_pretrained(config.text_encoder, TextProjection.from_state_dict(projection_state),
                                          extras["null_embedding"].float(), device=_device(config.device),
                                          progress=config.progress)
    return lambda captions: tuple(encoder.encode(captions))


def run_cache(config: CacheConfig) -> Path:
    """`kvideo train cache`: build the encoders the config names and write the cache."""
    check_inputs(config)
    texts = text_encoder(config) if config.clip.task == "keyframe" else None
    return build_cache(config, video_encoder(config), texts)
