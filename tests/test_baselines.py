"""Hand-designed baselines follow torch.optim exactly, and the lr search picks the best finite value."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from learned_halting import pipeline
from learned_halting import problem as P
from learned_halting.baselines import BASELINES, lr_grid, run_baseline

TORCH = {
    "adam": lambda p, lr: torch.optim.Adam([p], lr=lr),
    "rmsprop": lambda p, lr: torch.optim.RMSprop([p], lr=lr),
    "sgd_momentum": lambda p, lr: torch.optim.SGD([p], lr=lr, momentum=0.9),
    "sgd": lambda p, lr: torch.optim.SGD([p], lr=lr),
}


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_trajectory_matches_torch_optim(name):
    fs = P.function_set(20, 3)
    lr = 0.05
    ours = run_baseline(name, lr, fs, steps=30, chunk=7)
    prob = P.StudentTRegression(torch.from_numpy(fs.W).double(), torch.from_numpy(fs.y).double())
    theta = torch.from_numpy(fs.theta_init).double().requires_grad_(True)
    opt = TORCH[name](theta, lr)
    ref = [prob.nll(theta).detach().numpy()]
    for _ in range(30):
        opt.zero_grad()
        prob.nll(theta).sum().backward()  # functions are independent: the sum's gradient is each one's
        opt.step()
        ref.append(prob.nll(theta).detach().numpy())
    np.testing.assert_allclose(ours, np.stack(ref, 1), rtol=1e-4, atol=1e-4)
    assert ours[:, -1].mean() < ours[:, 0].mean()  # it optimizes


def test_lr_grid():
    g = lr_grid(1e-4, 1.0, 13)
    assert len(g) == 13 and g[0] == pytest.approx(1e-4) and g[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(np.diff(np.log10(g)), 1 / 3)


def test_lr_search_picks_the_best_finite_learning_rate(tmp_path):
    cfg = {"seed": 1, "training": {"selection_metric": "final_nll", "eval_steps": 50, "eval_chunk": 100},
           "baselines": {"names": ["sgd"], "lr_min": 1e-3, "lr_max": 10.0, "lr_points": 5}}
    fs_path = tmp_path / "validation.parquet"
    pipeline.make_function_set(fs_path, "validation",
                               {"data": {"validation": {"functions": 60, "seed": 4}}})
    pipeline.search_baseline_lr(cfg, "sgd", fs_path, tmp_path / "lr_search.parquet",
                                tmp_path / "best.json")
    table = pd.read_parquet(tmp_path / "lr_search.parquet")
    assert list(table.columns) == ["lr", "value"] and len(table) == 5
    best = json.loads((tmp_path / "best.json").read_text())
    finite = table[np.isfinite(table.value)]
    assert best["lr"] == pytest.approx(finite.lr[finite.value.idxmin()])
    assert best["value"] == pytest.approx(finite.value.min()) and best["metric"] == "final_nll"
    # plain SGD with lr 10 on a Cauchy likelihood is not the best choice, and no NaN is ever chosen
    assert best["lr"] < 10.0


def test_best_act_is_the_act_model_with_the_lowest_validation_value(tmp_path):
    from learned_halting.storage import write_json

    cfg = {"models": {"metaV1": {"kind": "meta"}, "a1": {"kind": "act"}, "a2": {"kind": "act"}}}
    for m, v in (("metaV1", 1.0), ("a1", 20.5), ("a2", 19.0)):
        write_json(tmp_path / "models" / m / "best.json", {"epoch": 5, "value": v})
    assert pipeline.best_act_model(cfg, tmp_path) == "a2"
