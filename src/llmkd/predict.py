"""Predict with a student: from a run folder (its best method, or one named) or an exported folder.

Input (:func:`read_inputs`): jsonl, csv or tsv records read by :mod:`llmkd.data.readers` (the
same record readers and ``data.*`` field mapping as training data: ``text_field``, quoting,
encoding; an ``id`` field is kept), or plain text, one input per non-blank line. ``-`` reads
standard input (jsonl when its first non-blank line starts with ``{``, else plain text). A record
without the text field, or with an empty one, is a :class:`~llmkd.errors.DataError` naming
``file:line``.

Output (:func:`prediction_rows`, :func:`write_rows`): per input its id and text, and the label
with every label's probability (classifier), the entity spans (tagger: word indices, characters
in the whitespace-joined words, type, text), or one structure and its confidence (span parser: a
bracketed tree over the input's whitespace words; seq2seq: the repaired output, ``null`` where it
could not be repaired). jsonl or csv; a file is written whole to
``NAME.tmp`` and renamed, so an error never leaves a half-written output.
Not handled: ONNX for span-parser and seq2seq students, GPU batching knobs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import ConfigError, DataError
from .types import Unlabeled

FORMATS = ("jsonl", "csv", "tsv", "text")
PIPELINE_KINDS = ("classifier", "tagger")  # the others (span_parser, seq2seq) predict one structure per input


def load_predictor(model_or_run: str | Path, *, method: str | None = None, onnx: str | None = None,
                   threads: int | None = None) -> tuple[Any, str]:
    """(student, what it is) for a run folder or an exported folder. ``onnx``: ``fp32`` / ``int8``
    predicts through the exported ONNX file instead of torch (exported folders only)."""
    from .build import build_task
    from .config import TaskConfig
    from .export import choose_method, find_student, load_student
    from .students.checkpoint import read_meta

    path = Path(model_or_run)
    if (path / "llmkd.json").exists():  # an exported folder
        info = json.loads((path / "llmkd.json").read_text())
        what = f"exported {info['kind']} {path} ({info['method']} of {info['run']})"
        if info["kind"] not in PIPELINE_KINDS:
            if onnx:
                raise ConfigError(f"--onnx: {path} is a {info['kind']} student, which has no ONNX export; predict "
                                  "without --onnx")
            task = build_task(TaskConfig.model_validate(info["task"]), info["labels"]) if info.get("task") else None
            return load_student(path, threads=threads, task=task), what
        from .students.classifier import ClassifierStudent
        from .students.tagger import TaggerStudent

        cls = ClassifierStudent if info["kind"] == "classifier" else TaggerStudent
        student = cls(model=str(path), labels=info["labels"], max_length=info["max_length"], device="cpu",
                      threads=threads)
        if onnx:
            from .onnx_export import FILES, ONNX_DIR, onnx_student, require_onnx

            require_onnx()
            file = path / ONNX_DIR / FILES[onnx]
            if not file.exists():
                raise ConfigError(f"--onnx {onnx}: {file} does not exist; export with `llmkd export RUN --onnx"
                                  f"{' --quantize int8' if onnx == 'int8' else ''}`")
            student, what = onnx_student(student, file, threads), f"{what}, ONNX {onnx}"
        return student, what
    if (path / "config.yaml").exists():
        from .config import run_config

        if onnx:
            raise ConfigError("--onnx predicts with an exported folder's ONNX file: run `llmkd export RUN --to DIR "
                              "--onnx` and predict with DIR")
        why = f"method {method}"
        if method is None:
            method, why = choose_method(path)
        folder = find_student(path, method)
        task = build_task(run_config(path).task, read_meta(folder)["labels"])
        return load_student(folder, threads=threads, task=task), why
    raise ConfigError(f"{path} is neither a run folder (config.yaml) nor an exported model (llmkd.json); give the "
                      "folder `llmkd run` or `llmkd export` wrote")


def _stdin_to_file(tmpdir: Path) -> tuple[Path, str]:
    data = sys.stdin.read()
    first = next((line for line in data.splitlines() if line.strip()), "")
    fmt = "jsonl" if first.lstrip().startswith("{") else "text"
    f = tmpdir / f"stdin.{'jsonl' if fmt == 'jsonl' else 'txt'}"
    f.write_text(data, encoding="utf-8")
    return f, fmt


def input_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ConfigError(f"--input-format must be one of auto, {', '.join(FORMATS)}. Got {fmt!r}.")
        return fmt
    return {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(
        path.suffix.lower(), "text")


def read_inputs(source: str | Path, *, text_field: str = "text", fmt: str = "auto",
                encoding: str = "utf-8") -> list[Unlabeled]:
    """The inputs of ``source`` (a file or ``-``) as :class:`Unlabeled` (id, text)."""
    if str(source) == "-":
        with tempfile.TemporaryDirectory() as d:
            path, detected = _stdin_to_file(Path(d))
            return _read(path, fmt if fmt != "auto" else detected, text_field, encoding, "<stdin>")
    path = Path(source)
    if not path.exists():
        raise DataError(f"input file {path} does not exist")
    return _read(path, input_format(path, fmt), text_field, encoding, str(path))


def _read(path: Path, fmt: str, text_field: str, encoding: str, name: str) -> list[Unlabeled]:
    out: list[Unlabeled] = []
    if fmt == "text":
        with path.open(encoding=encoding) as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    out.append(Unlabeled(f"line{lineno}", line.strip()))
        return out
    from .config import DataConfig
    from .data.readers import _check_encoding, _iter_records

    cfg = DataConfig(train=str(path), test=str(path), format=fmt, text_field=text_field, encoding=encoding)
    _check_encoding(path, encoding)
    try:
        for lineno, rec in _iter_records(path, fmt, cfg, "test"):
            if text_field not in rec:
                raise DataError(f"{name}:{lineno}: field {text_field!r} not found; fields are {sorted(rec)}; pass "
                                "--text-field")
            text = rec[text_field]
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{name}:{lineno}: field {text_field!r} must be a non-empty string, got {text!r}")
            out.append(Unlabeled(str(rec.get("id", f"line{lineno}")), text.strip()))
    except DataError as exc:  # the readers name the temporary copy of stdin by its path
        raise DataError(str(exc).replace(str(path), name)) from None
    return out


def prediction_rows(student: Any, items: Sequence[Unlabeled], *, batch_size: int = 64,
                    progress: bool = False) -> list[dict[str, Any]]:
    """One output row per input, predicted in batches of ``batch_size`` (a tqdm bar when ``progress``)."""
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    with tqdm(total=len(items), desc="predicting", unit="ex", disable=not progress) as bar:
        for s in range(0, len(items), batch_size):
            chunk = items[s : s + batch_size]
            for item, pred in zip(chunk, student.predict(chunk)):
                rows.append(_row(item, pred))
            bar.update(len(chunk))
    return rows


def _row(item: Unlabeled, pred: Any) -> dict[str, Any]:
    spans = getattr(pred, "spans", None)
    if spans is None and set(pred.probs) <= {pred.label}:  # a parser / seq2seq output: one structure, its confidence
        return {"id": item.id, "text": item.text, "label": pred.label, "confidence": pred.probs.get(pred.label)}
    if spans is None:
        return {"id": item.id, "text": item.text, "label": pred.label,
                "probs": {k: round(v, 6) for k, v in pred.probs.items()}}
    words = item.text.split()
    starts = word_starts(words)
    return {"id": item.id, "text": item.text, "tags": list(pred.label),
            "spans": [{"start": s.start, "end": s.end, "char_start": starts[s.start],
                       "char_end": starts[s.end - 1] + len(words[s.end - 1]), "type": s.type, "text": s.text}
                      for s in spans]}


def word_starts(words: Sequence[str]) -> list[int]:
    """The character offset of each word in ``" ".join(words)`` (where NER spans are placed)."""
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    return starts


def render(rows: Iterable[dict[str, Any]], fmt: str) -> str:
    rows = list(rows)
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if fmt != "csv":
        raise ConfigError(f"--format must be jsonl or csv. Got {fmt!r}.")
    buf = io.StringIO()
    if rows and "confidence" in rows[0]:
        cols, flat = ["id", "text", "label", "confidence"], rows
    elif rows and "spans" in rows[0]:
        cols = ["id", "text", "spans"]
        flat = [{"id": r["id"], "text": r["text"], "spans": json.dumps(r["spans"], ensure_ascii=False)} for r in rows]
    else:
        labels = list(rows[0]["probs"]) if rows else []
        cols = ["id", "text", "label"] + [f"prob_{lab}" for lab in labels]
        flat = [{"id": r["id"], "text": r["text"], "label": r["label"],
                 **{f"prob_{k}": v for k, v in r["probs"].items()}} for r in rows]
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(flat)
    return buf.getvalue()


def write_rows(rows: Sequence[dict[str, Any]], output: str | Path | None, fmt: str) -> None:
    """Write ``rows`` to ``output`` (temporary file, then renamed) or to standard output."""
    text = render(rows, fmt)
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        return
    out = Path(output)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
