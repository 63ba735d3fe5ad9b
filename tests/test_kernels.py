"""The fused C++ kernels: the numbers (NLL, logits, state after a window, gradients) of autograd
through the rollout, bit-for-bit repeatable, independent of the thread count, and a build that fails
cleanly (one-line reason, nothing half-written, the Python path taken unless the kernels were
required)."""

import logging

import pytest
import torch
from conftest import has_compiler

from learned_halting import bptt, kernels
from learned_halting import problem as P
from learned_halting.networks import LSTMOptimizer
from learned_halting.rollout import start, unroll

needs_compiler = pytest.mark.skipif(not has_compiler(), reason="no C++ compiler")


def _setup(halting=False, inputs="grad", n=12, seed=3, layers=2):
    net = LSTMOptimizer(inputs=inputs, halting=halting, seed=seed, layers=layers)
    batch = P.function_set(n, seed)
    prob = P.StudentTRegression.from_batch(batch)
    return net, prob, start(net, prob, torch.from_numpy(batch.theta_init))


@needs_compiler
@pytest.mark.parametrize(
    "halting,inputs,layers",
    [(False, "grad", 2), (True, "grad", 2), (False, "grad+param", 2), (True, "grad", 3), (False, "grad", 1)],
)
def test_window_matches_the_autograd_rollout(monkeypatch, halting, inputs, layers):
    """Forward: NLL, logits and the state after the window equal those of rollout.unroll; backward:
    the parameter gradients of a loss equal autograd's through unroll. Three layers: a middle layer
    both takes and passes on a stacked input; one layer: the first layer is also the top."""
    monkeypatch.setenv("LEARNED_HALTING_KERNELS", "native")
    net, prob, s0 = _setup(halting, inputs, layers=layers)
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


@needs_compiler
def test_the_thread_count_does_not_change_the_result(monkeypatch):
    """Each thread runs its own block of rows: with 3 threads, 7 functions (70 rows) split unevenly,
    and the numbers must be those of one thread (up to the order of the weight-gradient sums)."""
    monkeypatch.setenv("LEARNED_HALTING_KERNELS", "native")
    net, prob, s0 = _setup(halting=True, n=7)
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            w = net.step_weights()
            tape, nll, logits, s1 = bptt.forward(net, w, prob, s0, 9)
            net.zero_grad()
            d_inc = torch.linspace(-1, 1, 9 * 70).view(9, 70)
            bptt.backward(net, w, tape, tape.grads.reshape(9, -1), d_inc)
            runs.append([nll, logits, s1.theta, *s1.lstm] + [p.grad.clone() for p in net.parameters()])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*runs, strict=True):  # sums in another order: tolerance relative to the scale
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * b.abs().max().item())


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
