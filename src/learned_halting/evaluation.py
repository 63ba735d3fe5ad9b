"""Evaluation of an optimizer on a fixed function set, and model selection (SPEC sections 4-5).

Evaluation runs without learning, in chunks of functions sized so that the LSTM's working set stays
in cache, and returns per function: the NLL at steps 0..S and, for act models, q(t|x,S), its mode
step, the offline stopping step (threshold on the cumulative q), the online stopping step and the NLL
distance ``NLL(theta_init) - NLL(theta_true)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import halting
from .networks import LSTMOptimizer
from .problem import FunctionBatch, StudentTRegression
from .rollout import start, unroll

SELECTION_METRICS = ("final_nll", "mean_nll")


@torch.no_grad()
def evaluate(
    net: LSTMOptimizer,
    functions: FunctionBatch,
    steps: int = 100,
    chunk: int = 500,
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


def select_best(values: dict[int, float]) -> tuple[int, float]:
    """The epoch with the smallest finite value (the earliest on ties).

    Raises ValueError when no value is finite: a model whose every checkpoint diverged has no best.
    """
    finite = {e: v for e, v in values.items() if v is not None and math.isfinite(v)}
    if not finite:
        raise ValueError(f"no checkpoint has a finite validation value ({values})")
    best = min(sorted(finite), key=lambda e: finite[e])
    return best, finite[best]
