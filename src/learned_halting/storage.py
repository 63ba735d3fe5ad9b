"""Parquet and checkpoint I/O: atomic writes, metadata, and checked reads.

Every file is written to a temporary file beside its destination and renamed into place, so an
interrupted job never leaves a half-written file that looks complete. Reads check what they rely on
and fail with one line naming the file and what is wrong (:class:`DataError`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from . import __version__
from .problem import FunctionBatch

METADATA_KEY = b"learned_halting"


class DataError(ValueError):
    """An input file is missing, unreadable or not what it should be; the message names the file."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path, required: tuple[str, ...] = ()) -> dict:
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in required if k not in obj]
    if missing:
        raise DataError(f"{path}: missing keys {missing}")
    return obj


def versions() -> dict:
    """Versions of the packages that shape the numbers, recorded in every output's metadata."""
    return {
        "learned_halting": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
    }


def fixed_list(values: np.ndarray) -> pa.Array:
    """(n, k) float32 array -> Arrow fixed-size-list<float32>[k] array of length n."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    n, k = values.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), k)


def write_table(path, columns: dict[str, pa.Array | np.ndarray], metadata: dict) -> None:
    """Write a Parquet table atomically; ``metadata`` (JSON-able) goes under the key
    ``learned_halting`` of the file's key-value metadata, with the package versions added."""
    arrays = {}
    for name, col in columns.items():
        if isinstance(col, np.ndarray) and col.ndim == 2:
            col = fixed_list(col)
        arrays[name] = col if isinstance(col, pa.Array) else pa.array(col)
    table = pa.table(arrays)
    meta = {"versions": versions(), **metadata}
    table = table.replace_schema_metadata(
        {METADATA_KEY: json.dumps(meta, sort_keys=True).encode()}
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path, required: dict[str, int | None]) -> tuple[pa.Table, dict]:
    """Read a Parquet table and check its columns.

    Args:
        required: column name -> list length (None for a scalar column).
    Returns:
        the table and its ``learned_halting`` metadata (empty dict if absent).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    for name, length in required.items():
        if name not in table.column_names:
            raise DataError(f"{path}: missing column {name!r} (has {table.column_names})")
        typ = table.schema.field(name).type
        if length is not None:
            if not pa.types.is_fixed_size_list(typ) and not pa.types.is_list(typ):
                raise DataError(f"{path}: column {name!r} should hold lists, has {typ}")
            lengths = pa.compute.list_value_length(table.column(name))
            lo, hi = pa.compute.min_max(lengths).values()
            if table.num_rows and (lo.as_py() != length or hi.as_py() != length):
                raise DataError(
                    f"{path}: column {name!r} should hold lists of {length} values, "
                    f"found lengths {lo.as_py()}..{hi.as_py()}"
                )
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    meta = json.loads(raw) if raw else {}
    return table, meta


def list_column(table: pa.Table, name: str) -> np.ndarray:
    """A fixed-length list column as an (n, k) float32 array."""
    col = table.column(name).combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return np.array(flat.reshape(table.num_rows, -1), dtype=np.float32)


def epoch_of(path) -> int:
    """The epoch of ``.../epoch_{epoch}.pt`` or ``.../epoch_{epoch}.parquet``."""
    return int(Path(path).stem.split("_")[-1])


VALIDATION_COLUMNS = {"step": None, "nll_mean": None, "nll_std": None}


def read_test_result(path) -> dict[str, np.ndarray]:
    """A ``results/test/{model}.parquet`` as numpy arrays (``nll`` (N, S+1), act columns if present)."""
    table, _ = read_table(path, {"function_id": None, "nll": None})
    out = {"function_id": table.column("function_id").to_numpy(), "nll": list_column(table, "nll")}
    if "q" in table.column_names:
        out["q"] = list_column(table, "q")
        for k in ("mode_step", "stop_step", "online_stop_step", "nll_distance"):
            if k not in table.column_names:
                raise DataError(f"{path}: missing column {k!r}")
            out[k] = table.column(k).to_numpy()
    return out


FUNCTION_SET_COLUMNS = {"function_id": None, "W": 100, "theta_true": 10, "theta_init": 10, "y": 10}


def write_function_set(path, ids: np.ndarray, batch: FunctionBatch, metadata: dict) -> None:
    """One row per function: ``function_id`` int64, ``W`` (samples*dims float32, row-major),
    ``theta_true``, ``theta_init`` (dims float32), ``y`` (samples float32)."""
    n = len(batch)
    write_table(
        path,
        {
            "function_id": pa.array(np.asarray(ids, dtype=np.int64)),
            "W": batch.W.reshape(n, -1),
            "theta_true": batch.theta_true,
            "theta_init": batch.theta_init,
            "y": batch.y,
        },
        metadata,
    )


def read_function_set(path) -> tuple[np.ndarray, FunctionBatch, dict]:
    """Read a function set written by :func:`write_function_set`; returns ids, batch, metadata."""
    table, meta = read_table(path, FUNCTION_SET_COLUMNS)
    if table.num_rows == 0:
        raise DataError(f"{path}: holds no functions")
    ids = table.column("function_id").to_numpy()
    W = list_column(table, "W").reshape(-1, 10, 10)
    batch = FunctionBatch(
        W,
        list_column(table, "theta_true"),
        list_column(table, "theta_init"),
        list_column(table, "y"),
    )
    return ids, batch, meta


# ----------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path, state: dict[str, torch.Tensor], metadata: dict) -> None:
    """Plain tensors plus JSON metadata: loadable with ``weights_only=True``, never runs code."""
    payload = {
        "state_dict": {k: v.detach().cpu().clone() for k, v in state.items()},
        "metadata": json.dumps({"versions": versions(), **metadata}, sort_keys=True),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a checkpoint written by :func:`save_checkpoint`; refuses anything else."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: not a loadable checkpoint ({first})") from None
    if not isinstance(payload, dict) or set(payload) != {"state_dict", "metadata"}:
        raise DataError(f"{path}: not a checkpoint of this project (unexpected content)")
    try:
        meta = json.loads(payload["metadata"])
    except (TypeError, json.JSONDecodeError):
        raise DataError(f"{path}: checkpoint metadata is not JSON") from None
    return payload["state_dict"], meta
