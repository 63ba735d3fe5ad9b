"""The fast path computes what a straightforward implementation computes (autograd optimizee
gradient, nn.LSTMCell, one big evaluation batch): parameters after training, NLL per step, q."""

import numpy as np
import pytest
import torch

from learned_halting import problem as P
from learned_halting.evaluation import evaluate
from learned_halting.networks import LSTMOptimizer
from learned_halting.priors import log_truncated_geometric
from learned_halting.reference import (
    ReferenceOptimizer,
    reference_act_batch,
    reference_evaluate,
    reference_meta_batch,
)
from learned_halting.training import train_act_batch, train_meta_batch


@pytest.mark.parametrize("inputs,halting", [("grad", False), ("grad+param", False), ("grad", True)])
def test_evaluation_agrees_with_the_reference(inputs, halting, kernel_path):
    net = LSTMOptimizer(inputs=inputs, halting=halting, seed=4)
    fs = P.function_set(64, 5)
    fast = evaluate(net, fs, steps=100, chunk=20)
    ref = reference_evaluate(ReferenceOptimizer(net), fs, steps=100)
    np.testing.assert_allclose(fast["nll"], ref["nll"], rtol=1e-4, atol=1e-4)
    if halting:
        np.testing.assert_allclose(fast["q"], ref["q"], rtol=1e-4, atol=1e-5)


def _params(net):
    return {n: p.detach().clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize(
    "kind,mode,inputs",
    [("meta", "detached", "grad"), ("meta", "full", "grad"), ("act", "detached", "grad"),
     ("meta", "detached", "grad+param")],
)
def test_training_agrees_with_the_reference(kind, mode, inputs, kernel_path):
    net = LSTMOptimizer(inputs=inputs, halting=kind == "act", seed=6)
    ref = ReferenceOptimizer(net)
    # plain SGD: the parameter change is the gradient itself, so the comparison tests the gradients
    # (the full trajectory gradient is ~100x larger: a smaller step keeps the dynamics tame)
    lr = 1e-2 if mode == "detached" else 1e-4
    if inputs == "grad+param":
        lr = 1e-3  # the parameter input makes larger gradients
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=lr)
    for b in range(3):
        batch = P.training_batch(1, 1, b, 25)
        prob = P.StudentTRegression.from_batch(batch)
        theta0 = torch.from_numpy(batch.theta_init)
        if kind == "meta":
            w = torch.ones(40)
            train_meta_batch(net, opt, prob, theta0, w, 20, mode)
            reference_meta_batch(ref, ref_opt, prob, theta0, w, 20, mode)
        else:
            train_act_batch(net, opt, prob, theta0, 30, 0.9, mode)
            reference_act_batch(ref, ref_opt, prob, theta0, 30, log_truncated_geometric(30, 0.9))
    exported = LSTMOptimizer(inputs=inputs, halting=kind == "act", seed=0)
    ref.export_to(exported)
    initial = _params(LSTMOptimizer(inputs=inputs, halting=kind == "act", seed=6))
    fast, slow = _params(net), _params(exported)
    moved = max((fast[n] - initial[n]).abs().max().item() for n in fast)
    assert moved > 1e-2  # the updates are far larger than the tolerance below
    for name in fast:
        assert not torch.equal(fast[name], initial[name]), name  # training moved every weight
        torch.testing.assert_close(fast[name] - initial[name], slow[name] - initial[name],
                                   rtol=1e-3, atol=1e-4)
