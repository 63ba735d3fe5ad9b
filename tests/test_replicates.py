"""Replicates: instance names and seeds, and the aggregation across replicates (known intervals)."""

import copy

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats
from workflow_helpers import base_config

from learned_halting import pipeline
from learned_halting.evaluation import mean_ci95, t975
from learned_halting.settings import ConfigError, model_instances, model_specs, replicate_seed
from learned_halting.storage import write_json, write_table


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 29, 30, 31, 50, 200])
def test_t_quantile(df):
    assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=5e-3)


def test_mean_ci95_is_the_t_interval():
    x = np.array([[10.0, 1.0], [12.0, 2.0], [14.0, 6.0]])
    mean, half = mean_ci95(x)
    np.testing.assert_allclose(mean, [12.0, 3.0])
    # sd of (10, 12, 14) is 2: half-width t_{0.975,2} * 2 / sqrt(3) = 4.303 * 1.1547
    np.testing.assert_allclose(half[0], 4.303 * 2 / np.sqrt(3), rtol=1e-12)
    lo, hi = stats.t.interval(0.95, 2, loc=3.0, scale=stats.sem([1.0, 2.0, 6.0]))
    assert half[1] == pytest.approx((hi - lo) / 2, rel=1e-3)
    m1, h1 = mean_ci95(np.array([[5.0, 6.0]]))
    np.testing.assert_allclose(m1, [5.0, 6.0])
    assert np.isnan(h1).all()


def test_instances_and_seeds():
    cfg = copy.deepcopy(base_config())
    cfg["training"]["replicates"] = 3
    inst = model_instances(cfg)
    assert inst["metaV1"] == ("metaV1", 0) and inst["metaV1_rep2"] == ("metaV1", 2)
    assert len(inst) == 3 * len(cfg["models"])
    seeds = {replicate_seed(4325, r) for r in range(3)}
    assert replicate_seed(4325, 0) == 4325 and len(seeds) == 3
    assert replicate_seed(4325, 1) == replicate_seed(4325, 1)
    spec, settings = pipeline._spec(cfg, "actV2_nu0.9_T100_rep1")
    assert spec.name == "actV2_nu0.9_T100_rep1" and spec.nu == 0.9
    assert settings.seed == replicate_seed(cfg["seed"], 1)


def test_model_names_that_look_like_replicates_are_refused():
    cfg = copy.deepcopy(base_config())
    cfg["models"]["metaV1_rep1"] = cfg["models"]["metaV1"]
    with pytest.raises(ConfigError, match="models.metaV1_rep1: names ending in _rep<n>"):
        model_specs(cfg)


def _fake_result(tmp_path, name, offset, act=False):
    nll = np.tile(np.linspace(35, 15, 101, dtype=np.float32), (4, 1)) + offset
    cols = {"function_id": pa.array(np.arange(4, dtype=np.int64)), "nll": nll}
    if act:
        q = np.full((4, 100), 0.01, dtype=np.float32)
        cols |= {"q": q, "mode_step": pa.array(np.full(4, 3 + offset, dtype=np.int64)),
                 "stop_step": pa.array(np.full(4, 7, dtype=np.int64)),
                 "online_stop_step": pa.array(np.full(4, 5, dtype=np.int64)),
                 "nll_distance": pa.array(np.zeros(4, dtype=np.float32))}
    write_table(tmp_path / f"{name}.parquet", cols, {})
    write_json(tmp_path / f"{name}.json", {"epoch": 5 * (1 + offset)})
    return tmp_path / f"{name}.parquet", tmp_path / f"{name}.json"


def test_summary_aggregates_replicates_with_known_intervals(tmp_path):
    groups = {
        "actV2": [_fake_result(tmp_path, f"a{r}", r, act=True) for r in range(3)],
        "metaV1": [_fake_result(tmp_path, "m0", 0)],
    }
    df = pipeline.summary_table(groups).set_index("model")
    # replicate means at step 0: 35, 36, 37 -> mean 36, half-width t_{0.975,2} * 1 / sqrt(3)
    assert df.loc["actV2", "replicates"] == 3
    assert df.loc["actV2", "nll_step0"] == pytest.approx(36.0)
    assert df.loc["actV2", "nll_step0_ci95"] == pytest.approx(4.303 / np.sqrt(3), rel=1e-4)
    assert df.loc["actV2", "mode_step_mean"] == pytest.approx(4.0)
    assert df.loc["actV2", "best_epoch"] == 5  # the first replicate's
    assert df.loc["metaV1", "nll_step0"] == pytest.approx(35.0)
    assert pd.isna(df.loc["metaV1", "nll_step0_ci95"])


def test_halting_figure_reads_only_its_rule_inputs(tmp_path):
    """The halting figure of a model with replicates needs replicate 0 alone (its rule's inputs)."""
    cfg = copy.deepcopy(base_config())
    cfg["training"]["replicates"] = 2
    root = tmp_path / "results"
    m = "actV2_nu0.9_T100"
    (root / "test").mkdir(parents=True)
    test_path, best_path = _fake_result(root / "test", m, 0, act=True)
    (root / "models" / m).mkdir(parents=True)
    best_path.rename(root / "models" / m / "best.json")
    write_table(root / "models" / m / "train_log.parquet",
                {"epoch": np.arange(1, 3), "nll_mean": np.array([30.0, 25.0])}, {})
    for e in (1, 2):
        write_table(root / "validation" / m / f"epoch_{e}.parquet",
                    {"step": np.arange(3), "nll_mean": np.ones(3), "nll_std": np.ones(3)}, {})
    out = tmp_path / "halting.png"
    pipeline.render_halting(cfg, m, out, root)  # no file of replicate 1 exists
    assert out.is_file()
