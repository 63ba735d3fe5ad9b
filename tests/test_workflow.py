"""The whole DAG on a tiny config, run by Snakemake inside pytest, and what it must produce."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from workflow_helpers import REPO, base_config, scratch_workflow, snakemake

from learned_halting import problem as P
from learned_halting.storage import read_function_set

TINY = REPO / "tests" / "configs" / "tiny.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = scratch_workflow(tmp_path_factory.mktemp("tiny"))
    shutil.copy(TINY, work / "config" / "tiny.yaml")
    res = snakemake(work, "all", "--cores", "2", "--configfile", "config/tiny.yaml")
    assert res.returncode == 0, res.stderr[-5000:]
    rep = snakemake(work, "--report", "results/report.html", "--configfile", "config/tiny.yaml")
    assert rep.returncode == 0, rep.stderr[-5000:]
    return work


MODELS = list(base_config()["models"])
ACT = [m for m, e in base_config()["models"].items() if e["kind"] == "act"]
BASELINES = base_config()["baselines"]["names"]


def test_every_output_exists(tiny_run):
    r = tiny_run / "results"
    for m in MODELS:
        for e in (1, 2):
            assert (r / "models" / m / f"epoch_{e}.pt").is_file()
            assert (r / "validation" / m / f"epoch_{e}.parquet").is_file()
        assert (r / "models" / m / "train_log.parquet").is_file()
        assert (r / "test" / f"{m}.parquet").is_file()
        assert not (r / "resume" / m).exists()  # removed once training completed
    assert (r / "tables" / "summary.csv").is_file()
    assert (r / "report.html").stat().st_size > 100_000
    for m in MODELS:
        assert (tiny_run / "logs" / "models" / m / "train.log").stat().st_size > 0
        assert (tiny_run / "benchmarks" / "models" / m / "train.tsv").is_file()


def test_train_log_and_validation_curves(tiny_run):
    log = pd.read_parquet(tiny_run / "results/models/actV2_nu0.9_ET18/train_log.parquet")
    assert list(log.epoch) == [1, 2]
    assert {"loss", "nll_mean", "seconds", "functions_per_s", "horizon_mean"} <= set(log.columns)
    assert (log.updates == 2).all()  # 250 functions / 125 per batch, one update per act batch
    log = pd.read_parquet(tiny_run / "results/models/metaV1/train_log.parquet")
    assert (log.updates == 2 * 5).all()  # two batches, five 20-step windows each
    val = pd.read_parquet(tiny_run / "results/validation/actV2_nu0.3_T100/epoch_2.parquet")
    assert list(val.step) == list(range(101))
    assert {"nll_mean", "nll_std", "stop_step_mean", "online_stop_step_mean"} <= set(val.columns)


def test_best_json_is_the_minimum_of_the_validation_metric(tiny_run):
    for m in ("metaV1", "actV2_nu0.9_T100"):
        best = json.loads((tiny_run / f"results/models/{m}/best.json").read_text())
        finals = {
            e: pd.read_parquet(tiny_run / f"results/validation/{m}/epoch_{e}.parquet").nll_mean.iloc[-1]
            for e in (1, 2)
        }
        assert best["metric"] == "final_nll"
        assert best["epoch"] == min(finals, key=finals.get)
        assert best["value"] == pytest.approx(finals[best["epoch"]])


def test_test_results_columns_and_step_zero(tiny_run):
    ids, fs, _ = read_function_set(tiny_run / "results/data/test.parquet")
    prob = P.StudentTRegression.from_batch(fs)
    nll0 = prob.nll(torch.from_numpy(fs.theta_init)).numpy()
    for m in MODELS:
        table = pq.read_table(tiny_run / f"results/test/{m}.parquet")
        df = table.to_pandas()
        assert list(df.function_id) == list(ids)
        nll = np.stack(df.nll.to_numpy())
        assert nll.shape == (120, 101)
        np.testing.assert_allclose(nll[:, 0], nll0, rtol=1e-6)
        meta = json.loads(table.schema.metadata[b"learned_halting"])
        assert meta["model_name"] == m and "versions" in meta and meta["training"]["epochs"] == 2
        if m in ACT:
            q = np.stack(df.q.to_numpy())
            assert q.shape == (120, 100)
            np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-4)
            assert (df.mode_step == q.argmax(1) + 1).all()
            assert df.stop_step.between(1, 100).all() and df.online_stop_step.between(1, 100).all()
            prob_true = prob.nll(torch.from_numpy(fs.theta_true)).numpy()
            np.testing.assert_allclose(df.nll_distance, nll0 - prob_true, rtol=1e-5, atol=1e-4)
        else:
            assert "q" not in df.columns


def test_summary_table(tiny_run):
    df = pd.read_csv(tiny_run / "results/tables/summary.csv")
    assert list(df.model) == MODELS + BASELINES
    assert df.loc[df.model.isin(BASELINES), "best_lr"].notna().all()
    assert df.loc[df.model.isin(MODELS), "best_epoch"].notna().all()
    for s in (0, 1, 5, 10, 20, 50, 100):
        assert df[f"nll_step{s}"].notna().all()
    assert df.loc[df.model.isin(ACT), "stop_step_mean"].notna().all()
    assert df.loc[~df.model.isin(ACT), "stop_step_mean"].isna().all()
    test = pd.read_parquet(tiny_run / "results/test/metaV1.parquet")
    step5 = np.stack(test.nll.to_numpy())[:, 5].astype(np.float64).mean()
    assert df.set_index("model").loc["metaV1", "nll_step5"] == pytest.approx(step5, abs=1e-3)


def test_every_figure_is_a_real_png(tiny_run):
    figures = sorted((tiny_run / "results/figures").glob("*.png"))
    names = {f.stem for f in figures}
    expected = set(base_config()["figures"]["comparisons"]) | {
        "learning_curves_meta", "qt_distributions", "trajectory_gradient"} | {f"halting_{m}" for m in ACT}
    assert names == expected
    for f in figures:
        img = Image.open(f)
        assert img.format == "PNG" and img.width >= 600 and img.height >= 400
        pixels = np.asarray(img.convert("L"), dtype=np.float64)
        assert pixels.std() > 5  # not blank


def test_baselines_are_tuned_on_validation_and_run_on_test(tiny_run):
    for b in BASELINES:
        search = pd.read_parquet(tiny_run / f"results/baselines/{b}/lr_search.parquet")
        assert len(search) == 13
        best = json.loads((tiny_run / f"results/baselines/{b}/best.json").read_text())
        assert best["value"] == pytest.approx(search.value[np.isfinite(search.value)].min())
        test = pd.read_parquet(tiny_run / f"results/test/{b}.parquet")
        assert np.stack(test.nll.to_numpy()).shape == (120, 101)


def test_one_figure_schedules_only_its_dependencies(tmp_path):
    work = scratch_workflow(tmp_path)
    res = snakemake(work, "-n", "--cores", "2", "results/figures/actV2_nu0.3.png")
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    models = set(re.findall(r"model=([^\s,]+)", out))
    assert models == {"metaV1", "actV2_nu0.3_T100", "actV2_nu0.3_ET18", "actV2_nu0.3_ET32"}
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    n_eval = 100 // 5
    assert stats == {
        "function_set": "2",
        "train": "4",
        "validate_checkpoint": str(4 * n_eval),
        "select_best": "4",
        "test_model": "4",
        "comparison_figure": "1",
        "total": str(2 + 4 + 4 * n_eval + 4 + 4 + 1),
    }
