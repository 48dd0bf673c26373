"""Golden runner: release 1.1 interpolation UNet over (b g) temporal groups, with text and a temporal mask."""
from __future__ import annotations

from golden_runners.unet_common import run_folded

KIND = "kv11_interpolation_unet"


def run(golden):
    inputs = golden.inputs
    return run_folded(golden, reference=dict(release="1.1", kind="interpolation"),
                      num_frames=int(golden.metadata["num_temporal_groups"]), skip_frames=inputs["skip_frames"],
                      perturbation_time=inputs["perturbation_time"], temporal_mask=inputs["temporal_mask"])
