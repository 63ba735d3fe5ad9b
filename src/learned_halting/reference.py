"""A straightforward implementation of the same computations, for benchmarks and equivalence tests.

Written the way one would first write it: the optimizee gradient by autograd at every step,
``torch.nn.LSTMCell`` layers, a linear input layer applied at every step, and evaluation of the whole
function set as one batch. It computes what :mod:`rollout`, :mod:`training` and :mod:`evaluation`
compute, from the same weights, and serves as the yardstick of their speed and their numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from . import halting
from .networks import LSTMOptimizer
from .problem import FunctionBatch, StudentTRegression


class ReferenceOptimizer(nn.Module):
    """The LSTM optimizer with ``nn.Linear`` and ``nn.LSTMCell`` modules, weights copied from an
    :class:`LSTMOptimizer` (gate order (i, f, o, g) mapped to torch's (i, f, g, o))."""

    def __init__(self, net: LSTMOptimizer):
        super().__init__()
        H = net.hidden_size
        self.inputs = net.inputs
        self.input_layer = nn.Linear(net.input_layer.in_features, H)
        self.cells = nn.ModuleList(nn.LSTMCell(H, H) for _ in net.lstm)
        self.update_head = nn.Linear(H, 1, bias=False)
        self.halting_head = nn.Linear(H, 1) if net.halting else None
        self.load_from(net)

    @staticmethod
    def _order(H: int) -> list[slice]:
        i, f, o, g = (slice(k * H, (k + 1) * H) for k in range(4))
        return [i, f, g, o]

    @torch.no_grad()
    def load_from(self, net: LSTMOptimizer) -> None:
        H = net.hidden_size
        self.input_layer.load_state_dict(net.input_layer.state_dict())
        for cell, layer in zip(self.cells, net.lstm, strict=True):
            order = self._order(H)
            cell.weight_ih.copy_(torch.cat([layer.weight_ih[s] for s in order]))
            cell.weight_hh.copy_(torch.cat([layer.weight_hh[s] for s in order]))
            cell.bias_ih.copy_(torch.cat([layer.bias[s] for s in order]))
            cell.bias_hh.zero_()
            cell.bias_hh.requires_grad_(False)  # one bias per cell, as in LSTMOptimizer
        self.update_head.load_state_dict(net.update_head.state_dict())
        if self.halting_head is not None:
            self.halting_head.load_state_dict(net.halting_head.state_dict())

    @torch.no_grad()
    def export_to(self, net: LSTMOptimizer) -> None:
        """Write these weights back into ``net`` (inverse of :meth:`load_from`)."""
        H = net.hidden_size
        net.input_layer.load_state_dict(self.input_layer.state_dict())
        for cell, layer in zip(self.cells, net.lstm, strict=True):
            for k, s in enumerate(self._order(H)):
                rows = slice(k * H, (k + 1) * H)
                layer.weight_ih[s] = cell.weight_ih[rows]
                layer.weight_hh[s] = cell.weight_hh[rows]
                layer.bias[s] = cell.bias_ih[rows] + cell.bias_hh[rows]
        net.update_head.load_state_dict(self.update_head.state_dict())
        if self.halting_head is not None:
            net.halting_head.load_state_dict(self.halting_head.state_dict())

    def forward(self, x, state):
        inp = self.input_layer(x)
        new = []
        for k, cell in enumerate(self.cells):
            h, c = cell(inp, (state[2 * k], state[2 * k + 1]))
            new += [h, c]
            inp = h
        delta = self.update_head(inp).squeeze(-1)
        halt = self.halting_head(inp).squeeze(-1) if self.halting_head is not None else None
        return delta, halt, new


def autograd_gradient(problem: StudentTRegression, theta: torch.Tensor) -> torch.Tensor:
    """(B, D) gradient of the NLL by autograd (no closed form)."""
    with torch.enable_grad():
        t = theta.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(problem.nll(t).sum(), t)
    return g


def reference_unroll(ref: ReferenceOptimizer, problem, theta, state, steps, logit=None, full=False):
    """Like :func:`rollout.unroll`: returns (B, steps) NLL, (B, steps) logits or None, theta, state,
    logit."""
    B, D = theta.shape
    nlls, logits = [], []
    for _ in range(steps):
        g = autograd_gradient(problem, theta)
        x = g.reshape(-1, 1) if ref.inputs == "grad" else torch.stack((g, theta.detach()), -1).reshape(-1, 2)
        delta, halt, state = ref(x, state)
        theta = (theta if full else theta.detach()) - delta.view(B, D)
        nlls.append(problem.nll(theta))
        if halt is not None:
            logit = logit + halt.view(B, D).mean(1)
            logits.append(logit)
    return torch.stack(nlls, 1), (torch.stack(logits, 1) if logits else None), theta, state, logit


def _zero_state(ref: ReferenceOptimizer, rows: int):
    H = ref.update_head.in_features
    return [torch.zeros(rows, H) for _ in range(2 * len(ref.cells))]


def reference_meta_batch(ref, optimizer, problem, theta0, weights, bptt, trajectory_gradient="detached"):
    """One meta batch with truncated BPTT, as :func:`training.train_meta_batch`."""
    T = weights.shape[0]
    theta, state = theta0, _zero_state(ref, theta0.numel())
    for begin in range(0, T, bptt):
        n = min(bptt, T - begin)
        nll, _, theta, state, _ = reference_unroll(
            ref, problem, theta, state, n, full=trajectory_gradient == "full"
        )
        loss = (nll.mean(0) * weights[begin : begin + n]).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        theta, state = theta.detach(), [s.detach() for s in state]


def reference_act_batch(ref, optimizer, problem, theta0, horizon, log_p):
    """One act batch, as :func:`training.train_act_batch`."""
    state = _zero_state(ref, theta0.numel())
    logit = torch.zeros(theta0.shape[0])
    nll, logits, _, _, _ = reference_unroll(ref, problem, theta0, state, horizon, logit)
    loss = halting.act_loss(nll, logits, log_p)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@torch.no_grad()
def reference_evaluate(ref: ReferenceOptimizer, functions: FunctionBatch, steps: int = 100) -> dict:
    """The whole set as one batch; ``nll`` (N, steps+1) and, for act models, ``q`` (N, steps)."""
    problem = StudentTRegression.from_batch(functions)
    theta0 = torch.from_numpy(functions.theta_init)
    state = _zero_state(ref, theta0.numel())
    logit = torch.zeros(theta0.shape[0]) if ref.halting_head is not None else None
    nll, logits, _, _, _ = reference_unroll(ref, problem, theta0, state, steps, logit)
    out = {"nll": torch.cat([problem.nll(theta0)[:, None], nll], 1).numpy()}
    if logits is not None:
        out["q"] = torch.softmax(logits, 1).numpy()
    return out
