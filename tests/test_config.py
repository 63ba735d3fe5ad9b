"""Invalid configs are refused when the DAG is built, before any job, with the key named."""

import copy

import pytest
from workflow_helpers import REPO, base_config, scratch_workflow, snakemake

from learned_halting.config_validation import validate_config
from learned_halting.settings import ConfigError


def _set(cfg, dotted, value):
    keys = dotted.split("/")
    node = cfg
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


_DELETE = object()

CASES = [
    # (path in the config, new value, text that must appear in the error)
    ("seed", _DELETE, "'seed' is a required property"),
    ("seed", -1, "seed: -1 is less than the minimum of 0"),
    ("data/validation/functions", 0, "data.validation.functions: 0 is less than the minimum"),
    ("data/test/functions", -5, "data.test.functions: -5 is less than the minimum"),
    ("data/test/seed", _DELETE, "data.test: 'seed' is a required property"),
    ("training/epochs", 0, "training.epochs: 0 is less than the minimum"),
    ("training/batch_size", "big", "training.batch_size: 'big' is not of type 'integer'"),
    ("training/trajectory_gradient", "sideways", "training.trajectory_gradient: 'sideways' is not one of"),
    ("training/device", "tpu", "training.device: 'tpu' is not one of"),
    ("training/selection_metric", "best", "training.selection_metric: 'best' is not one of"),
    ("training/epoch", 3, "training: Additional properties are not allowed ('epoch' was unexpected)"),
    ("halting/threshold", 1.5, "halting.threshold: 1.5 is greater than the maximum of 1"),
    ("models/metaV1/kind", "hyper", "models.metaV1.kind: 'hyper' is not one of"),
    ("models/metaV1/lr", -1.0, "models.metaV1.lr: -1.0 is less than or equal to the minimum of 0"),
    ("models/metaV1/horizon", 0, "models.metaV1.horizon"),
    ("models/metaV3.1_nu0.1/nu", 1.5,
     "models.metaV3.1_nu0.1.nu: 1.5 is greater than or equal to the maximum of 1"),
    ("models/actV2_nu0.1_ET18/horizon", {"shape": 1.2}, "models.actV2_nu0.1_ET18.horizon"),
    ("models/metaV1/inputs", "hessian", "models.metaV1.inputs: 'hessian' is not one of"),
    ("models/bad", {"kind": "meta", "weights": "geometric", "horizon": 100, "lr": 1e-3},
     "models.bad: 'nu' is a required property"),
    ("models/metaV1/horizon", {"shape": 0.9}, "models.metaV1"),
    ("baselines/names", ["adamw"], "baselines.names.0: 'adamw' is not one of"),
    # cross-field rules
    ("baselines/lr_min", 10.0, "baselines.lr_min: must not exceed baselines.lr_max"),
    ("training/eval_every", 7, "training.eval_every: must divide training.epochs (100), got 7"),
    ("training/functions_per_epoch", 100,
     "training.functions_per_epoch: must be >= training.batch_size (125)"),
    ("data/test/seed", 1001, "data.test.seed: must differ from data.validation.seed"),
    ("figures/comparisons/meta_fixed_weights/models", ["metaV1", "metaV9"],
     "figures.comparisons.meta_fixed_weights.models: unknown model 'metaV9'"),
]


SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.mark.parametrize("path,value,message", CASES, ids=[c[0] + "=" + repr(c[1])[:20] for c in CASES])
def test_invalid_config_is_refused_naming_the_key(path, value, message):
    cfg = copy.deepcopy(base_config())
    _set(cfg, path, value)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, SCHEMA)
    text = str(err.value)
    assert text.startswith("invalid config: ") and "\n" not in text
    assert message in text, text


def test_schema_fills_defaults():
    cfg = copy.deepcopy(base_config())
    del cfg["training"]["bptt"], cfg["halting"]
    settings, specs = validate_config(cfg, SCHEMA)
    assert settings.bptt == 20 and settings.threshold == 0.9 and settings.max_horizon == 150
    assert cfg["models"]["metaV1_gradparams_T50"]["inputs"] == "grad+param"
    assert cfg["models"]["actV2_nu0.9_T100"]["inputs"] == "grad"
    assert specs["actV2_nu0.9_ET32"].horizon_shape == 0.955


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("data/validation/functions", 0, "data.validation.functions: 0 is less than the minimum"),
        ("seed", _DELETE, "(top level): 'seed' is a required property"),
        ("training/eval_every", 7, "training.eval_every: must divide training.epochs"),
    ],
)
def test_snakemake_refuses_before_any_job(tmp_path, path, value, message):
    cfg = copy.deepcopy(base_config())
    _set(cfg, path, value)
    work = scratch_workflow(tmp_path, cfg)
    res = snakemake(work, "--cores", "1", "results/data/test.parquet")
    assert res.returncode != 0
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "invalid config" in ln]
    assert lines and message in lines[0], res.stderr[-2000:]
    assert not (work / "results").exists()  # refused before any job ran


def test_the_default_and_quick_configs_are_valid(tmp_path):
    work = scratch_workflow(tmp_path)
    (work / "config" / "quick.yaml").write_text((REPO / "config" / "quick.yaml").read_text())
    for extra in ([], ["--configfile", "config/quick.yaml"]):
        res = snakemake(work, "-n", "--cores", "2", "all", *extra)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "train" in res.stdout
