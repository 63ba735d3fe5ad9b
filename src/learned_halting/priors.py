"""Priors over the stopping step, training horizons and fixed loss weights (SPEC section 3).

``nu`` is the probability to continue: 0.1 and 0.3 are *myopic* (mass on the first steps), 0.6 and 0.9
*farsighted*.
"""

from __future__ import annotations

import numpy as np
import torch


def truncated_geometric(horizon: int, nu: float) -> np.ndarray:
    """``p(t | T; nu) = (1 - nu) nu^(t-1) / (1 - nu^T)`` for t = 1..T, as a (T,) float64 array."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if not 0.0 < nu < 1.0:
        raise ValueError(f"nu must lie in (0, 1), got {nu}")
    t = np.arange(1, horizon + 1, dtype=np.float64)
    return (1.0 - nu) * nu ** (t - 1) / (1.0 - nu**horizon)


def horizon_distribution(shape: float, max_horizon: int = 150) -> np.ndarray:
    """The stochastic-horizon distribution ``p(T) ∝ s^(T-1) (1 - s^T) (1 - s^2)``, T = 1..max_horizon.

    Returns a (max_horizon,) float64 array whose entry ``T-1`` is ``p(T)``.
    """
    if not 0.0 < shape < 1.0:
        raise ValueError(f"horizon shape must lie in (0, 1), got {shape}")
    T = np.arange(1, max_horizon + 1, dtype=np.float64)
    w = shape ** (T - 1) * (1.0 - shape**T) * (1.0 - shape**2)
    return w / w.sum()


def expected_horizon(shape: float, max_horizon: int = 150) -> float:
    """Exact mean ``E[T]`` of :func:`horizon_distribution` (18.0 for s = 0.92, 32.3 for s = 0.955)."""
    p = horizon_distribution(shape, max_horizon)
    return float((np.arange(1, max_horizon + 1) * p).sum())


def sample_horizon(rng: np.random.Generator, shape: float, max_horizon: int = 150) -> int:
    """Draw one horizon T from :func:`horizon_distribution` (an int in 1..max_horizon)."""
    p = horizon_distribution(shape, max_horizon)
    return int(rng.choice(max_horizon, p=p)) + 1


def loss_weights(scheme: str, horizon: int, nu: float | None = None) -> np.ndarray:
    """Fixed per-step loss weights ``w_t``, t = 1..T, as a (T,) float64 array.

    ``ones``: w_t = 1 (metaV1); ``uniform``: w_t = 1/T (metaV3.2); ``geometric``: w_t = p(t | T; nu)
    (metaV3.1).
    """
    if scheme == "ones":
        return np.ones(horizon)
    if scheme == "uniform":
        return np.full(horizon, 1.0 / horizon)
    if scheme == "geometric":
        if nu is None:
            raise ValueError("geometric loss weights need nu")
        return truncated_geometric(horizon, nu)
    raise ValueError(f"unknown loss-weight scheme {scheme!r} (ones | uniform | geometric)")


def log_truncated_geometric(horizon: int, nu: float, device=None) -> torch.Tensor:
    """(T,) float32 tensor of ``log p(t | T; nu)``, computed in float64 for accuracy."""
    return torch.from_numpy(np.log(truncated_geometric(horizon, nu))).to(torch.float32).to(device)
