# Config validation, helpers and wildcard constraints. The other rule files only declare rules.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The study package lives in src/. Import it from there when it is not installed; jobs find it
# through the link workflow/scripts/learned_halting (Snakemake puts the scripts' folder on sys.path).
sys.path.append(str(Path(workflow.basedir) / "src"))

from learned_halting.config_validation import validate_config
from learned_halting.settings import ConfigError, model_instances

# Schema (filling defaults) and cross-field rules, before any job; one line naming the key.
try:
    SETTINGS, SPECS = validate_config(
        config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
    )
except ConfigError as e:
    raise WorkflowError(str(e)) from None
MODELS = list(SPECS)
# every trained instance: a model, and its replicates when training.replicates > 1
INSTANCES = model_instances(config)
ACT_MODELS = [m for m, s in SPECS.items() if s.kind == "act"]
BASELINES = config["baselines"]["names"]
EVAL_EPOCHS = SETTINGS.eval_epochs
COMPARISONS = config["figures"].get("comparisons", {})


def alternation(names):
    """A regex that matches exactly one of ``names``."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    model=alternation(INSTANCES),
    act_model=alternation(ACT_MODELS),
    epoch=r"\d+",
    split="validation|test",
    comparison=alternation(COMPARISONS),
    baseline=alternation(BASELINES),


# ---------------------------------------------------------------------------------- inputs


def checkpoints_of(wildcards):
    return expand(
        "results/models/{model}/epoch_{epoch}.pt",
        model=wildcards.model,
        epoch=EVAL_EPOCHS,
    )


def validation_of(wildcards):
    return expand(
        "results/validation/{model}/epoch_{epoch}.parquet",
        model=wildcards.model,
        epoch=EVAL_EPOCHS,
    )


def instances_of(model):
    return [name for name, (base, _) in INSTANCES.items() if base == model]


def model_results(models):
    """Everything a figure needs of ``models`` (all replicates): test results, best.json, learning
    curves."""
    files = []
    for m in [i for model in models for i in (instances_of(model) or [model])]:
        if m in BASELINES:
            files += [f"results/test/{m}.parquet", f"results/baselines/{m}/best.json"]
            continue
        files += [
            f"results/test/{m}.parquet",
            f"results/models/{m}/best.json",
            f"results/models/{m}/train_log.parquet",
        ]
        files += expand(
            "results/validation/{model}/epoch_{epoch}.parquet",
            model=m,
            epoch=EVAL_EPOCHS,
        )
    return files


def comparison_models(wildcards):
    """The models a comparison figure reads; `best_act` stands for every act model (the best one,
    by its validation value, is chosen when the figure is drawn)."""
    fig = COMPARISONS[wildcards.comparison]
    models = []
    for m in fig["models"] + fig.get("learning_curves", []):
        models += ACT_MODELS if m == "best_act" else [m]
    return list(dict.fromkeys(models))


def comparison_inputs(wildcards):
    return model_results(comparison_models(wildcards))


def learning_curve_inputs(wildcards):
    return model_results(config["figures"].get("learning_curves_meta", []))


def qt_models():
    rows = config["figures"].get("qt_distributions", {}).get("rows", {})
    return list(dict.fromkeys(m for row in rows.values() for m in row if m is not None))


def qt_inputs(wildcards):
    return model_results(qt_models())


def trajectory_gradient_models():
    pairs = config["figures"].get("trajectory_gradient", {}).get("pairs", [])
    return list(dict.fromkeys(m for pair in pairs for m in pair))


def trajectory_gradient_inputs(wildcards):
    return model_results(trajectory_gradient_models())


def figure_names():
    names = [f"results/figures/{c}.png" for c in COMPARISONS]
    if config["figures"].get("learning_curves_meta"):
        names.append("results/figures/learning_curves_meta.png")
    if qt_models():
        names.append("results/figures/qt_distributions.png")
    if trajectory_gradient_models():
        names.append("results/figures/trajectory_gradient.png")
    if config["figures"].get("halting", True):
        names += [f"results/figures/halting_{m}.png" for m in ACT_MODELS]
    return names


def final_outputs():
    return (
        expand("results/test/{model}.parquet", model=INSTANCES)
        + expand("results/models/{model}/train_log.parquet", model=INSTANCES)
        + expand("results/test/{baseline}.parquet", baseline=BASELINES)
        + expand("results/baselines/{baseline}/lr_search.parquet", baseline=BASELINES)
        + ["results/tables/summary.csv"]
        + figure_names()
    )


# ------------------------------------------------------------------------------- resources


def train_runtime(wildcards):
    """Minutes for a training job: coordinate-steps at a conservative 1e5 per second, doubled."""
    spec = SPECS[INSTANCES[wildcards.model][0]]
    horizon = spec.horizon or 150
    coord_steps = SETTINGS.epochs * SETTINGS.functions_per_epoch * 10 * horizon
    return max(10, int(2 * coord_steps / 1e5 / 60))


def eval_runtime(wildcards):
    n = max(
        config["data"]["validation"]["functions"], config["data"]["test"]["functions"]
    )
    return max(10, int(2 * n * 10 * SETTINGS.eval_steps / 1e5 / 60))


def gpus(wildcards):
    return 1 if SETTINGS.device == "cuda" else 0


THREADS = config["training"]["threads"]
