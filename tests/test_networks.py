import pytest
import torch
from torch import nn

from learned_halting.networks import LSTMOptimizer, count_parameters


def _lstm_params(hidden, inputs):
    return 4 * hidden * (inputs + hidden) + 4 * hidden  # one bias per cell


@pytest.mark.parametrize(
    "inputs,halting,expected",
    [
        # input layer 1->40 (80) + 2 LSTM cells (12960 each) + update head 40->1 without bias (40)
        ("grad", False, 26040),
        ("grad+param", False, 26080),  # input layer 2->40 (120)
        ("grad", True, 26081),  # + halting head 40->1 with bias (41)
    ],
)
def test_parameter_count(inputs, halting, expected):
    net = LSTMOptimizer(inputs=inputs, halting=halting)
    assert count_parameters(net) == expected
    n_in = 1 if inputs == "grad" else 2
    assert expected == (n_in + 1) * 40 + 2 * _lstm_params(40, 40) + 40 + (41 if halting else 0)


def test_one_update_per_coordinate_and_zero_state_start():
    net = LSTMOptimizer(halting=True)
    state = net.initial_state(1250)
    assert len(state) == 4 and all(s.shape == (1250, 40) and not s.any() for s in state)
    delta, halt, new = net.step(torch.randn(1250, 1), state)
    assert delta.shape == (1250,) and halt.shape == (1250,)
    assert len(new) == 4 and all(s.shape == (1250, 40) for s in new)


def test_zeroed_update_head_gives_zero_updates():
    net = LSTMOptimizer()
    with torch.no_grad():
        net.update_head.weight.zero_()
    delta, halt, _ = net.step(torch.randn(500, 1), net.initial_state(500))
    assert halt is None
    assert torch.count_nonzero(delta) == 0


def test_forget_gate_bias_starts_at_plus_one():
    net = LSTMOptimizer(seed=3)
    for layer in net.lstm:
        H = layer.hidden_size
        f = layer.bias[H : 2 * H]
        others = torch.cat([layer.bias[:H], layer.bias[2 * H :]])
        bound = 1 / H**0.5
        assert f.min() >= 1 - bound and f.max() <= 1 + bound
        assert others.abs().max() <= bound


def test_same_seed_same_weights():
    a, b, c = LSTMOptimizer(seed=1), LSTMOptimizer(seed=1), LSTMOptimizer(seed=2)
    for (n, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(p, q), n
        assert not torch.equal(p, r), n


def test_step_matches_a_plain_lstm_cell_stack():
    """The fused step (input layer folded into the first cell, gates i,f,o,g) computes a standard
    LSTM: compare with torch.nn.LSTMCell given the same weights."""
    torch.manual_seed(0)
    net = LSTMOptimizer(inputs="grad+param", halting=True, seed=5).double()
    x = torch.randn(30, 2, dtype=torch.float64)
    state = [torch.randn(30, 40, dtype=torch.float64) for _ in range(4)]
    delta, halt, new = net.step(x, state)

    def reference_cell(layer):
        cell = nn.LSTMCell(40, 40).double()
        H = 40
        i, f, o, g = (slice(k * H, (k + 1) * H) for k in range(4))
        order = [i, f, g, o]  # torch's gate order
        with torch.no_grad():
            cell.weight_ih.copy_(torch.cat([layer.weight_ih[s] for s in order]))
            cell.weight_hh.copy_(torch.cat([layer.weight_hh[s] for s in order]))
            cell.bias_ih.copy_(torch.cat([layer.bias[s] for s in order]))
            cell.bias_hh.zero_()
        return cell

    inp = net.input_layer(x)
    ref_state = []
    for k, layer in enumerate(net.lstm):
        h, c = reference_cell(layer)(inp, (state[2 * k], state[2 * k + 1]))
        ref_state += [h, c]
        inp = h
    torch.testing.assert_close(delta, net.update_head(inp).squeeze(-1))
    torch.testing.assert_close(halt, net.halting_head(inp).squeeze(-1))
    for got, want in zip(new, ref_state, strict=True):
        torch.testing.assert_close(got, want)
