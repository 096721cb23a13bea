"""Read labeled text files into gold :class:`~llmkd.types.Example` objects.

Formats: ``jsonl`` (one object per line), ``csv`` / ``tsv`` (a header row, or ``data.columns``), and ``label_text``
(``<label><separator><text>`` per line, e.g. SST-2's ``stsa.binary.*`` or TREC); ``parquet`` and
``datasets`` tables (classification or NER) are read by :mod:`.tables`. A field mapping
names the text and label fields; ``label_regex`` and ``label_map`` turn raw labels into class names.
What each reader rejects (stray quotes, empty labels, repeated ids, a BOM or bytes that contradict
``data.encoding``, a task kind that does not fit the format) is listed in docs/data.md.

Token-tagged NER data (``conll``, ``seq_in_out``) is read by :mod:`llmkd.formats.conll`. Seq2seq
data (``brackets``, ``slots``) has no classes: the label is the target string (a linearized tree,
see :mod:`llmkd.formats.trees`, or a word/tag sequence, see :mod:`llmkd.formats.slots`) and
``text`` is the input words joined by single spaces (:func:`read_split`). ``Splits.labels`` of
seq2seq data (:func:`label_vocabulary`) carries what the task and student need to know of the
label vocabulary: the constituent labels of labeled trees (empty for unlabeled trees), and for
slots the tag set followed by the intents.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterable

from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..formats.text import decode, decoding
from ..types import Example

SEQ2SEQ_FORMATS = ("brackets", "slots")
TABLE_FORMATS = ("parquet", "datasets")  # llmkd.data.tables (imported on use: it needs pyarrow / datasets)

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
    if suffix in (".parquet", ".pq"):
        return "parquet"
    from .tables import is_saved_dataset

    if is_saved_dataset(path):
        return "datasets"
    if path.is_dir():
        raise DataError(f"{path}: a folder, so the format cannot be told from an extension; set data.format "
                        "(datasets, parquet for a folder of .parquet files, seq_in_out, brackets or slots)")
    raise DataError(
        f"{path}: cannot tell the format from the extension {suffix!r}; "
        "set data.format to one of jsonl, csv, tsv, label_text, parquet, datasets"
    )


def _iter_records(path: Path, fmt: str, cfg: DataConfig, split: str = "train") -> Iterable[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) pairs (``split``: whose ``data.columns`` a csv / tsv file has)."""
    if fmt == "jsonl":
        with path.open(encoding=decoding(cfg.encoding)) as fh:
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
        yield from _delimited_records(path, fmt, cfg, cfg.columns.get(split))  # type: ignore[call-overload]
    elif fmt == "label_text":
        with path.open(encoding=decoding(cfg.encoding), errors="strict") as fh:
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


QUOTE_HINT = ("Close the quote (inside a quoted value write a quote as \"\"), or set data.quoting: none "
              "if quotes in this file are plain text")
_CSV_QUOTED = re.compile(r'^"(?:[^"]|"")*""(?:[^"]|"")*"$')


def quoting(cfg: DataConfig, fmt: str) -> str:
    """The quote reading of a csv / tsv file: ``data.quoting``, where ``auto`` is ``quoted`` for
    csv and ``none`` for tsv (quotes are plain text, as GLUE's and most TSV readers take them)."""
    if cfg.quoting != "auto":
        return cfg.quoting
    return "quoted" if fmt == "csv" else "none"


def _open_quote(line: str, delimiter: str) -> int | None:
    """The 1-based column of a quote that opens a value on ``line`` and is not closed on it."""
    i = 0
    while True:
        if line.startswith('"', i):
            j = i + 1
            while True:
                k = line.find('"', j)
                if k == -1:
                    return i + 1
                if not line.startswith('"', k + 1):
                    break
                j = k + 2
            i = k + 1
        i = line.find(delimiter, i)
        if i == -1:
            return None
        i += 1


def _delimited_records(path: Path, fmt: str, cfg: DataConfig,
                       columns: list[str] | None = None) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line, record) of a csv / tsv file with a header row, or with none when ``columns`` names
    its columns (``data.columns``). A stray quote never swallows the rows
    after it: with data.quoting ``quoted`` a quoted value may span lines (RFC 4180), but not when a
    line inside it (after its first line, before its last) splits into as many fields as the header:
    that line is a row of its own, taken in by a stray quote; ``multiline`` drops this check. A
    quote that does not close before the end of the file, or text after a closing quote, is an
    error in every mode."""
    delimiter = "," if fmt == "csv" else "\t"
    mode = quoting(cfg, fmt)
    with path.open(encoding=decoding(cfg.encoding), newline="") as fh:
        lines = fh.readlines()
    reader = csv.reader(lines, delimiter=delimiter, strict=True,
                        quoting=csv.QUOTE_NONE if mode == "none" else csv.QUOTE_MINIMAL)
    header: list[str] | None = list(columns) if columns else None
    what = "data.columns names" if columns else "the header has"

    def stray_quote(start: int, end: int | None) -> DataError:
        col = _open_quote(lines[start - 1], delimiter)
        assert col is not None  # a value runs past its line only inside a quote opened on it
        until = "the end of the file" if end is None else f"line {end}"
        return DataError(
            f"{path}:{start}: the quote (\") at column {col} opens a value that does not close on this line; "
            f"read on, the value would run to {until} and swallow the rows in between. {QUOTE_HINT}"
            + ("" if mode == "multiline" or end is None else " (data.quoting: multiline if the value really spans "
               "these lines)")
        )

    def looks_like_rows(start: int, end: int) -> bool:
        return header is not None and any(
            len(line.rstrip("\r\n").split(delimiter)) >= len(header) for line in lines[start : end - 1])

    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "end of data" in str(exc):
                raise stray_quote(start, None) from None
            if reader.line_num > start:
                raise stray_quote(start, reader.line_num) from None
            raise DataError(
                f"{path}:{reader.line_num}: malformed quoted value ({exc}): a value that starts with a quote "
                f"must end with it. {QUOTE_HINT}") from None
        if not row:
            continue  # a blank line
        if reader.line_num > start and mode == "quoted" and looks_like_rows(start, reader.line_num):
            raise stray_quote(start, reader.line_num)
        if mode == "none":
            for value in row:
                if _CSV_QUOTED.match(value):
                    raise DataError(
                        f"{path}:{start}: the value {value[:60]!r} looks csv-quoted (in quotes, with quotes "
                        f"doubled inside), but data.quoting is none, so the quotes would stay in the text; "
                        f"set data.quoting: quoted")
        if header is None:
            header = row
            continue
        if len(row) > len(header):
            fix = ("quote fields that contain the delimiter" if mode != "none" else
                   "a value contains a tab or the line has a tab too many")
            raise DataError(f"{path}:{start}: more fields than {what}; {fix}")
        if len(row) < len(header):
            raise DataError(
                f"{path}:{start}: fewer fields than {what} (no value for {header[len(row):]})")
        yield start, dict(zip(header, row))


def _check_encoding(path: Path, encoding: str) -> None:
    """DataError naming file:line of the first byte that is not valid ``encoding``, or a byte order
    mark that contradicts it (see :mod:`llmkd.formats.text`)."""
    decode(path.read_bytes(), encoding, str(path))


def compile_label_regex(pattern: str) -> re.Pattern[str]:
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
        if isinstance(raw, (list, dict)):  # never a class name "['B-PER', 'O']"
            raise DataError(
                f"{path}:{lineno}: field {cfg.label_field!r} is a {type(raw).__name__}, but a class label is one value; "
                "token tags (NER) are read from conll, or from parquet / datasets (a list of tags per row)")
        return [(base, text, raw)]
    if not isinstance(raw, list) or len(raw) != len(text):
        got = f"a list of {len(raw)}" if isinstance(raw, list) else type(raw).__name__
        raise DataError(
            f"{path}:{lineno}: field {cfg.text_field!r} is a list of {len(text)} texts, so field "
            f"{cfg.label_field!r} must be a list of as many labels (got {got})"
        )
    return [(f"{base}.{j}", t, r) for j, (t, r) in enumerate(zip(text, raw))]


def missing_file(path: Path, fmt: str) -> DataError:
    hint = (" (data.format datasets reads local folders: load a hub dataset once and save_to_disk it)"
            if fmt == "datasets" else "")
    return DataError(f"data file {path} does not exist; check data.train / data.test / data.dev{hint}")


def read_examples(path: str | Path, cfg: DataConfig, *, prefix: str = "") -> list[Example]:
    """Read one file into gold :class:`Example` objects with class-name labels."""
    path = Path(path)
    if not path.exists():
        raise missing_file(path, cfg.format)
    fmt = cfg.format if cfg.format != "auto" else _detect_format(path)
    if fmt in TABLE_FORMATS:  # parquet / datasets: classification or NER, see llmkd.data.tables
        from .tables import read_table

        return read_table(path, fmt, cfg, prefix.rstrip(":") or "train", prefix)
    if fmt in SEQ2SEQ_FORMATS:  # seq2seq: target strings, see read_split
        return read_split(path, cfg, prefix.rstrip(":") or "train")
    if fmt in ("conll", "seq_in_out"):  # NER: IOB2 tag tuples, see llmkd.formats.conll
        from ..formats.conll import read_tagged

        return read_tagged(path, fmt, encoding=cfg.encoding, label_map=cfg.label_map, prefix=prefix, keep=cfg.labels,
                           tag_column=cfg.tag_column)
    regex = compile_label_regex(cfg.label_regex) if cfg.label_regex else None
    out: list[Example] = []
    first_line: dict[str, int] = {}
    _check_encoding(path, cfg.encoding)
    for lineno, rec in _iter_records(path, fmt, cfg, prefix.rstrip(":") or "train"):
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
            if ex_id in first_line:
                raise DataError(
                    f"{path}:{lineno}: example id {ex_id!r} is used again (first at {path}:{first_line[ex_id]}); "
                    "every example needs its own id: change or remove one of the two 'id' values"
                )
            first_line[ex_id] = lineno
            label = label_of(str(raw).strip(), regex, cfg, f"{path}:{lineno}")
            out.append(Example(id=ex_id, text=text.strip(), label=label))
    if not out:
        what = "rows below the header" if fmt in ("csv", "tsv") else "non-blank lines"
        raise DataError(f"{path}: no examples found (the file is empty: it has no {what})")
    _reject_tagged_lines(out, path, fmt)
    return out


def label_of(raw_label: str, regex: re.Pattern[str] | None, cfg: DataConfig, where: str) -> str:
    """The class name of a raw label: ``data.label_regex``'s first group, then ``data.label_map``.
    An empty result is a DataError: every example needs a label."""
    if regex is not None:
        m = regex.search(raw_label)
        if not m:
            raise DataError(f"{where}: label {raw_label!r} does not match data.label_regex {cfg.label_regex!r}")
        group = m.group(1)
        if not group or not group.strip():
            how = "took no part in the match" if group is None else f"matched {group!r}"
            raise DataError(
                f"{where}: data.label_regex {cfg.label_regex!r} gives an empty label for {raw_label!r} (its first "
                f"group {how}); make the group match the label's characters, e.g. + instead of * or ?"
            )
        raw_label = group
    label = cfg.label_map.get(raw_label, raw_label)
    if not label.strip():
        raise DataError(f"{where}: data.label_map maps {raw_label!r} to an empty label; map it to a class name")
    return label


_TAG_WORD = re.compile(r"(O|[BIES]-\S+)")


def _reject_tagged_lines(examples: list[Example], path: Path, fmt: str) -> None:
    """DataError when 'classification' examples are the lines of a token-tagged (CoNLL) file: most
    texts are a few words ending in an IOB tag (``EU B-ORG`` read as label ``EU``, text ``B-ORG``)."""
    tagged = [e for e in examples if len(e.text.split()) <= 4 and _TAG_WORD.fullmatch(e.text.split()[-1])]
    if len(tagged) >= max(2, 0.8 * len(examples)):
        raise DataError(
            f"{path}: this looks like token-tagged NER data (CoNLL: one token and its tag per line), not "
            f"classification data read as {fmt}: {len(tagged)} of {len(examples)} texts end in an IOB tag, e.g. "
            f"{tagged[0].text!r} (label {tagged[0].label!r}); set data.format: conll and task.kind: ner"
        )


KIND_OF_FORMAT = {"conll": "ner", "seq_in_out": "ner", "brackets": "seq2seq", "slots": "seq2seq"}
"""data.format -> the task kind its examples are for (every other format: classification)."""

_WHAT = {
    "classification": "classification data (one class label per text)",
    "ner": "token-tagged NER data (one IOB tag per token)",
    "seq2seq": "seq2seq data (a target string per input: trees or slot sequences)",
}
_FORMATS_OF = {
    "classification": "jsonl, csv, tsv, label_text, parquet or datasets",
    "ner": "conll (a CoNLL column file), seq_in_out (a seq.in/seq.out folder), or parquet / datasets with a "
           "column of tag lists",
    "seq2seq": "brackets (task.target: tree) or slots (task.target: slots)",
}
_TARGET_FORMAT = {"tree": "brackets", "slots": "slots"}


def data_format(cfg: DataConfig) -> str:
    """data.format, or the format the train file's extension names when it is ``auto``."""
    return cfg.format if cfg.format != "auto" else _detect_format(Path(cfg.train))


def check_task_data(kind: str, target: str | None, cfg: DataConfig) -> None:
    """ConfigError when ``task.kind`` (and a seq2seq ``task.target``) does not fit the data format,
    naming the kind the data is for and the setting to change. Runs before any file is read."""
    fmt = data_format(cfg)
    if fmt in TABLE_FORMATS:
        _check_table_kind(kind, fmt, cfg)
        return
    data_kind = KIND_OF_FORMAT.get(fmt, "classification")
    how = f"data.format {fmt!r}" + (f" (from the extension of data.train {cfg.train})" if cfg.format == "auto" else "")
    if kind != data_kind:
        raise ConfigError(
            f"task.kind is {kind!r}, but {how} is {_WHAT[data_kind]}, not {_WHAT[kind]}; set task.kind: {data_kind}, "
            f"or give {kind} data (data.format: {_FORMATS_OF[kind]})"
        )
    if kind == "seq2seq" and target is not None and _TARGET_FORMAT[target] != fmt:
        other = next(t for t, f in _TARGET_FORMAT.items() if f == fmt)
        raise ConfigError(
            f"task.target is {target!r}, which needs data.format: {_TARGET_FORMAT[target]}, but {how} is given; "
            f"set task.target: {other}, or give {_TARGET_FORMAT[target]} data"
        )


def _check_table_kind(kind: str, fmt: str, cfg: DataConfig) -> None:
    """check_task_data for parquet / datasets: the label column's type (read from the train
    source's schema) says classification (a value per row) or NER (a list of tags per row)."""
    from .tables import table_kind

    if kind == "seq2seq":
        raise ConfigError(f"task.kind is 'seq2seq', but data.format {fmt!r} is read as classification or NER data; "
                          "seq2seq data is read from brackets (task.target: tree) or slots (task.target: slots) files")
    data_kind = table_kind(cfg, fmt)
    if kind == data_kind:
        return
    if data_kind == "classification":
        raise ConfigError(
            f"task.kind is 'ner', but the label column {cfg.label_field!r} of data.train {cfg.train} holds one value "
            f"per row: classification data; NER data needs a column of tag lists (e.g. ner_tags: [B-PER, I-PER, O]): "
            f"set data.label_field to it, or set task.kind: classification")
    raise ConfigError(
        f"task.kind is 'classification', but the label column {cfg.label_field!r} of data.train {cfg.train} holds a "
        f"list per row: token-tagged NER data; set task.kind: ner, or set data.label_field to a column of class labels")


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
