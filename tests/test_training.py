"""Meta-training: the gradient path, the loss, the number of updates, gradients reaching every
weight, determinism, and checkpoint selection."""

import math

import numpy as np
import pytest
import torch

from learned_halting import problem as P
from learned_halting.evaluation import evaluate, select_best, selection_value
from learned_halting.rollout import start, unroll
from learned_halting.settings import ModelSpec, TrainingSettings
from learned_halting.training import (
    build_network,
    horizon_for,
    train,
    train_act_batch,
    train_meta_batch,
)


def _problem(n=8, seed=0):
    batch = P.function_set(n, seed)
    return P.StudentTRegression.from_batch(batch), torch.from_numpy(batch.theta_init)


@pytest.mark.parametrize("mode", ["detached", "full"])
def test_gradient_path_through_the_parameters(mode):
    """detached: the loss of step t reaches the update of step t-1 only through the LSTM state;
    full: also through theta_(t-1)."""
    net = build_network(ModelSpec("m", "meta", 1e-3, horizon=2), TrainingSettings(seed=1))
    prob, theta0 = _problem()
    _, _, s1 = unroll(net, prob, start(net, prob, theta0), 1, mode)
    assert s1.theta.requires_grad  # theta_1 = theta_0 - delta_1 depends on delta_1
    nll2, _, _ = unroll(net, prob, s1, 1, mode)
    through_theta, through_state = torch.autograd.grad(
        nll2.sum(), [s1.theta, s1.lstm[-2]], allow_unused=True
    )
    assert through_state is not None and through_state.abs().sum() > 0
    if mode == "detached":
        assert through_theta is None or torch.count_nonzero(through_theta) == 0
    else:
        assert through_theta is not None and through_theta.abs().sum() > 0


class CountingAdam(torch.optim.Adam):
    steps = 0

    def step(self, closure=None):
        CountingAdam.steps += 1
        return super().step(closure)


def test_meta_batch_takes_one_update_per_bptt_window():
    net = build_network(ModelSpec("m", "meta", 1e-4, horizon=100), TrainingSettings(seed=1))
    prob, theta0 = _problem(4)
    opt = CountingAdam(net.parameters(), lr=1e-4)
    CountingAdam.steps = 0
    r = train_meta_batch(net, opt, prob, theta0, torch.ones(100), 20, "detached")
    assert CountingAdam.steps == 5 == r.updates
    CountingAdam.steps = 0
    train_meta_batch(net, opt, prob, theta0, torch.ones(32), 20, "detached")
    assert CountingAdam.steps == 2  # a partial last window also steps


def test_act_batch_takes_one_update():
    spec = ModelSpec("a", "act", 1e-4, nu=0.9, horizon=100)
    net = build_network(spec, TrainingSettings(seed=1))
    prob, theta0 = _problem(4)
    opt = CountingAdam(net.parameters(), lr=1e-4)
    CountingAdam.steps = 0
    r = train_act_batch(net, opt, prob, theta0, 100, 0.9, "detached")
    assert CountingAdam.steps == 1 == r.updates


@pytest.mark.parametrize("kind", ["meta", "act"])
def test_every_trainable_weight_receives_a_gradient(kind):
    spec = ModelSpec("x", kind, 1e-4, nu=0.9, horizon=30)
    net = build_network(spec, TrainingSettings(seed=2))
    prob, theta0 = _problem(16)
    grads = {}

    class Capture(torch.optim.SGD):
        def step(self, closure=None):
            for n, p in net.named_parameters():
                grads[n] = grads.get(n, 0) + p.grad.abs().sum().item()

    opt = Capture(net.parameters(), lr=0.0)
    if kind == "meta":
        train_meta_batch(net, opt, prob, theta0, torch.ones(30), 20, "detached")
    else:
        train_act_batch(net, opt, prob, theta0, 30, 0.9, "detached")
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    assert set(grads) == set(names)
    assert all(grads[n] > 0 for n in names), {n: g for n, g in grads.items() if g == 0}
    if kind == "act":
        assert "halting_head.weight" in grads


def test_stochastic_horizons_per_batch_follow_their_distribution():
    from learned_halting.priors import expected_horizon

    spec = ModelSpec("a", "act", 1e-4, nu=0.9, horizon_shape=0.92)
    settings = TrainingSettings(seed=3)
    draws = [horizon_for(spec, settings, e, b) for e in range(1, 101) for b in range(80)]
    assert draws == [horizon_for(spec, settings, e, b) for e in range(1, 101) for b in range(80)]
    assert np.mean(draws) == pytest.approx(expected_horizon(0.92), abs=0.5)
    other = [horizon_for(spec, TrainingSettings(seed=4), e, 0) for e in range(1, 101)]
    assert other != draws[::80]


def test_training_is_deterministic_and_learns(tmp_path):
    spec = ModelSpec("metaV1", "meta", 3e-3, horizon=20)
    settings = TrainingSettings(seed=5, epochs=4, functions_per_epoch=250, eval_every=2, bptt=10)
    runs = []
    for k in range(2):
        paths = {}

        def where(epoch, k=k, paths=paths):
            paths[epoch] = tmp_path / f"run{k}" / f"epoch_{epoch}.pt"
            return paths[epoch]

        hist = train(spec, settings, where, tmp_path / f"run{k}" / "resume",
                     torch.device("cpu"))
        runs.append((hist, paths))
    assert sorted(runs[0][1]) == [2, 4]
    for e in (2, 4):
        assert runs[0][1][e].read_bytes() != b""
        a = torch.load(runs[0][1][e], weights_only=True)["state_dict"]
        b = torch.load(runs[1][1][e], weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [h["nll_mean"] for h in runs[0][0]]
    assert [h["epoch"] for h in runs[0][0]] == [1, 2, 3, 4]
    assert losses[-1] < losses[0]


def test_selection_picks_the_minimum_and_skips_non_finite():
    assert select_best({5: 20.0, 10: 18.5, 15: 19.0}) == (10, 18.5)
    assert select_best({5: math.nan, 10: 30.0, 15: math.inf}) == (10, 30.0)
    assert select_best({5: 18.0, 10: 18.0}) == (5, 18.0)
    with pytest.raises(ValueError, match="finite"):
        select_best({5: math.nan, 10: math.nan})
    curve = np.array([35.0, 30.0, 20.0, 10.0])
    assert selection_value(curve, "final_nll") == 10.0
    assert selection_value(curve, "mean_nll") == pytest.approx(20.0)


def test_evaluation_does_not_depend_on_the_chunk_size(kernel_path):
    net = build_network(ModelSpec("a", "act", 1e-4, nu=0.6, horizon=10), TrainingSettings(seed=9))
    fs = P.function_set(90, 1)
    a = evaluate(net, fs, steps=25, chunk=90)
    b = evaluate(net, fs, steps=25, chunk=13)
    assert a["nll"].shape == (90, 26) and a["q"].shape == (90, 25)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5)
    prob = P.StudentTRegression.from_batch(fs)
    np.testing.assert_allclose(a["nll"][:, 0], prob.nll(torch.from_numpy(fs.theta_init)).numpy())
