"""Video generation metrics: FVD (I3D), IS (C3D) and CLIPSIM (CLIP), with the papers' protocols."""
from kvideo.eval.frechet import frechet_distance, trace_sqrt_product
from kvideo.eval.stats import FeatureStats, inception_score

__all__ = ["FeatureStats", "frechet_distance", "inception_score", "trace_sqrt_product"]
