"""The optimisation loop shared by meta-training and evaluation.

At every step the network sees each coordinate's gradient (and, for ``grad+param``, its value),
proposes ``delta`` and the parameters move to ``theta - delta``. The gradient fed to the network is
the closed-form gradient of the NLL at the current parameters and carries no gradient back
(the usual learning-to-learn simplification).

``trajectory_gradient``: ``"detached"`` (the original code): the loss of step t reaches the network only
through that step's ``delta_t`` and through the LSTM state, ``theta_(t-1)`` being a constant;
``"full"`` (Andrychowicz et al.): back-propagate through the whole trajectory
``theta_t = theta_(t-1) - delta_t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .networks import LSTMOptimizer
from .problem import StudentTRegression


@dataclass
class RolloutState:
    """Where an optimisation stands: ``theta`` (B, D), ``grad`` (B, D) at theta, LSTM ``state``
    (list of (B*D, hidden)), and the running halting logit ``logit`` (B,) of act models."""

    theta: torch.Tensor
    grad: torch.Tensor
    lstm: list[torch.Tensor]
    logit: torch.Tensor | None = None

    def detach(self) -> RolloutState:
        return RolloutState(
            self.theta.detach(),
            self.grad,
            [s.detach() for s in self.lstm],
            None if self.logit is None else self.logit.detach(),
        )


def start(net: LSTMOptimizer, problem: StudentTRegression, theta0: torch.Tensor) -> RolloutState:
    """Step 0: parameters ``theta0`` (B, D), their gradient, zero LSTM state, logit 0."""
    B, D = theta0.shape
    logit = torch.zeros(B, device=theta0.device) if net.halting else None
    return RolloutState(theta0, problem.grad(theta0), net.initial_state(B * D, theta0.device), logit)


def features(net: LSTMOptimizer, s: RolloutState) -> torch.Tensor:
    """(B, D) gradient (and parameters) -> (B*D, inputs) network input, carrying no gradient."""
    if net.inputs == "grad":
        return s.grad.reshape(-1, 1)
    return torch.stack((s.grad, s.theta.detach()), dim=-1).reshape(-1, 2)


def unroll(
    net: LSTMOptimizer,
    problem: StudentTRegression,
    s: RolloutState,
    steps: int,
    trajectory_gradient: str = "detached",
) -> tuple[torch.Tensor, torch.Tensor | None, RolloutState]:
    """Run ``steps`` optimisation steps.

    Returns:
        nll: (B, steps) NLL after each step; logits: (B, steps) halting logits ``s_t`` (act models)
        or None; the state after the last step.
    """
    if trajectory_gradient not in ("detached", "full"):
        raise ValueError(f"trajectory_gradient must be detached or full, got {trajectory_gradient!r}")
    full = trajectory_gradient == "full"
    weights = net.step_weights()
    B, D = s.theta.shape
    theta, grad, lstm, logit = s.theta, s.grad, s.lstm, s.logit
    nlls, logits = [], []
    for _ in range(steps):
        x = features(net, RolloutState(theta, grad, lstm))
        delta, increment, lstm = net.step(x, lstm, weights)
        theta = (theta if full else theta.detach()) - delta.view(B, D)
        r = problem.residual(theta)
        nlls.append(problem.nll_from_residual(r))
        grad = problem.grad_from_residual(r.detach())
        if increment is not None:
            logit = logit + increment.view(B, D).mean(dim=1)
            logits.append(logit)
    nll = torch.stack(nlls, dim=1)
    out_logits = torch.stack(logits, dim=1) if logits else None
    return nll, out_logits, RolloutState(theta, grad, lstm, logit)
