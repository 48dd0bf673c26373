"""Generate a clip with the official Kandinsky Video weights on a GPU.

    python examples/generate_official_gpu.py WEIGHTS_DIR "a red panda eating bamboo" panda.mp4

WEIGHTS_DIR holds text_encoder/ (flan-ul2 encoder, HF format), kandinsky_video.pt,
kandinsky_video_interpolation.pt and video_movq.pt. `--dry-run` builds the official-size models
on the meta device (no weights, no GPU) and prints their sizes.
"""
import argparse

import torch

from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.unet import UNet, UNetConfig
from kvideo import KVideoPipeline


def dry_run() -> None:
    with torch.device("meta"):
        models = {
            "keyframe UNet": UNet(UNetConfig.preset("official-keyframe")),
            "interpolation UNet": UNet(UNetConfig.preset("official-interpolation")),
            "video MoVQ": MoVQ(MoVQConfig.preset("official-video")),
        }
    for name, model in models.items():
        total = sum(p.numel() for p in model.parameters())
        temporal = sum(p.numel() for p in model.temporal_parameters())
        print(f"{name}: {total:,} parameters ({temporal:,} temporal)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="?")
    parser.add_argument("prompt", nargs="?", default="a red panda eating bamboo, cinematic")
    parser.add_argument("output", nargs="?", default="panda.mp4")
    parser.add_argument("--fps", default="medium", choices=["low", "medium", "high"])
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    if args.dry_run:
        return dry_run()
    if args.weights is None:
        parser.error("WEIGHTS_DIR is required (or use --dry-run)")
    pipe = KVideoPipeline.from_pretrained(args.weights, device="cuda", dtype="bf16", offload="model")
    video = pipe(args.prompt, fps=args.fps, width=512, height=512, seed=0)
    print(f"wrote {video.save(args.output)}: {len(video.frames)} frames at {video.fps} fps")


if __name__ == "__main__":
    main()
