"""Helpers for tests that drive the Snakemake workflow in a scratch copy of the repository."""

import copy
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


SMALL_MODELS = ["metaV1", "actV2_nu0.9_T100"]


def small_config(replicates: int = 1) -> dict:
    """The tiny config with two models (one meta, one act), one baseline, and figures of those."""
    cfg = copy.deepcopy(base_config())
    tiny = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    cfg["data"] = tiny["data"]
    cfg["training"].update(tiny["training"], replicates=replicates)
    cfg["models"] = {m: cfg["models"][m] for m in SMALL_MODELS}
    cfg["baselines"]["names"] = ["adam"]
    cfg["figures"] = {
        "comparisons": {
            "actV2_nu0.9": {"models": SMALL_MODELS, "zooms": [10, 100], "learning_curves": SMALL_MODELS[1:]}
        },
        "learning_curves_meta": ["metaV1"],
        "qt_distributions": {"columns": ["nu=0.9"], "rows": {"T=100": ["actV2_nu0.9_T100"]}},
        "halting": True,
    }
    return cfg
