"""Run the whole pipeline on a CPU with the tiny preset (random weights: the clip is noise).

    python examples/generate_tiny_cpu.py out.mp4
"""
import sys

from kvideo import KVideoPipeline


def main(output: str = "tiny.mp4") -> None:
    pipe = KVideoPipeline.from_preset("tiny", seed=0)
    video = pipe("a red panda eating bamboo", fps="medium", width=64, height=64, steps=4, interpolation_steps=4, seed=0)
    print(f"wrote {video.save(output)}: {len(video.frames)} frames at {video.fps} fps")


if __name__ == "__main__":
    main(*sys.argv[1:2])
