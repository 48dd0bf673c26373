"""Builders shared by the eval tests: tiny synthetic datasets and tiny random detectors (no tests here)."""
from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import torch

UCF_CLASSES = ("ApplyEyeMakeup", "HandstandPushups", "YoYo")
SIZE = (48, 64)  # (h, w) of the synthetic videos (decord mis-reads some narrow widths, e.g. 48)


def frames(seed: int, num_frames: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Smooth moving colour pattern, different for every seed: uint8 (f, h, w, 3)."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = rng.uniform(0, 255, size=(1, 1, 1, 3))
    y, x = np.mgrid[0:h, 0:w]
    t = np.arange(num_frames)[:, None, None, None]
    wave = 60 * np.sin((x[None, ..., None] * rng.uniform(0.1, 0.5) + t * rng.uniform(0.2, 1.0)) / 3)
    return np.clip(base + wave + 10 * y[None, ..., None] / h, 0, 255).astype(np.uint8)


def write_avi(path: Path, video: np.ndarray, fps: int = 25) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width, stream.pix_fmt = video.shape[1], video.shape[2], "yuv420p"
        for image in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def write_mp4(path: Path, video: np.ndarray, fps: int = 8) -> None:
    from kvideo.export import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, video, fps, progress=False)


def make_ucf101(root: Path, per_class: int = 3, num_frames: int = 20) -> Path:
    """UCF-101 layout: UCF-101/<Class>/v_<Class>_gXX_cYY.avi + ucfTrainTestlist/ (one corrupt, one short)."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(UCF_CLASSES)))
    train, test = [], []
    for label, name in enumerate(UCF_CLASSES):
        spelled = "HandStandPushups" if name == "HandstandPushups" else name  # UCF-101's own inconsistency
        for g in range(per_class):
            rel = f"{name}/v_{spelled}_g{g + 1:02d}_c01.avi"
            write_avi(root / "UCF-101" / rel, frames(label * 100 + g, num_frames))
            (test if g == 0 else train).append(rel)
    (root / "UCF-101" / train[0]).write_bytes(b"this is not a video")  # corrupt
    write_avi(root / "UCF-101" / train[1], frames(999, 5))  # too short for 16 frames
    (lists / "trainlist01.txt").write_text("".join(f"{r} {UCF_CLASSES.index(r.split('/')[0]) + 1}\n" for r in train))
    (lists / "testlist01.txt").write_text("".join(f"{r}\n" for r in test))
    return root


def make_msrvtt(root: Path, num_videos: int = 6, num_frames: int = 18) -> Path:
    """MSR-VTT layout: TestVideo/videoNNNN.mp4 + test_videodatainfo.json (video7012 corrupt)."""
    ids = [f"video{7010 + i}" for i in range(num_videos)]
    for i, vid in enumerate(ids):
        write_mp4(root / "TestVideo" / f"{vid}.mp4", frames(500 + i, num_frames))
    (root / "TestVideo" / f"{ids[2]}.mp4").write_bytes(b"\x00" * 64)
    sentences = [{"caption": f"caption {j} of {vid}", "video_id": vid, "sen_id": 20 * i + j}
                 for i, vid in enumerate(ids) for j in (1, 0)]
    data = {"videos": [{"video_id": vid, "split": "test", "id": i} for i, vid in enumerate(ids)],
            "sentences": sentences}
    (root / "test_videodatainfo.json").write_text(json.dumps(data))
    return root


def make_generated(root: Path, num_videos: int = 6, num_frames: int = 16, prompts=None) -> Path:
    """A generated set as `kvideo eval generate` leaves it: 00000.mp4, ... + manifest.json."""
    videos = []
    for i in range(num_videos):
        write_mp4(root / f"{i:05d}.mp4", frames(2000 + i, num_frames, (64, 64)))
        prompt = prompts[i] if prompts else f"a prompt number {i}"
        videos.append({"index": i, "file": f"{i:05d}.mp4", "prompt": prompt, "key": str(i), "seed": i})
    (root / "manifest.json").write_text(json.dumps({"benchmark": "test", "settings": {}, "videos": videos}))
    return root


# -- tiny detectors ----------------------------------------------------------------------------
def tiny_i3d_file(path: Path, seed: int = 0) -> Path:
    from kvideo.eval.i3d import I3DConfig, InceptionI3d

    torch.manual_seed(seed)
    model = InceptionI3d(I3DConfig.preset("tiny"))
    for module in model.modules():  # variance-preserving init: features that differ between videos
        if isinstance(module, torch.nn.Conv3d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    model.save_pretrained(path)
    return path


def tiny_c3d_file(path: Path, seed: int = 0) -> Path:
    from kvideo.eval.c3d import C3D, C3DConfig

    torch.manual_seed(seed)
    model = C3D(C3DConfig.preset("tiny"))
    model.mean.uniform_(90, 110)
    model.save_pretrained(path)
    return path


def tiny_clip_dir(path: Path, seed: int = 0) -> Path:
    """A tiny random CLIP in the transformers format, with an offline character-level tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    path.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits:
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    small = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1, **small),
        vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(path)
    return path
