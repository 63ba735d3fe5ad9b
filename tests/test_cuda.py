"""Training and evaluation on a GPU give the CPU's numbers (skipped without CUDA)."""

import numpy as np
import pytest
import torch

from learned_halting import problem as P
from learned_halting.evaluation import evaluate
from learned_halting.networks import LSTMOptimizer
from learned_halting.training import train_act_batch, train_meta_batch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("kind", ["meta", "act"])
def test_training_on_cuda_matches_cpu(kind):
    results = {}
    for device in ("cpu", "cuda"):
        net = LSTMOptimizer(halting=kind == "act", seed=2).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)
        batch = P.training_batch(1, 1, 0, 50)
        prob = P.StudentTRegression.from_batch(batch, device)
        theta0 = torch.from_numpy(batch.theta_init).to(device)
        if kind == "meta":
            train_meta_batch(net, opt, prob, theta0, torch.ones(40, device=device), 20, "detached")
        else:
            train_act_batch(net, opt, prob, theta0, 40, 0.9, "detached")
        results[device] = {n: p.detach().cpu() for n, p in net.named_parameters()}
    for n in results["cpu"]:
        torch.testing.assert_close(results["cuda"][n], results["cpu"][n], rtol=1e-3, atol=1e-4)


def test_evaluation_on_cuda_matches_cpu():
    net = LSTMOptimizer(halting=True, seed=3)
    fs = P.function_set(300, 1)
    cpu = evaluate(net, fs, steps=100, chunk=100, device="cpu")
    gpu = evaluate(net, fs, steps=100, chunk=100, device="cuda")
    np.testing.assert_allclose(gpu["nll"], cpu["nll"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gpu["q"], cpu["q"], rtol=1e-3, atol=1e-4)
