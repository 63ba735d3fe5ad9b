"""The optimizee: linear regression with a Student-t likelihood ("regression_T", SPEC section 1).

One *function* is one regression problem ``y = W @ theta_true + noise`` with ``W`` of shape
``(samples, dims)``. Every optimizer minimises the Student-t negative log-likelihood of the residuals
``r = y - W @ theta`` summed over the samples. Everything here is batched over functions: a batch of
``B`` functions holds ``W`` of shape ``(B, samples, dims)`` and ``y`` of shape ``(B, samples)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

DIMS = 10
SAMPLES = 10
DOF = 1.0
SCALE = 1.0

# Stream identifiers for numpy SeedSequence spawn keys: every random quantity of a run draws from its
# own stream, so that adding a random draw in one place never shifts the numbers drawn in another.
STREAM_TRAIN_FUNCTIONS = 1
STREAM_HORIZON = 2


@dataclass(frozen=True)
class FunctionBatch:
    """A batch of regression functions as numpy float32 arrays.

    Shapes: ``W`` (B, samples, dims), ``theta_true`` (B, dims), ``theta_init`` (B, dims),
    ``y`` (B, samples).
    """

    W: np.ndarray
    theta_true: np.ndarray
    theta_init: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return self.W.shape[0]

    def slice(self, start: int, stop: int) -> FunctionBatch:
        return FunctionBatch(
            self.W[start:stop],
            self.theta_true[start:stop],
            self.theta_init[start:stop],
            self.y[start:stop],
        )


def sample_functions(
    n: int,
    rng: np.random.Generator,
    dims: int = DIMS,
    samples: int = SAMPLES,
    dof: float = DOF,
) -> FunctionBatch:
    """Draw ``n`` functions: W, theta_true ~ U(0, 1), noise ~ Student-t(dof), theta_init ~ N(0, 1).

    The draws are made in float64 in a fixed order (W, theta_true, noise, theta_init) and cast to
    float32, so that the same generator state gives the same bytes on every machine.
    """
    if n <= 0:
        raise ValueError(f"number of functions must be positive, got {n}")
    W = rng.uniform(0.0, 1.0, size=(n, samples, dims))
    theta_true = rng.uniform(0.0, 1.0, size=(n, dims))
    noise = rng.standard_t(dof, size=(n, samples))
    theta_init = rng.standard_normal(size=(n, dims))
    y = np.einsum("nsd,nd->ns", W, theta_true) + noise
    return FunctionBatch(
        W.astype(np.float32),
        theta_true.astype(np.float32),
        theta_init.astype(np.float32),
        y.astype(np.float32),
    )


def function_set(n: int, seed: int, **kwargs) -> FunctionBatch:
    """The fixed validation or test set: ``n`` functions from ``numpy.random.default_rng(seed)``."""
    return sample_functions(n, np.random.default_rng(seed), **kwargs)


def training_batch(seed: int, epoch: int, batch: int, n: int, **kwargs) -> FunctionBatch:
    """The training functions of one mini-batch.

    They depend only on the run's seed, the epoch and the batch index (common random numbers: every
    variant trained with the same seed sees the same functions in the same order).
    """
    seq = np.random.SeedSequence(seed, spawn_key=(STREAM_TRAIN_FUNCTIONS, epoch, batch))
    return sample_functions(n, np.random.default_rng(seq), **kwargs)


def nll_constant(samples: int, dof: float, scale: float) -> float:
    """The part of the summed Student-t NLL that does not depend on theta (a plain float)."""
    log_norm = (
        math.lgamma((dof + 1) / 2)
        - math.lgamma(dof / 2)
        - 0.5 * math.log(math.pi * dof)
        - math.log(scale)
    )
    return -samples * log_norm


def global_minimum(samples: int = SAMPLES, dof: float = DOF, scale: float = SCALE) -> float:
    """The NLL when every residual is zero: ``10*log(pi)`` for the study's settings."""
    return nll_constant(samples, dof, scale)


class StudentTRegression:
    """A batch of regression functions on one device, with NLL and closed-form gradient.

    Args:
        W: (B, samples, dims) design matrices.
        y: (B, samples) targets.
        dof, scale: Student-t degrees of freedom and scale.
    """

    def __init__(self, W: torch.Tensor, y: torch.Tensor, dof: float = DOF, scale: float = SCALE):
        self.W = W
        self.y = y
        self.dof = float(dof)
        self.scale = float(scale)
        self._a = self.dof * self.scale**2  # r^2 / (s^2 nu) = r^2 / a
        self.constant = nll_constant(W.shape[1], self.dof, self.scale)

    @classmethod
    def from_batch(
        cls,
        batch: FunctionBatch,
        device: torch.device | str = "cpu",
        dof: float = DOF,
        scale: float = SCALE,
    ) -> StudentTRegression:
        W = torch.from_numpy(np.ascontiguousarray(batch.W)).to(device)
        y = torch.from_numpy(np.ascontiguousarray(batch.y)).to(device)
        return cls(W, y, dof, scale)

    def residual(self, theta: torch.Tensor) -> torch.Tensor:
        """(B, dims) -> (B, samples): ``y - W @ theta``."""
        return self.y - torch.bmm(self.W, theta.unsqueeze(-1)).squeeze(-1)

    def nll_from_residual(self, r: torch.Tensor) -> torch.Tensor:
        """(B, samples) residuals -> (B,) summed Student-t NLL."""
        return (0.5 * (self.dof + 1.0)) * torch.log1p(r * r / self._a).sum(-1) + self.constant

    def grad_from_residual(self, r: torch.Tensor) -> torch.Tensor:
        """(B, samples) residuals -> (B, dims) closed-form ``dNLL/dtheta = -W^T ((nu+1) r / (a + r^2))``."""
        g = (self.dof + 1.0) * r / (self._a + r * r)
        return -torch.bmm(g.unsqueeze(1), self.W).squeeze(1)

    def nll(self, theta: torch.Tensor) -> torch.Tensor:
        """(B, dims) -> (B,) negative log-likelihood."""
        return self.nll_from_residual(self.residual(theta))

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        """(B, dims) -> (B, dims) closed-form gradient of the NLL."""
        return self.grad_from_residual(self.residual(theta))

    def minimiser(self) -> torch.Tensor:
        """(B, dims) ``W^-1 y``: zero residuals, so NLL equals the global minimum."""
        return torch.linalg.solve(self.W.double(), self.y.double()).to(self.W.dtype)
