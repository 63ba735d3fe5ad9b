"""Evaluation of an optimizer on a fixed function set, and model selection (SPEC sections 4-5).

Evaluation runs without learning, by the fused kernels where they serve the device (:mod:`kernels`),
in chunks of functions (so that memory stays bounded), and returns per function: the NLL at steps
0..S and, for act models, q(t|x,S), its mode step, the offline stopping step (threshold on the
cumulative q), the online stopping step and the NLL distance ``NLL(theta_init) - NLL(theta_true)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import bptt, halting, kernels
from .networks import LSTMOptimizer
from .problem import FunctionBatch, StudentTRegression
from .rollout import start, unroll

SELECTION_METRICS = ("final_nll", "mean_nll")


@torch.no_grad()
def evaluate(
    net: LSTMOptimizer,
    functions: FunctionBatch,
    steps: int = 100,
    chunk: int = 250,
    device: torch.device | str = "cpu",
    threshold: float = 0.9,
    online_threshold: float = 0.95,
) -> dict[str, np.ndarray]:
    """Run the optimizer ``steps`` steps on every function.

    Returns a dict of numpy arrays over the N functions: ``nll`` (N, steps+1) with step 0 the NLL at
    ``theta_init``; for act models also ``q`` (N, steps), ``mode_step``, ``stop_step``,
    ``online_stop_step`` (N,) int64 and ``nll_distance`` (N,).
    """
    net = net.to(device).eval()
    parts: dict[str, list] = {}
    for lo in range(0, len(functions), chunk):
        part = functions.slice(lo, lo + chunk)
        problem = StudentTRegression.from_batch(part, device)
        theta0 = torch.from_numpy(part.theta_init).to(device)
        state = start(net, problem, theta0)
        if kernels.usable(device):
            # the fused kernels, keeping nothing for a backward pass
            _, nll, logits, _ = bptt.forward_native(
                net, net.step_weights(), problem, state, steps, record=False
            )
        else:
            nll, logits, _ = unroll(net, problem, state, steps)
        nll0 = problem.nll(theta0)
        parts.setdefault("nll", []).append(torch.cat([nll0[:, None], nll], 1).cpu())
        if logits is not None:
            q = halting.log_posterior(logits).exp()
            theta_true = torch.from_numpy(part.theta_true).to(device)
            parts.setdefault("q", []).append(q.cpu())
            parts.setdefault("mode_step", []).append(halting.mode_step(q).cpu())
            parts.setdefault("stop_step", []).append(halting.stopping_step(q, threshold).cpu())
            parts.setdefault("online_stop_step", []).append(
                halting.online_stopping_step(logits, online_threshold).cpu()
            )
            parts.setdefault("nll_distance", []).append((nll0 - problem.nll(theta_true)).cpu())
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def curve_summary(result: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-step summary of :func:`evaluate`'s output: ``step``, ``nll_mean``, ``nll_std`` (S+1,);
    for act models ``stop_step_mean`` and ``online_stop_step_mean`` repeated on every row."""
    nll = result["nll"].astype(np.float64)
    out = {
        "step": np.arange(nll.shape[1], dtype=np.int64),
        "nll_mean": nll.mean(0),
        "nll_std": nll.std(0),
    }
    if "stop_step" in result:
        for k in ("stop_step", "online_stop_step", "mode_step"):
            out[f"{k}_mean"] = np.full(nll.shape[1], result[k].mean())
    return out


def selection_value(nll_mean: np.ndarray, metric: str = "final_nll") -> float:
    """The validation metric of one checkpoint from its mean-NLL curve (S+1,), steps 0..S.

    ``final_nll``: mean NLL at the final step; ``mean_nll``: mean over steps 1..S.
    """
    if metric == "final_nll":
        return float(nll_mean[-1])
    if metric == "mean_nll":
        return float(np.mean(nll_mean[1:]))
    raise ValueError(f"unknown selection metric {metric!r} ({', '.join(SELECTION_METRICS)})")


def select_best(values: dict) -> tuple:
    """The key (checkpoint epoch, or a baseline's learning rate) with the smallest finite value;
    the smallest key on ties.

    Raises ValueError when no value is finite: a model whose every checkpoint diverged has no best.
    """
    finite = {e: v for e, v in values.items() if v is not None and math.isfinite(v)}
    if not finite:
        raise ValueError(f"no checkpoint has a finite validation value ({values})")
    best = min(sorted(finite), key=lambda e: finite[e])
    return best, finite[best]


# two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30 (beyond: within 0.5% of 1.96..2.04)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.96 + 2.4 / df  # a close approximation of the quantile for df > 30


def mean_ci95(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean across replicates and the half-width of its 95% t-interval (NaN with one replicate).

    Args:
        values: (N, ...) one entry per replicate.
    Returns:
        mean and half-width, each of shape ``values.shape`` without ``axis``.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis)
    if n < 2:
        return mean, np.full_like(mean, np.nan)
    half = t975(n - 1) * values.std(axis, ddof=1) / np.sqrt(n)
    return mean, half
