"""Read labeled text files into gold :class:`~llmkd.types.Example` objects.

Formats: ``jsonl`` (one object per line), ``csv`` / ``tsv`` (header row), and ``label_text``
(``<label><separator><text>`` per line, e.g. SST-2's ``stsa.binary.*`` or TREC). A field mapping
names the text and label fields; ``label_regex`` and ``label_map`` turn raw labels into class names.

Token-tagged NER data (``conll``, ``seq_in_out``) is read by :mod:`llmkd.formats.conll`. Seq2seq
data (``brackets``, ``slots``) has no classes: the label is the target string (a linearized tree,
see :mod:`llmkd.formats.trees`, or a word/tag sequence, see :mod:`llmkd.formats.slots`) and
``text`` is the input words joined by single spaces (:func:`read_split`). ``Splits.labels`` of
seq2seq data (:func:`label_vocabulary`) carries what the task and student need to know of the
label vocabulary: the constituent labels of labeled trees (empty for unlabeled trees), and for
slots the tag set followed by the intents.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterable

from ..config import DataConfig
from ..errors import DataError
from ..types import Example

SEQ2SEQ_FORMATS = ("brackets", "slots")

log = logging.getLogger(__name__)


def _detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "tsv"
    if suffix == ".conll":
        return "conll"
    raise DataError(
        f"{path}: cannot tell the format from the extension {suffix!r}; "
        "set data.format to one of jsonl, csv, tsv, label_text"
    )


def _iter_records(path: Path, fmt: str, cfg: DataConfig) -> Iterable[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) pairs."""
    if fmt == "jsonl":
        with path.open(encoding=cfg.encoding) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno}). "
                        "Each line must be one JSON object, e.g. {\"text\": \"...\", \"label\": \"...\"}"
                    ) from None
                if not isinstance(rec, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
                yield lineno, rec
    elif fmt in ("csv", "tsv"):
        with path.open(encoding=cfg.encoding, newline="") as fh:
            reader = csv.DictReader(fh, delimiter="," if fmt == "csv" else "\t")
            for row in reader:
                if None in row:
                    raise DataError(
                        f"{path}:{reader.line_num}: more fields than the header has; "
                        f"quote fields that contain the delimiter"
                    )
                if None in row.values():
                    missing = [k for k, v in row.items() if v is None]
                    raise DataError(
                        f"{path}:{reader.line_num}: fewer fields than the header has (no value for {missing})"
                    )
                yield reader.line_num, row
    elif fmt == "label_text":
        with path.open(encoding=cfg.encoding, errors="strict") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip():
                    continue
                if cfg.separator not in line:
                    raise DataError(
                        f"{path}:{lineno}: no separator {cfg.separator!r} between label and text; "
                        "each line must be <label><separator><text> (set data.separator)"
                    )
                label, text = line.split(cfg.separator, 1)
                yield lineno, {cfg.label_field: label, cfg.text_field: text}
    else:  # pragma: no cover - guarded by the config Literal
        raise DataError(f"unknown format {fmt!r}")


def _check_encoding(path: Path, encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"data.encoding: unknown encoding {encoding!r}; use e.g. utf-8 or latin-1") from None
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: not valid {encoding} ({exc.reason} at byte {exc.start} of the line); "
                    "set data.encoding to the file's encoding, e.g. latin-1"
                ) from None


def _compile_label_regex(pattern: str) -> re.Pattern[str]:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DataError(f"data.label_regex {pattern!r} is not a valid regular expression ({exc})") from None
    if regex.groups < 1:
        raise DataError(
            f"data.label_regex {pattern!r} has no group; put the label in the first group, e.g. '__label__(\\w+)'"
        )
    return regex


def _record_items(rec: dict[str, Any], cfg: DataConfig, path: Path, lineno: int,
                  prefix: str) -> list[tuple[str, Any, Any]]:
    """(id, text, raw label) of a record. A record whose text and label fields are parallel lists
    (e.g. CSAbstruct: one abstract per line, ``sentences`` / ``labels``) gives one example per
    element, with id ``<record id>.<index>``."""
    text, raw = rec[cfg.text_field], rec[cfg.label_field]
    base = str(rec["id"]) if "id" in rec else f"{prefix}{lineno}"
    if not isinstance(text, list):
        return [(base, text, raw)]
    if not isinstance(raw, list) or len(raw) != len(text):
        got = f"a list of {len(raw)}" if isinstance(raw, list) else type(raw).__name__
        raise DataError(
            f"{path}:{lineno}: field {cfg.text_field!r} is a list of {len(text)} texts, so field "
            f"{cfg.label_field!r} must be a list of as many labels (got {got})"
        )
    return [(f"{base}.{j}", t, r) for j, (t, r) in enumerate(zip(text, raw))]


def read_examples(path: str | Path, cfg: DataConfig, *, prefix: str = "") -> list[Example]:
    """Read one file into gold :class:`Example` objects with class-name labels."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist; check data.train / data.test / data.dev")
    fmt = cfg.format if cfg.format != "auto" else _detect_format(path)
    if fmt in SEQ2SEQ_FORMATS:  # seq2seq: target strings, see read_split
        return read_split(path, cfg, prefix.rstrip(":") or "train")
    if fmt in ("conll", "seq_in_out"):  # NER: IOB2 tag tuples, see llmkd.formats.conll
        from ..formats.conll import read_tagged

        return read_tagged(path, fmt, encoding=cfg.encoding, label_map=cfg.label_map, prefix=prefix, keep=cfg.labels)
    regex = _compile_label_regex(cfg.label_regex) if cfg.label_regex else None
    out: list[Example] = []
    _check_encoding(path, cfg.encoding)
    for lineno, rec in _iter_records(path, fmt, cfg):
        for field_name in (cfg.text_field, cfg.label_field):
            if field_name not in rec:
                which = "text_field" if field_name == cfg.text_field else "label_field"
                raise DataError(
                    f"{path}:{lineno}: field {field_name!r} not found; fields are {sorted(rec)}; "
                    f"set data.{which}"
                )
        for ex_id, text, raw in _record_items(rec, cfg, path, lineno, prefix):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{path}:{lineno}: field {cfg.text_field!r} must be a non-empty string, got {text!r}")
            if raw is None or not str(raw).strip():
                raise DataError(f"{path}:{lineno}: field {cfg.label_field!r} is empty; every example needs a label")
            raw_label = str(raw).strip()
            if regex is not None:
                m = regex.search(raw_label)
                if not m:
                    raise DataError(f"{path}:{lineno}: label {raw_label!r} does not match data.label_regex {cfg.label_regex!r}")
                raw_label = m.group(1)
            label = cfg.label_map.get(raw_label, raw_label)
            out.append(Example(id=ex_id, text=text.strip(), label=label))
    if not out:
        what = "rows below the header" if fmt in ("csv", "tsv") else "non-blank lines"
        raise DataError(f"{path}: no examples found (the file is empty: it has no {what})")
    return out


def check_labels(examples: list[Example], labels: list[str], path: str) -> None:
    allowed = set(labels)
    for ex in examples:
        if ex.label not in allowed:
            raise DataError(
                f"{path}: example {ex.id} has label {ex.label!r}, which is not in the label set "
                f"{labels}. Add it to data.labels, map it with data.label_map, or remove the example."
            )


# ---- seq2seq data (data.format: brackets / slots) --------------------------------------------


def read_split(path: str | Path, cfg: DataConfig, split: str) -> list[Example]:
    """Examples of one split (``train`` / ``dev`` / ``test``) of a seq2seq data source."""
    from ..formats.trees import clean, linearize, read_treebank

    prefix = f"{split}:"
    if cfg.format == "slots":
        from ..formats.slots import read_slots

        return read_slots(path, with_intent=cfg.with_intent, encoding=cfg.encoding, prefix=prefix)
    out: list[Example] = []
    for tree_id, tree in read_treebank(path, members=cfg.members.get(split), encoding=cfg.encoding):  # type: ignore[arg-type]
        cleaned = clean(tree)
        if cleaned is None:
            continue  # a tree of punctuation / traces only has no words to parse
        target = linearize(cleaned, labeled=cfg.tree_labels)
        words = cleaned.leaves()
        out.append(Example(prefix + tree_id, " ".join(words), target))
    if not out:
        raise DataError(f"{path}: no trees with words found for split {split!r}")
    return out


def label_vocabulary(examples: list[Example], cfg: DataConfig) -> tuple[str, ...]:
    from ..formats.slots import parse_target
    from ..formats.trees import tree_labels

    if cfg.format == "brackets":
        if not cfg.tree_labels:
            return ()
        return tuple(sorted(set().union(*(tree_labels(e.label) for e in examples))))
    tags: set[str] = set()
    intents: set[str] = set()
    for e in examples:
        intent, _, t = parse_target(e.label)
        tags.update(t)
        if intent:
            intents.add(intent)
    return tuple(sorted(tags)) + tuple(sorted(intents))
