"""Golden runner: interpolation UNet over (b g) temporal groups."""
from __future__ import annotations

from golden_runners.unet_common import run_folded

KIND = "interpolation_unet"


def run(golden):
    return run_folded(golden, num_frames=int(golden.metadata["num_temporal_groups"]),
                      skip_frames=golden.inputs["skip_frames"])
