"""Golden runner: release 1.1 keyframe UNet, a 3-branch video batch (folded layout) and an image-mode batch."""
from __future__ import annotations

from golden_runners.unet_common import load_unet

KIND = "kv11_keyframe_unet"


def run(golden):
    inputs = golden.inputs
    unet = load_unet(golden, release="1.1", kind="keyframe")
    video = unet.forward_folded(
        inputs["x"].float(), inputs["time"], inputs["context"].float(), inputs["context_mask"],
        num_frames=int(golden.metadata["num_frames"]), mode="video", frame_positions=inputs["temporal_positions"],
        noise_aug_time=inputs["noise_aug_time"], motion_score=inputs["motion_score"],
    )
    # the image mode through the public (b, c, h, w) call: chosen explicitly, not from the batch size
    image = unet(inputs["image_x"].float(), inputs["image_time"], inputs["image_context"].float(),
                 inputs["image_context_mask"], mode="image")
    return {"x": video, "image_x": image}
