"""Golden runner: the checkpoint's text projection on T5 hidden states (padding zeroed, cut to longest + 1)."""
from __future__ import annotations

import torch

from kvideo.checkpoint import sub_state_dict
from kvideo.text import TextProjection

KIND = "text_condition"


def run(golden) -> dict[str, torch.Tensor]:
    projection = TextProjection.from_state_dict(sub_state_dict(golden.checkpoint, "projections"))
    inputs = golden.inputs
    context, mask = projection.project_text(inputs["hidden_states"].float(), inputs["attention_mask"])
    return {"context": context, "context_mask": mask}
