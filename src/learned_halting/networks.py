"""The coordinate-wise LSTM optimizer and its heads (SPEC section 2).

Every coordinate of every function is one *row*: a batch of ``B`` functions with ``D`` coordinates is
``rows = B * D`` rows that share all weights. Per row the network maps its input (the coordinate's
gradient, or gradient and parameter value) through a linear layer to ``hidden`` units, through
``layers`` stacked LSTM cells, and then through

* :class:`UpdateHead`: linear ``hidden -> 1`` without bias, the update ``delta`` (``theta -= delta``);
* :class:`HaltingHead` (act models only): linear ``hidden -> 1`` with bias, a halting-logit increment.

The LSTM cells keep their four gates in the order (input, forget, output, cell) in one weight matrix
so that one ``sigmoid`` covers three gates; the forget-gate bias starts at +1 as in the original.
"""

from __future__ import annotations

import math

import torch
from torch import nn

INPUT_FEATURES = {"grad": 1, "grad+param": 2}


class LSTMLayer(nn.Module):
    """One LSTM cell with gates (i, f, o, g) packed into ``weight_ih`` (4H, in), ``weight_hh`` (4H, H)
    and a single ``bias`` (4H,)."""

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.forget_bias = forget_bias

    def reset_parameters(self, generator: torch.Generator) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in (self.weight_ih, self.weight_hh, self.bias):
                p.uniform_(-bound, bound, generator=generator)
            H = self.hidden_size
            self.bias[H : 2 * H] += self.forget_bias


def _sigmoid_gates(gates: torch.Tensor, H: int) -> torch.Tensor:
    """(rows, 4H) pre-activations -> (rows, 4H) ``[sigmoid(i, f, o), tanh(g)]``.

    One ``sigmoid`` over all gates, with ``tanh(x) = 2 sigmoid(2x) - 1`` for the cell gate: on CPUs
    the transcendental functions dominate the step, and sigmoid is about 3x cheaper than tanh here.
    """
    z = gates.clone()
    z[:, 3 * H :] *= 2.0
    s = torch.sigmoid_(z)
    s[:, 3 * H :].mul_(2.0).sub_(1.0)
    return s


def _tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x * 2.0).mul_(2.0).sub_(1.0)


class LSTMCellFunction(torch.autograd.Function):
    """The pointwise part of an LSTM cell with a hand-written backward.

    Forward: gates (rows, 4H) in order (i, f, o, g) and c (rows, H) -> (h, c_new). The backward
    writes the gate gradients straight into one (rows, 4H) tensor, instead of autograd's chain of
    slice, sigmoid and tanh backward nodes (each with its own zero-filled copy).
    """

    @staticmethod
    def forward(ctx, gates: torch.Tensor, c: torch.Tensor):
        H = c.shape[1]
        s = _sigmoid_gates(gates, H)
        i, f, o, g = s[:, :H], s[:, H : 2 * H], s[:, 2 * H : 3 * H], s[:, 3 * H :]
        c_new = torch.addcmul(f * c, i, g)
        tc = _tanh(c_new)
        h = o * tc
        ctx.save_for_backward(s, c, tc)
        return h, c_new

    @staticmethod
    def backward(ctx, dh: torch.Tensor, dc_new: torch.Tensor):
        s, c, tc = ctx.saved_tensors
        H = c.shape[1]
        i, f, o, g = s[:, :H], s[:, H : 2 * H], s[:, 2 * H : 3 * H], s[:, 3 * H :]
        if dh is None:
            dh = torch.zeros_like(c)
        dc = dh * o * (1.0 - tc * tc)
        if dc_new is not None:
            dc = dc + dc_new
        dgates = torch.empty_like(s)
        torch.mul(dc * g, i * (1.0 - i), out=dgates[:, :H])
        torch.mul(dc * c, f * (1.0 - f), out=dgates[:, H : 2 * H])
        torch.mul(dh * tc, o * (1.0 - o), out=dgates[:, 2 * H : 3 * H])
        torch.mul(dc * i, 1.0 - g * g, out=dgates[:, 3 * H :])
        return dgates, dc * f


def lstm_cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gate pre-activations (rows, 4H) in order (i, f, o, g) and cell (rows, H) -> new (h, c)."""
    if torch.is_grad_enabled() and (gates.requires_grad or c.requires_grad):
        return LSTMCellFunction.apply(gates, c)
    H = c.shape[1]
    s = _sigmoid_gates(gates, H)
    c = torch.addcmul(s[:, H : 2 * H] * c, s[:, :H], s[:, 3 * H :])
    return s[:, 2 * H : 3 * H] * _tanh(c), c


class UpdateHead(nn.Linear):
    """Linear ``hidden -> 1`` without bias: the parameter update ``delta`` of one coordinate."""

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size, 1, bias=False)


class HaltingHead(nn.Linear):
    """Linear ``hidden -> 1`` with bias: the halting-logit increment of one coordinate."""

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size, 1, bias=True)


class LSTMOptimizer(nn.Module):
    """Coordinate-wise LSTM optimizer.

    Args:
        inputs: ``"grad"`` (1 input feature) or ``"grad+param"`` (2 features).
        hidden_size: units of the input layer and of every LSTM cell (40 in the study).
        layers: number of stacked LSTM cells (2 in the study).
        halting: add a :class:`HaltingHead` (act models).
        seed: seed of the weight initialisation (a private torch Generator; global RNG untouched).
    """

    def __init__(
        self,
        inputs: str = "grad",
        hidden_size: int = 40,
        layers: int = 2,
        halting: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        if inputs not in INPUT_FEATURES:
            raise ValueError(f"inputs must be one of {sorted(INPUT_FEATURES)}, got {inputs!r}")
        self.inputs = inputs
        self.hidden_size = hidden_size
        self.num_layers = layers
        self.input_layer = nn.Linear(INPUT_FEATURES[inputs], hidden_size)
        self.lstm = nn.ModuleList(LSTMLayer(hidden_size, hidden_size) for _ in range(layers))
        self.update_head = UpdateHead(hidden_size)
        self.halting_head = HaltingHead(hidden_size) if halting else None
        self.reset_parameters(seed)

    @property
    def halting(self) -> bool:
        return self.halting_head is not None

    @property
    def architecture(self) -> dict:
        """JSON-able description, stored in checkpoints and checked when loading."""
        return {
            "inputs": self.inputs,
            "hidden_size": self.hidden_size,
            "layers": self.num_layers,
            "halting": self.halting,
        }

    def reset_parameters(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        bound_in = 1.0 / math.sqrt(self.input_layer.in_features)
        bound_h = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            self.input_layer.weight.uniform_(-bound_in, bound_in, generator=gen)
            self.input_layer.bias.uniform_(-bound_in, bound_in, generator=gen)
            for layer in self.lstm:
                layer.reset_parameters(gen)
            self.update_head.weight.uniform_(-bound_h, bound_h, generator=gen)
            if self.halting_head is not None:
                self.halting_head.weight.uniform_(-bound_h, bound_h, generator=gen)
                self.halting_head.bias.uniform_(-bound_h, bound_h, generator=gen)

    def initial_state(self, rows: int, device=None, dtype=torch.float32) -> list[torch.Tensor]:
        """Zero state: a list ``[h_1, c_1, ..., h_L, c_L]`` of (rows, hidden) tensors."""
        return [
            torch.zeros(rows, self.hidden_size, device=device, dtype=dtype)
            for _ in range(2 * self.num_layers)
        ]

    def step_weights(self) -> tuple:
        """Weights for :meth:`step`, with the input layer folded into the first LSTM cell.

        ``W_ih1 @ (W_in x + b_in) + b_1 = (W_ih1 W_in) x + (W_ih1 b_in + b_1)``: one small matrix product
        per unroll instead of one per step. Autograd flows back to the original parameters. Call once
        per back-propagation window (the result holds a graph to the parameters).
        """
        first = self.lstm[0]
        w_x = first.weight_ih @ self.input_layer.weight  # (4H, inputs)
        b_x = torch.addmv(first.bias, first.weight_ih, self.input_layer.bias)  # (4H,)
        cells = [(w_x.t(), b_x, first.weight_hh.t())]
        for layer in self.lstm[1:]:
            cells.append((layer.weight_ih.t(), layer.bias, layer.weight_hh.t()))
        halting = None
        if self.halting_head is not None:
            halting = (self.halting_head.weight.t(), self.halting_head.bias)
        return cells, self.update_head.weight.t(), halting

    def step(
        self, x: torch.Tensor, state: list[torch.Tensor], weights: tuple | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        """One optimisation step for every row.

        Args:
            x: (rows, inputs) input features.
            state: ``[h_1, c_1, ..., h_L, c_L]``, each (rows, hidden).
            weights: the result of :meth:`step_weights` (computed here when omitted).

        Returns:
            delta: (rows,) update; halting: (rows,) logit increment or None; the new state.
        """
        if weights is None:
            weights = self.step_weights()
        cells, w_update, w_halting = weights
        new_state = []
        inp = x
        for k, (w_in, bias, w_hh) in enumerate(cells):
            h, c = state[2 * k], state[2 * k + 1]
            gates = torch.addmm(torch.addmm(bias, inp, w_in), h, w_hh)
            h, c = lstm_cell(gates, c)
            new_state += [h, c]
            inp = h
        delta = (inp @ w_update).squeeze(-1)
        halting = None
        if w_halting is not None:
            halting = torch.addmm(w_halting[1], inp, w_halting[0]).squeeze(-1)
        return delta, halting, new_state

    def forward(self, x, state):
        return self.step(x, state)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
