import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
if "OMP_NUM_THREADS" not in os.environ:  # set it to run the suite beside other jobs without oversubscribing
    torch.set_num_threads(min(2, os.cpu_count() or 1))
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
