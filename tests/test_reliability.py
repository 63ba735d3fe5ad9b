"""Resume after a kill, reproducibility, the divergence guard."""

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from workflow_helpers import REPO, SMALL_MODELS, base_config, scratch_workflow, small_config, snakemake

from learned_halting import pipeline
from learned_halting.settings import ModelSpec, TrainingSettings
from learned_halting.training import TrainingDiverged, train

CONFIG = copy.deepcopy(base_config())
CONFIG["training"].update(epochs=6, functions_per_epoch=250, eval_every=2, threads=1)
CONFIG["models"] = {
    "metaV1": {"kind": "meta", "weights": "ones", "horizon": 40, "lr": 1e-3},
    "actV2_nu0.9_ET18": {"kind": "act", "nu": 0.9, "horizon": {"shape": 0.92}, "lr": 1e-3},
}

TRAIN = """
import json, sys
from learned_halting import pipeline
cfg, model, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
pipeline.setup(None, 1)
pipeline.train_model(cfg, model, [f"{out}/epoch_{e}.pt" for e in (2, 4, 6)],
                     f"{out}/train_log.parquet", f"{out}/resume")
"""


def _train_process(model, out):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, json.dumps(CONFIG), model, str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _resume_epoch(out):
    state = out / "resume" / "state.pt"
    if not state.exists():
        return 0
    try:
        meta = json.loads(torch.load(state, weights_only=True)["metadata"])
    except Exception:
        return 0
    return meta["epoch"]


def _kill_after_epoch(model, out, epoch):
    proc = _train_process(model, out)
    end = time.time() + 300
    while _resume_epoch(out) < epoch and proc.poll() is None and time.time() < end:
        time.sleep(0.02)
    assert proc.poll() is None, f"training ended before the kill: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _checkpoints(out):
    return {e: torch.load(out / f"epoch_{e}.pt", weights_only=True)["state_dict"] for e in (2, 4, 6)}


@pytest.mark.parametrize("model", ["metaV1", "actV2_nu0.9_ET18"])
def test_killed_training_resumes_bitwise_identical(tmp_path, model):
    ref = tmp_path / "ref"
    proc = _train_process(model, ref)
    assert proc.wait() == 0, proc.stderr.read()
    assert not (ref / "resume").exists()
    expected = _checkpoints(ref)

    out = tmp_path / "killed"
    for kill_after in (1, 3):  # two different points: before and after a checkpoint was written
        _kill_after_epoch(model, out, kill_after)
        # Snakemake (--rerun-incomplete) deletes the outputs of the incomplete job
        for p in out.glob("epoch_*.pt"):
            p.unlink()
    proc = _train_process(model, out)
    assert proc.wait() == 0, proc.stderr.read()
    got = _checkpoints(out)
    for e in (2, 4, 6):
        for k in expected[e]:
            assert torch.equal(expected[e][k], got[e][k]), (e, k)
    log_ref = pd.read_parquet(ref / "train_log.parquet")
    log_got = pd.read_parquet(out / "train_log.parquet")
    assert list(log_got.epoch) == [1, 2, 3, 4, 5, 6]
    pd.testing.assert_series_equal(log_ref.loss, log_got.loss)


def test_resume_state_of_another_config_is_ignored(tmp_path):
    spec = ModelSpec("metaV1", "meta", 1e-3, horizon=20)
    s1 = TrainingSettings(seed=1, epochs=2, functions_per_epoch=125, eval_every=1)
    s2 = TrainingSettings(seed=2, epochs=2, functions_per_epoch=125, eval_every=1)
    resume = tmp_path / "resume"
    train(spec, s1, lambda e: tmp_path / "a" / f"epoch_{e}.pt", resume, torch.device("cpu"))
    hist = train(spec, s2, lambda e: tmp_path / "b" / f"epoch_{e}.pt", resume, torch.device("cpu"))
    assert [h["epoch"] for h in hist] == [1, 2]  # started from scratch


def test_divergence_stops_with_model_epoch_and_batch(tmp_path):
    spec = ModelSpec("metaV1", "meta", 1e30, horizon=20)  # Adam steps of size ~lr overflow
    settings = TrainingSettings(seed=1, epochs=4, functions_per_epoch=250, eval_every=1)
    with pytest.raises(TrainingDiverged, match=r"model metaV1, epoch \d+, batch \d+: non-finite"):
        train(spec, settings, lambda e: tmp_path / f"epoch_{e}.pt", tmp_path / "resume",
              torch.device("cpu"))
    # the checkpoints written before the divergence stay in place and are loadable
    for p in tmp_path.glob("epoch_*.pt"):
        state = torch.load(p, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values())


def test_non_finite_validation_is_recorded_and_never_selected(tmp_path):
    import numpy as np

    from learned_halting.storage import write_table

    files = []
    for e, final in ((2, np.nan), (4, 20.0), (6, np.inf)):
        path = tmp_path / f"epoch_{e}.parquet"
        write_table(path, {"step": np.arange(3), "nll_mean": np.array([35.0, 30.0, final]),
                           "nll_std": np.zeros(3)}, {})
        files.append(path)
    cfg = copy.deepcopy(CONFIG)
    pipeline.choose_best(cfg, "metaV1", files, tmp_path / "best.json")
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["epoch"] == 4 and best["non_finite_epochs"] == [2, 6]
    assert best["candidates"] == {"2": None, "4": 20.0, "6": None}


@pytest.mark.slow
def test_the_dag_twice_gives_identical_results(tmp_path):
    """Same config and seed, same machine and threads: identical function sets, checkpoints, test
    results and summary table (with two replicates, which the summary aggregates)."""
    runs = []
    for name in ("first", "second"):
        work = scratch_workflow(tmp_path / name, small_config(replicates=2))
        res = snakemake(work, "all", "--cores", "2")
        assert res.returncode == 0, res.stderr[-4000:]
        runs.append(work / "results")
    a, b = runs
    for sub in ("data/validation.parquet", "data/test.parquet", "tables/summary.csv"):
        assert (a / sub).read_bytes() == (b / sub).read_bytes(), sub
    for m in SMALL_MODELS:
        for e in (1, 2):
            sa = torch.load(a / f"models/{m}/epoch_{e}.pt", weights_only=True)
            sb = torch.load(b / f"models/{m}/epoch_{e}.pt", weights_only=True)
            assert sa["metadata"] == sb["metadata"]
            assert all(torch.equal(sa["state_dict"][k], sb["state_dict"][k]) for k in sa["state_dict"])
        assert pq.read_table(a / f"test/{m}.parquet").equals(
            pq.read_table(b / f"test/{m}.parquet"), check_metadata=True
        )
        meta = json.loads(pq.read_table(a / f"test/{m}.parquet").schema.metadata[b"learned_halting"])
        assert meta["model_name"] == m and meta["model"]["kind"] == small_config()["models"][m]["kind"]
        assert {"torch", "numpy", "pyarrow", "learned_halting"} <= set(meta["versions"])
        assert meta["training"]["epochs"] == 2 and meta["seed"] == small_config()["seed"]
        # the second replicate trained from another seed
        rep = torch.load(a / f"models/{m}_rep1/epoch_2.pt", weights_only=True)["state_dict"]
        first = torch.load(a / f"models/{m}/epoch_2.pt", weights_only=True)["state_dict"]
        assert not all(torch.equal(rep[k], first[k]) for k in rep)
    summary = pd.read_csv(a / "tables/summary.csv").set_index("model")
    assert (summary.loc[SMALL_MODELS, "replicates"] == 2).all()
    assert summary.loc[SMALL_MODELS, "nll_step100_ci95"].notna().all()
    assert (a / "figures/actV2_nu0.9.png").is_file()


def test_a_step_on_bad_input_exits_with_one_line_and_no_output(tmp_path):
    """What a rule script does with a truncated function set: exit 1, one line naming the file."""
    bad = tmp_path / "validation.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file")
    out = tmp_path / "out" / "epoch_2.parquet"
    code = (
        "import json, sys\n"
        "from learned_halting import pipeline\n"
        "pipeline.setup(None, 1)\n"
        "pipeline.run_step(pipeline.validate_checkpoint, json.loads(sys.argv[1]), 'metaV1',\n"
        "                  sys.argv[2], sys.argv[3], sys.argv[4])\n"
    )
    ckpt = tmp_path / "epoch_2.pt"
    from learned_halting.networks import LSTMOptimizer
    from learned_halting.storage import save_checkpoint

    net = LSTMOptimizer()
    save_checkpoint(ckpt, net.state_dict(), {"architecture": net.architecture, "epoch": 2})
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    res = subprocess.run(
        [sys.executable, "-c", code, json.dumps(CONFIG), str(ckpt), str(bad), str(out)],
        env=env, capture_output=True, text=True,
    )
    assert res.returncode == 1
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and str(bad) in errors[0] and "not a readable Parquet file" in errors[0]
    assert "Traceback" not in res.stderr
    assert not out.exists() and not out.parent.exists()
