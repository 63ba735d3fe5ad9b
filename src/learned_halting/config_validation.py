"""Validation of the workflow config: the JSON schema (which fills defaults), then cross-field rules.

``workflow/rules/common.smk`` calls :func:`validate_config` when the DAG is built, so a bad value
stops the run before any job, with one line naming the key.
"""

from __future__ import annotations

from .settings import ConfigError, ModelSpec, TrainingSettings, model_specs


def validate_config(config: dict, schema_path: str) -> tuple[TrainingSettings, dict[str, ModelSpec]]:
    """Validate ``config`` in place (schema defaults are filled in) and return its typed views.

    Raises :class:`ConfigError` with a message ``invalid config: <key>: <what is wrong>``.
    """
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, schema=str(schema_path), set_default=True)
    except WorkflowError as e:
        raise ConfigError(schema_error_line(e)) from None
    try:
        settings = TrainingSettings.from_config(config)
        specs = model_specs(config)
        check_cross_fields(config, specs)
    except ConfigError as e:
        raise ConfigError(f"invalid config: {e}") from None
    return settings, specs


def schema_error_line(error: Exception) -> str:
    """The jsonschema error inside Snakemake's WorkflowError, as ``invalid config: key: message``."""
    cause = None
    for candidate in (*getattr(error, "args", ()), error.__cause__, error.__context__):
        if hasattr(candidate, "absolute_path"):
            cause = candidate
            break
    if cause is None:
        return f"invalid config: {str(error).strip().splitlines()[0]}"
    key = ".".join(str(p) for p in cause.absolute_path) or "(top level)"
    return f"invalid config: {key}: {cause.message}"


def check_cross_fields(config: dict, specs: dict[str, ModelSpec]) -> None:
    """Rules between keys: distinct data seeds, figures that name existing (act) models."""
    data = config["data"]
    if data["validation"]["seed"] == data["test"]["seed"]:
        raise ConfigError("data.test.seed: must differ from data.validation.seed")
    figures = config.get("figures", {})
    named = []
    for name, fig in figures.get("comparisons", {}).items():
        named += [(f"figures.comparisons.{name}.models", m) for m in fig["models"]]
        named += [
            (f"figures.comparisons.{name}.learning_curves", m)
            for m in fig.get("learning_curves", [])
        ]
    named += [("figures.learning_curves_meta", m) for m in figures.get("learning_curves_meta", [])]
    for pair in figures.get("trajectory_gradient", {}).get("pairs", []):
        named += [("figures.trajectory_gradient.pairs", m) for m in pair]
    qt = figures.get("qt_distributions", {})
    for label, row in qt.get("rows", {}).items():
        key = f"figures.qt_distributions.rows.{label}"
        if len(row) > len(qt.get("columns", [])):
            raise ConfigError(f"{key}: {len(row)} models but only {len(qt.get('columns', []))} columns")
        for m in row:
            if m is None:
                continue
            named.append((key, m))
            if m in specs and specs[m].kind != "act":
                raise ConfigError(f"{key}: {m} is not an act model")
    baselines = config.get("baselines", {})
    names = baselines.get("names", [])
    for name in names:
        if name in specs:
            raise ConfigError(f"baselines.names: {name!r} is also the name of a model")
    if baselines.get("lr_min", 1e-4) > baselines.get("lr_max", 1.0):
        raise ConfigError("baselines.lr_min: must not exceed baselines.lr_max")
    for key, model in named:
        if model == "best_act" and key.endswith(".models"):
            if not any(s.kind == "act" for s in specs.values()):
                raise ConfigError(f"{key}: best_act needs at least one act model")
            continue
        if model not in specs and model not in names:
            raise ConfigError(f"{key}: unknown model {model!r}")
