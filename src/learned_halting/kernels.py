"""Fused CPU kernels of the rollout hot loop (``csrc/rollout_kernels.cpp``), built on first use.

Each optimisation step of the training and evaluation loops is some thirty small tensor operations;
on a CPU their dispatch costs as much as their arithmetic. The C++ kernels run a whole window of
steps (LSTM layers, heads, optimizee NLL and gradient) and its back-propagation through time in one
call each: the matrix products through ATen, everything between them as one vectorized pass per
layer and step, each thread on its own block of rows for the whole window. They compute what the
Python path of :mod:`bptt` computes; ``tests/test_reference.py`` checks both against the
straightforward reference, ``tests/test_kernels.py`` against autograd.

The library is compiled once per source, torch version and CPU type with the machine's C++ compiler
(``$CXX``, else ``c++``; 10-20 s on the development machine) into ``$LEARNED_HALTING_CACHE`` (default
``~/.cache/learned_halting``), written to a temporary file and renamed, so that concurrent jobs
never load a half-written library. ``LEARNED_HALTING_KERNELS`` chooses: ``auto`` (default: the
kernels when they build, else the Python path with one warning), ``python`` (never build) or
``native`` (fail if they cannot be built). GPU tensors always take the Python path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "rollout_kernels.cpp"
MODES = ("auto", "python", "native")

_state: dict = {}  # "ops" once loaded, "error" once failed


class KernelBuildError(RuntimeError):
    """The fused kernels could not be compiled or loaded (the message says why)."""


def mode() -> str:
    value = os.environ.get("LEARNED_HALTING_KERNELS", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"LEARNED_HALTING_KERNELS must be one of {', '.join(MODES)}, got {value!r}")
    return value


def cache_dir() -> Path:
    env = os.environ.get("LEARNED_HALTING_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "learned_halting"


def _cpu_identity() -> str:
    """Model and instruction-set flags: the library is built with -march=native, so a shared cache
    (a cluster's home folder) keeps one build per CPU type."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
    return platform.machine() + "\n" + "\n".join(sorted(set(keep)))


def _compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise KernelBuildError(f"no C++ compiler: {cxx!r} not found (set CXX or install g++)")
    return cxx


def _flags() -> list[str]:
    # torch's headers and libraries, found beside the package (torch.utils.cpp_extension would
    # need setuptools, which not every environment has)
    torch_dir = Path(torch.__file__).parent
    torch_lib = str(torch_dir / "lib")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    flags = ["-O3", "-march=native", "-std=c++20", "-fPIC", "-shared", "-fopenmp",
             f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-w"]
    include = torch_dir / "include"
    flags += [f"-isystem{include}", f"-isystem{include / 'torch' / 'csrc' / 'api' / 'include'}"]
    # torch's own OpenMP runtime (libgomp.so.1 in torch/lib) is the one already loaded
    flags += [f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}", "-lc10", "-ltorch_cpu"]
    return flags


def library_path() -> Path:
    """Where the library for this source, torch, compiler flags and CPU is (or will be) cached."""
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    for part in (torch.__version__, sys.version, os.environ.get("CXX", "c++"), _cpu_identity()):
        key.update(part.encode())
    return cache_dir() / f"rollout_kernels-{key.hexdigest()[:16]}.so"


def build(target: Path) -> None:
    """Compile the library to ``target`` (atomically: a temporary file, then a rename)."""
    cxx = _compiler()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    cmd = [cxx, str(SOURCE), "-o", tmp, *_flags()]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr[-300:])
            raise KernelBuildError(f"compiling {SOURCE.name} failed: {first.strip()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load():
    path = library_path()
    if not path.exists():
        log.info("building the fused rollout kernels (once per machine) into %s", path)
        build(path)
    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError) as e:
        raise KernelBuildError(f"loading {path} failed: {str(e).splitlines()[0]}") from None
    return torch.ops.learned_halting


def ops():
    """The kernel ops (``window_forward``, ``window_backward``), or None for the Python path."""
    m = mode()
    if m == "python":
        return None
    if "ops" in _state:
        return _state["ops"]
    if "error" in _state:
        return None
    try:
        _state["ops"] = _load()
    except Exception as e:  # any failure to build or load: the Python path (or, native, an error)
        _state["error"] = str(e)
        if m == "native":
            raise KernelBuildError(f"{e} (LEARNED_HALTING_KERNELS=native)") from None
        log.warning("fused rollout kernels unavailable, using the Python path: %s", e)
        return None
    return _state["ops"]


def usable(device: torch.device | str) -> bool:
    """True when the kernels serve tensors on ``device`` (CPU only)."""
    return torch.device(device).type == "cpu" and ops() is not None
