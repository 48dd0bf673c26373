"""Golden runner: keyframe UNet, called in the reference's folded (b t) layout."""
from __future__ import annotations

from golden_runners.unet_common import load_unet

KIND = "keyframe_unet"


def run(golden):
    unet = load_unet(golden)
    inputs = golden.inputs
    out = unet.forward_folded(
        inputs["x"].float(), inputs["time"], inputs["context"].float(), inputs["context_mask"],
        num_frames=golden.config["num_frames"], frame_positions=inputs["temporal_positions"],
    )
    return {"x": out}
