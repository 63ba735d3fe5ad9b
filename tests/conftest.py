import os

import pytest
import torch

# Tests compare numbers; keep them on one thread so results do not depend on the machine.
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo():
    return REPO
