"""Shared by the keyframe and interpolation UNet runners (this module defines no KIND)."""
from __future__ import annotations

import tempfile

from kvideo.models.unet import UNet, UNetConfig


def load_unet(golden, **reference) -> UNet:
    """Write the golden weights in the official file layout and load them through from_pretrained.

    `reference` goes to `UNetConfig.from_reference` (release 1.1: release= and kind=)."""
    config = UNetConfig.from_reference(golden.config, **reference)
    with tempfile.TemporaryDirectory() as tmp:
        path = golden.write_official(tmp, "unet.pt")
        return UNet.from_pretrained(path, config)


def run_folded(golden, reference=None, **conditioning):
    """The reference call `unet(x, time, context, context_mask, ...)` on the folded layout."""
    inputs = golden.inputs
    unet = load_unet(golden, **(reference or {}))
    out = unet.forward_folded(inputs["x"].float(), inputs["time"], inputs["context"].float(),
                              inputs["context_mask"], **conditioning)
    return {"x": out}
