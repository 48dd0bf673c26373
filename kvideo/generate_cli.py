"""`kvideo generate`: prompt(s) -> video file(s); argument parsing only, the work is in kvideo.generation."""
from __future__ import annotations

import json
import os
import re
import sys
import warnings
from pathlib import Path

import torch

from kvideo.argtypes import MAX_SEED, parse_seed
from kvideo.checkpoint import atomic_path, check_writable_folder
from kvideo.errors import BadInputError
from kvideo.export import check_output_path
from kvideo.generation import DTYPES, OFFLOAD, check_prompt, model_card, open_pipeline, release_of
from kvideo.generation.base import LOAD_OPTIONS
from kvideo.generation.flags import add_generation_flags, flag_names, given_options, options_for
from kvideo.generation.images import load_image
from kvideo.generation.options import option_of
from kvideo.generation.output import image_format, is_finished, remove_leftovers
from kvideo.generation.weights import TINY
from kvideo.prompts import Prompt, read_prompts_file, report_truncated
from kvideo.train.checkpointing import load_into_pipeline, read_weights

DEFAULT_WEIGHTS = "shapes"  # what `--weights` means when it is not given: a built-in model name or "tiny"
WEIGHTS_ENV = "KVIDEO_WEIGHTS"  # overrides DEFAULT_WEIGHTS (a folder or a built-in name), e.g. for a test session
TINY_NOTICE = (
    "kvideo: the tiny preset with RANDOM weights is used (--weights tiny): the video is noise and only shows "
    "that every stage runs. Pass --weights DIR (official files, or a `kvideo recipe shapes` model) for real videos."
)
IMAGE_FLAGS = ("--image", "--first-frame-out")  # 1.1 inputs and outputs that are not generation options


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="text -> video file")
    p.add_argument("prompt", nargs="?", help="what the video shows")
    p.add_argument("-o", "--output", required=True, metavar="PATH",
                   help="output file (.mp4 .webm .gif, or a folder for PNG frames); a folder with --prompts-file "
                        "(required)")
    p.add_argument("--prompts-file", metavar="PATH",
                   help="UTF-8 text, one prompt a line, one video each; finished outputs are skipped (default: none)")
    p.add_argument("--weights", metavar="PATH",
                   help="folder with the official (or converted) weights, or a built-in model: shapes (kvideo's "
                        f"own small model), tiny (random weights, for tests) (default: ${WEIGHTS_ENV} if set, "
                        f"else {DEFAULT_WEIGHTS})")
    add_generation_flags(p)
    p.add_argument("--negative", metavar="PROMPT", help="negative prompt (default: none)")
    p.add_argument("--seed", type=parse_seed, default=0,
                   help="seed; line i of --prompts-file uses seed + i (default: 0)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N (default: cuda if there is a GPU, else cpu)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="(default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--offload", default="none", choices=OFFLOAD,
                   help="'model': each model on the GPU only while it runs; 'disk': each model read from its file "
                        "when its stage runs and freed after it, so the memory peak is the largest model, not their "
                        "sum (default: none)")
    p.add_argument("--temporal-weights", action="append", default=[], metavar="PATH",
                   help="fine-tuned weights from `kvideo train` (trained.safetensors); repeatable (default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")
    p.add_argument("--image", metavar="PATH",
                   help="picture to animate: it becomes the first frame (release 1.1 weights; default: none, "
                        "the first frame is drawn from the prompt)")
    p.add_argument("--first-frame-out", metavar="PATH",
                   help="also save the first frame, drawn or given, as an image, e.g. first.png (release 1.1 "
                        "weights; default: not saved)")
    p.set_defaults(func=run)


def jobs(args) -> list[tuple[Prompt, Path]]:
    """(prompt, output path) pairs, validated before any model is loaded; nothing is written here."""
    if args.prompts_file:
        if args.prompt:
            raise BadInputError("give either a PROMPT or --prompts-file, not both")
        prompts = read_prompts_file(args.prompts_file, report=say)
        folder = Path(args.output)
        check_writable_folder(folder, what="-o (a folder with --prompts-file)")
        pairs = [(p, folder / f"{i:04d}-{slug(p.text)}.mp4") for i, p in enumerate(prompts)]
    else:
        if args.prompt is None:
            raise BadInputError("no prompt: give a PROMPT or --prompts-file")
        pairs = [(Prompt(args.prompt), Path(args.output))]
    if args.negative is not None:
        check_prompt(args.negative, "--negative")
    for prompt, path in pairs:
        try:
            check_prompt(prompt.text)
        except ValueError as error:
            raise BadInputError(f"{prompt.where}: {error}") from None
        if path.parent.is_dir():
            check_output_path(path)
            check_writable_folder(path.parent, what="output folder")
        elif not args.prompts_file:
            raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist; create it first")
    return pairs


# The videos a --prompts-file run wrote into its folder: a rerun adopts (or redoes) only those, never a file
# that was there before kvideo came (a user's video of the same name would otherwise count as done).
BATCH_MANIFEST = "kvideo-batch.json"


def batch_manifest(folder: Path) -> set[str]:
    """The names of the videos earlier --prompts-file runs wrote into `folder` (none when it has no manifest)."""
    path = folder / BATCH_MANIFEST
    if not path.exists():
        return set()
    try:
        videos = json.loads(path.read_text(encoding="utf-8")).get("videos")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise BadInputError(f"{str(path)!r} is not a kvideo batch manifest ({error}); move it or choose another "
                            "-o folder") from None
    if not isinstance(videos, list) or not all(isinstance(name, str) for name in videos):
        raise BadInputError(f"{str(path)!r} is not a kvideo batch manifest (its 'videos' is not a list of names); "
                            "move it or choose another -o folder")
    return set(videos)


def check_own_outputs(folder: Path, paths: list[Path], written: set[str]) -> None:
    """Refuse, before any work, an output name already taken by a file that no kvideo batch wrote."""
    for path in paths:
        if (path.exists() or path.is_symlink()) and path.name not in written:
            raise BadInputError(f"{str(path)!r} exists and no kvideo batch wrote it (it is not in "
                                f"{BATCH_MANIFEST}); move it or choose another -o folder")


def record_output(folder: Path, written: set[str], name: str) -> None:
    """Add `name` to the folder's manifest (before the video is written, so a killed run's file stays its own)."""
    written.add(name)
    with atomic_path(folder / BATCH_MANIFEST) as tmp:
        tmp.write_text(json.dumps({"videos": sorted(written)}, indent=1) + "\n", encoding="utf-8")


def default_weights() -> str:
    """What `--weights` means when it is not given: $KVIDEO_WEIGHTS, else DEFAULT_WEIGHTS."""
    return os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS


def say(message: str) -> None:
    print(f"kvideo generate: {message}", file=sys.stderr)


def slug(text: str, length: int = 40) -> str:
    """A file-name stem from `text`: lower-case words joined by '-', cut at a word boundary within `length`."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(words) > length:
        boundary = words.rfind("-", 0, length + 1)
        words = words[:boundary] if boundary > 0 else words[:length]  # one word longer than `length`: cut it
    return words or "video"


def check_device(device: str) -> None:
    """cpu, cuda or cuda:N that exists here, checked before any model loads."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise BadInputError(f"--device {device!r}: expected cpu, cuda or cuda:N") from None
    if parsed.type not in ("cpu", "cuda"):
        raise BadInputError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise BadInputError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s), "
                            f"cuda:0..cuda:{torch.cuda.device_count() - 1}")


def run(args) -> int:
    check_device(args.device)
    pairs = jobs(args)
    if args.seed + len(pairs) - 1 > MAX_SEED:
        raise BadInputError(f"--seed {args.seed}: video {len(pairs) - 1} would use seed {args.seed + len(pairs) - 1}, "
                            "past 2**63 - 1")
    weights = args.weights or default_weights()
    given = given_options(args)
    release = pick_release(args, weights, given)
    card = model_card(weights)
    options_for(release, card, given)  # checked before anything loads; the pipeline applies the card's defaults
    options = dict(given)
    if weights != TINY and card:
        describe_model(card, [prompt.text for prompt, _ in pairs])
    if release == "1.1":
        options.update(release11_inputs(args))
    if args.temporal_weights and args.offload == "disk":
        raise BadInputError("--temporal-weights needs the models in memory; with --offload disk each model is read "
                            "from its weights file at its stage: use --offload model")
    for path in args.temporal_weights:
        check_trained_weights(path)
    folder, written = Path(args.output), set()
    if args.prompts_file:
        written = batch_manifest(folder)
        check_own_outputs(folder, [path for _, path in pairs], written)
    todo = []
    for index, (prompt, path) in enumerate(pairs):
        if is_finished(path):
            say(f"{path} exists, skipped")
        else:  # missing, empty or unreadable (a killed run's): made (again)
            todo.append((index, prompt, path))
    if not todo:
        return 0
    pipe = load_pipeline(args, weights, release, given)
    for path in args.temporal_weights:
        say(f"loaded {load_into_pipeline(pipe, path).describe()} from {path}")
    tokenizer, limit = pipe.text_encoder.tokenizer, pipe.text_encoder.max_length
    report_truncated([p for _, p, _ in todo], lambda text: len(tokenizer(text)["input_ids"]), limit, report=say)
    if args.prompts_file:
        folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="prompt .* is truncated")  # said above, once per prompt
        for index, prompt, path in todo:  # the seed follows the prompt's line, so a resumed run matches
            remove_leftovers(path)
            video = pipe(prompt.text, args.negative, seed=args.seed + index, **options)
            if args.prompts_file:
                record_output(folder, written, path.name)
            video.save(path)
            if args.first_frame_out:
                print(f"wrote {video.save_first_frame(args.first_frame_out)} (the first frame)")
            print(f"wrote {path} ({len(video.frames)} frames, {video.fps} fps)")
    return 0


def pick_release(args, weights: str, given: dict) -> str:
    """The release that runs: the weights folder's, or for the tiny preset 1.1 when a 1.1 flag is given. A 1.1
    flag with 1.0 weights is refused here, before anything is loaded."""
    names = flag_names()
    wanted = [names[name] for name in given if "1.0" in option_of(name).refused]
    wanted += [flag for flag in IMAGE_FLAGS if getattr(args, flag[2:].replace("-", "_")) is not None]
    if weights == TINY:
        return "1.1" if wanted else "1.0"
    release = release_of(weights)
    if release == "1.0" and wanted:
        raise BadInputError(f"{' / '.join(wanted)} {'needs' if len(wanted) == 1 else 'need'} release 1.1 weights "
                            f"(t2v.pt, ...); --weights {weights!r} holds no t2v.pt: a text-to-video model (release "
                            "1.0, the shapes model) has no image conditioning (--weights tiny runs the random tiny "
                            "1.1 preset)")
    return release


def describe_model(card: dict, prompts: list[str]) -> None:
    """One line naming the model and its prompt grammar; one notice for prompts outside the grammar."""
    grammar = card.get("prompt_grammar")
    say(f"model {card.get('name', '?')!r}: {card.get('description', '')}"
        + (f"; prompts: {grammar!r}" if grammar else ""))
    pattern, words = card.get("prompt_pattern"), card.get("prompt_words", {})
    outside = [p for p in prompts if pattern and not re.fullmatch(pattern, p.strip().lower())]
    if outside:
        choices = "; ".join(f"{name}: {'/'.join(values)}" for name, values in words.items())
        say(f"note: {len(outside)} prompt(s) outside the grammar the model was trained on (e.g. {outside[0]!r}); "
            f"it does what it can. The grammar: {grammar!r} with {choices}")


def check_trained_weights(path: str):
    """A `kvideo train` output that reads, checked before any model is loaded (its WeightsInfo)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--temporal-weights {path!r} does not exist")
    return read_weights(path)[2]


def load_pipeline(args, weights: str, release: str, given: dict | None = None):
    """The pipeline; --compile and --text-encoder-int8 (`given`) apply as it loads (the int8 encoder never exists
    whole in float beside the other models)."""
    dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    if weights == TINY:
        print(TINY_NOTICE, file=sys.stderr)
    load_options = {name: bool(value) for name, value in (given or {}).items() if name in LOAD_OPTIONS}
    return open_pipeline(weights, release=release, device=args.device, dtype=dtype, offload=args.offload,
                         progress=not args.quiet, **load_options)


def release11_inputs(args) -> dict:
    """--first-frame-out checked and --image read, before any model loads: {"image": picture} or {}."""
    if args.first_frame_out is not None:
        check_first_frame_out(args)
    if args.image is None:
        return {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = load_image(args.image)
    for warning in caught:
        print(f"kvideo generate: {args.image}: {warning.message}", file=sys.stderr)
    return {"image": image}


def check_first_frame_out(args) -> None:
    if args.prompts_file:
        raise BadInputError("--first-frame-out names one file; it cannot be used with --prompts-file")
    out = Path(args.first_frame_out)
    try:
        image_format(out)
    except ValueError as error:
        raise BadInputError(f"--first-frame-out {error}") from None
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--first-frame-out folder {str(out.parent)!r} does not exist; create it first")
    if out.is_dir():
        raise BadInputError(f"--first-frame-out {str(out)!r} is a folder; name an image file, e.g. first.png")
    check_writable_folder(out.parent, what="--first-frame-out folder")
