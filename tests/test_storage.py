"""Parquet function sets and checkpoints: schema, metadata, determinism, safe loading, clear errors."""

import json
import pickle

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from learned_halting import pipeline
from learned_halting import problem as P
from learned_halting.networks import LSTMOptimizer
from learned_halting.storage import (
    DataError,
    load_checkpoint,
    read_function_set,
    read_table,
    save_checkpoint,
    write_table,
)
from learned_halting.training import load_network

CONFIG = {
    "seed": 1,
    "data": {"validation": {"functions": 40, "seed": 10}, "test": {"functions": 40, "seed": 20}},
}


def _sets(tmp_path, sub):
    out = {}
    for split in ("validation", "test"):
        out[split] = tmp_path / sub / f"{split}.parquet"
        pipeline.make_function_set(out[split], split, CONFIG)
    return out


def test_function_set_schema_is_readable_without_the_project(tmp_path):
    path = _sets(tmp_path, "a")["test"]
    table = pq.read_table(path)
    assert table.schema.field("function_id").type == "int64"
    for name, k in (("W", 100), ("theta_true", 10), ("theta_init", 10), ("y", 10)):
        t = table.schema.field(name).type
        assert str(t) == f"fixed_size_list<element: float>[{k}]", (name, t)
    df = pd.read_parquet(path)
    assert len(df) == 40 and list(df.function_id) == list(range(40))
    meta = json.loads(table.schema.metadata[b"learned_halting"])
    assert meta["problem"] == "regression_T" and meta["seed"] == 20
    assert (meta["dims"], meta["samples"], meta["dof"], meta["scale"]) == (10, 10, 1.0, 1.0)
    assert "learned_halting" in meta["versions"]
    # the content is the problem's sampling, W row-major (samples x dims)
    ref = P.function_set(40, 20)
    w0 = np.asarray(df.W.iloc[3], dtype=np.float32).reshape(10, 10)
    assert np.array_equal(w0, ref.W[3])
    ids, batch, _ = read_function_set(path)
    assert np.array_equal(batch.y, ref.y) and np.array_equal(batch.theta_init, ref.theta_init)


def test_same_seed_gives_identical_bytes_and_sets_differ(tmp_path):
    a, b = _sets(tmp_path, "a"), _sets(tmp_path, "b")
    assert a["test"].read_bytes() == b["test"].read_bytes()
    assert a["validation"].read_bytes() == b["validation"].read_bytes()
    _, va, _ = read_function_set(a["validation"])
    _, te, _ = read_function_set(a["test"])
    assert not np.array_equal(va.W, te.W)


@pytest.mark.parametrize(
    "damage,message",
    [
        ("truncate", "not a readable Parquet file"),
        ("foreign", "missing column 'function_id'"),
        ("short_lists", "lists of 10 values"),
        ("missing", "file not found"),
    ],
)
def test_bad_function_sets_fail_with_one_line_naming_the_file(tmp_path, damage, message):
    path = _sets(tmp_path, "a")["test"]
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "foreign":
        pd.DataFrame({"x": [1, 2]}).to_parquet(path)
    elif damage == "short_lists":
        write_table(path, {"function_id": np.arange(2), "W": np.zeros((2, 100)),
                           "theta_true": np.zeros((2, 10)), "theta_init": np.zeros((2, 9)),
                           "y": np.zeros((2, 10))}, {})
    else:
        path.unlink()
    with pytest.raises(DataError, match=message) as err:
        read_function_set(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "t.parquet"
    with pytest.raises(ValueError):  # columns of unequal length
        write_table(path, {"a": np.arange(3), "b": np.arange(4)}, {})
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_round_trip_and_architecture_check(tmp_path):
    net = LSTMOptimizer(halting=True, seed=3)
    path = tmp_path / "epoch_5.pt"
    save_checkpoint(path, net.state_dict(), {"architecture": net.architecture, "epoch": 5})
    loaded, meta = load_network(path, expected=net.architecture)
    assert meta["epoch"] == 5
    for (n, p), q in zip(net.named_parameters(), loaded.parameters(), strict=True):
        assert torch.equal(p, q), n
    with pytest.raises(DataError, match="architecture"):
        load_network(path, expected={**net.architecture, "halting": False})
    other = tmp_path / "other.pt"
    save_checkpoint(other, LSTMOptimizer(hidden_size=8).state_dict(), {"architecture": net.architecture})
    with pytest.raises(DataError, match="do not fit"):
        load_network(other)


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/learned_halting_pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_checkpoint_that_runs_code_when_unpickled_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "metadata": "{}", "x": _Exploit()}, path)
    with pytest.raises(DataError, match="not a loadable checkpoint"):
        load_checkpoint(path)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(DataError):
        load_checkpoint(plain)
    import os

    assert not os.path.exists("/tmp/learned_halting_pwned")


def test_read_table_reports_missing_columns(tmp_path):
    path = tmp_path / "v.parquet"
    write_table(path, {"step": np.arange(3)}, {"k": 1})
    with pytest.raises(DataError, match="missing column 'nll_mean'"):
        read_table(path, {"step": None, "nll_mean": None})
    _, meta = read_table(path, {"step": None})
    assert meta["k"] == 1
