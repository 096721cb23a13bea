"""Read labeled text files and split them into labeled / unlabeled pool / dev / test.

Formats: ``jsonl`` (one object per line), ``csv`` / ``tsv`` (header row), and ``label_text``
(``<label><separator><text>`` per line, e.g. SST-2's ``stsa.binary.*`` or TREC). A field mapping
names the text and label fields; ``label_regex`` and ``label_map`` turn raw labels into class names.

The gold labels of the unlabeled pool are kept in a :class:`GoldVault`, which is *not* part of
:class:`Splits` and is never given to method code: it exists only for after-the-fact reporting.

Not handled here: CoNLL and bracketed trees (other task families add their readers).
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .config import DataConfig
from .errors import DataError
from .types import Example, Unlabeled

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
    if fmt in ("brackets", "slots"):  # seq2seq: target strings, see llmkd.seqdata
        from .seqdata import read_split

        return read_split(path, cfg, prefix.rstrip(":") or "train")
    if fmt in ("conll", "seq_in_out"):  # NER: IOB2 tag tuples, see llmkd.conll
        from .conll import read_tagged

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


@dataclass(frozen=True)
class GoldVault:
    """Gold labels of the unlabeled pool, for after-the-fact reporting only. Method code never
    receives this object (it is not a field of :class:`Splits` nor of the method's context)."""

    _labels: dict[str, Any]

    def label_of(self, example_id: str) -> Any:
        return self._labels[example_id]

    def __len__(self) -> int:
        return len(self._labels)


@dataclass(frozen=True)
class Splits:
    labels: tuple[str, ...]
    labeled: tuple[Example, ...]
    pool: tuple[Unlabeled, ...]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]


def _take_per_class(items: list[Example], k: int, labels: list[str], rng: random.Random, what: str,
                    source: str) -> tuple[list[Example], list[Example]]:
    by_class: dict[str, list[Example]] = defaultdict(list)
    for ex in items:
        by_class[ex.label].append(ex)
    chosen: list[Example] = []
    for lab in labels:
        group = by_class.get(lab, [])
        if len(group) < k:
            setting = "labeled_per_class" if what == "labeled" else "dev_per_class"
            raise DataError(
                f"{source}: class {lab!r} has only {len(group)} example{'' if len(group) == 1 else 's'} left "
                f"for the {what} set, but "
                f"data.split.{setting}={k}; lower data.split.{setting} or add examples of {lab!r}"
            )
        chosen.extend(rng.sample(group, k))
    chosen_ids = {e.id for e in chosen}
    rng.shuffle(chosen)
    return chosen, [e for e in items if e.id not in chosen_ids]


def make_splits(cfg: DataConfig, seed: int) -> tuple[Splits, GoldVault]:
    """Read the files and make seeded splits. Returns the splits and the pool's gold vault."""
    if cfg.format in ("brackets", "slots"):  # no classes: split by count (llmkd.seqdata)
        from .seqdata import make_seq2seq_splits

        return make_seq2seq_splits(cfg, seed)
    train = read_examples(cfg.train, cfg, prefix="train:")
    test = read_examples(cfg.test, cfg, prefix="test:")
    dev_file = read_examples(cfg.dev, cfg, prefix="dev:") if cfg.dev else None
    from .conll import check_tag_types, entity_types, is_tagged

    tagged = is_tagged(train)  # NER: labels are IOB2 tag tuples, data.labels the entity types
    if tagged:
        labels = list(cfg.labels) if cfg.labels else entity_types(train)
        if cfg.split.labeled_per_class is not None or cfg.split.dev_per_class is not None:
            raise DataError(
                f"{cfg.train}: NER sentences have no single class, so data.split.labeled_per_class / dev_per_class "
                "do not apply; set data.split.labeled_n and data.split.dev_n instead (e.g. {labeled_n: 50, dev_n: 50})"
            )
    else:
        labels = list(cfg.labels) if cfg.labels else sorted({e.label for e in train})
    check = check_tag_types if tagged else check_labels
    check(train, labels, cfg.train)
    check(test, labels, cfg.test)
    if dev_file is not None:
        check(dev_file, labels, cfg.dev or "")
    if len({e.id for e in train}) != len(train):
        raise DataError(f"{cfg.train}: example ids are not unique; remove duplicate 'id' values")

    rng = random.Random(seed)
    sp = cfg.split
    if sp.labeled_per_class is not None:
        labeled, rest = _take_per_class(train, sp.labeled_per_class, labels, rng, "labeled", cfg.train)
    else:
        assert sp.labeled_n is not None
        if sp.labeled_n >= len(train):
            raise DataError(f"{cfg.train}: data.split.labeled_n={sp.labeled_n} leaves no unlabeled pool ({len(train)} examples)")
        shuffled = train[:]
        rng.shuffle(shuffled)
        labeled, rest = shuffled[: sp.labeled_n], shuffled[sp.labeled_n :]

    if sp.dev_per_class is not None:
        dev_source = dev_file if dev_file is not None else rest
        dev, remaining = _take_per_class(dev_source, sp.dev_per_class, labels, rng, "dev",
                                         cfg.dev if dev_file is not None and cfg.dev else cfg.train)
        if dev_file is None:
            rest = remaining
    elif sp.dev_n is not None:  # n in total: from the dev file if given, else from the rest of train
        if dev_file is not None:
            dev = random.Random(seed + 2).sample(dev_file, min(sp.dev_n, len(dev_file)))
        else:
            if sp.dev_n >= len(rest):
                raise DataError(f"{cfg.train}: data.split.dev_n={sp.dev_n} leaves no unlabeled pool "
                                f"({len(rest)} examples after the labeled set); lower it or give data.dev")
            dev, rest = rest[: sp.dev_n], rest[sp.dev_n :]
    else:
        dev = list(dev_file) if dev_file is not None else []

    rest = rest[:]
    rng.shuffle(rest)
    pool_ex = rest[: sp.pool_size] if sp.pool_size is not None else rest
    if sp.pool_size is not None and sp.pool_size > len(rest):
        log.warning("%s: data.split.pool_size=%d but only %d examples are left after the labeled and dev "
                    "sets; the pool has %d", cfg.train, sp.pool_size, len(rest), len(rest))
    if not pool_ex:
        raise DataError(
            f"{cfg.train}: the unlabeled pool is empty after taking the labeled and dev examples; "
            "use a larger train file or smaller data.split sizes"
        )
    if sp.test_size is not None and sp.test_size < len(test):
        test = random.Random(seed + 1).sample(test, sp.test_size)
    pool = tuple(Unlabeled(id=e.id, text=e.text) for e in pool_ex)
    vault = GoldVault({e.id: e.label for e in pool_ex})
    return Splits(tuple(labels), tuple(labeled), pool, tuple(dev), tuple(test)), vault


def full_train(cfg: DataConfig, splits: Splits, vault: GoldVault) -> tuple[Example, ...]:
    """The gold labeled set plus the gold labels of the pool: the supervised-full upper bound.
    Only the runner calls this, for the ``supervised_full`` baseline."""
    return splits.labeled + tuple(Example(u.id, u.text, vault.label_of(u.id)) for u in splits.pool)
