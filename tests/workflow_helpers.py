"""Helpers for tests that drive the Snakemake workflow in a scratch copy of the repository."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LINKED = ("Snakefile", "workflow", "src", "profiles", "envs")


def scratch_workflow(tmp: Path, config: dict | None = None) -> Path:
    """A working directory with the workflow linked in and ``config/config.yaml`` (a copy of the
    repository's, or ``config``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        (tmp / name).symlink_to(REPO / name)
    (tmp / "config").mkdir()
    if config is None:
        shutil.copy(REPO / "config" / "config.yaml", tmp / "config" / "config.yaml")
    else:
        (tmp / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp


def base_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def snakemake(
    workdir: Path, *args: str, timeout: int = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONPATH", None)
    cmd = [sys.executable, "-m", "snakemake", *args]
    return subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )
