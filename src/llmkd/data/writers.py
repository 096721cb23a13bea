"""Write rows (one dict per example) as ``jsonl``, ``parquet`` or a ``datasets`` folder
(``Dataset.save_to_disk``; ``datasets.load_from_disk`` opens it): the table writer of llmkd's
exports (``llmkd label --output``, ``llmkd export-labels``), for any caller with rows to write.

In ``parquet`` and ``datasets`` every column has one type: a dict value (per-row keys, e.g. label
probabilities or parse details) is written as JSON text, a tuple as a list; ``jsonl`` keeps values
as they are. Nothing is half-written: a file goes to ``<name>.tmp`` and is moved into place; a
folder is saved beside the target and swapped in. An existing ``datasets`` target is replaced only
where it is itself a ``datasets`` folder (never any other folder). pyarrow and datasets (the
``formats`` extra) are imported only when those formats are written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import ConfigError, DataError, require
from ..io import write_jsonl

WRITE_FORMATS = ("jsonl", "parquet", "datasets")


def output_format(path: str | Path, fmt: str = "auto") -> str:
    """``fmt``, or for ``auto`` the format ``path`` names: ``.jsonl`` / ``.json`` / ``.ndjson``,
    ``.parquet`` / ``.pq``, and a path without an extension is a ``datasets`` folder."""
    if fmt != "auto":
        if fmt not in WRITE_FORMATS:
            raise ConfigError(f"the output format must be one of auto, {', '.join(WRITE_FORMATS)}. Got {fmt!r}.")
        return fmt
    suffix = Path(path).suffix.lower()
    by_suffix = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet",
                 "": "datasets"}
    if suffix not in by_suffix:
        raise ConfigError(f"{path}: cannot tell the output format from the extension {suffix!r}; name the file "
                          ".jsonl or .parquet, a folder without an extension for datasets, or give the format "
                          f"({', '.join(WRITE_FORMATS)})")
    return by_suffix[suffix]


def table_value(value: Any) -> Any:
    """A value as parquet / datasets store it: dicts as JSON text, tuples as lists."""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    if isinstance(value, tuple):
        return [table_value(v) for v in value]
    return value


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None, types: dict[str, str]) -> Any:
    """A pyarrow Table of ``rows`` (columns in ``columns`` order, else first-seen order); a
    DataError naming the column whose values have no common type."""
    pa = require("pyarrow", "formats", "writing parquet / datasets")
    names = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
    arrays = []
    for name in names:
        values = [table_value(row.get(name)) for row in rows]
        try:
            arrays.append(pa.array(values, type=pa.type_for_alias(types[name]) if name in types else None))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            kinds = sorted({type(v).__name__ for v in values if v is not None})
            raise DataError(f"column {name!r}: its values have no common type ({', '.join(kinds)}: {exc}); give "
                            "every row the same kind of value (or None)") from None
    return pa.Table.from_arrays(arrays, names=names)


def write_rows(path: str | Path, rows: Iterable[dict[str, Any]], fmt: str = "auto", *,
               columns: Sequence[str] | None = None, types: dict[str, str] | None = None) -> Path:
    """Write ``rows`` to ``path`` as ``fmt`` (see :func:`output_format`); returns the path.
    ``columns``: which keys, in order (missing ones are None); ``types``: the Arrow type of some
    columns in parquet / datasets (pyarrow's names: ``string``, ``double``, ``bool``), so that a
    column of Nones keeps its type (else it is inferred from the values)."""
    path = Path(path)
    fmt = output_format(path, fmt)
    rows = list(rows)
    if fmt != "datasets" and path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name for {fmt} (e.g. {path / ('labels.' + fmt)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        write_jsonl(path, ({k: row.get(k) for k in columns} if columns else row for row in rows))
        return path
    table = _table(rows, columns, types or {})
    if fmt == "parquet":
        import pyarrow.parquet as pq

        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        return path
    return _save_dataset(path, table)


def _save_dataset(path: Path, table: Any) -> Path:
    datasets = require("datasets", "formats", "writing a datasets folder")
    from datasets.table import InMemoryTable

    from .tables import is_saved_dataset

    if path.exists() and not (path.is_dir() and (is_saved_dataset(path) or not any(path.iterdir()))):
        raise ConfigError(f"{path} exists and is not a datasets folder; give a new path (a datasets folder there "
                          "would be replaced, never another folder or file)")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    datasets.Dataset(InMemoryTable(table)).save_to_disk(str(tmp))
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path
