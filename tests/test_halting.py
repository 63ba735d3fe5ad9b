import math

import numpy as np
import pytest
import torch

from learned_halting import halting
from learned_halting.priors import log_truncated_geometric, truncated_geometric


def test_q_sums_to_one():
    logits = halting.halting_logits(torch.randn(7, 30))
    q = halting.log_posterior(logits).exp()
    torch.testing.assert_close(q.sum(1), torch.ones(7))


def test_kl_is_q_from_p_and_non_negative():
    q = torch.tensor([[0.9, 0.08, 0.02]], dtype=torch.float64)
    p = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    forward = sum(q[0, t] * math.log(q[0, t] / p[t]) for t in range(3))
    reverse = sum(p[t] * math.log(p[t] / q[0, t]) for t in range(3))
    got = halting.kl_to_prior(q.log(), p.log()).item()
    assert got == pytest.approx(forward.item())
    assert abs(got - reverse.item()) > 0.05  # the two directions differ here
    rand = torch.log_softmax(torch.randn(100, 20), 1)
    assert (halting.kl_to_prior(rand, log_truncated_geometric(20, 0.6)) >= -1e-6).all()
    same = torch.log(torch.from_numpy(truncated_geometric(20, 0.6))).float()
    assert halting.kl_to_prior(same[None], same).abs().item() < 1e-6


def test_act_loss_matches_hand_computation():
    # two functions, horizon 3
    increments = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    nll = torch.tensor([[30.0, 20.0, 15.0], [25.0, 24.0, 23.0]], dtype=torch.float64)
    nu = 0.6
    p = [(1 - nu) * nu ** (t - 1) / (1 - nu**3) for t in (1, 2, 3)]
    expected = 0.0
    for b in range(2):
        s, acc = [], 0.0
        for t in range(3):
            acc += increments[b, t].item()
            s.append(acc)
        z = sum(math.exp(v) for v in s)
        q = [math.exp(v) / z for v in s]
        expected += sum(q[t] * nll[b, t].item() for t in range(3))
        expected += sum(q[t] * math.log(q[t] / p[t]) for t in range(3))
    expected /= 2
    logits = halting.halting_logits(increments)
    log_p = torch.log(torch.tensor(p, dtype=torch.float64))
    assert halting.act_loss(nll, logits, log_p).item() == pytest.approx(expected, rel=1e-12)


def test_mode_and_stopping_steps():
    q = torch.tensor([[0.1, 0.5, 0.3, 0.1], [0.05, 0.05, 0.1, 0.8], [0.95, 0.05, 0.0, 0.0]])
    assert halting.mode_step(q).tolist() == [2, 4, 1]
    # cumulative: [.1 .6 .9 1.], [.05 .1 .2 1.], [.95 1 1 1]
    assert halting.stopping_step(q, 0.9).tolist() == [3, 4, 1]
    assert halting.stopping_step(q, 0.5).tolist() == [2, 4, 1]
    # rounding that leaves the total below the threshold stops at the last step
    assert halting.stopping_step(torch.full((1, 4), 0.2), 0.9).tolist() == [4]


def test_online_stopping_step_follows_its_definition():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(np.cumsum(rng.normal(size=(50, 40)), 1))
    got = halting.online_stopping_step(logits, 0.95).tolist()
    for b in range(50):
        count = 1
        for i in range(2, 41):  # steps i >= 2, 1-based
            z = torch.softmax(logits[b, :i], 0)
            if not z[:-1].sum() > 0.95:  # not stopped at step i
                count += 1
        assert got[b] == count
    # a logit that falls steeply stops every step after the first
    steep = halting.halting_logits(torch.full((1, 10), -10.0))
    assert halting.online_stopping_step(steep).tolist() == [1]
