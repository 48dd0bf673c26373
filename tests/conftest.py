import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
if "OMP_NUM_THREADS" not in os.environ:  # set it to run the suite beside other jobs without oversubscribing
    # in the environment too, so that kvideo commands run in-process (which follow OMP_NUM_THREADS, else
    # take every core: kvideo.threads) and subprocesses keep this count
    os.environ["OMP_NUM_THREADS"] = str(min(2, os.cpu_count() or 1))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# `kvideo generate` without --weights uses the tiny random preset in tests (quick; the shipped shapes
# model is tested on its own, in test_shapes_model.py); subprocesses inherit it.
os.environ["KVIDEO_WEIGHTS"] = "tiny"


def pytest_collection_modifyitems(config, items):
    slow = os.environ.get("KVIDEO_SLOW") == "1"
    gpu = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not slow:
            item.add_marker(pytest.mark.skip(reason="slow check: set KVIDEO_SLOW=1 to run it"))
        if "gpu" in item.keywords and not gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none is available here"))
