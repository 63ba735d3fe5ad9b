"""Typed views of the workflow config: one :class:`ModelSpec` per variant, :class:`TrainingSettings`.

The Snakemake workflow validates the config against ``workflow/schemas/config.schema.yaml`` (which
also fills defaults); these classes take the validated dictionaries and add the cross-field checks
that need more than a schema. Errors name the config key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .priors import expected_horizon


class ConfigError(ValueError):
    """A config value is invalid; the message names the key."""


@dataclass(frozen=True)
class ModelSpec:
    """One model variant (an entry of ``models:``)."""

    name: str
    kind: str  # "meta" | "act"
    lr: float
    weights: str = "ones"  # "ones" | "uniform" | "geometric" (meta models)
    nu: float | None = None  # prior / geometric-weight shape
    horizon: int | None = None  # fixed training horizon T
    horizon_shape: float | None = None  # stochastic horizon shape s
    inputs: str = "grad"  # "grad" | "grad+param"
    trajectory_gradient: str = "detached"  # "detached" | "full"

    @property
    def halting(self) -> bool:
        return self.kind == "act"

    @property
    def stochastic_horizon(self) -> bool:
        return self.horizon_shape is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(
        cls, name: str, entry: dict, default_trajectory_gradient: str = "detached"
    ) -> ModelSpec:
        key = f"models.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{key}: must be a mapping, got {entry!r}")
        kind = entry.get("kind")
        if kind not in ("meta", "act"):
            raise ConfigError(f"{key}.kind: must be 'meta' or 'act', got {kind!r}")
        if "lr" not in entry:
            raise ConfigError(f"{key}.lr: missing")
        lr = float(entry["lr"])
        if not lr > 0:
            raise ConfigError(f"{key}.lr: must be positive, got {lr}")
        weights = entry.get("weights", "ones")
        if weights not in ("ones", "uniform", "geometric"):
            raise ConfigError(f"{key}.weights: must be ones, uniform or geometric, got {weights!r}")
        nu = entry.get("nu")
        if nu is not None:
            nu = float(nu)
            if not 0 < nu < 1:
                raise ConfigError(f"{key}.nu: must lie in (0, 1), got {nu}")
        if kind == "meta" and weights == "geometric" and nu is None:
            raise ConfigError(f"{key}.nu: geometric loss weights need nu")
        if kind == "act" and nu is None:
            raise ConfigError(f"{key}.nu: act models need the prior's nu")
        if kind == "act" and "weights" in entry and weights != "ones":
            raise ConfigError(f"{key}.weights: act models learn their weights; remove the key")
        horizon = entry.get("horizon")
        fixed, shape = None, None
        if isinstance(horizon, bool) or horizon is None:
            raise ConfigError(f"{key}.horizon: an integer T or {{shape: s}}, got {horizon!r}")
        if isinstance(horizon, int):
            if horizon < 1:
                raise ConfigError(f"{key}.horizon: must be >= 1, got {horizon}")
            fixed = horizon
        elif isinstance(horizon, dict) and set(horizon) == {"shape"}:
            shape = float(horizon["shape"])
            if not 0 < shape < 1:
                raise ConfigError(f"{key}.horizon.shape: must lie in (0, 1), got {shape}")
            if kind != "act":
                raise ConfigError(f"{key}.horizon: a stochastic horizon needs kind act")
        else:
            raise ConfigError(f"{key}.horizon: an integer T or {{shape: s}}, got {horizon!r}")
        inputs = entry.get("inputs", "grad")
        if inputs not in ("grad", "grad+param"):
            raise ConfigError(f"{key}.inputs: must be grad or grad+param, got {inputs!r}")
        tg = entry.get("trajectory_gradient", default_trajectory_gradient)
        if tg not in ("detached", "full"):
            raise ConfigError(f"{key}.trajectory_gradient: must be detached or full, got {tg!r}")
        return cls(name, kind, lr, weights, nu, fixed, shape, inputs, tg)

    def describe(self, max_horizon: int = 150) -> str:
        """A short human label, e.g. ``act nu=0.9 E[T]=18.0``."""
        parts = [self.kind]
        if self.nu is not None:
            parts.append(f"nu={self.nu:g}")
        if self.stochastic_horizon:
            parts.append(f"E[T]={expected_horizon(self.horizon_shape, max_horizon):.1f}")
        else:
            parts.append(f"T={self.horizon}")
        return " ".join(parts)


@dataclass(frozen=True)
class TrainingSettings:
    """The ``training:`` and ``halting:`` sections, plus the run seed."""

    seed: int = 4325
    epochs: int = 100
    functions_per_epoch: int = 10000
    batch_size: int = 125
    eval_every: int = 5
    eval_steps: int = 100
    hidden_size: int = 40
    layers: int = 2
    bptt: int = 20
    trajectory_gradient: str = "detached"
    device: str = "auto"
    selection_metric: str = "final_nll"
    eval_chunk: int = 250
    replicates: int = 1
    threshold: float = 0.9
    online_threshold: float = 0.95
    max_horizon: int = 150

    @property
    def batches_per_epoch(self) -> int:
        return self.functions_per_epoch // self.batch_size

    @property
    def eval_epochs(self) -> list[int]:
        return list(range(self.eval_every, self.epochs + 1, self.eval_every))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict) -> TrainingSettings:
        tr = dict(config.get("training", {}))
        ha = dict(config.get("halting", {}))
        fields = {k: tr[k] for k in cls.__dataclass_fields__ if k in tr}
        for k in ("threshold", "online_threshold", "max_horizon"):
            if k in ha:
                fields[k] = ha[k]
        s = cls(seed=int(config.get("seed", cls.seed)), **fields)
        s.check()
        return s

    def check(self) -> None:
        if self.epochs % self.eval_every:
            raise ConfigError(
                f"training.eval_every: must divide training.epochs ({self.epochs}), "
                f"got {self.eval_every}"
            )
        if self.functions_per_epoch < self.batch_size:
            raise ConfigError(
                f"training.functions_per_epoch: must be >= training.batch_size "
                f"({self.batch_size}), got {self.functions_per_epoch}"
            )


REPLICATE_SUFFIX = "_rep"


def instance_name(model: str, replicate: int) -> str:
    """The name (used in paths) of replicate ``replicate`` (0-based) of ``model``: replicate 0 is the
    model's own name, so a run with one replicate looks exactly like one without."""
    return model if replicate == 0 else f"{model}{REPLICATE_SUFFIX}{replicate}"


def model_instances(config: dict) -> dict[str, tuple[str, int]]:
    """Every trained instance: name -> (model, replicate), replicates of a model together."""
    n = int(config.get("training", {}).get("replicates", 1))
    return {instance_name(m, r): (m, r) for m in config.get("models") or {} for r in range(n)}


def replicate_seed(seed: int, replicate: int) -> int:
    """The run seed of a replicate: the config's seed for replicate 0, an independent one (from
    numpy's SeedSequence) for the others."""
    if replicate == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence(seed, spawn_key=(REPLICATE_STREAM, replicate)).generate_state(1)[0])


REPLICATE_STREAM = 3  # beside problem.STREAM_TRAIN_FUNCTIONS (1) and STREAM_HORIZON (2)


def model_specs(config: dict) -> dict[str, ModelSpec]:
    """All ``models:`` entries as :class:`ModelSpec`, in config order."""
    default_tg = config.get("training", {}).get("trajectory_gradient", "detached")
    models = config.get("models") or {}
    if not models:
        raise ConfigError("models: at least one model is needed")
    for name in models:
        if REPLICATE_SUFFIX in str(name) and str(name).rsplit(REPLICATE_SUFFIX, 1)[1].isdigit():
            raise ConfigError(f"models.{name}: names ending in {REPLICATE_SUFFIX}<n> are kept for replicates")
    return {
        str(name): ModelSpec.from_config(str(name), entry, default_tg)
        for name, entry in models.items()
    }
