"""Golden runner: keyframe UNet, called in the reference's folded (b t) layout."""
from __future__ import annotations

from golden_runners.unet_common import run_folded

KIND = "keyframe_unet"


def run(golden):
    return run_folded(golden, num_frames=golden.config["num_frames"],
                      frame_positions=golden.inputs["temporal_positions"])
