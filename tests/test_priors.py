import numpy as np
import pytest

from learned_halting.priors import (
    expected_horizon,
    horizon_distribution,
    loss_weights,
    sample_horizon,
    truncated_geometric,
)


@pytest.mark.parametrize("nu", [0.1, 0.3, 0.6, 0.9])
@pytest.mark.parametrize("T", [1, 18, 100])
def test_truncated_geometric_formula_and_normalisation(nu, T):
    p = truncated_geometric(T, nu)
    assert p.shape == (T,)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    t = np.arange(1, T + 1)
    np.testing.assert_allclose(p, (1 - nu) * nu ** (t - 1) / (1 - nu**T), rtol=1e-12)
    assert np.all(np.diff(p) < 0) or T == 1


def test_myopic_prior_puts_its_mass_on_the_first_steps():
    assert truncated_geometric(100, 0.1)[:5].sum() > 0.9999
    assert truncated_geometric(100, 0.9)[:5].sum() < 0.5


@pytest.mark.parametrize("shape,mean", [(0.92, 18.0), (0.955, 32.3), (0.95, 29.1)])
def test_expected_horizon(shape, mean):
    p = horizon_distribution(shape, 150)
    assert p.sum() == pytest.approx(1.0)
    assert np.all(p > 0)
    assert expected_horizon(shape, 150) == pytest.approx(mean, abs=0.05)


def test_sampled_horizons_match_the_exact_mean():
    rng = np.random.default_rng(0)
    draws = np.array([sample_horizon(rng, 0.92, 150) for _ in range(20000)])
    assert draws.min() >= 1 and draws.max() <= 150
    # standard error of the mean is about 0.1 here
    assert draws.mean() == pytest.approx(expected_horizon(0.92, 150), abs=0.4)


def test_loss_weights():
    np.testing.assert_array_equal(loss_weights("ones", 100), np.ones(100))
    np.testing.assert_allclose(loss_weights("uniform", 100), np.full(100, 0.01))
    np.testing.assert_allclose(loss_weights("geometric", 100, 0.3), truncated_geometric(100, 0.3))
    with pytest.raises(ValueError, match="nu"):
        loss_weights("geometric", 100)
    with pytest.raises(ValueError, match="unknown"):
        loss_weights("cubic", 100)
