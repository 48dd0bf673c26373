"""The T5 text encoder in int8 (weight-only) vs bf16 and fp32, at flan-ul2's width: memory, speed, context error.

flan-ul2's encoder (the release's text encoder) has 32 layers of d_model 4096, d_ff 16384 (gated SiLU) and 16
heads of 256. This writes a random encoder of that width with --layers of its layers (a Hugging Face folder in
fp32, a word-level tokenizer over 32,125 made-up words, so that its vocabulary is flan's 32,128), then loads it
the way kvideo does (`TextEncoder.from_pretrained`) once per variant, each in its own process so that the peak
memory is its own:

    fp32          fp32 weights and compute (kvideo's CPU default)
    bf16          bf16 weights and compute (kvideo's GPU default)
    int8          int8 linear weights, computing in bf16 (--text-encoder-int8 on a GPU)
    int8-fp32     int8 linear weights, computing in fp32 (--text-encoder-int8 on the CPU)

Reported per variant: the encoder's weight bytes, the process's resident memory above its size before loading
(steady, and peak while loading: Linux ru_maxrss), load and encode seconds; and the relative L2 of the T5
output (last_hidden_state over the prompts' real tokens) of each variant against fp32 and against bf16. The
full-depth figures (32 layers) are arithmetic: the weight bytes of one layer, measured, times 32, plus the rest.

    OMP_NUM_THREADS=1 python benchmarks/bench_text_int8.py --layers 2 --json-out text_int8.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kvideo.quantize import weight_bytes
from kvideo.text import MAX_TOKENS, TextEncoder, TextProjection, write_word_t5

FLAN_UL2 = {"d_ff": 16384, "d_kv": 256, "num_heads": 16, "feed_forward_proj": "gated-silu"}  # google/flan-ul2
FLAN_WIDTH, FLAN_LAYERS, FLAN_VOCAB = 4096, 32, 32128
VARIANTS = {"fp32": (torch.float32, False), "bf16": (torch.bfloat16, False), "int8": (torch.bfloat16, True),
            "int8-fp32": (torch.float32, True)}
PROMPTS = ["w17 w2048 w9 w31000 w5 w77 w640", "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16",
           "w123 w4567 w8901 w23456", "w30000 w29999 w12 w12 w12 w800 w801 w802 w803 w804 w805 w806"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2, help="encoder layers (default 2 of flan-ul2's 32)")
    parser.add_argument("--folder", type=Path, help="where the random encoder is written (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--json-out", type=Path, help="write the results as JSON here")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one variant, in-process
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def write_encoder(folder: Path, layers: int) -> Path:
    """A random encoder of flan-ul2's width and vocabulary size, `layers` deep, in fp32."""
    words = [f"w{i}" for i in range(FLAN_VOCAB - 3)]  # + <pad>, </s>, <unk>
    return write_word_t5(folder, words, d_model=FLAN_WIDTH, num_layers=layers, seed=0, t5=FLAN_UL2)


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def run_variant(args: argparse.Namespace) -> dict:
    """Load one variant, encode PROMPTS, save the T5 output and mask; sizes and times."""
    torch.set_num_threads(args.threads)
    dtype, int8 = VARIANTS[args.variant]
    torch.manual_seed(0)
    projection = TextProjection(FLAN_WIDTH, FLAN_WIDTH)
    before = resident_bytes()
    start = time.perf_counter()
    text = TextEncoder.from_pretrained(args.folder, projection, torch.zeros(FLAN_WIDTH), dtype=dtype, int8=int8,
                                       progress=False)
    load_s = time.perf_counter() - start
    peak_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before  # KiB on Linux
    steady = resident_bytes() - before
    tokens = text.tokenizer(PROMPTS, max_length=MAX_TOKENS, padding="longest", truncation=True, return_tensors="pt")
    start = time.perf_counter()
    with torch.no_grad():
        hidden = text.encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
    encode_s = time.perf_counter() - start
    torch.save({"hidden": hidden.float(), "mask": tokens["attention_mask"].bool()}, args.out)
    layer = weight_bytes(text.encoder.encoder.block[1])  # a layer without the relative position table
    return {"variant": args.variant, "dtype": str(dtype).replace("torch.", ""), "int8": int8,
            "weight_bytes": weight_bytes(text.encoder), "layer_bytes": layer, "layers": len(text.encoder.encoder.block),
            "resident_above_start_bytes": steady, "peak_above_start_bytes": peak_load, "load_s": load_s,
            "encode_s": encode_s, "tokens": int(tokens["attention_mask"].sum())}


def relative_l2(a: dict, b: dict) -> float:
    """||a - b|| / ||b|| over the real tokens."""
    x, y = a["hidden"][b["mask"]].double(), b["hidden"][b["mask"]].double()
    return float((x - y).norm() / y.norm())


def full_depth_gb(row: dict) -> float:
    """The variant's weight bytes with all 32 layers: the measured total, plus 32 - layers more layers."""
    return (row["weight_bytes"] + (FLAN_LAYERS - row["layers"]) * row["layer_bytes"]) / 1e9


def run_all(args: argparse.Namespace, argv: list[str], folder: Path) -> dict:
    rows, outputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in VARIANTS:
            out = Path(tmp) / f"{name}.pt"
            command = [sys.executable, str(Path(__file__).resolve()), *argv, "--folder", str(folder), "--variant",
                       name, "--out", str(out)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
            outputs[name] = torch.load(out, weights_only=True)
    for name, row in rows.items():
        row["relative_l2_vs_fp32"] = relative_l2(outputs[name], outputs["fp32"])
        row["relative_l2_vs_bf16"] = relative_l2(outputs[name], outputs["bf16"])
        row["full_depth_weight_gb"] = full_depth_gb(row)
    return {"layers": args.layers, "width": FLAN_WIDTH, **FLAN_UL2, "variants": rows,
            "command": " ".join(["benchmarks/bench_text_int8.py", *argv]), "torch": torch.__version__}


def report(results: dict) -> None:
    print(f"T5 encoder, flan-ul2 width, {results['layers']} of {FLAN_LAYERS} layers, random weights")
    print("| variant | weights GB | load peak GB | resident GB | load s | encode s | rel. L2 vs fp32 | vs bf16 "
          f"| weights GB at {FLAN_LAYERS} layers |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results["variants"].items():
        print(f"| {name} | {r['weight_bytes'] / 1e9:.2f} | {r['peak_above_start_bytes'] / 1e9:.2f} | "
              f"{r['resident_above_start_bytes'] / 1e9:.2f} | {r['load_s']:.1f} | {r['encode_s']:.2f} | "
              f"{r['relative_l2_vs_fp32']:.2e} | {r['relative_l2_vs_bf16']:.2e} | {r['full_depth_weight_gb']:.2f} |")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp) / "flan_width_t5"
        if not (folder / "config.json").is_file():
            write_encoder(folder, args.layers)
        results = run_all(args, [a for a in argv if a not in ("--folder", str(args.folder))], folder)
    report(results)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
