import os
import shutil
import tempfile

import pytest
import torch

# Tests compare numbers; keep them on one thread so results do not depend on the machine.
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")
# The fused kernels are built once per test session into a scratch cache (the workflow runs that the
# tests start inherit it), so that a test run neither uses nor fills the user's cache.
_KERNEL_CACHE = tempfile.mkdtemp(prefix="lh-kernels-")
os.environ["LEARNED_HALTING_CACHE"] = _KERNEL_CACHE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def has_compiler() -> bool:
    return shutil.which(os.environ.get("CXX", "c++")) is not None


@pytest.fixture(scope="session", autouse=True)
def _kernel_cache():
    yield
    shutil.rmtree(_KERNEL_CACHE, ignore_errors=True)


@pytest.fixture
def repo():
    return REPO


@pytest.fixture(params=["native", "python"])
def kernel_path(request, monkeypatch):
    """Run the test once with the fused C++ kernels (required to build) and once with the Python
    path."""
    if request.param == "native" and not has_compiler():
        pytest.skip("no C++ compiler for the fused kernels")
    monkeypatch.setenv("LEARNED_HALTING_KERNELS", request.param)
    return request.param
