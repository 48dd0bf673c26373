"""Golden runner: video MoVQ decoder; the reference decodes its (f, c, h, w) input as one window of f frames."""
from __future__ import annotations

from einops import rearrange

from golden_runners.movq import load_movq

KIND = "video_movq"


def run(golden):
    movq = load_movq(golden)
    latent = golden.inputs["latent"].float()  # (f, c, h, w): the frames of one clip
    clip = rearrange(latent, "f c h w -> 1 c f h w")
    video = movq.decode(clip, window=clip.shape[2], clamp=False)
    return {"video": rearrange(video, "1 c f h w -> f c h w")}
