"""The workflow follows Snakemake's conventions: snakemake --lint, snakefmt and ruff are clean."""

import subprocess
import sys

from workflow_helpers import REPO, scratch_workflow, snakemake


def _run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)


def test_snakemake_lint_reports_nothing(tmp_path):
    res = snakemake(scratch_workflow(tmp_path), "--lint")
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "Lints for" not in out, out[-4000:]


def test_snakefmt_check():
    res = _run("snakefmt", "--check", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_check():
    res = _run("ruff", "check", ".")
    assert res.returncode == 0, res.stdout + res.stderr
