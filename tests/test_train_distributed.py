"""Two processes under torchrun (gloo): DDP + ZeRO and FSDP train, ranks stay in sync, checkpoints match.

The test launches this file itself as the torchrun worker (`python -m torch.distributed.run
--nproc_per_node 2 tests/test_train_distributed.py WORK_DIR`).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
STRATEGIES = {"ddp": dict(strategy="ddp", zero=True), "fsdp": dict(strategy="fsdp", zero=False)}


def digest(tensors: dict[str, torch.Tensor]) -> str:
    hasher = hashlib.sha256()
    for name in sorted(tensors):
        hasher.update(name.encode())
        hasher.update(tensors[name].detach().float().cpu().numpy().tobytes())
    return hasher.hexdigest()


def worker(work: Path) -> None:
    """One rank: train with each strategy in the same process group; record what this rank holds."""
    sys.path.insert(0, str(HERE))
    from kvideo.train import distributed
    from kvideo.train.trainer import Trainer, full_tensor
    from test_train_helpers import train_config

    torch.set_num_threads(1)
    env = distributed.setup("cpu")
    report = {"world_size": env.world_size, "backend": env.backend}
    for name, values in STRATEGIES.items():
        cfg = train_config(work / name, model=str(work / "unet.safetensors"), data=str(work / "cache"), steps=3,
                           save_every=3, ema_decay=0.5, **values)
        trainer = Trainer(cfg, env)
        trainer.run()
        state = trainer.task.model.state_dict()
        full = {k: full_tensor(state[k]) for k in trainer.trained_keys}  # collective: every rank takes part
        report[name] = {"trained": digest(full), "optimizer": type(trainer.optimizer).__name__}
    (work / f"rank{env.rank}.json").write_text(json.dumps(report))
    distributed.teardown(env)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run torchrun in its own process group; on timeout the whole group (workers too) is stopped."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return -1, f"torchrun timed out after {timeout} s\n{output}"
    return process.returncode, output


@pytest.mark.distributed
def test_two_process_torchrun_keeps_ranks_in_sync(tmp_path):
    from kvideo.train.checkpointing import read_weights
    from test_train_helpers import make_cache, save_unet, write_videos

    make_cache(tmp_path / "cache", write_videos(tmp_path / "videos"))
    save_unet(tmp_path / "unet.safetensors")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(Path(__file__)), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    code, output = launch(command, env, timeout=240)
    assert code == 0, output[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # identical weights on both ranks after every strategy
    assert ranks[0]["world_size"] == 2 and ranks[0]["backend"] == "gloo"
    assert ranks[0]["ddp"]["optimizer"] == "ZeroRedundancyOptimizer"
    for name in STRATEGIES:
        saved, _, info = read_weights(tmp_path / name / "run/checkpoints/step-00000003/trained.safetensors")
        assert digest(saved) == ranks[0][name]["trained"] and info.step == 3
        log = [json.loads(line) for line in (tmp_path / name / "run/log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == [1, 2, 3]  # one log (rank 0), global throughput
    ddp, _, _ = read_weights(tmp_path / "ddp/run/keyframe-temporal.safetensors")
    fsdp, _, _ = read_weights(tmp_path / "fsdp/run/keyframe-temporal.safetensors")
    assert max(float((ddp[k] - fsdp[k]).abs().max()) for k in ddp) < 1e-3  # same data and noise, other sharding


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
