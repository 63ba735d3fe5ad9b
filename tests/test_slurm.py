"""The workflow through the SLURM profile on a real single-node SLURM cluster started here.

Every job must go through sbatch, and the results must equal those of a local run.
"""

import re
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from slurm_cluster import ClusterUnavailable, start_cluster
from workflow_helpers import SMALL_MODELS as MODELS
from workflow_helpers import scratch_workflow, small_config, snakemake

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def cluster():
    # outside pytest's private temp dir, which the munge user cannot enter; a short path too
    root = Path(tempfile.mkdtemp(prefix="lh-slurm-"))
    try:
        c = start_cluster(root)
    except ClusterUnavailable as e:
        pytest.skip(f"no local SLURM cluster: {e}")
    yield c
    c.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_slurm_profile_runs_every_job_through_sbatch(cluster, tmp_path, capsys):
    cfg = small_config()
    local = scratch_workflow(tmp_path / "local", cfg)
    res = snakemake(local, "all", "--cores", "2")
    assert res.returncode == 0, res.stderr[-4000:]

    work = scratch_workflow(tmp_path / "slurm", cfg)
    res = snakemake(
        work,
        "all",
        "--workflow-profile", "profiles/slurm",
        "--jobs", "2",
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "1",
        "--slurm-no-account",
        "--latency-wait", "5",
        env=cluster.env,
        timeout=1500,
    )
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-6000:]

    submitted = re.findall(r"submitted with SLURM jobid (\d+)", log)
    n_jobs = int(re.search(r"^total\s+(\d+)$", log, flags=re.M).group(1))
    # every job but the target rule `all` (which has nothing to run) went through sbatch
    assert len(submitted) == n_jobs - 1 and len(set(submitted)) == len(submitted)
    known = cluster.run("squeue", "-h", "-t", "all", "-o", "%i %T").stdout.split("\n")
    states = dict(line.split() for line in known if line.strip())
    assert set(submitted) <= set(states), (submitted, states)
    assert all(states[j] == "COMPLETED" for j in submitted), states
    with capsys.disabled():
        print(f"\nsbatch job ids of the SLURM run: {' '.join(submitted)}")

    for m in MODELS:
        a = pq.read_table(local / "results" / "test" / f"{m}.parquet")
        b = pq.read_table(work / "results" / "test" / f"{m}.parquet")
        assert a.equals(b, check_metadata=True), m
        for name in ("best.json",):
            assert (local / "results/models" / m / name).read_text() == (
                work / "results/models" / m / name
            ).read_text()
    assert (local / "results/tables/summary.csv").read_text() == (
        work / "results/tables/summary.csv"
    ).read_text()
    for fig in (local / "results/figures").glob("*.png"):
        assert (work / "results/figures" / fig.name).is_file()
