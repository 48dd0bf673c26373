"""Evaluation datasets: UCF-101, MSR-VTT, a folder with CSV/JSONL captions, generated sets; clip reading."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kvideo.errors import BadDataError
from kvideo.train.data import read_caption_rows  # names the file and line of bad UTF-8 or a non-object line
from kvideo.video_io import VideoReadError, read_frames, video_info

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif")
DEFAULT_TEMPLATE = "{name}"
MANIFEST = "manifest.json"


class SkipVideo(Exception):
    """A video that cannot be used (unreadable, too short, missing); counted in the report."""


@dataclass(frozen=True)
class VideoItem:
    path: Path
    key: str  # stable id: the path relative to the dataset root, or the video id
    caption: str | None = None
    label: int | None = None  # 0-based class index (UCF-101)


@dataclass
class VideoDataset:
    """Videos (with captions / labels where the layout has them) and how they were selected."""

    name: str
    root: Path
    items: list[VideoItem]
    settings: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # listed by the annotations but not on disk
    class_names: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.name, "root": str(self.root.resolve()), "videos": len(self.items), **self.settings}


def _require_dir(root: str | Path, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder {str(root)!r} does not exist")
    return root


def _video_files(root: Path) -> list[Path]:
    """Video files under `root`, sorted; hidden ones (temp files of an interrupted write) are not videos."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


# -- UCF-101 -----------------------------------------------------------------------------------
UCF_LAYOUT = (
    "expected the UCF-101 layout: <root>/UCF-101/<ClassName>/v_<ClassName>_gXX_cYY.avi (or the class "
    "folders directly under <root>) and the split lists (classInd.txt, trainlist0N.txt, testlist0N.txt, "
    "from UCF101TrainTestSplits-RecognitionTask.zip) anywhere under <root> or at --splits-dir"
)


def class_prompt_name(class_name: str) -> str:
    """'ApplyEyeMakeup' -> 'apply eye makeup' (CamelCase split into lower-case words)."""
    return " ".join(w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", class_name))


def read_template(path: str | Path | None) -> tuple[str, dict[str, str]]:
    """A prompt template file: one line with `{name}` (the default is '{name}'), and optional
    `ClassName: prompt` lines that override single classes; `#` starts a comment line."""
    if path is None:
        return DEFAULT_TEMPLATE, {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt template file {str(path)!r} does not exist")
    template, overrides = DEFAULT_TEMPLATE, {}
    for line in (ln.strip() for ln in path.read_text().splitlines()):
        if not line or line.startswith("#"):
            continue
        if "{name}" in line:
            template = line
        elif ":" in line:
            name, _, prompt = line.partition(":")
            overrides[name.strip()] = prompt.strip()
        else:
            raise ValueError(f"{str(path)!r}: line {line!r} has neither '{{name}}' nor 'ClassName: prompt'")
    return template, overrides


def ucf101(
    root: str | Path, *, split: str = "all", fold: int = 1, splits_dir: str | Path | None = None,
    template: str | Path | None = None,
) -> VideoDataset:
    """UCF-101 videos of one split (`train` / `test` of `fold` 1-3, or `all`), captioned by class."""
    root = _require_dir(root, "UCF-101")
    if split not in ("all", "train", "test") or fold not in (1, 2, 3):
        raise ValueError(f"UCF-101 split must be all/train/test and fold 1-3, got split={split!r} fold={fold}")
    lists = _ucf_lists_dir(root, splits_dir)
    classes = _read_class_index(lists / "classInd.txt")
    videos = _ucf_video_index(root)
    listed = _ucf_listed(lists, split, fold, videos, classes)
    text, overrides = read_template(template)
    prompts = [overrides.get(c, text.format(name=class_prompt_name(c))) for c in classes]
    items, missing = [], []
    for rel in listed:
        path = videos.get(rel.lower())
        if path is None:
            missing.append(rel)
            continue
        label = _class_label(classes, path.parent.name)
        items.append(VideoItem(path, f"{path.parent.name}/{path.name}", prompts[label], label))
    if not items:
        raise ValueError(f"no UCF-101 video of the split lists was found under {str(root)!r}; {UCF_LAYOUT}")
    settings = {"split": split, "fold": fold if split != "all" else None, "template": text, "overrides": len(overrides)}
    return VideoDataset("ucf101", root, items, settings, missing, classes)


def _ucf_lists_dir(root: Path, splits_dir: str | Path | None) -> Path:
    if splits_dir is not None:
        lists = Path(splits_dir)
        if not (lists / "classInd.txt").is_file():
            raise FileNotFoundError(f"no classInd.txt in --splits-dir {str(lists)!r}; {UCF_LAYOUT}")
        return lists
    found = sorted(root.rglob("classInd.txt"))
    if not found:
        raise ValueError(f"no classInd.txt under {str(root)!r}; {UCF_LAYOUT}")
    return found[0].parent


def _read_class_index(path: Path) -> list[str]:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not rows or any(len(r) != 2 or not r[0].isdigit() for r in rows):
        raise ValueError(f"{str(path)!r} is not a UCF-101 classInd.txt ('<index> <ClassName>' lines)")
    return [name for _, name in sorted(rows, key=lambda r: int(r[0]))]


def _class_label(classes: list[str], class_name: str) -> int:
    lowered = [c.lower() for c in classes]
    if class_name.lower() not in lowered:
        raise ValueError(f"class folder {class_name!r} is not in classInd.txt")
    return lowered.index(class_name.lower())


def _ucf_video_index(root: Path) -> dict[str, Path]:
    """'class/v_file.avi' (lower case: UCF-101 spells HandstandPushups two ways) -> path."""
    return {f"{p.parent.name}/{p.name}".lower(): p for p in _video_files(root)}


def _ucf_listed(lists: Path, split: str, fold: int, videos: dict[str, Path], classes: list[str]) -> list[str]:
    if split == "all":
        wanted = {c.lower() for c in classes}
        return sorted(k for k in videos if k.split("/")[0] in wanted)
    path = lists / f"{split}list0{fold}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"split list {str(path)!r} does not exist; {UCF_LAYOUT}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


# -- MSR-VTT -----------------------------------------------------------------------------------
MSRVTT_LAYOUT = (
    "expected MSR-VTT: the videos (videoNNNN.mp4) anywhere under <root> and the annotation JSON "
    "(test_videodatainfo.json / train_val_videodatainfo.json with 'videos' and 'sentences') under <root> "
    "or at --annotations"
)


def msrvtt(
    root: str | Path, *, annotations: str | Path | None = None, split: str = "test", captions: str = "first"
) -> VideoDataset:
    """MSR-VTT videos of `split` (the standard test split: 2,990 videos), one caption per video
    (`first`: the lowest sen_id) or every caption (`all`: one item per caption)."""
    root = _require_dir(root, "MSR-VTT")
    if captions not in ("first", "all"):
        raise ValueError(f"captions must be 'first' or 'all', got {captions!r}")
    path = _msrvtt_annotations(root, annotations, split)
    videos, sentences = _read_msrvtt_json(path)
    ids = [v["video_id"] for v in videos if v.get("split", split) == split]
    if not ids:
        raise ValueError(f"{str(path)!r} lists no video of split {split!r}")
    by_video = _captions_by_video(sentences)
    files = {p.stem: p for p in _video_files(root)}
    items, missing = [], []
    for vid in ids:
        texts = by_video.get(vid, [])
        if vid not in files or not texts:
            missing.append(vid)
            continue
        for text in texts[:1] if captions == "first" else texts:
            items.append(VideoItem(files[vid], vid, text))
    if not items:
        raise ValueError(f"none of the {len(ids)} {split} videos was found under {str(root)!r}; {MSRVTT_LAYOUT}")
    settings = {"split": split, "captions": captions, "annotations": path.name}
    return VideoDataset("msrvtt", root, items, settings, missing)


def _msrvtt_annotations(root: Path, annotations: str | Path | None, split: str) -> Path:
    if annotations is not None:
        path = Path(annotations)
        if not path.is_file():
            raise FileNotFoundError(f"MSR-VTT annotation file {str(path)!r} does not exist")
        return path
    preferred = "test_videodatainfo.json" if split == "test" else "train_val_videodatainfo.json"
    found = sorted(root.rglob(preferred)) or sorted(root.rglob("*videodatainfo*.json"))
    if not found:
        raise ValueError(f"no MSR-VTT annotation JSON under {str(root)!r}; {MSRVTT_LAYOUT}")
    return found[0]


def _read_msrvtt_json(path: Path) -> tuple[list[dict], list[dict]]:
    try:
        data = json.loads(path.read_text())
        return list(data["videos"]), list(data["sentences"])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{str(path)!r} is not an MSR-VTT annotation file ({error}); {MSRVTT_LAYOUT}") from error


def _captions_by_video(sentences: list[dict]) -> dict[str, list[str]]:
    grouped: dict[str, list[tuple[int, str]]] = {}
    for s in sentences:
        grouped.setdefault(s["video_id"], []).append((int(s.get("sen_id", 0)), s["caption"].strip()))
    return {vid: [text for _, text in sorted(rows)] for vid, rows in grouped.items()}


# -- generic folders -----------------------------------------------------------------------------
def video_folder(root: str | Path, *, captions: str | Path | None = None) -> VideoDataset:
    """Every video under `root` (sorted); captions from a CSV (`video`, `caption` columns) or a
    JSONL file (`{"video": ..., "caption": ...}` lines), matched by relative path or file stem."""
    root = _require_dir(root, "video")
    files = _video_files(root)
    if not files:
        raise ValueError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) under {str(root)!r}")
    table = read_captions(captions) if captions is not None else {}
    items = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        items.append(VideoItem(path, rel, table.get(rel, table.get(path.stem))))
    if table and not any(item.caption for item in items):
        raise ValueError(f"no caption of {str(captions)!r} matches a video under {str(root)!r} (by path or stem)")
    settings = {"captions": Path(captions).name if captions is not None else None}
    return VideoDataset("folder", root, items, settings)


def read_captions(path: str | Path) -> dict[str, str]:
    """{video: caption} from a CSV with a header (`video`/`path`/`file`, `caption`/`text`/`prompt`) or JSONL."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"captions file {str(path)!r} does not exist")
    return dict(_caption_row(row, path) for row in read_caption_rows(path))


def _caption_row(row: dict, path: Path) -> tuple[str, str]:
    video = next((row[k] for k in ("video", "path", "file", "video_id") if k in row), None)
    text = next((row[k] for k in ("caption", "text", "prompt") if k in row), None)
    if video is None or text is None:
        raise ValueError(f"{str(path)!r}: each row needs a video column (video/path/file) and a caption column "
                         f"(caption/text/prompt); got {sorted(row)}")
    if not isinstance(video, (str, int)) or not isinstance(text, str):
        raise ValueError(f"{str(path)!r}: a row's video must be a name and its caption a string; got {row!r:.120}")
    return str(video), text


def generated_folder(root: str | Path) -> VideoDataset:
    """Videos written by `kvideo eval generate`: the manifest's order, prompts as captions."""
    root = _require_dir(root, "generated videos")
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {str(root)!r}: was it written by `kvideo eval generate`?")
    manifest = read_manifest(path)
    items, missing = [], []
    for entry in manifest["videos"]:
        video = root / entry["file"]
        if video.is_file():
            items.append(VideoItem(video, entry["file"], entry["prompt"]))
        else:
            missing.append(entry["file"])
    if not items:
        raise ValueError(f"none of the {len(missing)} videos of {str(path)!r} exists yet: run the generation first")
    return VideoDataset("generated", root, items, {"benchmark": manifest.get("benchmark")}, missing)


def read_manifest(path: Path) -> dict[str, Any]:
    """A generated set's manifest: an object whose `videos` list holds `{"file": ..., "prompt": ...}` entries
    (strings); anything else is one line naming the file and the entry."""
    try:
        manifest = json.loads(path.read_bytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadDataError(f"{str(path)!r} is not a manifest of kvideo eval generate: not JSON ({error})") from None
    videos = manifest.get("videos") if isinstance(manifest, dict) else None
    if not isinstance(videos, list):
        raise BadDataError(f"{str(path)!r} is not a manifest of kvideo eval generate: it has no 'videos' list")
    for number, entry in enumerate(videos):
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("prompt"), str)):
            raise BadDataError(f"{str(path)!r}: videos[{number}] needs a 'file' and a 'prompt' (strings); got "
                               f"{entry!r:.80}")
    return manifest


def load_dataset(kind: str, root: str | Path, **options: Any) -> VideoDataset:
    """`kind` is ucf101, msrvtt, folder, generated, or auto (generated if a manifest exists, else folder)."""
    if kind == "auto":
        kind = "generated" if (Path(root) / MANIFEST).is_file() else "folder"
    loaders = {"ucf101": ucf101, "msrvtt": msrvtt, "folder": video_folder, "generated": generated_folder}
    if kind not in loaders:
        raise ValueError(f"unknown dataset format {kind!r}; choose one of {sorted(loaders)} or auto")
    used = {k: v for k, v in options.items() if v is not None}
    return loaders[kind](root, **used)


# -- reading clips -----------------------------------------------------------------------------
def clip_indices(num_frames: int, stride: int, offset: int) -> list[int]:
    return [offset + i * stride for i in range(num_frames)]


def read_clip(path: Path, num_frames: int, *, stride: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
    """`num_frames` frames, `stride` apart, from frame 0 (rng None) or a random offset: uint8 (f, h, w, 3)."""
    try:
        available = video_info(path).num_frames
        span = (num_frames - 1) * stride + 1
        if available < span:
            raise SkipVideo(f"too short: {available} frames < {span} needed")
        offset = 0 if rng is None else int(rng.integers(0, available - span + 1))
        return read_frames(path, clip_indices(num_frames, stride, offset))
    except (VideoReadError, IndexError) as error:
        raise SkipVideo(f"unreadable: {error}") from error


def read_video(path: Path, max_frames: int | None = None) -> np.ndarray:
    """All frames (or the first `max_frames`) as uint8 (f, h, w, 3); unreadable files raise SkipVideo."""
    try:
        if max_frames is None:
            return read_frames(path)
        available = video_info(path).num_frames
        return read_frames(path, list(range(min(available, max_frames))))
    except (VideoReadError, IndexError) as error:
        raise SkipVideo(f"unreadable: {error}") from error
