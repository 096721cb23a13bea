"""Human review of a run's pool labels: ``llmkd review export`` and ``llmkd review import``.

1. :func:`export_review` picks the pool items most worth a human look (:func:`select_for_review`):
   the teacher's abstentions first, then the items where the run's student disagrees with the
   teacher, then the rest; within each group the lowest *agreement* first, where agreement is the
   teacher's confidence in its label times the student's probability of that label (the factors
   that are known). It writes them in a labeling tool's import format with the teacher's label as
   the pre-annotation (:data:`FORMATS`: Label Studio tasks with ``predictions``, Argilla v2
   records with ``suggestions``, or JSON Lines).
2. A person corrects them in the tool and exports the result.
3. :func:`import_review` reads that export, checks every label against the run's pool and label
   set, and adds them to ``RUN_DIR/review/human_labels.jsonl`` (an item imported again takes its
   newest label; a run that trained on human labels starts from those, so rounds add up).
4. A run with ``data.human_labels`` set to that file (:func:`read_human_labels`, called by the
   build step) trains on the human label of those pool items in place of the teacher's
   (:func:`with_human_labels`, applied by :meth:`llmkd.methods.RunContext.label`): provenance
   ``source: human``, stage ``human-review``, the teacher's answer kept under ``meta.teacher``.
   The teacher is still asked (its answers come from the cache, which is never changed), and the
   report counts the human labels with the other gold labels (:func:`gold_budget`).

Supported: classification (Label Studio ``Choices``, Argilla ``LabelQuestion``, JSONL ``label``)
and NER (Label Studio ``Labels`` spans over the text, Argilla ``SpanQuestion`` spans, JSONL IOB2
tags); a span that covers part of a word takes the whole word. Not handled: seq2seq tasks (trees,
slots: no span or choice form in these tools), adjudication between annotators (an item whose
submitted answers differ is left out and counted), Argilla v1 and Label Studio CSV / TSV exports.
MCKD's later stages relabel the pool with their students, human-labeled items included.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .diagnostics import COLLAPSE_SHARE
from .errors import ConfigError, DataError, StateError
from .io import read_jsonl, write_json, write_jsonl
from .types import TeacherLabel

log = logging.getLogger(__name__)

FORMATS = ("labelstudio", "argilla", "jsonl")
STRATEGIES = ("uncertain", "confidence", "random")
STAGE = "human-review"
HUMAN_FILE = Path("review") / "human_labels.jsonl"
CONTROL = "label"  # the Label Studio control / Argilla question name
FIELD = "text"  # the Label Studio object / Argilla field name


# ---- choosing what to review ------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewItem:
    """One pool item to review: the teacher's label (``None``: it abstained) and confidence, the
    student's label, their ``agreement`` (teacher confidence x the student's probability of the
    teacher's label; ``None`` where neither is known) and why it was picked."""

    id: str
    text: str
    teacher_label: Any
    teacher_confidence: float | None
    student_label: Any = None
    agreement: float | None = None
    reasons: tuple[str, ...] = ()
    error: str = ""


def _student_support(teacher_label: Any, pred: Any) -> float:
    """The student's probability of ``teacher_label``: its class probability (classifier), the
    smallest per-word probability of the teacher's tags (tagger), else 1 / 0 by equality."""
    probs = getattr(pred, "probs", None)
    if isinstance(teacher_label, str) and probs:
        return float(probs.get(teacher_label, 0.0))
    token_probs = getattr(pred, "token_probs", ())
    if isinstance(teacher_label, tuple) and token_probs and len(token_probs) == len(teacher_label):
        return float(min((tp.get(tag, 0.0) for tp, tag in zip(token_probs, teacher_label)), default=1.0))
    return 1.0 if pred.label == teacher_label else 0.0


def select_for_review(labels: Sequence[TeacherLabel], texts: Mapping[str, str],
                      student_predictions: Mapping[str, Any] | None = None, *, n: int,
                      strategy: str = "uncertain", seed: int = 0, exclude: frozenset[str] | set[str] = frozenset(),
                      ) -> list[ReviewItem]:
    """The ``n`` pool items most worth a human look (see the module docstring); with
    ``strategy="confidence"`` by the teacher alone (abstained, then the lowest confidence), with
    ``strategy="random"`` a seeded random sample (an unbiased check of the teacher).
    ``student_predictions``: the run's student on the pool, by id (``None``: the teacher's signals
    only). Items in ``exclude`` (labeled by a person already) are never picked; ties are broken
    by a seeded shuffle."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"review strategy must be one of {', '.join(STRATEGIES)}. Got {strategy!r}.")
    if n < 1:
        raise ConfigError(f"review --n must be an int >= 1. Got {n}.")
    preds = student_predictions or {}
    candidates = [lab for lab in labels if lab.example_id not in exclude and lab.example_id in texts]
    confs = sorted(lab.confidence for lab in candidates if not lab.abstained and lab.confidence is not None)
    median = confs[len(confs) // 2] if confs else None
    items = []
    for lab in candidates:
        pred = preds.get(lab.example_id)
        reasons = []
        support = None
        if lab.abstained:
            reasons.append("abstained")
        elif pred is not None:
            support = _student_support(lab.label, pred)
            if pred.label != lab.label:
                reasons.append("disagree")
        if not lab.abstained and lab.confidence is not None and median is not None and lab.confidence < median:
            reasons.append("low_confidence")
        factors = [f for f in (None if lab.abstained else lab.confidence, support) if f is not None]
        agreement = 0.0 if lab.abstained else (math.prod(factors) if factors else None)
        items.append(ReviewItem(lab.example_id, texts[lab.example_id], None if lab.abstained else lab.label,
                                None if lab.abstained else lab.confidence, None if pred is None else pred.label,
                                agreement, tuple(reasons), lab.error))
    rng = random.Random(seed)
    rng.shuffle(items)
    if strategy == "random":
        return items[:n]
    if strategy == "confidence":  # the teacher's signals only: abstained, then its least confident labels
        items.sort(key=lambda it: (it.teacher_label is not None,
                                   1.0 if it.teacher_confidence is None else it.teacher_confidence))
        return items[:n]
    group = {"abstained": 0, "disagree": 1}
    items.sort(key=lambda it: (min((group[r] for r in it.reasons if r in group), default=2),
                               1.0 if it.agreement is None else it.agreement))
    return items[:n]


# ---- the run folder ---------------------------------------------------------------------------


@dataclass
class RunView:
    """What review needs of a finished run: its config, pool, task and the teacher's pool labels."""

    run_dir: Path
    cfg: Any
    pool: tuple[Any, ...]
    task: Any
    labels: list[TeacherLabel]

    @property
    def texts(self) -> dict[str, str]:
        return {u.id: u.text for u in self.pool}


def open_run(run_dir: str | Path) -> RunView:
    """The run at ``run_dir`` (its config.yaml; the pool drawn again from its data and seed). The
    teacher's pool labels come from ``vanilla/labels.jsonl`` (``llmkd label`` / the vanilla
    method), else from the first finished method's ``labels.jsonl`` that holds pool items."""
    from .build import build_task
    from .config import run_config
    from .data import check_task_data, make_splits

    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    check_task_data(cfg.task.kind, cfg.task.target, cfg.data)
    if cfg.task.kind == "seq2seq":
        raise ConfigError(f"{run_dir}: llmkd review supports classification and ner runs; this run's task.kind is "
                          "seq2seq (trees / slots have no choice or span form in Label Studio or Argilla)")
    splits, _ = make_splits(cfg.data, cfg.seed)  # the vault stays unread: review never sees the pool's gold
    task = build_task(cfg.task, splits.labels)
    return RunView(run_dir, cfg, splits.pool, task, _pool_labels(run_dir, {u.id for u in splits.pool}))


def _pool_labels(run_dir: Path, pool_ids: set[str]) -> list[TeacherLabel]:
    candidates = [run_dir / "vanilla" / "labels.jsonl"] + sorted(run_dir.glob("*/labels.jsonl"))
    for path in candidates:
        if not path.exists():
            continue
        seen: dict[str, TeacherLabel] = {}
        for row in read_jsonl(path):
            lab = TeacherLabel.from_dict(row)
            if lab.example_id in pool_ids and lab.source in ("teacher", "human") and lab.example_id not in seen:
                seen[lab.example_id] = lab
        if seen:
            return list(seen.values())
    raise StateError(f"{run_dir} holds no teacher labels of its pool (no vanilla/labels.jsonl, nor a method's "
                     "labels.jsonl with pool items); run `llmkd label CONFIG` or `llmkd run CONFIG` first")


def student_predictions(view: RunView, method: str) -> dict[str, Any]:
    """``method``'s final student (:func:`llmkd.export.find_student`) on the run's pool, by id."""
    from .build import make_student_factory
    from .export import find_student

    path = find_student(view.run_dir, method)
    _, loader = make_student_factory(view.cfg.student, view.task.labels, task=view.task)
    student = loader(path)
    return {u.id: p for u, p in zip(view.pool, student.predict(list(view.pool)))}


def human_labels_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / HUMAN_FILE


def _earlier_human(view: RunView) -> dict[str, dict[str, Any]]:
    """The human labels the run has: its own ``review/human_labels.jsonl``, else the file its
    config trained on (``data.human_labels``: a reviewed run carries the earlier rounds on)."""
    path = human_labels_path(view.run_dir)
    if not path.exists() and view.cfg.data.human_labels and Path(view.cfg.data.human_labels).exists():
        path = Path(view.cfg.data.human_labels)
    return {row["id"]: row for row in read_jsonl(path)} if path.exists() else {}


# ---- export -----------------------------------------------------------------------------------


def _word_offsets(text: str) -> list[tuple[int, int]]:
    """Character (start, end) of every whitespace-separated word of ``text``."""
    out, pos = [], 0
    for w in text.split():
        start = text.index(w, pos)
        out.append((start, start + len(w)))
        pos = start + len(w)
    return out


def _char_spans(text: str, tags: Sequence[str]) -> list[dict[str, Any]]:
    """The entity spans of IOB2 ``tags`` over ``text``'s words, in characters."""
    from .formats.conll import spans_from_tags

    offsets = _word_offsets(text)
    return [{"start": offsets[s.start][0], "end": offsets[s.end - 1][1], "label": s.type,
             "text": text[offsets[s.start][0]:offsets[s.end - 1][1]]} for s in spans_from_tags(tags)]


def _labelstudio_task(it: ReviewItem, ner: bool, model: str) -> dict[str, Any]:
    data = {FIELD: it.text, "llmkd_id": it.id, "teacher_label": _show(it.teacher_label),
            "teacher_confidence": it.teacher_confidence, "student_label": _show(it.student_label),
            "agreement": it.agreement, "reasons": ", ".join(it.reasons)}
    task: dict[str, Any] = {"data": data}
    if it.teacher_label is None:
        return task  # abstained: nothing to pre-annotate
    if ner:
        result = [{"id": f"t{i}", "from_name": CONTROL, "to_name": FIELD, "type": "labels",
                   "value": {"start": s["start"], "end": s["end"], "text": s["text"], "labels": [s["label"]]}}
                  for i, s in enumerate(_char_spans(it.text, it.teacher_label))]
    else:
        result = [{"id": "t0", "from_name": CONTROL, "to_name": FIELD, "type": "choices",
                   "value": {"choices": [it.teacher_label]}}]
    pred: dict[str, Any] = {"model_version": model, "result": result}
    if it.teacher_confidence is not None:
        pred["score"] = it.teacher_confidence
    task["predictions"] = [pred]
    return task


def labelstudio_config(labels: Sequence[str], ner: bool) -> str:
    """The Label Studio labeling config (XML) the exported tasks fit."""
    from xml.sax.saxutils import quoteattr

    if ner:
        body = "".join(f"    <Label value={quoteattr(x)}/>\n" for x in labels)
        control = f'  <Labels name="{CONTROL}" toName="{FIELD}">\n{body}  </Labels>\n'
    else:
        body = "".join(f"    <Choice value={quoteattr(x)}/>\n" for x in labels)
        control = f'  <Choices name="{CONTROL}" toName="{FIELD}" choice="single" showInLine="true">\n{body}  </Choices>\n'
    info = '  <Header value="teacher: $teacher_label ($teacher_confidence), student: $student_label; $reasons"/>\n'
    return f'<View>\n{info}  <Text name="{FIELD}" value="${FIELD}"/>\n{control}</View>\n'


def _argilla_record(it: ReviewItem, ner: bool, model: str) -> dict[str, Any]:
    metadata = {"teacher_label": _show(it.teacher_label), "teacher_confidence": it.teacher_confidence,
                "student_label": _show(it.student_label), "agreement": it.agreement, "reasons": ", ".join(it.reasons)}
    suggestions: dict[str, Any] = {}
    if it.teacher_label is not None:
        value = ([{"start": s["start"], "end": s["end"], "label": s["label"]} for s in _char_spans(it.text, it.teacher_label)]
                 if ner else it.teacher_label)
        suggestions[CONTROL] = {"value": value, "score": it.teacher_confidence, "agent": model}
    return {"id": it.id, "fields": {FIELD: it.text}, "metadata": metadata, "suggestions": suggestions,
            "responses": {}, "vectors": {}, "_server_id": None}


def argilla_settings(labels: Sequence[str], ner: bool) -> str:
    """The Python lines that create the Argilla v2 dataset the exported records fit."""
    question = (f"rg.SpanQuestion(name={CONTROL!r}, field={FIELD!r}, labels={list(labels)!r})" if ner
                else f"rg.LabelQuestion(name={CONTROL!r}, labels={list(labels)!r})")
    return ("import argilla as rg\n\n"
            "client = rg.Argilla(api_url=..., api_key=...)\n"
            f"settings = rg.Settings(fields=[rg.TextField(name={FIELD!r})], questions=[{question}],\n"
            "                       allow_extra_metadata=True)\n"
            "dataset = rg.Dataset(name=\"llmkd-review\", settings=settings, client=client)\n"
            "dataset.create()\n"
            "dataset.records.from_json(RECORDS_FILE)  # the file llmkd review export wrote\n")


def _jsonl_row(it: ReviewItem, ner: bool) -> dict[str, Any]:
    row = {"id": it.id, "text": it.text, "label": _show(it.teacher_label), "teacher_label": _show(it.teacher_label),
           "teacher_confidence": it.teacher_confidence, "student_label": _show(it.student_label),
           "agreement": it.agreement, "reasons": list(it.reasons)}
    if ner:
        row["words"] = it.text.split()
    return row


def _show(label: Any) -> Any:
    return list(label) if isinstance(label, tuple) else label


@dataclass
class ExportReport:
    path: Path
    format: str
    items: list[ReviewItem]
    extra_files: list[Path] = field(default_factory=list)
    student: str = ""
    excluded: int = 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for it in self.items:
            for r in it.reasons or ("none",):
                out[r] = out.get(r, 0) + 1
        return out


def export_review(run_dir: str | Path, out: str | Path, *, fmt: str, n: int = 100, method: str | None = None,
                  strategy: str = "uncertain", seed: int = 0) -> ExportReport:
    """Pick ``n`` pool items of the run (:func:`select_for_review`) and write them to ``out`` in
    ``fmt`` (:data:`FORMATS`). ``method``: whose student gives the disagreement signal (default:
    ``vanilla`` where it finished, else none: teacher signals only). Items a person already
    labeled (``RUN_DIR/review/human_labels.jsonl``) are left out. Label Studio also gets its
    labeling config beside ``out`` (``NAME.config.xml``)."""
    if fmt not in FORMATS:
        raise ConfigError(f"review --format must be one of {', '.join(FORMATS)}. Got {fmt!r}.")
    view = open_run(run_dir)
    ner = view.task.kind == "ner"
    preds = None
    if method is None and (view.run_dir / "vanilla" / "result.json").exists():
        method = "vanilla"
    if method is not None:
        preds = student_predictions(view, method)
    else:
        log.info("%s: no student to compare with (no finished vanilla; name one with --method): picking by the "
                 "teacher's abstentions and confidence only", view.run_dir)
    if strategy == "uncertain" and preds and not ner:
        top = max(Counter(p.label for p in preds.values()).values())
        if top >= COLLAPSE_SHARE * len(preds):  # a collapsed student agrees with the teacher's majority class
            log.warning("%s: %s's student predicts one class for %d of its %d pool items: its disagreement with the "
                        "teacher says little about where the teacher is wrong (docs/results/review.md: 0 of 50 "
                        "picked items were teacher errors on such a run). Use --strategy confidence", view.run_dir,
                        method, top, len(preds))
    done = set(_earlier_human(view)) | {lab.example_id for lab in view.labels if lab.source == "human"}
    items = select_for_review(view.labels, view.texts, preds, n=n, strategy=strategy, seed=seed,
                              exclude=frozenset(done))
    if not items:
        raise StateError(f"{view.run_dir}: no pool item is left to review (all {len(done)} have human labels)")
    model = f"llmkd teacher {view.cfg.teacher.model}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra: list[Path] = []
    if fmt == "jsonl":
        write_jsonl(out, (_jsonl_row(it, ner) for it in items))
    elif fmt == "labelstudio":
        write_json(out, [_labelstudio_task(it, ner, model) for it in items])
        xml = out.with_name(out.stem + ".config.xml")
        xml.write_text(labelstudio_config(view.task.labels, ner), encoding="utf-8")
        extra.append(xml)
    else:
        write_json(out, [_argilla_record(it, ner, model) for it in items])
        script = out.with_name(out.stem + ".argilla.py")
        script.write_text(argilla_settings(view.task.labels, ner).replace("RECORDS_FILE", repr(str(out))),
                          encoding="utf-8")
        extra.append(script)
    return ExportReport(out, fmt, items, extra, method or "", len(done))


# ---- import -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One person's answer read from a tool's export: the pool id, the raw answer (a class name,
    character spans or tags) and who gave it."""

    id: str
    value: Any
    annotator: str = ""
    kind: str = "label"  # "label": a class or IOB2 tags; "spans": character spans


def detect_format(path: Path, data: Any) -> str:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    rows = data if isinstance(data, list) else []
    first = next((r for r in rows if isinstance(r, dict)), None)
    if first is None:
        raise DataError(f"{path}: expected a JSON list of Label Studio tasks or Argilla records (or a .jsonl file); "
                        f"found {'an empty list' if rows == [] else type(data).__name__}")
    if "fields" in first and ("responses" in first or "suggestions" in first):
        return "argilla"
    if "data" in first or "annotations" in first or "llmkd_id" in first:
        return "labelstudio"
    raise DataError(f"{path}: cannot tell the format of its first item (keys {sorted(first)}); give --format "
                    f"({', '.join(FORMATS)})")


def _labelstudio_answers(path: Path, rows: list[Any], skipped: dict[str, int], ner: bool) -> list[Answer]:
    """Label Studio's JSON export (tasks with ``annotations``) or JSON_MIN (flat rows)."""
    out = []
    for i, task in enumerate(rows):
        if not isinstance(task, dict):
            raise DataError(f"{path}: item {i} is not a JSON object")
        data = task.get("data", task)
        ex_id = data.get("llmkd_id")
        if ex_id is None:
            raise DataError(f"{path}: task {task.get('id', i)} has no data.llmkd_id: it was not exported by "
                            "`llmkd review export` (keep the llmkd_id field when you import tasks)")
        if "annotations" not in task:  # JSON_MIN: the control's value sits under its name
            if CONTROL not in task or task[CONTROL] in (None, "", []):
                skipped["not annotated"] = skipped.get("not annotated", 0) + 1
                continue
            value = task[CONTROL]
            if isinstance(value, list) and value and isinstance(value[0], dict):
                spans = [{"start": s["start"], "end": s["end"], "label": (s.get("labels") or [None])[0]} for s in value]
                out.append(Answer(str(ex_id), spans, str(task.get("annotator", "")), "spans"))
            else:
                out.append(Answer(str(ex_id), value if isinstance(value, str) else (value or {}).get("choices", value),
                                  str(task.get("annotator", ""))))
            continue
        done = [a for a in task["annotations"] if not a.get("was_cancelled")]
        if not done:
            skipped["not annotated"] = skipped.get("not annotated", 0) + 1
            continue
        answers = []
        for ann in done:
            res = [r for r in ann.get("result", []) if r.get("from_name") == CONTROL]
            who = str(ann.get("completed_by", ""))
            if any(r.get("type") == "choices" for r in res):
                choices = [c for r in res for c in r.get("value", {}).get("choices", [])]
                answers.append(Answer(str(ex_id), choices[0] if len(choices) == 1 else choices, who))
            elif not res and not ner:
                skipped["empty annotation"] = skipped.get("empty annotation", 0) + 1
            elif task_is_spans(res) or not res:  # NER: no span is an answer (no entities)
                spans = [{"start": r["value"]["start"], "end": r["value"]["end"],
                          "label": (r["value"].get("labels") or [None])[0]} for r in res]
                answers.append(Answer(str(ex_id), spans, who, "spans"))
        out += _agreed(answers, skipped)
    return out


def task_is_spans(result: list[dict[str, Any]]) -> bool:
    return bool(result) and all(r.get("type") == "labels" for r in result)


def _argilla_answers(path: Path, rows: list[Any], skipped: dict[str, int], ner: bool) -> list[Answer]:
    """Argilla v2 records (``dataset.records.to_json``): submitted responses to the question."""
    out = []
    for i, rec in enumerate(rows):
        if not isinstance(rec, dict) or "id" not in rec:
            raise DataError(f"{path}: record {i} has no 'id' (the pool id `llmkd review export` gave it)")
        responses = [r for r in (rec.get("responses") or {}).get(CONTROL, [])
                     if r.get("status", "submitted") == "submitted"]
        if not responses:
            skipped["not annotated"] = skipped.get("not annotated", 0) + 1
            continue
        answers = [Answer(str(rec["id"]), r.get("value"), str(r.get("user_id", "")), "spans" if ner else "label")
                   for r in responses]
        out += _agreed(answers, skipped)
    return out


def _agreed(answers: list[Answer], skipped: dict[str, int]) -> list[Answer]:
    """The item's answer where every person gave the same one; none (counted) where they differ."""
    if not answers:
        return []
    keys = {json.dumps(_canon(a.value), sort_keys=True) for a in answers}
    if len(keys) > 1:
        skipped["annotators disagree"] = skipped.get("annotators disagree", 0) + 1
        return []
    return [Answer(answers[0].id, answers[0].value, ",".join(sorted({a.annotator for a in answers if a.annotator})),
                   answers[0].kind)]


def _canon(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return sorted((v.get("start"), v.get("end"), v.get("label")) for v in value)
    return value


def _user_json(path: Path) -> Any:
    """A labeling tool's JSON export: a :class:`DataError` naming where it breaks."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); give the tool's JSON "
                        "export, or a .jsonl file of rows for --format jsonl") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 at byte {exc.start}") from None


def _user_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line: a :class:`DataError` naming file:line."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one "
                            "object, e.g. {\"id\": \"train:12\", \"label\": \"positive\"}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        rows.append((n, row))
    return rows


def _jsonl_answers(path: Path, skipped: dict[str, int]) -> list[Answer]:
    out = []
    for _, row in _user_jsonl(path):
        if "id" not in row or "label" not in row:
            raise DataError(f"{path}: every line needs 'id' and 'label' (the rows `llmkd review export --format "
                            f"jsonl` wrote); found keys {sorted(row)}")
        if row["label"] is None:
            skipped["no label"] = skipped.get("no label", 0) + 1
            continue
        out.append(Answer(str(row["id"]), row["label"], str(row.get("annotator", ""))))
    return out


def _to_label(ans: Answer, text: str, task: Any, where: str) -> Any:
    """The llmkd label of an answer (a class name, or IOB2 tags over ``text``'s words), checked."""
    types = list(task.labels)
    if task.kind != "ner":
        value = ans.value[0] if isinstance(ans.value, list) and len(ans.value) == 1 else ans.value
        if not isinstance(value, str) or value not in types:
            raise DataError(f"{where}: label {value!r} is not one of the run's labels {types}")
        return value
    n = len(text.split())
    if ans.kind == "spans":
        from .formats.conll import tags_from_spans
        from .types import Span

        offsets = _word_offsets(text)
        spans = []
        for s in ans.value or []:
            if s.get("label") not in types:
                raise DataError(f"{where}: entity type {s.get('label')!r} is not one of the run's types {types}")
            covered = [i for i, (a, b) in enumerate(offsets) if a < s["end"] and s["start"] < b]
            if not covered:
                raise DataError(f"{where}: the span [{s['start']}, {s['end']}) covers no word of the text")
            spans.append(Span(covered[0], covered[-1] + 1, s["label"]))
        try:
            return tags_from_spans(n, sorted(spans, key=lambda s: s.start))
        except ValueError as exc:
            raise DataError(f"{where}: {exc}; give each word one entity at most") from None
    from .formats.conll import split_tag, to_iob2

    tags = ans.value
    if not isinstance(tags, list) or len(tags) != n:
        raise DataError(f"{where}: 'label' must be a list of {n} IOB2 tags, one per word of the text "
                        f"(got {tags!r})")
    try:
        bad = [t for t in tags if split_tag(t)[1] not in (None, *types)]
        if bad:
            raise ValueError(f"tag {bad[0]!r} names a type that is not one of the run's types {types}")
        return to_iob2(tags)
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from None


@dataclass
class ImportReport:
    path: Path
    format: str
    human_file: Path
    added: int
    changed: int
    confirmed: int
    replaced: int
    total: int
    skipped: dict[str, int]


def import_review(path: str | Path, run_dir: str | Path, *, fmt: str = "auto") -> ImportReport:
    """Read a labeling tool's export of :func:`export_review`'s items and add the answers to
    ``RUN_DIR/review/human_labels.jsonl`` (written whole, then renamed). Every id must be a pool
    item of the run and every label one of its classes / entity types; a bad one is a
    :class:`DataError` naming it, and nothing is written. Unanswered, cancelled and disputed items
    are skipped and counted."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"review file {path} does not exist")
    if fmt not in ("auto", *FORMATS):
        raise ConfigError(f"review import --format must be auto or one of {', '.join(FORMATS)}. Got {fmt!r}.")
    view = open_run(run_dir)
    skipped: dict[str, int] = {}
    data = None if fmt == "jsonl" or path.suffix.lower() in (".jsonl", ".ndjson") else _user_json(path)
    if fmt == "auto":
        fmt = detect_format(path, data)
    if fmt != "jsonl" and not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {fmt} items, found {type(data).__name__}")
    ner = view.task.kind == "ner"
    answers = (_jsonl_answers(path, skipped) if fmt == "jsonl" else
               _labelstudio_answers(path, data, skipped, ner) if fmt == "labelstudio" else
               _argilla_answers(path, data, skipped, ner))
    texts = view.texts
    teacher = {lab.example_id: lab for lab in view.labels}
    rows = _earlier_human(view)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    added = changed = confirmed = replaced = 0
    for ans in answers:
        where = f"{path}: item {ans.id!r}"
        if ans.id not in texts:
            raise DataError(f"{where} is not in the pool of {view.run_dir} (its data and seed draw another pool); "
                            "import a file exported from this run")
        label = _to_label(ans, texts[ans.id], view.task, where)
        lab = teacher.get(ans.id)
        t_label = None if lab is None or lab.abstained else lab.label
        replaced += ans.id in rows
        added += ans.id not in rows
        changed += label != t_label
        confirmed += label == t_label
        rows[ans.id] = {"id": ans.id, "label": _show(label), "teacher_label": _show(t_label),
                        "changed": label != t_label, "annotator": ans.annotator, "file": str(path.resolve()),
                        "format": fmt, "imported_at": now}
    out = human_labels_path(view.run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(out, rows.values())
    return ImportReport(path, fmt, out, added, changed, confirmed, replaced, len(rows), skipped)


# ---- using human labels in a run --------------------------------------------------------------


def read_human_labels(path: str | Path, pool: Sequence[Any], task: Any) -> dict[str, Any]:
    """``data.human_labels``: pool id -> the person's label, checked against the run's pool and
    label set (a :class:`DataError` naming file:line otherwise)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data.human_labels: {path} does not exist; `llmkd review import FILE RUN_DIR` writes "
                        f"RUN_DIR/{HUMAN_FILE}")
    texts = {u.id: u.text for u in pool}
    out: dict[str, Any] = {}
    for n, row in _user_jsonl(path):
        where = f"{path}:{n}"
        if "id" not in row or row.get("label") is None:
            raise DataError(f"{where}: every line needs an 'id' and a 'label'")
        if row["id"] not in texts:
            raise DataError(f"{where}: id {row['id']!r} is not in this run's pool (data, data.split and seed draw the "
                            "pool); human labels apply to the pool of the run they were exported from")
        out[row["id"]] = _to_label(Answer(row["id"], row["label"]), texts[row["id"]], task, where)
    return out


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def with_human_labels(labels: Sequence[TeacherLabel], human: Mapping[str, Any]) -> list[TeacherLabel]:
    """``labels`` with the person's label in place of the teacher's where there is one (source
    ``human``, confidence 1, the teacher's answer under ``meta['teacher']``, its raw reply kept)."""
    out = []
    for lab in labels:
        if lab.example_id not in human:
            out.append(lab)
            continue
        teacher = {"label": _show(lab.label), "confidence": lab.confidence, "abstained": lab.abstained,
                   "stage": lab.stage, "error": lab.error}
        out.append(TeacherLabel(lab.example_id, human[lab.example_id], 1.0, False, "human", lab.prompt_id,
                                raw=lab.raw, stage=STAGE, meta={"teacher": teacher}))
    return out


def gold_budget(labeled: Sequence[Any], dev: Sequence[Any], human: Mapping[str, Any],
                pool_labels: Sequence[TeacherLabel] = ()) -> dict[str, Any]:
    """The gold labels a run used, the human ones (``data.human_labels``) counted with the labeled
    and dev sets, for the report's pool section ({} without human labels). ``pool_labels``: the
    run's pool labels, to count the human labels that differ from the teacher's."""
    if not human:
        return {}
    out: dict[str, Any] = {"human labels (llmkd review)": len(human)}
    by_human = [lab for lab in pool_labels if lab.source == "human"]
    if by_human:
        out["human labels that differ from the teacher's"] = sum(
            _show(lab.label) != (lab.meta or {}).get("teacher", {}).get("label") for lab in by_human)
    out["gold labels used (labeled + dev + human)"] = (f"{len(labeled)} + {len(dev)} + {len(human)} = "
                                                       f"{len(labeled) + len(dev) + len(human)}")
    return out
