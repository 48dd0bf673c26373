"""`kvideo generate`: prompt(s) -> video file(s); argument parsing only, the work is in kvideo.pipeline."""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

from kvideo.argtypes import MAX_SEED, parse_float, parse_int, parse_seed
from kvideo.checkpoint import check_writable_folder, temp_prefix
from kvideo.diffusion import COSINE_SPACINGS
from kvideo.errors import BadInputError
from kvideo.export import check_output_path
from kvideo.pipeline import DTYPES, FPS_MODES, OFFLOAD, SAMPLERS, GenerationOptions, check_prompt
from kvideo.prompts import Prompt, read_prompts_file, report_truncated

DEFAULT_WEIGHTS = "shapes"  # what `--weights` means when it is not given: a built-in model name or "tiny"
WEIGHTS_ENV = "KVIDEO_WEIGHTS"  # overrides DEFAULT_WEIGHTS (a folder or a built-in name), e.g. for a test session
# Generation defaults of a weights folder without a model card (the official release) and of the tiny preset
# (random weights: small and quick, it only shows the stages run); a folder's model.json overrides them.
OFFICIAL_DEFAULTS = dict(width=512, height=512, steps=50, interpolation_steps=None, sampler="ddpm",
                         interpolation_sampler="ddpm", timestep_spacing="direct", threshold=0.98, guidance_scale=5.0,
                         interpolation_guidance_scale=0.25, guidance_interval=None, guidance_rescale=0.0,
                         cache_interval=1, latent_range=None)
TINY_DEFAULTS = dict(OFFICIAL_DEFAULTS, width=64, height=64, steps=10)
TINY_NOTICE = (
    "kvideo: the tiny preset with RANDOM weights is used (--weights tiny): the video is noise and only shows "
    "that every stage runs. Pass --weights DIR (official files, or a `kvideo recipe shapes` model) for real videos."
)


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="text -> video file")
    p.add_argument("prompt", nargs="?", help="what the video shows")
    p.add_argument("-o", "--output", required=True,
                   help="output file (.mp4 .webm .gif, or a folder for PNG frames); a folder with --prompts-file")
    p.add_argument("--prompts-file", metavar="FILE",
                   help="UTF-8 text, one prompt a line, one video each; finished outputs are skipped (default: none)")
    p.add_argument("--weights", metavar="DIR",
                   help="folder with the official (or converted) weights, or a built-in model: shapes (kvideo's "
                        f"own small model), tiny (random weights, for tests) (default: ${WEIGHTS_ENV} if set, "
                        f"else {DEFAULT_WEIGHTS})")
    p.add_argument("--fps", default="medium", choices=sorted(FPS_MODES),
                   help="frames at low / medium / high (nominal 2 / 8 / 32 fps): 15 / 57 / 225 with release 1.0 "
                        "and the shapes model, 12 / 45 / 177 with release 1.1 (default: medium)")
    p.add_argument("--size", help="WIDTHxHEIGHT, multiples of 64 (default: the model's; 512x512 for the "
                                  "official weights, 64x64 for shapes and tiny)")
    p.add_argument("--frames", type=parse_int, help="number of keyframes (default: the model's: 15 for release 1.0 "
                                                    "and the shapes model, 12 for release 1.1)")
    p.add_argument("--steps", type=parse_int, help="keyframe sampling steps (default: the model's: 50 official "
                                                   "(1.0 and 1.1), 8 shapes, 10 tiny)")
    p.add_argument("--interpolation-steps", type=parse_int,
                   help="interpolation sampling steps (default: the model's: 4 shapes, 10 release 1.1; else "
                        "--steps: 50 official 1.0, 10 tiny)")
    p.add_argument("--sampler", choices=SAMPLERS,
                   help="keyframe sampler (default: the model's; ddpm official, dpmpp_2m shapes)")
    p.add_argument("--interpolation-sampler", choices=SAMPLERS,
                   help="interpolation sampler (default: the model's; ddpm official)")
    p.add_argument("--timestep-spacing", choices=COSINE_SPACINGS,
                   help="the samplers' steps: direct (N cosine steps, the release's), or the training schedule's "
                        "own steps, trailing (ending at its noisiest) or leading (default: the model's; direct "
                        "official)")
    p.add_argument("--threshold", type=parse_threshold, metavar="Q|off",
                   help="dynamic thresholding of each step's x0 estimate at the quantile Q of |x0|, or off (default: "
                        "the model's; 0.98 official, off for shapes)")
    p.add_argument("--latent-range", type=parse_latent_range, metavar="LOW,..:HIGH,..|off",
                   help="clip each x0 estimate per latent channel to the range the model was trained on, e.g. "
                        "--latent-range=-1,-1.2,-1.2,-1.4:1.2,1.1,0.9,1.4, or off (default: the model's; the "
                        "shapes card holds its latents' range, off official)")
    p.add_argument("--guidance", type=parse_float,
                   help="text guidance scale w: (w+1)·cond - w·uncond (default: the model's; 5.0 official, "
                        "2.0 shapes)")
    p.add_argument("--interpolation-guidance", type=parse_float,
                   help="keyframe guidance scale of the interpolation model (default: the model's; 0.25 official, "
                        "0.5 release 1.1, 0 shapes)")
    p.add_argument("--guidance-interval", type=parse_guidance_interval, metavar="LOW:HIGH|off",
                   help="text guidance only at model times LOW..HIGH (0..1000, the noisiest steps near 1000); the "
                        "other steps run one UNet branch instead of two, or off: every step (default: the model's; "
                        "off official)")
    p.add_argument("--guidance-rescale", type=parse_float, metavar="F",
                   help="scale the guided prediction back toward the conditional one's deviation, 0..1 (default: "
                        "the model's; 0 official)")
    p.add_argument("--cache-interval", type=parse_int, metavar="N",
                   help="step caching: the UNets' deep levels run every N-th step and are reused between; 1 is off "
                        "and exact (default: the model's; 1 official, 2 shapes)")
    p.add_argument("--negative", metavar="PROMPT", help="negative prompt (default: none)")
    p.add_argument("--seed", type=parse_seed, default=0,
                   help="seed; line i of --prompts-file uses seed + i (default: 0)")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu", help="cpu, cuda or cuda:N (default: cuda if "
                   "there is a GPU, else cpu)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--offload", default="none", choices=OFFLOAD,
                   help="'model': each model on the GPU only while it runs (default: none)")
    p.add_argument("--decode-window", type=parse_int,
                   help="frames decoded together by the video decoder (default: all)")
    p.add_argument("--temporal-weights", action="append", default=[], metavar="FILE",
                   help="fine-tuned weights from `kvideo train` (trained.safetensors); repeatable (default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")
    add_release11_arguments(p)
    p.set_defaults(func=run)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def parse_threshold(text: str) -> float | str:
    """--threshold: a quantile in (0, 1], or "off"."""
    if text.strip().lower() in ("off", "none"):
        return "off"
    value = parse_float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: a quantile in (0, 1], e.g. 0.98, or off")
    return value


def parse_latent_range(text: str) -> tuple[list[float], list[float]] | str:
    """--latent-range: LOW,LOW,...:HIGH,HIGH,... (one number per latent channel), or "off"."""
    if text.strip().lower() in ("off", "none"):
        return "off"
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW,...:HIGH,... (one number a channel), or off")
    low, high = ([parse_float(v) for v in part.split(",")] for part in parts)
    if len(low) != len(high) or not all(lo < hi for lo, hi in zip(low, high)):
        raise argparse.ArgumentTypeError(f"{text!r}: as many LOW as HIGH values, each LOW < its HIGH")
    return low, high


def parse_guidance_interval(text: str) -> tuple[float, float] | str:
    """--guidance-interval: LOW:HIGH model times in 0..1000, or "off"."""
    if text.strip().lower() in ("off", "none"):
        return "off"
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW:HIGH, e.g. 300:1000, or off")
    low, high = parse_float(parts[0]), parse_float(parts[1])
    if not 0 <= low <= high <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= LOW <= HIGH <= 1000 (model times)")
    return low, high


def parse_size(text: str | None, default: tuple[int, int]) -> tuple[int, int]:
    if text is None:
        return default
    match = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if not match:
        raise ValueError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 512x512")
    return int(match[1]), int(match[2])


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


def is_finished(path: Path) -> bool:
    """An output from an earlier run that is complete: a non-empty video that reads, or a folder of frames."""
    if path.is_dir():
        return any(path.glob("*.png"))
    if not path.is_file() or path.stat().st_size == 0:
        return False
    from kvideo.video_io import VideoReadError, video_info

    try:
        return video_info(path).num_frames > 0
    except (VideoReadError, OSError):
        return False


def remove_leftovers(path: Path) -> None:
    """Delete the hidden temp files a killed run left for `path` (`.NAME.<random>.tmp.mp4`)."""
    prefix = glob.escape(temp_prefix(path, ".tmp" + path.suffix))
    for leftover in path.parent.glob(f"{prefix}*.tmp*") if path.parent.is_dir() else ():
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


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
    import torch

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
    tiny = weights == "tiny"
    args.weights = None if tiny else weights
    card = {} if tiny else model_card(weights)
    options = generation_options(args, TINY_DEFAULTS if tiny else {**OFFICIAL_DEFAULTS, **card.get("generation", {})})
    GenerationOptions(**options)  # fail on bad options before loading anything
    if card:
        describe_model(card, [prompt.text for prompt, _ in pairs])
    if wants_release11(args, tiny):  # --image / --motion / --first-frame-out, or 1.1 weights
        options = release11_options(args, options)
    for path in args.temporal_weights:
        check_trained_weights(path)
    todo = []
    for index, (prompt, path) in enumerate(pairs):
        if is_finished(path):
            say(f"{path} exists, skipped")
        else:  # missing, empty or unreadable (a killed run's): made (again)
            todo.append((index, prompt, path))
    if not todo:
        return 0
    pipe = load_pipeline(args, tiny)
    for path in args.temporal_weights:
        say(f"loaded {load_into_pipeline(pipe, path).describe()} from {path}")
    tokenizer, limit = pipe.text_encoder.tokenizer, pipe.text_encoder.max_length
    report_truncated([p for _, p, _ in todo], lambda text: len(tokenizer(text)["input_ids"]), limit, report=say)
    if args.prompts_file:
        Path(args.output).mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="prompt .* is truncated")  # said above, once per prompt
        for index, prompt, path in todo:  # the seed follows the prompt's line, so a resumed run matches
            remove_leftovers(path)
            video = pipe(prompt.text, args.negative, seed=args.seed + index, **options)
            video.save(path)
            if args.first_frame_out:
                print(f"wrote {video.save_first_frame(args.first_frame_out)} (the first frame)")
            print(f"wrote {path} ({len(video.frames)} frames, {video.fps} fps)")
    return 0


def generation_options(args, defaults: dict) -> dict:
    """The pipeline options: each flag given, else the model's default."""
    def pick(flag, name):
        return flag if flag is not None else defaults[name]

    width, height = parse_size(args.size, (defaults["width"], defaults["height"]))
    steps = pick(args.steps, "steps")
    interpolation_steps = (args.interpolation_steps if args.interpolation_steps is not None
                           else defaults["interpolation_steps"] or steps)
    return dict(width=width, height=height, fps=args.fps, num_frames=args.frames, steps=steps,
                interpolation_steps=interpolation_steps, sampler=pick(args.sampler, "sampler"),
                interpolation_sampler=pick(args.interpolation_sampler, "interpolation_sampler"),
                timestep_spacing=pick(args.timestep_spacing, "timestep_spacing"),
                threshold=None if args.threshold == "off" else pick(args.threshold, "threshold"),
                guidance_scale=pick(args.guidance, "guidance_scale"),
                interpolation_guidance_scale=pick(args.interpolation_guidance, "interpolation_guidance_scale"),
                guidance_interval=None if args.guidance_interval == "off" else pick(args.guidance_interval,
                                                                                     "guidance_interval"),
                guidance_rescale=pick(args.guidance_rescale, "guidance_rescale"),
                cache_interval=pick(args.cache_interval, "cache_interval"), decode_window=args.decode_window,
                latent_range=None if args.latent_range == "off" else pick(args.latent_range, "latent_range"))


def model_card(weights: str) -> dict:
    """The model card (model.json) of a weights folder or built-in model; {} for folders without one."""
    from kvideo.pipeline import read_model_card, resolve_weights

    return read_model_card(resolve_weights(weights))


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
    from kvideo.train.checkpointing import read_weights

    if not Path(path).is_file():
        raise FileNotFoundError(f"--temporal-weights {path!r} does not exist")
    return read_weights(path)[2]


def load_into_pipeline(pipe, path):
    from kvideo.train.checkpointing import load_into_pipeline as load

    return load(pipe, path)


def load_pipeline(args, tiny: bool):
    from kvideo.pipeline import KVideoPipeline

    dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    common = dict(device=args.device, dtype=dtype, offload=args.offload, progress=not args.quiet)
    if tiny:
        print(TINY_NOTICE, file=sys.stderr)
        if wants_release11(args, tiny):
            from kvideo.pipeline11 import KVideo11Pipeline

            return KVideo11Pipeline.from_preset("tiny", **common)
        return KVideoPipeline.from_preset("tiny", **common)
    return KVideoPipeline.from_pretrained(args.weights, **common)


# -- release 1.1: image-to-video ----------------------------------------------------------------
def add_release11_arguments(p) -> None:
    from kvideo.pipeline11 import MOTION_SCORES

    p.add_argument("--image", metavar="FILE",
                   help="picture to animate: it becomes the first frame (release 1.1 weights; default: none, "
                        "the first frame is drawn from the prompt)")
    p.add_argument("--motion", choices=list(MOTION_SCORES),
                   help="how much the clip moves (release 1.1 weights; default: medium)")
    p.add_argument("--first-frame-out", metavar="FILE",
                   help="also save the first frame, drawn or given, as an image, e.g. first.png (release 1.1 "
                        "weights; default: not saved)")


def wants_release11(args, tiny: bool) -> bool:
    """Whether this run uses the 1.1 pipeline: 1.1 weights, or the tiny preset with a 1.1 flag.

    A 1.1 flag with other weights is refused here, before anything is loaded."""
    from kvideo.pipeline11 import is_kv11_folder

    flags = [flag for flag, value in (("--image", args.image), ("--motion", args.motion),
                                      ("--first-frame-out", args.first_frame_out)) if value is not None]
    if tiny:
        return bool(flags)
    if is_kv11_folder(args.weights):
        return True
    if flags:
        raise BadInputError(f"{' / '.join(flags)} {'needs' if len(flags) == 1 else 'need'} release 1.1 weights "
                            f"(t2v.pt, ...); --weights "
                            f"{args.weights!r} holds no t2v.pt: a text-to-video model (release 1.0, the shapes "
                            f"model) has no image conditioning (--weights tiny runs the random tiny 1.1 preset)")
    return False


# Generate flags the 1.1 pipeline has no counterpart for: (flag, argument name, why), refused rather than ignored.
RELEASE11_REFUSED = (
    ("--threshold", "threshold", "clips each x0 estimate to [-1, 1] as the release does; it takes no quantile"),
    ("--guidance-interval", "guidance_interval", "guides its keyframes over three branches at every step"),
    ("--guidance-rescale", "guidance_rescale", "guides its keyframes over three branches, with no rescale"),
    ("--latent-range", "latent_range", "clips each x0 estimate to [-1, 1] as the release does"),
)


def release11_options(args, options: dict) -> dict:
    """The 1.1 pipeline's options from the command line, checked (and the picture read) before any model loads.

    Interpolation keeps the release's own defaults (10 steps, guidance 0.5) unless
    --interpolation-steps is given; 1.1 samples with ddpm only."""
    from kvideo.pipeline11 import Generation11Options, image_format, load_image

    for flag, value in (("--sampler", args.sampler), ("--interpolation-sampler", args.interpolation_sampler)):
        if value not in (None, "ddpm"):
            raise BadInputError(f"{flag} {value}: release 1.1 samples with ddpm only")
    if args.timestep_spacing is not None:
        raise BadInputError(f"--timestep-spacing {args.timestep_spacing}: release 1.1 keeps its own steps "
                            "(leading for the keyframes, trailing for the interpolation)")
    for flag, value, why in RELEASE11_REFUSED:
        if getattr(args, value) is not None:
            raise BadInputError(f"{flag}: release 1.1 {why}")
    kept = {name: options[name] for name in ("width", "height", "fps", "num_frames", "steps", "guidance_scale",
                                             "decode_window", "cache_interval")}
    kept.update(first_frame_steps=options["steps"], motion=args.motion or "medium")
    if args.interpolation_steps is not None:
        kept["interpolation_steps"] = args.interpolation_steps
    if args.interpolation_guidance is not None:
        kept["interpolation_guidance_scale"] = args.interpolation_guidance
    Generation11Options(**kept)
    if args.first_frame_out is not None:
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
    if args.image is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kept["image"] = load_image(args.image)
        for warning in caught:
            print(f"kvideo generate: {args.image}: {warning.message}", file=sys.stderr)
    return kept
