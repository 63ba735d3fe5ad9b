"""Hand-designed optimizers on the same closed-form gradient path as the learned ones.

Adam, RMSprop, SGD with momentum 0.9 and plain SGD, with torch's default settings otherwise, run on a
batch of functions at once. Their updates are elementwise, so optimizing the batch is optimizing every
function independently; ``tests/test_baselines.py`` checks the trajectories against ``torch.optim``.
Each has a learning rate chosen on the validation set from a log grid, by the metric the learned
models are selected with.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .problem import FunctionBatch, StudentTRegression

BASELINES = ("adam", "rmsprop", "sgd_momentum", "sgd")


class HandDesigned:
    """One hand-designed optimizer: ``update(grad, step) -> delta`` with ``theta -= delta``.

    Args:
        name: one of :data:`BASELINES`.
        lr: learning rate.
        theta: (B, D) start point (for the shape of the optimizer state).
    """

    def __init__(self, name: str, lr: float, theta: torch.Tensor):
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r} ({', '.join(BASELINES)})")
        self.name, self.lr = name, float(lr)
        self.m = torch.zeros_like(theta)  # first moment / momentum buffer
        self.v = torch.zeros_like(theta)  # second moment / square average

    def update(self, grad: torch.Tensor, step: int) -> torch.Tensor:
        """(B, D) gradient at step ``step`` (1-based) -> (B, D) update ``delta``."""
        if self.name == "sgd":
            return self.lr * grad
        if self.name == "sgd_momentum":  # torch: buf = 0.9 buf + g (buf = g at the first step)
            self.m = grad.clone() if step == 1 else self.m.mul_(0.9).add_(grad)
            return self.lr * self.m
        if self.name == "rmsprop":  # torch: alpha 0.99, eps 1e-8
            self.v.mul_(0.99).addcmul_(grad, grad, value=0.01)
            return self.lr * grad / (self.v.sqrt() + 1e-8)
        # adam: betas (0.9, 0.999), eps 1e-8, bias-corrected
        self.m.mul_(0.9).add_(grad, alpha=0.1)
        self.v.mul_(0.999).addcmul_(grad, grad, value=0.001)
        bc1, bc2 = 1 - 0.9**step, 1 - 0.999**step
        denom = (self.v.sqrt() / math.sqrt(bc2)).add_(1e-8)
        return (self.lr / bc1) * self.m / denom


@torch.no_grad()
def run_baseline(
    name: str,
    lr: float,
    functions: FunctionBatch,
    steps: int = 100,
    chunk: int = 2000,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(N, steps+1) NLL of every function at steps 0..steps (step 0 at ``theta_init``)."""
    parts = []
    for lo in range(0, len(functions), chunk):
        part = functions.slice(lo, lo + chunk)
        problem = StudentTRegression.from_batch(part, device)
        theta = torch.from_numpy(part.theta_init).to(device)
        opt = HandDesigned(name, lr, theta)
        nll = torch.empty(theta.shape[0], steps + 1, device=device)
        r = problem.residual(theta)
        nll[:, 0] = problem.nll_from_residual(r)
        for t in range(1, steps + 1):
            theta = theta - opt.update(problem.grad_from_residual(r), t)
            r = problem.residual(theta)
            nll[:, t] = problem.nll_from_residual(r)
        parts.append(nll.cpu())
    return torch.cat(parts).numpy()


def lr_grid(low: float = 1e-4, high: float = 1.0, points: int = 13) -> np.ndarray:
    """Log-spaced learning rates from ``low`` to ``high`` inclusive."""
    return np.logspace(np.log10(low), np.log10(high), points)
