"""Golden runner: piergiaj Inception-I3D, loaded from the state dict as the official .pt file holds it."""
from __future__ import annotations

import re
import tempfile

from kvideo.eval.i3d import InceptionI3d

KIND = "i3d"


def load_i3d(golden) -> InceptionI3d:
    with tempfile.TemporaryDirectory() as tmp:
        path = golden.write_official(tmp, "i3d.pt")
        return InceptionI3d.from_pretrained(path)


def run(golden):
    model = load_i3d(golden)
    produced = {}
    for name, video in golden.inputs.items():
        suffix = re.fullmatch(r"video(\d+)", name).group(1)
        x = video.float()  # (b, 3, f, 224, 224) in [-1, 1]
        produced[f"logits{suffix}"] = model(x)
        produced[f"logits_mean{suffix}"] = model.logits_mean(x)
        produced[f"pool{suffix}"] = model.pooled(x)
    return produced
