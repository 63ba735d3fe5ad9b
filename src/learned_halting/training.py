"""Meta-training of the LSTM optimizers (SPEC sections 3-4).

* meta models: per batch, ``sum_t w_t L_t`` with ``L_t`` the batch-mean NLL after step t, in truncated
  BPTT windows of ``bptt`` steps: after each window the summed weighted loss is back-propagated, Adam
  steps, and the LSTM state and parameters are detached and carried on.
* act models: per batch, the mean over functions of ``sum_t q_t NLL_t + KL(q || p(.|T; nu))``,
  back-propagated once through the whole horizon; T is fixed or drawn per batch.

Training functions of (epoch, batch) come from :func:`problem.training_batch`, stochastic horizons
from their own stream, so a run is a pure function of the config and seed. The training state is
saved at the end of every epoch so that a killed job resumes where it stopped, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import bptt, halting
from .networks import LSTMOptimizer
from .priors import log_truncated_geometric, loss_weights, sample_horizon
from .problem import STREAM_HORIZON, StudentTRegression, training_batch
from .rollout import start, unroll
from .settings import ModelSpec, TrainingSettings
from .storage import DataError, atomic_path, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient; the message names the model, epoch and batch."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but torch sees no CUDA device")
    return torch.device(device)


def build_network(spec: ModelSpec, settings: TrainingSettings) -> LSTMOptimizer:
    """The model's network, initialised from the run seed (same seed, same initial weights)."""
    return LSTMOptimizer(
        inputs=spec.inputs,
        hidden_size=settings.hidden_size,
        layers=settings.layers,
        halting=spec.halting,
        seed=settings.seed,
    )


def horizon_for(spec: ModelSpec, settings: TrainingSettings, epoch: int, batch: int) -> int:
    """The training horizon of one batch: fixed, or drawn from its own random stream."""
    if not spec.stochastic_horizon:
        return spec.horizon
    seq = np.random.SeedSequence(settings.seed, spawn_key=(STREAM_HORIZON, epoch, batch))
    return sample_horizon(np.random.default_rng(seq), spec.horizon_shape, settings.max_horizon)


@dataclass
class BatchResult:
    loss: float  # the training objective of the batch
    nll_mean: float  # mean NLL over the batch's functions and steps 1..T
    horizon: int
    updates: int  # optimizer steps taken


def make_optimizer(net: LSTMOptimizer, lr: float) -> torch.optim.Adam:
    """The meta-optimizer: Adam, as one fused update over all parameters (the same arithmetic as
    the per-tensor loop, a quarter of its time on these small networks)."""
    return torch.optim.Adam(net.parameters(), lr=lr, fused=True)


def _check_finite(value: torch.Tensor, net: LSTMOptimizer, where: str) -> None:
    named = [(name, p.grad) for name, p in net.named_parameters() if p.grad is not None]
    if torch.isfinite(torch.cat([value.reshape(-1)] + [g.reshape(-1) for _, g in named])).all():
        return  # one check for the loss and all gradients; what follows only names the culprit
    if not torch.isfinite(value).all():
        raise TrainingDiverged(f"{where}: non-finite training loss")
    for name, g in named:
        if not torch.isfinite(g).all():
            raise TrainingDiverged(f"{where}: non-finite gradient in {name}")


def train_meta_batch(
    net: LSTMOptimizer,
    optimizer: torch.optim.Optimizer,
    problem: StudentTRegression,
    theta0: torch.Tensor,
    weights: torch.Tensor,
    bptt_steps: int,
    trajectory_gradient: str,
    where: str = "",
) -> BatchResult:
    """One meta batch with truncated BPTT; ``weights`` (T,) are the per-step loss weights.

    ``detached`` runs the hand-written backward of :mod:`bptt`; ``full`` runs autograd through the
    whole trajectory.
    """
    T = weights.shape[0]
    B, D = theta0.shape
    state = start(net, problem, theta0)
    total, nll_sum, updates = 0.0, 0.0, 0
    for begin in range(0, T, bptt_steps):
        n = min(bptt_steps, T - begin)
        w = weights[begin : begin + n]
        optimizer.zero_grad(set_to_none=True)
        if trajectory_gradient == "detached":
            step_weights = net.step_weights()
            tape, nll, _, state = bptt.forward(net, step_weights, problem, state, n)
            loss = (nll.mean(dim=0) * w).sum()
            # L = sum_t w_t mean_b NLL_b,t: dL/d delta_t = -(w_t / B) grad_t
            d_delta = tape.grads * (-w / B).view(n, 1, 1)
            bptt.backward(net, step_weights, tape, d_delta.reshape(n, B * D))
        else:
            nll, _, state = unroll(net, problem, state, n, trajectory_gradient)
            loss = (nll.mean(dim=0) * w).sum()
            loss.backward()
        _check_finite(loss.detach(), net, where)
        optimizer.step()
        updates += 1
        total += loss.item()
        nll_sum += nll.detach().sum().item()
        state = state.detach()
    return BatchResult(total, nll_sum / (T * B), T, updates)


def train_act_batch(
    net: LSTMOptimizer,
    optimizer: torch.optim.Optimizer,
    problem: StudentTRegression,
    theta0: torch.Tensor,
    horizon: int,
    nu: float,
    trajectory_gradient: str,
    where: str = "",
) -> BatchResult:
    """One act batch: ``mean_f [sum_t q_t NLL_t + KL(q || p)]`` back-propagated once."""
    B, D = theta0.shape
    state = start(net, problem, theta0)
    log_p = log_truncated_geometric(horizon, nu, device=theta0.device)
    optimizer.zero_grad(set_to_none=True)
    if trajectory_gradient == "detached":
        step_weights = net.step_weights()
        tape, nll, logits, _ = bptt.forward(net, step_weights, problem, state, horizon)
        log_q = halting.log_posterior(logits)
        q = log_q.exp()
        a = nll + log_q - log_p  # (B, T)
        per_function = (q * a).sum(dim=1)
        loss = per_function.mean()
        # dL/dNLL_t = q_t / B;  dL/ds_j = q_j (a_j - sum_t q_t a_t) / B;  s = cumsum(increments)
        d_logits = q * (a - per_function[:, None]) / B
        d_inc = torch.flip(torch.cumsum(torch.flip(d_logits, [1]), 1), [1])  # (B, T)
        d_increment = (d_inc.t() / D).unsqueeze(-1).expand(horizon, B, D).reshape(horizon, B * D)
        d_delta = tape.grads * (-(q / B).t()).unsqueeze(-1)
        bptt.backward(net, step_weights, tape, d_delta.reshape(horizon, B * D), d_increment)
    else:
        nll, logits, _ = unroll(net, problem, state, horizon, trajectory_gradient)
        loss = halting.act_loss(nll, logits, log_p)
        loss.backward()
    _check_finite(loss.detach(), net, where)
    optimizer.step()
    return BatchResult(loss.item(), nll.detach().mean().item(), horizon, 1)


def config_fingerprint(spec: ModelSpec, settings: TrainingSettings) -> str:
    """Hash of everything that shapes training; a resume state of another config is not used."""
    keep = settings.to_dict()
    for k in ("device", "eval_chunk", "selection_metric", "threshold", "online_threshold"):
        keep.pop(k)
    blob = json.dumps({"model": spec.to_dict(), "training": keep}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_metadata(spec: ModelSpec, settings: TrainingSettings, net, epoch: int) -> dict:
    return {
        "model": spec.to_dict(),
        "training": settings.to_dict(),
        "architecture": net.architecture,
        "epoch": epoch,
    }


def _save_resume(path: Path, net, optimizer, epoch: int, history: list, fingerprint: str) -> None:
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for k, v in st.items():
            state[f"opt.{pid}.{k}"] = torch.as_tensor(v)
    save_checkpoint(
        path,
        state,
        {"epoch": epoch, "history": history, "fingerprint": fingerprint,
         "param_groups": opt["param_groups"]},
    )


def _load_resume(path: Path, net, optimizer, fingerprint: str) -> tuple[int, list] | None:
    if not path.exists():
        return None
    try:
        state, meta = load_checkpoint(path)
    except DataError as e:
        log.warning("ignoring unreadable resume state: %s", e)
        return None
    if meta.get("fingerprint") != fingerprint:
        log.warning("%s: resume state of another config, starting from scratch", path)
        return None
    net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    opt_state: dict = {}
    for k, v in state.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    return int(meta["epoch"]), list(meta["history"])


RESUME_STATE = "state.pt"


def _restore_checkpoints(resume_dir: Path, checkpoint_path, epochs: list[int]) -> bool:
    """Put back the checkpoints of completed epochs that are missing (Snakemake removes the outputs
    of an incomplete job). False if one cannot be restored, so training must start over."""
    for e in epochs:
        target = Path(checkpoint_path(e))
        if target.exists():
            continue
        saved = resume_dir / f"epoch_{e}.pt"
        if not saved.exists():
            return False
        with atomic_path(target) as tmp:
            shutil.copyfile(saved, tmp)
    return True


def train(
    spec: ModelSpec,
    settings: TrainingSettings,
    checkpoint_path: Callable[[int], Path],
    resume_dir: Path | None = None,
    device: torch.device | None = None,
) -> list[dict]:
    """Train one model; write a checkpoint at every evaluation epoch.

    Args:
        checkpoint_path: epoch -> path of that epoch's checkpoint.
        resume_dir: where the training state (network, Adam state, epoch, log so far) is saved
            atomically after every epoch, with a copy of each checkpoint; a run that finds a state
            of the same config there resumes after its epoch, with bitwise the same results as an
            uninterrupted run (training randomness depends only on seed, epoch and batch).
    Returns:
        the training log, one dict per epoch (``epoch``, ``loss``, ``nll_mean``, ``horizon_mean``,
        ``updates``, ``seconds``, ``functions_per_s``).
    """
    device = device or resolve_device(settings.device)
    net = build_network(spec, settings).to(device)
    optimizer = make_optimizer(net, spec.lr)
    fingerprint = config_fingerprint(spec, settings)
    first_epoch, history = 1, []
    if resume_dir is not None:
        resume_dir = Path(resume_dir)
        resumed = _load_resume(resume_dir / RESUME_STATE, net, optimizer, fingerprint)
        if resumed is not None:
            done = [e for e in settings.eval_epochs if e <= resumed[0]]
            if _restore_checkpoints(resume_dir, checkpoint_path, done):
                first_epoch, history = resumed[0] + 1, resumed[1]
                log.info("%s: resuming after epoch %d", spec.name, resumed[0])
            else:
                log.warning("%s: saved checkpoints incomplete, starting from scratch", spec.name)
                net = build_network(spec, settings).to(device)
                optimizer = make_optimizer(net, spec.lr)
    fixed_weights = None
    if spec.kind == "meta":
        fixed_weights = torch.tensor(
            loss_weights(spec.weights, spec.horizon, spec.nu), dtype=torch.float32, device=device
        )
    n_batches = settings.batches_per_epoch
    started = time.perf_counter()
    for epoch in range(first_epoch, settings.epochs + 1):
        t0 = time.perf_counter()
        results = []
        for b in range(n_batches):
            batch = training_batch(settings.seed, epoch, b, settings.batch_size)
            problem = StudentTRegression.from_batch(batch, device)
            theta0 = torch.from_numpy(batch.theta_init).to(device)
            where = f"model {spec.name}, epoch {epoch}, batch {b}"
            if spec.kind == "meta":
                r = train_meta_batch(
                    net, optimizer, problem, theta0, fixed_weights, settings.bptt,
                    spec.trajectory_gradient, where,
                )
            else:
                horizon = horizon_for(spec, settings, epoch, b)
                r = train_act_batch(
                    net, optimizer, problem, theta0, horizon, spec.nu,
                    spec.trajectory_gradient, where,
                )
            results.append(r)
        seconds = time.perf_counter() - t0
        n_funcs = n_batches * settings.batch_size
        row = {
            "epoch": epoch,
            "loss": float(np.mean([r.loss for r in results])),
            "nll_mean": float(np.mean([r.nll_mean for r in results])),
            "horizon_mean": float(np.mean([r.horizon for r in results])),
            "updates": int(sum(r.updates for r in results)),
            "seconds": seconds,
            "functions_per_s": n_funcs / seconds,
        }
        history.append(row)
        if epoch % settings.eval_every == 0:
            meta = checkpoint_metadata(spec, settings, net, epoch)
            if resume_dir is not None:
                save_checkpoint(resume_dir / f"epoch_{epoch}.pt", net.state_dict(), meta)
            save_checkpoint(checkpoint_path(epoch), net.state_dict(), meta)
        if resume_dir is not None:
            _save_resume(resume_dir / RESUME_STATE, net, optimizer, epoch, history, fingerprint)
        done = epoch - first_epoch + 1
        eta = (time.perf_counter() - started) / done * (settings.epochs - epoch)
        log.info(
            "%s epoch %d/%d loss %.4g nll %.3f  %.0f functions/s  ETA %s",
            spec.name, epoch, settings.epochs, row["loss"], row["nll_mean"],
            row["functions_per_s"], _hms(eta),
        )
    return history


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def load_network(path, expected: dict | None = None) -> tuple[LSTMOptimizer, dict]:
    """Rebuild the network of a checkpoint; refuse one of another architecture."""
    state, meta = load_checkpoint(path)
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        raise DataError(f"{path}: checkpoint metadata has no architecture")
    if expected is not None and arch != expected:
        raise DataError(f"{path}: checkpoint architecture {arch} differs from expected {expected}")
    net = LSTMOptimizer(**arch)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise DataError(f"{path}: weights do not fit architecture {arch} ({first})") from None
    return net, meta
