"""The fused C++ kernels: the same numbers as the Python path, bit-for-bit repeatable, the state
after a window and the logits right, and a build that fails cleanly (one-line reason, nothing
half-written, the Python path taken unless the kernels were required)."""

import logging

import pytest
import torch
from conftest import has_compiler

from learned_halting import bptt, kernels
from learned_halting import problem as P
from learned_halting.networks import LSTMOptimizer
from learned_halting.rollout import start, unroll

needs_compiler = pytest.mark.skipif(not has_compiler(), reason="no C++ compiler")


def _setup(halting=False, inputs="grad", n=12, seed=3):
    net = LSTMOptimizer(inputs=inputs, halting=halting, seed=seed)
    batch = P.function_set(n, seed)
    prob = P.StudentTRegression.from_batch(batch)
    return net, prob, start(net, prob, torch.from_numpy(batch.theta_init))


@needs_compiler
@pytest.mark.parametrize("halting,inputs", [(False, "grad"), (True, "grad"), (False, "grad+param")])
def test_window_matches_the_autograd_rollout(monkeypatch, halting, inputs):
    """Forward: NLL, logits and the state after the window equal those of rollout.unroll; backward:
    the parameter gradients of a loss equal autograd's through unroll."""
    monkeypatch.setenv("LEARNED_HALTING_KERNELS", "native")
    net, prob, s0 = _setup(halting, inputs)
    B, D = s0.theta.shape
    w = net.step_weights()
    tape, nll, logits, s1 = bptt.forward(net, w, prob, s0, 15)
    assert isinstance(tape, bptt.NativeTape)
    nll_ref, logits_ref, s_ref = unroll(net, prob, s0, 15, "detached")
    torch.testing.assert_close(nll, nll_ref.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(s1.theta, s_ref.theta.detach(), rtol=1e-5, atol=1e-5)
    for a, b in zip(s1.lstm, s_ref.lstm, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-5)
    if halting:
        torch.testing.assert_close(logits, logits_ref.detach(), rtol=1e-5, atol=1e-5)
    # a loss that weights every step's NLL (and logits) differently
    c = torch.linspace(0.5, 1.5, 15)
    loss = (nll_ref * c).sum() + ((logits_ref * c).sum() if halting else 0.0)
    net.zero_grad()
    loss.backward()
    expected = {k: p.grad.clone() for k, p in net.named_parameters()}
    net.zero_grad()
    d_delta = (tape.grads * -c.view(15, 1, 1)).reshape(15, B * D)
    d_inc = None
    if halting:
        d_inc = (torch.flip(torch.cumsum(torch.flip(c, [0]), 0), [0]) / D).view(15, 1).expand(15, B * D)
    bptt.backward(net, w, tape, d_delta, d_inc)
    for k, p in net.named_parameters():
        scale = expected[k].abs().max().item()
        torch.testing.assert_close(p.grad, expected[k], rtol=1e-4, atol=1e-5 * scale, msg=k)


@needs_compiler
def test_native_windows_are_repeatable(monkeypatch):
    monkeypatch.setenv("LEARNED_HALTING_KERNELS", "native")
    net, prob, s0 = _setup(halting=True)
    runs = []
    for _ in range(2):
        w = net.step_weights()
        tape, nll, logits, _ = bptt.forward(net, w, prob, s0, 10)
        net.zero_grad()
        bptt.backward(net, w, tape, tape.grads.reshape(10, -1), torch.ones(10, tape.grads[0].numel()))
        runs.append([nll, logits] + [p.grad.clone() for p in net.parameters()])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_mode_is_checked(monkeypatch):
    monkeypatch.setenv("LEARNED_HALTING_KERNELS", "fast")
    with pytest.raises(ValueError, match="LEARNED_HALTING_KERNELS must be one of auto, python, native"):
        kernels.mode()
    monkeypatch.setenv("LEARNED_HALTING_KERNELS", "python")
    assert kernels.ops() is None and not kernels.usable("cpu")


def test_a_failed_build_leaves_nothing_and_says_why(tmp_path, monkeypatch):
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++;\n")
    monkeypatch.setattr(kernels, "SOURCE", broken)
    target = tmp_path / "cache" / "k.so"
    if has_compiler():
        with pytest.raises(kernels.KernelBuildError, match=r"compiling broken\.cpp failed: .*error"):
            kernels.build(target)
        assert list(target.parent.iterdir()) == []  # no library, no temporary file
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(kernels.KernelBuildError, match="no C\\+\\+ compiler: 'no-such-compiler' not found"):
        kernels.build(target)


def test_without_a_compiler_auto_falls_back_and_native_refuses(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LEARNED_HALTING_CACHE", str(tmp_path))  # nothing built here
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr(kernels, "_state", {})  # as in a fresh process
    monkeypatch.setenv("LEARNED_HALTING_KERNELS", "auto")
    with caplog.at_level(logging.WARNING, logger="learned_halting.kernels"):
        assert kernels.ops() is None
    assert "using the Python path: no C++ compiler" in caplog.text
    monkeypatch.setattr(kernels, "_state", {})
    monkeypatch.setenv("LEARNED_HALTING_KERNELS", "native")
    with pytest.raises(kernels.KernelBuildError, match="LEARNED_HALTING_KERNELS=native"):
        kernels.ops()


@needs_compiler
def test_the_library_is_cached_per_source_and_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("LEARNED_HALTING_CACHE", str(tmp_path))
    path = kernels.library_path()
    assert path.parent == tmp_path and path.name.startswith("rollout_kernels-")
    monkeypatch.setattr(kernels, "_cpu_identity", lambda: "another cpu")
    assert kernels.library_path() != path


def test_a_library_that_does_not_load_means_the_python_path(tmp_path, monkeypatch, caplog):
    """A corrupt file where the cached library should be (a disk error, another machine's build)."""
    monkeypatch.setenv("LEARNED_HALTING_CACHE", str(tmp_path))
    kernels.library_path().write_bytes(b"not a shared library")
    monkeypatch.setattr(kernels, "_state", {})
    monkeypatch.setenv("LEARNED_HALTING_KERNELS", "auto")
    with caplog.at_level(logging.WARNING, logger="learned_halting.kernels"):
        assert kernels.ops() is None
    assert "using the Python path: loading" in caplog.text
