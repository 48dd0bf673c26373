"""How fast a shapes MoVQ learns the objects, with and without the detail-weighted loss.

    python benchmarks/bench_movq_loss.py DATA_DIR [--steps 200] [--detail-weight 0 10]

Trains the `shapes` MoVQ preset from scratch on 256 fixed 64x64 frames of a `kvideo data shapes`
set (4 frames of each of the first 64 clips), batch 8, AdamW lr 2e-3, with the movq task's loss
(latent noise and moment penalty included), and reports every 100 steps the reconstruction MSE over
all pixels and over object pixels (those more than 0.2 from the frame's border colour).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def frames(data: Path) -> torch.Tensor:
    from kvideo.train.data import cover_crop_frames
    from kvideo.video_io import read_frames

    clips = [read_frames(data / f"videos/{i:05d}.mp4", [0, 60, 120, 180]) for i in range(64)]
    return cover_crop_frames(np.concatenate(clips), 64, 64).permute(1, 0, 2, 3)  # (256, 3, 64, 64)


def run(images: torch.Tensor, steps: int, detail_weight: float) -> None:
    from kvideo.models.movq import MoVQ, MoVQConfig
    from kvideo.shapes import presets as shapes_presets  # noqa: F401  registers the "shapes" MoVQ preset
    from kvideo.train.movq import Autoencoder, movq_loss

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = Autoencoder(MoVQ(MoVQConfig.preset("shapes")))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0)
    border = images[:, :, :2].mean(dim=(2, 3), keepdim=True)
    objects = ((images - border).abs().amax(dim=1, keepdim=True) > 0.2).float()[:64]
    started = time.perf_counter()
    for step in range(1, steps + 1):
        batch = {"frames": images[torch.randint(0, len(images), (8,), generator=generator)][:, :, None]}
        loss = movq_loss(model, batch, generator, detail_weight=detail_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            with torch.no_grad():
                movq = model.movq
                error = (movq.decode(movq.quant_conv(movq.encoder(images[:64]))) - images[:64]).pow(2)
            print(f"detail_weight {detail_weight:g} step {step}: mse {error.mean():.4f} object mse "
                  f"{(error * objects).sum() / objects.sum() / 3:.4f} ({time.perf_counter() - started:.0f} s)",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a `kvideo data shapes` folder (128x128, 10 s clips)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--detail-weight", type=float, nargs="+", default=[0.0, 10.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = frames(args.data)
    for weight in args.detail_weight:
        run(images, args.steps, weight)


if __name__ == "__main__":
    main()
