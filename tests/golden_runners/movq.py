"""Golden runner: image MoVQ, encode then decode (the reference's raw output, unclamped)."""
from __future__ import annotations

import tempfile

from kvideo.models.movq import MoVQ, MoVQConfig

KIND = "movq"


def load_movq(golden) -> MoVQ:
    """Write the golden weights as the official pickle and load them through from_pretrained."""
    config = MoVQConfig.from_reference(golden.config)
    with tempfile.TemporaryDirectory() as tmp:
        return MoVQ.from_pretrained(golden.write_official(tmp, "movq.pt"), config)


def run(golden):
    movq = load_movq(golden)
    inputs = golden.inputs
    return {
        "latent": movq.encode(inputs["image"].float()),
        "image": movq.decode(inputs["latent"].float(), clamp=False),
    }
