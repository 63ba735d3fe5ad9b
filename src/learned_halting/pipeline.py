"""The steps of the workflow as plain functions of paths and config; the rule scripts call these.

Each step reads its inputs (checked), does its work, and writes its outputs atomically. Keeping the
logic here rather than in ``workflow/scripts`` lets tests reach it without Snakemake.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from . import problem as P
from .evaluation import curve_summary, evaluate, mean_ci95, select_best, selection_value
from .settings import (
    ModelSpec,
    TrainingSettings,
    model_instances,
    model_specs,
    replicate_seed,
)
from .storage import (
    VALIDATION_COLUMNS,
    DataError,
    epoch_of,
    read_function_set,
    read_json,
    read_table,
    read_test_result,
    write_function_set,
    write_json,
    write_table,
    write_text,
)
from .training import load_network, resolve_device, train

log = logging.getLogger("learned_halting")


def setup(log_path=None, threads: int = 1) -> None:
    """Send the package's log to ``log_path`` (and stderr) and use exactly ``threads`` torch threads."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=handlers,
        force=True,
    )
    torch.set_num_threads(max(1, int(threads)))


def run_step(fn, *args, **kwargs):
    """Run a step; a known input or config problem exits with one clear line instead of a traceback."""
    try:
        return fn(*args, **kwargs)
    except (DataError, ValueError, RuntimeError) as e:
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def _spec(config: dict, instance: str) -> tuple[ModelSpec, TrainingSettings]:
    """The spec and settings of a trained instance (a model, or one of its replicates, whose run
    seed is :func:`settings.replicate_seed`)."""
    instances = model_instances(config)
    if instance not in instances:
        raise ValueError(f"models.{instance}: no such model (or replicate) in the config")
    model, replicate = instances[instance]
    settings = TrainingSettings.from_config(config)
    settings = dataclasses.replace(settings, seed=replicate_seed(settings.seed, replicate))
    return dataclasses.replace(model_specs(config)[model], name=instance), settings


def run_metadata(config: dict, model: str | None = None) -> dict:
    """The config values an output came from, recorded in its metadata."""
    meta = {
        "seed": config.get("seed"),
        "training": config.get("training"),
        "halting": config.get("halting"),
        "data": config.get("data"),
    }
    if model is not None:
        base, replicate = model_instances(config)[model]
        meta["model_name"] = model
        meta["model"] = config["models"][base]
        meta["replicate"] = replicate
    return meta


# ------------------------------------------------------------------------------------------ data


def make_function_set(out, split: str, config: dict) -> None:
    """``results/data/{split}.parquet``: the fixed validation or test set."""
    entry = config["data"][split]
    n, seed = int(entry["functions"]), int(entry["seed"])
    batch = P.function_set(n, seed)
    meta = {
        "split": split,
        "problem": "regression_T",
        "dims": P.DIMS,
        "samples": P.SAMPLES,
        "dof": P.DOF,
        "scale": P.SCALE,
        "seed": seed,
        "functions": n,
    }
    write_function_set(out, np.arange(n, dtype=np.int64), batch, meta)
    log.info("%s: %d functions from seed %d -> %s", split, n, seed, out)


# -------------------------------------------------------------------------------------- training


def train_model(config: dict, model: str, checkpoints: list, train_log, resume_dir) -> None:
    """Train ``model``; write its checkpoints (one per evaluation epoch) and ``train_log.parquet``.

    The training state lives in ``resume_dir`` while the job runs (see :func:`training.train`), so
    a killed job started again resumes after its last completed epoch; it is removed at the end.
    """
    spec, settings = _spec(config, model)
    by_epoch = {epoch_of(p): Path(p) for p in checkpoints}
    if sorted(by_epoch) != settings.eval_epochs:
        raise ValueError(f"checkpoint outputs {sorted(by_epoch)} != eval epochs {settings.eval_epochs}")
    device = resolve_device(settings.device)
    log.info("training %s (%s) on %s with %d threads", model, spec.describe(), device,
             torch.get_num_threads())
    history = train(spec, settings, by_epoch.__getitem__, Path(resume_dir), device)
    df = pd.DataFrame(history)
    write_table(train_log, {c: df[c].to_numpy() for c in df.columns}, run_metadata(config, model))
    shutil.rmtree(resume_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------ evaluation


def _evaluate_checkpoint(config, model, checkpoint, functions_path):
    spec, settings = _spec(config, model)
    _, functions, _ = read_function_set(functions_path)
    expected = {
        "inputs": spec.inputs,
        "hidden_size": settings.hidden_size,
        "layers": settings.layers,
        "halting": spec.halting,
    }
    net, meta = load_network(checkpoint, expected)
    device = resolve_device(settings.device)
    result = evaluate(
        net,
        functions,
        steps=settings.eval_steps,
        chunk=settings.eval_chunk,
        device=device,
        threshold=settings.threshold,
        online_threshold=settings.online_threshold,
    )
    return result, meta, settings


def validate_checkpoint(config: dict, model: str, checkpoint, functions_path, out) -> None:
    """``results/validation/{model}/epoch_{e}.parquet``: the per-step validation curve."""
    result, meta, _ = _evaluate_checkpoint(config, model, checkpoint, functions_path)
    summary = curve_summary(result)
    md = run_metadata(config, model) | {"epoch": meta["epoch"], "checkpoint": str(checkpoint)}
    write_table(out, summary, md)
    log.info("%s epoch %s: validation NLL step 0 %.3f, final %.3f", model, meta["epoch"],
             summary["nll_mean"][0], summary["nll_mean"][-1])


def choose_best(config: dict, model: str, validation_files: list, out) -> None:
    """``results/models/{model}/best.json``: the best evaluated checkpoint by the configured metric."""
    _, settings = _spec(config, model)
    values = {}
    for path in validation_files:
        table, meta = read_table(path, VALIDATION_COLUMNS)
        epoch = epoch_of(path)
        values[epoch] = selection_value(
            table.column("nll_mean").to_numpy(), settings.selection_metric
        )
    try:
        epoch, value = select_best(values)
    except ValueError as e:
        raise ValueError(f"{model}: {e}") from None
    non_finite = sorted(e for e, v in values.items() if not np.isfinite(v))
    write_json(
        out,
        {
            "epoch": epoch,
            "metric": settings.selection_metric,
            "value": value,
            "candidates": {str(e): (v if np.isfinite(v) else None) for e, v in values.items()},
            "non_finite_epochs": non_finite,
        },
    )
    log.info("%s: best epoch %d (%s = %.4f)", model, epoch, settings.selection_metric, value)


def test_model(config: dict, model: str, best_json, checkpoints: list, functions_path, out) -> None:
    """``results/test/{model}.parquet``: the best checkpoint on the test set, one row per function."""
    best = read_json(best_json, required=("epoch",))
    by_epoch = {epoch_of(p): Path(p) for p in checkpoints}
    if int(best["epoch"]) not in by_epoch:
        raise DataError(f"{best_json}: epoch {best['epoch']} is not among the checkpoints {sorted(by_epoch)}")
    checkpoint = by_epoch[int(best["epoch"])]
    result, meta, settings = _evaluate_checkpoint(config, model, checkpoint, functions_path)
    ids, _, _ = read_function_set(functions_path)
    cols: dict = {"function_id": pa.array(ids.astype(np.int64)), "nll": result["nll"]}
    if "q" in result:
        cols["q"] = result["q"]
        for k in ("mode_step", "stop_step", "online_stop_step"):
            cols[k] = pa.array(result[k].astype(np.int64))
        cols["nll_distance"] = pa.array(result["nll_distance"].astype(np.float32))
    md = run_metadata(config, model) | {"epoch": meta["epoch"], "checkpoint": str(checkpoint)}
    write_table(out, cols, md)
    log.info("%s (epoch %s) test NLL at step 0/final: %.3f / %.3f", model, meta["epoch"],
             result["nll"][:, 0].mean(), result["nll"][:, -1].mean())


# ------------------------------------------------------------------------------------- baselines


def search_baseline_lr(config: dict, name: str, functions_path, out_search, out_best) -> None:
    """``results/baselines/{name}/lr_search.parquet`` (``lr``, ``value``: the validation metric) and
    ``best.json`` (``{"lr", "metric", "value"}``): the best learning rate of the grid on the
    validation set, by the metric the learned models are selected with; non-finite values never win."""
    from .baselines import lr_grid, run_baseline

    tr, bl = config["training"], config["baselines"]
    metric = tr.get("selection_metric", "final_nll")
    _, functions, _ = read_function_set(functions_path)
    grid = lr_grid(bl.get("lr_min", 1e-4), bl.get("lr_max", 1.0), bl.get("lr_points", 13))
    values = {}
    with np.errstate(all="ignore"):
        for lr in grid:
            nll = run_baseline(name, lr, functions, tr.get("eval_steps", 100), device="cpu")
            values[float(lr)] = selection_value(nll.astype(np.float64).mean(0), metric)
            log.info("%s lr %.3g: %s %.4f", name, lr, metric, values[float(lr)])
    try:
        best, value = select_best(values)  # the same rule as checkpoint selection
    except ValueError:
        raise ValueError(
            f"baselines.{name}: no learning rate of the grid gives a finite {metric}"
        ) from None
    write_table(out_search, {"lr": np.array(list(values)), "value": np.array(list(values.values()))},
                {"baseline": name, "metric": metric, **run_metadata(config)})
    write_json(out_best, {"lr": best, "metric": metric, "value": value})
    log.info("%s: best lr %.3g (%s = %.4f)", name, best, metric, value)


def test_baseline(config: dict, name: str, best_json, functions_path, out) -> None:
    """``results/test/{name}.parquet``: the baseline with its chosen learning rate on the test set."""
    from .baselines import run_baseline

    best = read_json(best_json, required=("lr",))
    ids, functions, _ = read_function_set(functions_path)
    nll = run_baseline(name, best["lr"], functions, config["training"].get("eval_steps", 100))
    write_table(out, {"function_id": pa.array(ids.astype(np.int64)), "nll": nll},
                {"baseline": name, "lr": best["lr"], **run_metadata(config)})
    log.info("%s (lr %.3g) test NLL at step 0/final: %.3f / %.3f", name, best["lr"],
             nll[:, 0].mean(), nll[:, -1].mean())


# ----------------------------------------------------------------------------------------- tables

SUMMARY_STEPS = (0, 1, 5, 10, 20, 50, 100)


def _instance_row(test_path, best_path) -> dict:
    res = read_test_result(test_path)
    best = read_json(best_path)
    if "epoch" not in best and "lr" not in best:
        raise DataError(f"{best_path}: holds neither 'epoch' nor 'lr'")
    mean = res["nll"].astype(np.float64).mean(0)
    row = {
        "best_epoch": int(best["epoch"]) if "epoch" in best else np.nan,
        "best_lr": float(best["lr"]) if "lr" in best else np.nan,
    }
    for s in SUMMARY_STEPS:
        row[f"nll_step{s}"] = float(mean[s]) if s < len(mean) else np.nan
    for k in ("mode_step", "stop_step", "online_stop_step"):
        row[f"{k}_mean"] = float(res[k].mean()) if k in res else np.nan
    return row


def summary_table(groups: dict[str, list[tuple]]) -> pd.DataFrame:
    """One row per model or baseline: best epoch (learned) or learning rate (baselines), mean test NLL
    at :data:`SUMMARY_STEPS` and, for act models, the mean mode, stopping and online stopping steps.

    Args:
        groups: model -> [(test file, best file), ...], one pair per replicate. With several
            replicates the values are means across replicates, each with ``<column>_ci95``, the
            half-width of its 95% t-interval, and ``best_epoch`` is the first replicate's.
    """
    rows = []
    for model, files in groups.items():
        per_rep = pd.DataFrame([_instance_row(t, b) for t, b in files])
        row = {"model": model, "replicates": len(files)}
        row["best_epoch"], row["best_lr"] = per_rep.best_epoch.iloc[0], per_rep.best_lr.iloc[0]
        values = [c for c in per_rep.columns if c.startswith("nll_step") or c.endswith("_mean")]
        for c in values:
            mean, half = mean_ci95(per_rep[c].to_numpy())
            row[c] = float(mean)
            if len(files) > 1:
                row[f"{c}_ci95"] = float(half)
        rows.append(row)
    return pd.DataFrame(rows)


def write_summary(config: dict, instances: list[str], test_files, best_files, out) -> None:
    """``results/tables/summary.csv`` from the test results of every instance and baseline."""
    known = model_instances(config)
    groups: dict[str, list[tuple]] = {}
    for inst, t, b in zip(instances, test_files, best_files, strict=True):
        base = known[inst][0] if inst in known else inst  # baselines stand for themselves
        groups.setdefault(base, []).append((t, b))
    write_text(out, summary_table(groups).to_csv(index=False, float_format="%.4f"))


# ---------------------------------------------------------------------------------------- figures
# (plotting is imported inside these functions: figure libraries stay out of the other jobs)


def load_model_results(model: str, root: str | Path = "results", replicates: list[str] | None = None):
    """Read a model's test results, training log, validation curves and best epoch; with
    ``replicates`` (the other instances' names), also each replicate's mean test curve."""
    from .plotting import ModelResults

    root = Path(root)
    test = read_test_result(root / "test" / f"{model}.parquet")
    if (root / "baselines" / model / "best.json").exists() and not (root / "models" / model).exists():
        best = read_json(root / "baselines" / model / "best.json", required=("lr",))
        return ModelResults(name=model, nll=test["nll"], note=f"lr {best['lr']:.2g}")
    log_table, _ = read_table(root / "models" / model / "train_log.parquet",
                              {"epoch": None, "nll_mean": None})
    val_epochs, val_nll = [], []
    for path in sorted(glob.glob(str(root / "validation" / model / "epoch_*.parquet")), key=epoch_of):
        table, _ = read_table(path, VALIDATION_COLUMNS)
        val_epochs.append(epoch_of(path))
        val_nll.append(selection_value(table.column("nll_mean").to_numpy(), "mean_nll"))
    best = read_json(root / "models" / model / "best.json", required=("epoch",))
    return ModelResults(
        name=model,
        nll=test["nll"],
        q=test.get("q"),
        mode_step=test.get("mode_step"),
        stop_step=test.get("stop_step"),
        online_stop_step=test.get("online_stop_step"),
        nll_distance=test.get("nll_distance"),
        train_epochs=log_table.column("epoch").to_numpy(),
        train_nll=log_table.column("nll_mean").to_numpy(),
        val_epochs=np.array(val_epochs),
        val_nll=np.array(val_nll),
        best_epoch=int(best["epoch"]),
        replicate_curves=None if not replicates else np.stack(
            [test["nll"].astype(np.float64).mean(0)]
            + [read_test_result(root / "test" / f"{r}.parquet")["nll"].astype(np.float64).mean(0)
               for r in replicates]
        ),
    )


def _styles(config: dict) -> dict:
    """One colour and line style per model and baseline, the same in every figure."""
    from .plotting import model_styles

    return model_styles(list(config["models"]), list(config.get("baselines", {}).get("names", [])))


def _results(config: dict, models: list[str], root) -> dict:
    """ModelResults of ``models``; replicate 0 for the per-function views, every replicate's curve."""
    instances = model_instances(config)
    out = {}
    for m in dict.fromkeys(models):
        others = [name for name, (base, r) in instances.items() if base == m and r > 0]
        out[m] = load_model_results(m, root, others)
    return out


BEST_ACT = "best_act"  # in a figure's model list: the act model with the best validation value


def best_act_model(config: dict, root="results") -> str:
    """The act model whose selected checkpoint has the lowest validation value (replicate 0)."""
    acts = [m for m, e in config["models"].items() if e["kind"] == "act"]
    if not acts:
        raise ValueError(f"figures: {BEST_ACT} needs at least one act model")
    values = {m: read_json(Path(root) / "models" / m / "best.json", ("value",))["value"] for m in acts}
    return min(acts, key=values.get)


def render_comparison(config: dict, name: str, out, root="results") -> None:
    """``results/figures/{name}.png`` for an entry of ``figures.comparisons``."""
    from .plotting import comparison_figure, save_figure

    fig_cfg = config["figures"]["comparisons"][name]
    curves = fig_cfg.get("learning_curves", [])
    models = [best_act_model(config, root) if m == BEST_ACT else m for m in fig_cfg["models"]]
    res = _results(config, models + curves, root)
    fig = comparison_figure(
        [res[m] for m in models],
        fig_cfg.get("zooms", [10, 100]),
        title=fig_cfg.get("title", name),
        learning_curves=[res[m] for m in curves],
        styles=_styles(config),
    )
    save_figure(fig, out)


def render_learning_curves(config: dict, out, root="results") -> None:
    from .plotting import learning_curves_figure, save_figure

    models = config["figures"]["learning_curves_meta"]
    res = _results(config, models, root)
    fig = learning_curves_figure([res[m] for m in models], _styles(config))
    save_figure(fig, out)


def render_qt_distributions(config: dict, out, root="results") -> None:
    from .plotting import qt_distributions_figure, save_figure

    qt = config["figures"]["qt_distributions"]
    res = _results(config, [m for row in qt["rows"].values() for m in row if m is not None], root)
    rows = {label: [res[m] if m else None for m in row] for label, row in qt["rows"].items()}
    save_figure(qt_distributions_figure(rows, qt["columns"]), out)


def render_halting(config: dict, model: str, out, root="results") -> None:
    from .plotting import halting_figure, save_figure

    res = load_model_results(model, root)  # replicate 0: the figure is per function
    if not res.is_act:
        raise ValueError(f"models.{model}: halting figures need an act model")
    save_figure(halting_figure(res, threshold=config["halting"]["threshold"]), out)


def render_trajectory_gradient(config: dict, out, root="results") -> None:
    """``results/figures/trajectory_gradient.png``: each pair of ``figures.trajectory_gradient``."""
    from .plotting import save_figure, trajectory_gradient_figure

    fig_cfg = config["figures"]["trajectory_gradient"]
    res = _results(config, [m for pair in fig_cfg["pairs"] for m in pair], root)
    pairs = [tuple(res[m] for m in pair) for pair in fig_cfg["pairs"]]
    save_figure(trajectory_gradient_figure(pairs, _styles(config), fig_cfg.get("title", "")), out)
