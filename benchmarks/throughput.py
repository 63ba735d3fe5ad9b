"""Throughput of the training and evaluation hot loops, fast path against the straightforward one.

    python benchmarks/throughput.py            # the study's sizes (a few minutes on 2 cores)
    python benchmarks/throughput.py --quick    # small sizes, a smoke run for CI
    python benchmarks/throughput.py --device cuda

Prints one JSON object: coordinate-steps per second (functions x 10 coordinates x steps) of a metaV1
training batch (125 functions, 100 steps, truncated BPTT 20), an actV2 T=100 training batch, and an
evaluation (10,000 functions x 100 steps), for the project's code paths and for the straightforward
reference (:mod:`learned_halting.reference`: autograd optimizee gradient, nn.LSTMCell, one evaluation
batch), and the ratios. Both run in this process with the same threads and the same weights, in
alternation (fast, reference, fast, ...), and each throughput is the median over the repeats, so
that a burst of load from elsewhere on a shared machine touches both sides alike. ``kernels`` says
which implementation ran: ``native`` (the fused C++ kernels) or ``python``
(``LEARNED_HALTING_KERNELS=python``, or no C++ compiler).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from learned_halting import kernels
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
from learned_halting.training import (
    make_optimizer,
    resolve_device,
    train_act_batch,
    train_meta_batch,
)

DIMS = P.DIMS


def _alternating(fast, ref, repeats: int) -> tuple[float, float]:
    """Median seconds per call of ``fast`` and ``ref`` (None: not run), called in alternation after
    one warm-up call each."""
    times: dict = {"fast": [], "ref": []}
    fast()
    if ref is not None:
        ref()
    for _ in range(repeats):
        for name, fn in (("fast", fast), ("ref", ref)):
            if fn is None:
                continue
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) if v else None for k, v in times.items()}
    return med["fast"], med["ref"]


def bench_training(kind: str, batch: int, horizon: int, repeats: int, device) -> tuple[float, float]:
    fs = P.training_batch(1, 1, 0, batch)
    prob = P.StudentTRegression.from_batch(fs, device)
    theta0 = torch.from_numpy(fs.theta_init).to(device)
    net = LSTMOptimizer(halting=kind == "act", seed=1).to(device)
    opt = make_optimizer(net, 1e-6)
    if kind == "meta":
        w = torch.ones(horizon, device=device)

        def fast():
            train_meta_batch(net, opt, prob, theta0, w, 20, "detached")
    else:

        def fast():
            train_act_batch(net, opt, prob, theta0, horizon, 0.9, "detached")

    ref_fn = None
    if device.type == "cpu":
        ref = ReferenceOptimizer(net.cpu())
        ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-6)
        if kind == "meta":
            w_ref = torch.ones(horizon)

            def ref_fn():
                reference_meta_batch(ref, ref_opt, prob, theta0, w_ref, 20)
        else:
            log_p = log_truncated_geometric(horizon, 0.9)

            def ref_fn():
                reference_act_batch(ref, ref_opt, prob, theta0, horizon, log_p)

    fast_time, ref_times = _alternating(fast, ref_fn, repeats)
    work = batch * DIMS * horizon
    return work / fast_time, (work / ref_times if ref_times else float("nan"))


def bench_evaluation(
    functions: int, steps: int, chunk: int, repeats: int, device
) -> tuple[float, float]:
    fs = P.function_set(functions, 3)
    net = LSTMOptimizer(seed=1)
    ref = ReferenceOptimizer(net.cpu()) if device.type == "cpu" else None
    fast, ref_time = _alternating(
        lambda: evaluate(net, fs, steps=steps, chunk=chunk, device=device),
        (lambda: reference_evaluate(ref, fs, steps=steps)) if ref is not None else None,
        repeats,
    )
    work = functions * DIMS * steps
    return work / fast, (work / ref_time if ref_time else float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--chunk", type=int, default=250, help="functions per evaluation chunk")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.quick:
        sizes = {"batch": 25, "horizon": 20, "repeats": 1, "eval_functions": 200, "eval_repeats": 1}
    else:
        sizes = {"batch": 125, "horizon": 100, "repeats": 7, "eval_functions": 10000,
                 "eval_repeats": 3}
    out = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "kernels": "native" if kernels.usable(device) else "python",
        "sizes": sizes,
    }
    t, r = bench_training("meta", sizes["batch"], sizes["horizon"], sizes["repeats"], device)
    out["train_coord_steps_per_s"], out["reference_train_coord_steps_per_s"] = t, r
    t, r = bench_training("act", sizes["batch"], sizes["horizon"], sizes["repeats"], device)
    out["act_train_coord_steps_per_s"], out["reference_act_train_coord_steps_per_s"] = t, r
    t, r = bench_evaluation(sizes["eval_functions"], 100, args.chunk, sizes["eval_repeats"], device)
    out["eval_coord_steps_per_s"], out["reference_eval_coord_steps_per_s"] = t, r
    for k in ("train", "act_train", "eval"):
        out[f"{k}_speedup"] = out[f"{k}_coord_steps_per_s"] / out[f"reference_{k}_coord_steps_per_s"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
