"""Golden runner: interpolation UNet over (b g) temporal groups."""
from __future__ import annotations

from golden_runners.unet_common import load_unet

KIND = "interpolation_unet"


def run(golden):
    unet = load_unet(golden)
    inputs = golden.inputs
    out = unet.forward_folded(
        inputs["x"].float(), inputs["time"], inputs["context"].float(), inputs["context_mask"],
        num_frames=int(golden.metadata["num_temporal_groups"]), skip_frames=inputs["skip_frames"],
    )
    return {"x": out}
