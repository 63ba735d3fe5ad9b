"""The optimizee: Student-t NLL against scipy, closed-form gradient against autograd, the study's
reference numbers."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from learned_halting import problem as P


@pytest.fixture(scope="module")
def batch():
    return P.function_set(64, seed=11)


@pytest.mark.parametrize("dof,scale", [(1.0, 1.0), (3.5, 0.7)])
def test_nll_matches_scipy(batch, dof, scale):
    prob = P.StudentTRegression(
        torch.from_numpy(batch.W).double(), torch.from_numpy(batch.y).double(), dof, scale
    )
    theta = torch.from_numpy(batch.theta_init).double()
    r = (batch.y.astype(np.float64) - np.einsum("bsd,bd->bs", batch.W, batch.theta_init))
    expected = -stats.t.logpdf(r, df=dof, scale=scale).sum(-1)
    np.testing.assert_allclose(prob.nll(theta).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dof,scale", [(1.0, 1.0), (4.0, 2.0)])
def test_closed_form_gradient_matches_autograd(batch, dof, scale):
    prob = P.StudentTRegression(
        torch.from_numpy(batch.W).double(), torch.from_numpy(batch.y).double(), dof, scale
    )
    theta = torch.from_numpy(batch.theta_init).double().requires_grad_(True)
    (auto,) = torch.autograd.grad(prob.nll(theta).sum(), theta)
    np.testing.assert_allclose(prob.grad(theta.detach()).numpy(), auto.numpy(), atol=1e-5)


def test_dof_one_gradient_is_the_spec_formula(batch):
    prob = P.StudentTRegression.from_batch(batch)
    theta = torch.from_numpy(batch.theta_init)
    r = prob.residual(theta)
    spec = -torch.einsum("bsd,bs->bd", prob.W, 2 * r / (1 + r * r))
    torch.testing.assert_close(prob.grad(theta), spec, atol=1e-5, rtol=1e-5)


def test_global_minimum_is_ten_log_pi_for_every_function(batch):
    assert P.global_minimum() == pytest.approx(10 * math.log(math.pi))
    prob = P.StudentTRegression(torch.from_numpy(batch.W).double(), torch.from_numpy(batch.y).double())
    nll = prob.nll(prob.minimiser())
    np.testing.assert_allclose(nll.numpy(), 10 * math.log(math.pi), atol=1e-8)


def test_reference_means_over_10000_functions():
    batch = P.function_set(10000, seed=2002)
    prob = P.StudentTRegression.from_batch(batch)
    at_init = prob.nll(torch.from_numpy(batch.theta_init)).double().mean().item()
    at_truth = prob.nll(torch.from_numpy(batch.theta_true)).double().mean().item()
    assert at_init == pytest.approx(35.2, abs=0.5)
    # E[log(1 + x^2)] = 2 log 2 for a standard Cauchy x: 10 (log pi + 2 log 2) = 25.31
    assert at_truth == pytest.approx(10 * (math.log(math.pi) + 2 * math.log(2)), abs=0.5)


def test_sampling_is_deterministic_and_seed_dependent():
    a, b, c = P.function_set(50, 3), P.function_set(50, 3), P.function_set(50, 4)
    for name in ("W", "theta_true", "theta_init", "y"):
        assert getattr(a, name).dtype == np.float32
        assert np.array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))
    assert a.W.shape == (50, 10, 10) and a.y.shape == (50, 10)
    assert a.W.min() >= 0 and a.W.max() <= 1


def test_training_batches_depend_only_on_seed_epoch_and_batch():
    x = P.training_batch(7, epoch=3, batch=5, n=125)
    y = P.training_batch(7, epoch=3, batch=5, n=125)
    assert np.array_equal(x.W, y.W)
    assert not np.array_equal(x.W, P.training_batch(7, epoch=3, batch=6, n=125).W)
    assert not np.array_equal(x.W, P.training_batch(7, epoch=4, batch=5, n=125).W)
    assert not np.array_equal(x.W, P.training_batch(8, epoch=3, batch=5, n=125).W)


def test_non_positive_function_count_is_refused():
    with pytest.raises(ValueError, match="positive"):
        P.function_set(0, 1)
