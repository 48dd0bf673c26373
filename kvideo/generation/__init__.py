"""Generation: one options type, the 1.0 and 1.1 pipelines on one base, weights folders and model cards.

`open_pipeline(weights)` (or `KVideoPipeline.from_pretrained`) picks the release of a weights folder.
"""
from kvideo.generation.base import DTYPES, OFFLOAD, PIPELINES, BasePipeline, check_prompt, open_pipeline
from kvideo.generation.options import (
    FPS_MODES, MOTION_SCORES, NOMINAL_FPS, RELEASES, SAMPLERS, GenerationOptions, resolve_options,
)
from kvideo.generation.output import Video11Output, VideoOutput
from kvideo.generation.release10 import KVideoPipeline
from kvideo.generation.release11 import KVideo11Pipeline
from kvideo.generation.weights import BUILTIN_MODELS, model_card, release_of, resolve_weights

__all__ = [
    "BUILTIN_MODELS", "DTYPES", "FPS_MODES", "MOTION_SCORES", "NOMINAL_FPS", "OFFLOAD", "PIPELINES", "RELEASES",
    "SAMPLERS", "BasePipeline", "GenerationOptions", "KVideo11Pipeline", "KVideoPipeline", "Video11Output",
    "VideoOutput", "check_prompt", "model_card", "open_pipeline", "release_of", "resolve_options", "resolve_weights",
]
