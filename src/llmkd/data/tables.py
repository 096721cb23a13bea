"""Read column tables into gold :class:`~llmkd.types.Example` objects: ``data.format: parquet`` (a
``.parquet`` file, or a folder of them) and ``data.format: datasets`` (a Hugging Face ``datasets``
folder: what ``save_to_disk`` wrote, a ``Dataset`` or a ``DatasetDict``, or a local folder that
``datasets.load_dataset`` reads, e.g. one of data files). Both need the ``formats`` extra
(pyarrow, datasets), imported only when such a file is read.

Columns: ``data.text_field``, ``data.label_field`` and, where there is one, ``id`` (else the id is
``<split>:<row>``, rows counted from 1). The label column's type says what the data is for:

* one value per row: **classification**. A class name (string), or an integer class id: named by
  the column's ``ClassLabel`` feature where the table has one (a ``datasets`` folder, or a parquet
  file written by ``datasets``, which keeps its features in the file's metadata), else the id as
  text (``"0"``, for ``data.label_map``). ``data.label_regex`` / ``data.label_map`` apply as in
  the text formats.
* a list per row: **NER** tags (IOB1 / IOB2 strings, or ``ClassLabel`` ids), one per token; the
  text column holds the tokens (a list of strings) or a string of whitespace-separated tokens.
  ``data.label_map`` renames entity types as for CoNLL (:mod:`llmkd.formats.conll`).

A ``DatasetDict`` gives each llmkd split the dataset split ``data.dataset_split`` names (default:
``train``, ``test``, and for ``dev`` the first of ``validation``, ``dev``, ``valid``).

Not handled: parallel lists of texts and class labels in one row (the CSAbstruct layout: write it
as jsonl), seq2seq targets (brackets / slots files), hub names and remote paths (download the
data and ``save_to_disk`` it first), ``datasets`` loading scripts (``datasets`` 4 dropped them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DataConfig
from ..errors import DataError, require
from ..types import Example

SAVED_MARKERS = ("dataset_dict.json", "state.json")
"""The files ``save_to_disk`` writes at the top of its folder (a DatasetDict / a Dataset)."""

_DEV_NAMES = ("validation", "dev", "valid")
_NO_LABEL = -1  # what datasets' ClassLabel uses for an unlabeled row (GLUE's test splits)


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in SAVED_MARKERS)


@dataclass(frozen=True)
class Source:
    """One split of a table source, opened but not yet read: its Arrow schema, the ``ClassLabel``
    names of its columns (for a list column: of its elements) and how messages name it."""

    where: str
    schema: Any  # pyarrow.Schema
    names: dict[str, list[str]]
    _read: Any  # () -> pyarrow.Table

    def read(self) -> Any:
        return self._read()


def class_names(features: Any) -> dict[str, list[str]]:
    """column -> ``ClassLabel`` names, from ``datasets`` features as JSON (``Features.to_dict()``,
    or the ``huggingface`` metadata of a parquet file): a ClassLabel column, or a list of them."""
    out: dict[str, list[str]] = {}
    for column, feature in (features or {}).items():
        if isinstance(feature, list) and len(feature) == 1:  # old datasets: [feature] for a list of them
            feature = {"_type": "List", "feature": feature[0]}
        if not isinstance(feature, dict):
            continue
        if feature.get("_type") in ("Sequence", "List", "LargeList"):
            feature = feature.get("feature")
            if not isinstance(feature, dict):
                continue
        if feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list):
            out[column] = [str(n) for n in feature["names"]]
    return out


def open_source(path: Path, fmt: str, cfg: DataConfig, split: str) -> Source:
    """The table source of ``split`` (``train`` / ``dev`` / ``test``) at ``path``."""
    if fmt == "parquet":
        return _open_parquet(path)
    return _open_datasets(path, cfg, split)


def _open_parquet(path: Path) -> Source:
    require("pyarrow", "formats", "data.format: parquet")
    import pyarrow as pa
    import pyarrow.dataset as pads

    if path.is_dir() and is_saved_dataset(path):
        raise DataError(f"{path}: a datasets folder (written by save_to_disk), not parquet; set data.format: datasets")
    try:
        dataset = pads.dataset(str(path), format="parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a parquet file ({exc}); set data.format to the file's format") from None
    if path.is_dir() and not dataset.files:
        raise DataError(f"{path}: a folder without .parquet files; give a parquet file or a folder of them")
    meta = (dataset.schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(meta)["info"]["features"] if meta else {}
    except (ValueError, KeyError, TypeError):  # metadata another writer made: no class names then
        features = {}

    def read() -> Any:
        try:
            return dataset.to_table()
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: cannot read the parquet data ({exc}); the files of a folder must share "
                            "their columns") from None

    return Source(str(path), dataset.schema, class_names(features), read)


def _open_datasets(path: Path, cfg: DataConfig, split: str) -> Source:
    datasets = require("datasets", "formats", "data.format: datasets")
    if path.is_file() and path.suffix in (".parquet", ".pq"):
        raise DataError(f"{path}: a parquet file, not a datasets folder; set data.format: parquet")
    try:
        if is_saved_dataset(path):
            obj = datasets.load_from_disk(str(path))
        else:  # a local folder of data files (load_dataset infers the builder)
            obj = datasets.load_dataset(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds (FileNotFoundError, ValueError, its own)
        raise DataError(
            f"{path}: datasets cannot load this ({type(exc).__name__}: {exc}); give a folder written by "
            "Dataset.save_to_disk / DatasetDict.save_to_disk, or a folder of data files that "
            "datasets.load_dataset(folder) reads") from None
    where = str(path)
    if isinstance(obj, datasets.DatasetDict):
        name = _pick_split(list(obj), path, split, cfg)
        obj, where = obj[name], f"{path} (split {name!r})"
    elif split in cfg.dataset_split:
        raise DataError(f"{path}: data.dataset_split.{split} is {cfg.dataset_split[split]!r}, but this folder holds "
                        "one dataset, not a DatasetDict of splits; remove data.dataset_split")
    dataset = obj
    return Source(where, dataset.data.schema, class_names(dataset.features.to_dict()),
                  lambda: dataset.with_format("arrow")[:])


def _pick_split(names: list[str], path: Path, split: str, cfg: DataConfig) -> str:
    want = cfg.dataset_split.get(split)
    if want is not None:
        if want not in names:
            raise DataError(f"{path}: data.dataset_split.{split} is {want!r}, but the dataset's splits are {names}; "
                            "set it to one of them")
        return want
    candidates = _DEV_NAMES if split == "dev" else (split,)
    for name in candidates:
        if name in names:
            return name
    raise DataError(f"{path}: the dataset's splits are {names}, none named {' or '.join(candidates)} for the {split} "
                    f"data; set data.dataset_split.{split} to one of them")


# ---- column types ----------------------------------------------------------------------------


def _is_text(t: Any) -> bool:
    """Strings, or nulls only (an all-null column: the row checks name the empty rows)."""
    import pyarrow as pa

    return (pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t)
            or pa.types.is_null(t))


def _type_name(t: Any) -> str:
    """An Arrow type as messages show it (``list<string>``; pyarrow's own text names the list's
    field, differently from version to version)."""
    return f"list<{_type_name(t.value_type)}>" if _is_list(t) else str(t)


def _is_list(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_int(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t)


def source_kind(source: Source, cfg: DataConfig) -> str:
    """``classification`` or ``ner``: what the label column holds (see the module docstring).
    DataError when the text or label column is missing."""
    _require_columns(source, cfg)
    return "ner" if _is_list(source.schema.field(cfg.label_field).type) else "classification"


def _require_columns(source: Source, cfg: DataConfig) -> None:
    columns = source.schema.names
    for name, setting in ((cfg.text_field, "text_field"), (cfg.label_field, "label_field")):
        if name not in columns:
            raise DataError(f"{source.where}: column {name!r} not found; columns are {columns}; set data.{setting}")


def _type_error(source: Source, column: str, t: Any, expected: str, setting: str) -> DataError:
    return DataError(f"{source.where}: column {column!r} holds {_type_name(t)} values, but {expected}; set data.{setting} to "
                     f"such a column (columns: {source.schema.names})")


def _check_types(source: Source, cfg: DataConfig, kind: str) -> None:
    text_t = source.schema.field(cfg.text_field).type
    label_t = source.schema.field(cfg.label_field).type
    if kind == "classification":
        if not _is_text(text_t):
            extra = (" (a list per row: NER tokens need a list of tags in the label column too; parallel lists of "
                     "texts and class labels are read from jsonl)") if _is_list(text_t) else ""
            raise _type_error(source, cfg.text_field, text_t, "the text column must hold strings" + extra, "text_field")
        if not (_is_text(label_t) or _is_int(label_t) or str(label_t) == "bool"):
            raise _type_error(source, cfg.label_field, label_t, "a class label is a name (string) or a class id "
                              "(integer); a float column is a score, not a class", "label_field")
        return
    if not (_is_text(text_t) or (_is_list(text_t) and _is_text(text_t.value_type))):
        raise _type_error(source, cfg.text_field, text_t, "NER text is a list of tokens (strings) or a string of "
                          "whitespace-separated tokens", "text_field")
    tag_t = label_t.value_type
    if _is_int(tag_t) and cfg.label_field not in source.names:
        raise DataError(
            f"{source.where}: column {cfg.label_field!r} holds integer tags ({_type_name(label_t)}) without their names (no "
            "ClassLabel feature in the data); write the tags as strings (O, B-PER, I-PER, ...), or save the data with "
            "datasets and its ClassLabel features (save_to_disk and to_parquet keep them)")
    if not (_is_text(tag_t) or _is_int(tag_t)):
        raise _type_error(source, cfg.label_field, label_t, "NER tags are strings (O, B-PER, ...) or ClassLabel ids",
                          "label_field")


# ---- rows ------------------------------------------------------------------------------------


def read_table(path: Path, fmt: str, cfg: DataConfig, split: str, prefix: str) -> list[Example]:
    """The examples of one table source (see the module docstring), checked row by row: an empty
    text or label, a class id outside the ClassLabel names, as many tokens as tags, unique ids."""
    from ..formats.conll import tagged_sentence
    from .readers import compile_label_regex, label_of

    source = open_source(path, fmt, cfg, split)
    kind = source_kind(source, cfg)
    _check_types(source, cfg, kind)
    table = source.read()
    texts = table.column(cfg.text_field).to_pylist()
    raws = table.column(cfg.label_field).to_pylist()
    ids = table.column("id").to_pylist() if "id" in table.column_names else None
    names = source.names.get(cfg.label_field)
    regex = compile_label_regex(cfg.label_regex) if cfg.label_regex and kind == "classification" else None
    hint = (" (an llmkd label export: its abstained rows have no label; export with --answered-only)"
            if "abstained" in table.column_names else "")
    out: list[Example] = []
    first_row: dict[str, int] = {}
    for row, (text, raw) in enumerate(zip(texts, raws), 1):
        where = f"{source.where}: row {row}"
        if ids is not None and ids[row - 1] is None:
            raise DataError(f"{where}: column 'id' is empty; give every row an id, or drop the id column")
        ex_id = str(ids[row - 1]) if ids is not None else f"{prefix}{row}"
        if ex_id in first_row:
            raise DataError(f"{where}: example id {ex_id!r} is used again (first at row {first_row[ex_id]}); every "
                            "example needs its own id: change or remove one of the two 'id' values")
        first_row[ex_id] = row
        if raw is None:
            raise DataError(f"{where}: column {cfg.label_field!r} is empty (null); every example needs a label{hint}")
        if kind == "classification":
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: column {cfg.text_field!r} must be a non-empty string, got {text!r}")
            label = _class_name(raw, names, where, cfg.label_field)
            if not label.strip():
                raise DataError(f"{where}: column {cfg.label_field!r} is empty; every example needs a label{hint}")
            out.append(Example(id=ex_id, text=text.strip(), label=label_of(label.strip(), regex, cfg, where)))
            continue
        tokens = text.split() if isinstance(text, str) else ["".join(str(t).split()) or "_" for t in text or []]
        tags = [_class_name(t, names, where, cfg.label_field) for t in raw]
        if not tokens:
            raise DataError(f"{where}: column {cfg.text_field!r} holds no tokens; every sentence needs at least one")
        if len(tokens) != len(tags):
            raise DataError(f"{where}: {len(tokens)} tokens in column {cfg.text_field!r} but {len(tags)} tags in "
                            f"column {cfg.label_field!r}; every token needs exactly one tag")
        joined, label = tagged_sentence(tokens, tags, cfg.label_map, where, cfg.labels)
        out.append(Example(id=ex_id, text=joined, label=label))
    if not out:
        raise DataError(f"{source.where}: no examples found (the table has no rows)")
    return out


def _class_name(raw: Any, names: list[str] | None, where: str, column: str) -> str:
    """A class name (or tag) from a label value: a string as it is, a ClassLabel id by its name."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool) or names is None:
        return str(raw)
    if raw == _NO_LABEL:
        raise DataError(f"{where}: column {column!r} is -1, which datasets uses for 'no label' (GLUE's test splits "
                        "are unlabeled); use a split with labels, e.g. data.dataset_split.test: validation")
    if not 0 <= raw < len(names):
        raise DataError(f"{where}: column {column!r} holds the class id {raw}, but its ClassLabel names are "
                        f"{names} (ids 0 to {len(names) - 1}); fix the id or the features")
    return names[raw]


def table_kind(cfg: DataConfig, fmt: str) -> str:
    """What the train source of a table format holds (``classification`` / ``ner``), from its
    schema only (no rows read). DataError when the file is missing or a column is not there."""
    from .readers import missing_file

    path = Path(cfg.train)
    if not path.exists():
        raise missing_file(path, fmt)
    return source_kind(open_source(path, fmt, cfg, "train"), cfg)
