"""Back-propagation through time by hand, for the ``detached`` gradient path (the training hot loop).

With ``trajectory_gradient: detached`` the loss of step t depends on the network only through that
step's update ``delta_t`` (and the halting logits): ``dL/d delta_t = -dL/dNLL_t * grad_t``, where
``grad_t`` is the closed-form optimizee gradient at ``theta_t`` that the forward pass computes anyway
as the next step's input. So the whole window can run forward without autograd, recording what the
backward pass needs into preallocated buffers, and run backward through time with one matrix product
per cell and step; the weight gradients of all steps are then one matrix product per weight (the
kernels add them up step by step instead, while each step's block is in cache). Autograd
only carries these gradients from the effective step weights (:meth:`LSTMOptimizer.step_weights`) back
to the parameters. ``tests/test_reference.py`` checks the result against plain autograd.

Two implementations of the same computation: the fused C++ kernels of :mod:`kernels` (row-major,
one call per window; used on CPUs whenever they build) and the Python one below (feature-major,
one tensor operation at a time; GPUs, and CPUs without a C++ compiler).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import kernels
from .networks import LSTMOptimizer
from .problem import StudentTRegression
from .rollout import RolloutState, features


@dataclass
class Tape:
    """What the backward pass needs of a forward window of ``n`` steps (R rows, H hidden units).

    Feature-major layout, so that every gate is one contiguous block: per layer l, ``inputs[l]``
    (n, in_l, R), ``h[l]`` and ``c[l]`` (n+1, H, R) with index 0 the state before the window,
    ``gates[l]`` (n, 4H, R) activations [sigmoid(i, f, o), tanh(g)], ``tanh_c[l]`` (n, H, R).
    ``grads`` (n, B, D): the optimizee gradient after each step.
    """

    inputs: list[torch.Tensor]
    h: list[torch.Tensor]
    c: list[torch.Tensor]
    gates: list[torch.Tensor]
    tanh_c: list[torch.Tensor]
    grads: torch.Tensor


class _Buffers:
    """Tape buffers kept between windows: allocating (and first touching) tens of megabytes per
    window costs more than the window's arithmetic. ``make(capacity, *shape)`` allocates one set;
    a new set replaces it when the shape changes or a longer window (a larger stochastic horizon)
    comes."""

    def __init__(self, make):
        self.make = make
        self.key = None
        self.capacity = 0
        self.tensors: dict = {}

    def get(self, n: int, *shape) -> dict:
        if shape != self.key or n > self.capacity:
            cap = max(n, self.capacity if shape == self.key else 0)
            self.tensors = {}  # free the old set first
            self.tensors = self.make(cap, *shape)
            self.key, self.capacity = shape, cap
        return self.tensors


def _feature_major(cap: int, L: int, H: int, R: int, x_dim: int, device) -> dict:
    """Buffers of the Python path: (steps, features, rows)."""
    return {
        "h": [torch.empty(cap + 1, H, R, device=device) for _ in range(L)],
        "c": [torch.empty(cap + 1, H, R, device=device) for _ in range(L)],
        "gates": [torch.empty(cap, 4 * H, R, device=device) for _ in range(L)],
        "d_gates": [torch.empty(cap, 4 * H, R, device=device) for _ in range(L)],
        "tanh_c": [torch.empty(cap, H, R, device=device) for _ in range(L)],
        "x": torch.empty(cap, x_dim, R, device=device),
        "d_ext": [torch.empty(cap, H, R, device=device) for _ in range(L)],
    }


def _row_major(cap: int, L: int, H: int, B: int, D: int, x_dim: int) -> dict:
    """Buffers of the fused kernels (CPU): (steps, rows, features)."""
    R = B * D
    return {
        "x": torch.empty(cap, R, x_dim),
        "h": [torch.empty(cap + 1, R, H) for _ in range(L)],
        "c": [torch.empty(cap + 1, R, H) for _ in range(L)],
        "s": [torch.empty(cap, R, 4 * H) for _ in range(L)],
        "tc": [torch.empty(cap, R, H) for _ in range(L)],
        "grads": torch.empty(cap, B, D),
    }


_BUFFERS = _Buffers(_feature_major)


@dataclass
class NativeTape:
    """The fused kernels' record of a window of ``steps`` steps, row-major (R rows, H hidden units),
    in buffers of some capacity N >= steps, of which the first steps (+1) slots count: ``x`` (N, R,
    in), per layer ``h``, ``c`` (N+1, R, H), ``s`` (N, R, 4H) gate activations, ``tc`` (N, R, H);
    ``grads`` (steps, B, D); ``cells`` the step weights the window ran with, per layer
    ``w_in``, ``bias``, ``w_hh`` (contiguous, detached); ``head`` (H, 1 or 2) the update and halting
    weights."""

    x: torch.Tensor
    h: list[torch.Tensor]
    c: list[torch.Tensor]
    s: list[torch.Tensor]
    tc: list[torch.Tensor]
    grads: torch.Tensor
    cells: list[torch.Tensor]
    head: torch.Tensor
    steps: int


_NATIVE_BUFFERS = _Buffers(_row_major)
_NATIVE_EVAL_BUFFERS = _Buffers(_row_major)  # record=False: one step, kept apart from training's tape


def _head(w_update: torch.Tensor, w_halting: tuple | None) -> torch.Tensor:
    """(H, 1) update weights, or (H, 2) with the halting weights as the second column."""
    if w_halting is None:
        return w_update.detach().contiguous()
    return torch.cat([w_update.detach(), w_halting[0].detach()], 1)


@torch.no_grad()
def forward_native(
    net: LSTMOptimizer,
    weights: tuple,
    problem: StudentTRegression,
    s: RolloutState,
    steps: int,
    record: bool = True,
) -> tuple[NativeTape | None, torch.Tensor, torch.Tensor | None, RolloutState]:
    """:func:`forward` by the fused kernels (CPU). With ``record=False`` (evaluation) nothing is
    kept for a backward pass and the buffers stay the size of one step; the tape is None."""
    op = kernels.ops()
    cells, w_update, w_halting = weights
    B, D = s.theta.shape
    H, L, n = net.hidden_size, len(cells), steps
    x_dim = 1 if net.inputs == "grad" else 2
    pool = _NATIVE_BUFFERS if record else _NATIVE_EVAL_BUFFERS
    buf = pool.get(n if record else 1, L, H, B, D, x_dim)
    for k in range(L):
        buf["h"][k][0].copy_(s.lstm[2 * k])
        buf["c"][k][0].copy_(s.lstm[2 * k + 1])
    flat = [w.detach().contiguous() for cell in cells for w in cell]
    head = _head(w_update, w_halting)
    act = w_halting is not None
    nll = torch.empty(n, B)
    logits = torch.empty(n, B) if act else torch.empty(0)
    theta, grad, logit = op.window_forward(
        s.theta.detach().contiguous(), s.grad.contiguous(), problem.W.contiguous(),
        problem.y.contiguous(),
        problem._a, problem.dof + 1.0, problem.constant, flat, head,
        float(w_halting[1]) if act else 0.0, s.logit if act else torch.empty(0),
        buf["x"], buf["h"], buf["c"], buf["s"], buf["tc"], buf["grads"], nll, logits, n, record,
    )
    last = n if record else n % 2
    lstm = []
    for k in range(L):
        lstm += [buf["h"][k][last].clone(), buf["c"][k][last].clone()]
    state = RolloutState(theta, grad, lstm, logit if act else None)
    tape = None
    if record:
        tape = NativeTape(
            buf["x"], buf["h"], buf["c"], buf["s"], buf["tc"], buf["grads"][:n], flat, head, n
        )
    return tape, nll.t().contiguous(), (logits.t().contiguous() if act else None), state


def _backward_native(weights: tuple, tape: NativeTape, d_delta, d_increment) -> None:
    cells, w_update, w_halting = weights
    L, n = len(cells), tape.steps
    d_inc = d_increment.contiguous() if d_increment is not None else torch.empty(0)
    with torch.no_grad():
        g = kernels.ops().window_backward(
            tape.cells, tape.head, tape.x, tape.h, tape.c, tape.s, tape.tc, d_delta.contiguous(), d_inc, n
        )
    tensors = [w for cell in cells for w in cell] + [w_update]
    grads = list(g[: 3 * L]) + [g[3 * L][:, :1]]
    if w_halting is not None:
        tensors += [w_halting[0], w_halting[1]]
        grads += [g[3 * L][:, 1:], g[3 * L + 1]]
    torch.autograd.backward(tensors, grads)


def _tanh_(x: torch.Tensor) -> torch.Tensor:
    """In place ``tanh(x) = 2 sigmoid(2x) - 1`` (sigmoid is the cheaper kernel on CPUs)."""
    return x.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


def forward(
    net: LSTMOptimizer, weights: tuple, problem: StudentTRegression, s: RolloutState, steps: int
) -> tuple[Tape | NativeTape, torch.Tensor, torch.Tensor | None, RolloutState]:
    """Run ``steps`` steps without autograd, recording a tape for :func:`backward`.

    The tape lives in buffers reused by the next call: run :func:`backward` before the next forward.
    The fused kernels run it when they serve the device (:func:`kernels.usable`), else Python.

    Returns the tape, the NLL (B, steps), the halting logits (B, steps) or None, and the new state
    (LSTM state in the usual (R, H) layout).
    """
    if kernels.usable(s.theta.device):
        return forward_native(net, weights, problem, s, steps)
    return _forward_python(net, weights, problem, s, steps)


@torch.no_grad()
def _forward_python(
    net: LSTMOptimizer, weights: tuple, problem: StudentTRegression, s: RolloutState, steps: int
) -> tuple[Tape, torch.Tensor, torch.Tensor | None, RolloutState]:
    cells, w_update, w_halting = weights
    B, D = s.theta.shape
    R, H, n = B * D, net.hidden_size, steps
    dev = s.theta.device
    x_dim = 1 if net.inputs == "grad" else 2
    L = len(cells)
    buf = _BUFFERS.get(n, L, H, R, x_dim, dev)
    h = [b[: n + 1] for b in buf["h"]]
    c = [b[: n + 1] for b in buf["c"]]
    gates = [b[:n] for b in buf["gates"]]
    tanh_c = [b[:n] for b in buf["tanh_c"]]
    inputs = [buf["x"][:n]] + [h[k - 1][1:] for k in range(1, L)]
    grads = torch.empty(n, B, D, device=dev)
    for k in range(L):
        h[k][0] = s.lstm[2 * k].t()
        c[k][0] = s.lstm[2 * k + 1].t()
    # feature-major weights: (4H, in), (4H, 1) bias, (4H, H); heads as rows (1, H)
    fm = [(w_in.t(), bias.unsqueeze(1), w_hh.t()) for w_in, bias, w_hh in cells]
    u_row = w_update.detach().t()
    nll = torch.empty(B, n, device=dev)
    logits = torch.empty(B, n, device=dev) if w_halting is not None else None
    theta, grad, logit = s.theta.detach(), s.grad, s.logit
    for t in range(n):
        inputs[0][t] = features(net, RolloutState(theta, grad, [])).t()
        for k, (w_in, bias, w_hh) in enumerate(fm):
            g = gates[k][t]
            torch.addmm(bias, w_in, inputs[k][t], out=g)
            g.addmm_(w_hh, h[k][t])
            _tanh_(g[3 * H :])
            g[: 3 * H].sigmoid_()
            c_new = c[k][t + 1]
            torch.mul(g[H : 2 * H], c[k][t], out=c_new)
            c_new.addcmul_(g[:H], g[3 * H :])
            tc = tanh_c[k][t]
            tc.copy_(c_new)
            _tanh_(tc)
            torch.mul(g[2 * H : 3 * H], tc, out=h[k][t + 1])
        top = h[L - 1][t + 1]
        theta = theta - (u_row @ top).view(B, D)
        r = problem.residual(theta)
        nll[:, t] = problem.nll_from_residual(r)
        grad = problem.grad_from_residual(r)
        grads[t] = grad
        if logits is not None:
            inc = (w_halting[0].t() @ top).view(B, D).mean(1) + w_halting[1]
            logit = logit + inc
            logits[:, t] = logit
    lstm = []
    for k in range(L):
        lstm += [h[k][n].t().contiguous(), c[k][n].t().contiguous()]
    tape = Tape(inputs, h, c, gates, tanh_c, grads)
    return tape, nll, logits, RolloutState(theta, grad, lstm, logit)


def backward(
    net: LSTMOptimizer,
    weights: tuple,
    tape: Tape | NativeTape,
    d_delta: torch.Tensor,
    d_increment: torch.Tensor | None = None,
) -> None:
    """Accumulate parameter gradients (``.grad``) from the loss gradients of one window.

    Args:
        tape: what :func:`forward` recorded for this window.
        d_delta: (n, R) gradient of the loss with respect to each step's updates.
        d_increment: (n, R) gradient with respect to each step's per-row halting increments.
    """
    if isinstance(tape, NativeTape):
        _backward_native(weights, tape, d_delta, d_increment)
        return
    cells, w_update, w_halting = weights
    L = len(cells)
    n, H = tape.gates[0].shape[0], net.hidden_size
    R = tape.gates[0].shape[2]
    top = tape.h[L - 1][1:]  # (n, H, R)
    with torch.no_grad():
        # dL/dh of the top layer from the heads, all steps at once: (n, H, R)
        d_ext = [None] * L
        d_ext[L - 1] = w_update.detach().view(1, H, 1) * d_delta.unsqueeze(1)
        if d_increment is not None:
            d_ext[L - 1].addcmul_(w_halting[0].detach().view(1, H, 1), d_increment.unsqueeze(1))
        buf = _BUFFERS.get(n, L, H, R, tape.inputs[0].shape[1], d_delta.device)
        d_gates = [b[:n] for b in buf["d_gates"]]
        for k in range(L - 1, -1, -1):
            w_in, _, w_hh = (w.detach() for w in cells[k])  # (in, 4H), (4H,), (H, 4H)
            dh_rec = torch.zeros(H, R, device=d_delta.device)
            dc_rec = torch.zeros(H, R, device=d_delta.device)
            if k > 0:
                d_ext[k - 1] = buf["d_ext"][k - 1][:n]
            for t in range(n - 1, -1, -1):
                s = tape.gates[k][t]
                i, f, o, g = s[:H], s[H : 2 * H], s[2 * H : 3 * H], s[3 * H :]
                tc = tape.tanh_c[k][t]
                dh = d_ext[k][t] + dh_rec
                dc = torch.addcmul(dc_rec, dh * o, 1.0 - tc * tc)
                dg = d_gates[k][t]
                torch.mul(dc * g, i - i * i, out=dg[:H])
                torch.mul(dc * tape.c[k][t], f - f * f, out=dg[H : 2 * H])
                torch.mul(dh * tc, o - o * o, out=dg[2 * H : 3 * H])
                torch.mul(dc * i, 1.0 - g * g, out=dg[3 * H :])
                dc_rec = dc.mul_(f)
                dh_rec = w_hh @ dg
                if k > 0:
                    torch.mm(w_in, dg, out=d_ext[k - 1][t])
        grads = []
        tensors = []
        for k, (w_in, bias, w_hh) in enumerate(cells):
            dg_t = d_gates[k].transpose(1, 2)  # (n, R, 4H)
            grads += [
                torch.bmm(tape.inputs[k], dg_t).sum(0),
                d_gates[k].sum((0, 2)),
                torch.bmm(tape.h[k][:n], dg_t).sum(0),
            ]
            tensors += [w_in, bias, w_hh]
        grads.append(torch.bmm(top, d_delta.unsqueeze(-1)).sum(0))  # (H, 1)
        tensors.append(w_update)
        if d_increment is not None:
            grads += [torch.bmm(top, d_increment.unsqueeze(-1)).sum(0), d_increment.sum().view(1)]
            tensors += [w_halting[0], w_halting[1]]
    torch.autograd.backward(tensors, grads)
