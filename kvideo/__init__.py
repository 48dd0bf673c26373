"""kvideo: Kandinsky Video text-to-video generation, fine-tuning and evaluation."""
__version__ = "0.1.0"

# `from kvideo import KVideoPipeline`: the generation API, imported on first use (it loads torch and the models;
# `import kvideo.argtypes` and `kvideo --help` should not pay for that).
_GENERATION = ("KVideoPipeline", "KVideo11Pipeline", "GenerationOptions", "VideoOutput", "open_pipeline")


def __getattr__(name: str):
    if name in _GENERATION:
        from kvideo import generation  # on first use: see _GENERATION

        return getattr(generation, name)
    raise AttributeError(f"module 'kvideo' has no attribute {name!r}")
