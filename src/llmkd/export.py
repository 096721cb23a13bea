"""Get a run's student out: find it, check it, and write a Hugging Face folder with a model card.

A run folder keeps each method's final student where that method's training put it
(:data:`STUDENT_DIRS`); :func:`find_student` knows the layouts, :func:`choose_method` picks the
best method of a run by its test metric. :func:`export` writes ``DIR`` with

* ``model.safetensors``, ``config.json`` (``id2label`` / ``label2id``) and the tokenizer (its
  ``model_max_length`` is the student's ``max_length``, so a pipeline called with
  ``truncation=True`` cuts where llmkd cut): what ``transformers.pipeline("text-classification"``
  or ``"token-classification", model=DIR)`` loads;
* ``llmkd.json``: kind, labels, max_length, where it came from and the checks below;
* ``README.md``: the model card (:func:`model_card`);
* with ``onnx``: ``onnx/model.onnx`` and with ``quantize="int8"`` ``onnx/model_quantized.onnx``
  (:mod:`llmkd.onnx_export`).

Checks, on the run's test set (read again from the run's config): the loaded student reproduces
the run's saved test predictions; the pipeline over the exported folder agrees with it; each ONNX
file agrees on >= 99.5% of the test set and moves the test metric by <= 0.5 points. Results go
in ``llmkd.json`` and the card; a failed ONNX check raises :class:`ExportCheckFailed` after the
folder is written.

Seq2seq and parser students are not pipeline models: their folder is copied as it is (weights,
tokenizer, ``student.json``, no optimizer state) with a card that says which llmkd class loads it.
Not handled: pushing to a hub, multi-label heads, a student whose run folder lost its config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, LlmkdError, StateError
from .io import read_json

log = logging.getLogger(__name__)

#: a method's final student, relative to RUN_DIR/<method>; a callable reads the method's result
STUDENT_DIRS: dict[str, Any] = {
    "supervised": "student/best",
    "supervised_full": "student/best",
    "vanilla": "student/best",
    "llkd": "llkd/best",
    "self_distill": "sd/best",
    "mckd": lambda wd, result: f"final-after-stage{int(result['extra']['options']['stages']) - 1}/best",
    "evokd": lambda wd, result: read_json(wd / "state.json")["best_slot"],
    "synth_nofeedback": lambda wd, result: read_json(wd / "state.json")["best_slot"],
}
#: students that are not transformers pipeline models: kind -> (module, class) that loads the folder
OWN_FORMAT = {"seq2seq": ("llmkd.students.seq2seq", "Seq2SeqStudent"),
              "span_parser": ("llmkd.students.span_parser", "SpanParserStudent"),
              "slot_tagger": ("llmkd.students.slot_tagger", "SlotTaggerStudent")}
PIPELINE_TASK = {"classifier": "text-classification", "tagger": "token-classification"}
NOT_AUTO = ("teacher", "supervised_full")  # no student / trained on all the gold labels: never picked unasked
MIN_AGREEMENT = 0.995
MAX_METRIC_DELTA = 0.005  # 0.5 points of a metric in [0, 1]


class ExportCheckFailed(LlmkdError):
    """An exported ONNX file disagrees with the torch student beyond the limits."""


# -- finding the student -------------------------------------------------------------------------
def _results(run_dir: Path) -> dict[str, dict[str, Any]]:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise StateError(f"{run_dir} is not a run folder (no config.yaml): give the folder `llmkd run` wrote, "
                         "e.g. runs/sst2-demo")
    out = {}
    for f in sorted(run_dir.glob("*/result.json")):
        out[f.parent.name] = read_json(f)
    if not out:
        raise StateError(f"{run_dir} has no finished method (no */result.json): finish the run first (rerun "
                         "`llmkd run` with its config)")
    return out


def primary_metric(metrics: dict[str, Any]) -> str:
    """The metric that ranks students: classification macro-F1, NER span F1, seq2seq sentence/slot F1."""
    for name in ("macro_f1", "f1", "sentence_f1", "slot_f1", "accuracy"):
        if name in metrics:
            return name
    return next(k for k, v in metrics.items() if isinstance(v, (int, float)))


def has_student(run_dir: Path, method: str, result: dict[str, Any]) -> bool:
    try:
        return (find_student(run_dir, method, result) / "student.json").exists()
    except LlmkdError:
        return False


def choose_method(run_dir: str | Path) -> tuple[str, str]:
    """The method to export when none is named: the best test metric among the methods that
    kept a student (not ``teacher``; not ``supervised_full``, trained on every gold label).
    Returns (method, a sentence saying why)."""
    run_dir = Path(run_dir)
    results = _results(run_dir)
    ranked = []
    for name, res in results.items():
        if name in NOT_AUTO or not has_student(run_dir, name, res):
            continue
        metric = primary_metric(res["metrics"])
        ranked.append((float(res["metrics"][metric]), name, metric))
    if not ranked:
        have = ", ".join(results)
        raise StateError(f"{run_dir}: no method of this run kept a student to export (finished: {have}); name one "
                         "with --method (supervised_full is never picked unasked)")
    ranked.sort(key=lambda t: (-t[0], t[1]))
    score, name, metric = ranked[0]
    others = ", ".join(f"{n} {s:.4f}" for s, n, _ in ranked[1:])
    return name, f"method {name}: best test {metric} of the run ({score:.4f}{'; ' + others if others else ''})"


def find_student(run_dir: str | Path, method: str, result: dict[str, Any] | None = None) -> Path:
    """The folder of ``method``'s final student in ``run_dir``."""
    run_dir = Path(run_dir)
    wd = run_dir / method
    if result is None:
        results = _results(run_dir)
        if method not in results:
            raise StateError(f"{run_dir}: method {method!r} has no finished result here; finished: {', '.join(results)}")
        result = results[method]
    if method == "teacher":
        raise ConfigError("--method teacher: the teacher is the LLM itself, not a student; choose a student method")
    where = (result.get("extra") or {}).get("student_dir") or STUDENT_DIRS.get(method, "student/best")
    try:
        rel = where(wd, result) if callable(where) else where
    except (KeyError, OSError, LlmkdError) as exc:
        raise StateError(f"{wd}: cannot tell where {method}'s final student is ({type(exc).__name__}: {exc})") from exc
    path = wd / rel
    if not (path / "student.json").exists():
        found = sorted(str(p.parent.relative_to(wd)) for p in wd.rglob("student.json"))
        raise StateError(f"{path} holds no student (no student.json); student folders under {wd}: "
                         f"{', '.join(found) or 'none'}. Rerun the method, or export one of them by its path")
    return path


def load_student(path: str | Path, *, threads: int | None = None, task: Any = None) -> Any:
    """The student saved at ``path`` (a checkpoint folder), on the CPU: a classifier, tagger or span
    parser; a seq2seq student also needs its ``task`` (whose ``postprocess`` repairs its outputs)."""
    import importlib

    from .students.checkpoint import read_meta
    from .students.classifier import ClassifierStudent
    from .students.tagger import TaggerStudent

    kind = read_meta(path).get("kind")
    cls = {"classifier": ClassifierStudent, "tagger": TaggerStudent}.get(kind)
    if cls is not None:
        return cls.load(path, device="cpu", threads=threads)
    if kind not in OWN_FORMAT:
        raise ConfigError(_own_format_message(kind, path))
    module, name = OWN_FORMAT[kind]
    own = getattr(importlib.import_module(module), name)
    if kind == "seq2seq":
        if task is None:
            raise ConfigError(f"{path} is a seq2seq student: its outputs are repaired by its task, which is not known "
                              "here; predict with its run folder, or a folder exported by this version of llmkd")
        return own.load(path, device="cpu", threads=threads, postprocess=task.postprocess)
    return own.load(path, device="cpu", threads=threads)


def _own_format_message(kind: Any, path: Any) -> str:
    if kind in OWN_FORMAT:
        module, name = OWN_FORMAT[kind]
        return (f"{path} is a {kind} student, not a classifier or tagger: it has no transformers pipeline; load it "
                f"with `from {module} import {name}; {name}.load(PATH)` (llmkd export copies its folder as it is)")
    return f"{path}: unknown student kind {kind!r}; known: classifier, tagger, {', '.join(OWN_FORMAT)}"


# -- the run's test set -----------------------------------------------------------------------------
@dataclass
class RunData:
    cfg: Any
    test: list[Any] | None
    task: Any
    why_not: str = ""


def run_data(run_dir: Path) -> RunData:
    """The run's config, and its test set and task where the data files can still be read."""
    from .config import run_config

    cfg = run_config(run_dir)
    try:
        from .build import build_task
        from .data import make_splits

        splits, _ = make_splits(cfg.data, cfg.seed)
        return RunData(cfg, list(splits.test), build_task(cfg.task, splits.labels))
    except LlmkdError as exc:
        return RunData(cfg, None, None, f"the run's test set cannot be read again ({exc})")


def score(task: Any, test: Sequence[Any], labels: Sequence[Any]) -> tuple[str, float]:
    """(the task's ranking metric, its value) of ``labels`` on ``test``."""
    metrics = task.score([e.label for e in test], list(labels))
    name = primary_metric(metrics)
    return name, float(metrics[name])


def agreement(a: Sequence[Any], b: Sequence[Any]) -> float:
    return sum(x == y for x, y in zip(a, b)) / max(1, len(a))


# -- the checks ----------------------------------------------------------------------------------------
def saved_predictions(run_dir: Path, method: str) -> dict[str, Any]:
    from .io import read_jsonl

    path = run_dir / method / "predictions.jsonl"
    rows = read_jsonl(path) if path.exists() else []
    return {r["id"]: (tuple(r["pred"]) if isinstance(r["pred"], list) else r["pred"]) for r in rows}


def _entity_key(ents: Sequence[dict[str, Any]]) -> tuple:
    return tuple(sorted((int(e["start"]), int(e["end"]), e["entity_group"]) for e in ents))


def _span_key(pred: Any, text: str) -> tuple:
    """llmkd's spans of ``text`` as (char start, char end, type) in ``" ".join(words)``."""
    from .formats.conll import words
    from .predict import word_starts

    ws = words(text)
    starts = word_starts(ws)
    return tuple(sorted((starts[s.start], starts[s.end - 1] + len(ws[s.end - 1]), s.type) for s in pred.spans))


def pipeline_agreement(folder: Path, kind: str, texts: Sequence[str], preds: Sequence[Any]) -> float:
    """Share of ``texts`` on which ``transformers.pipeline`` over ``folder`` predicts what the
    student predicted (``preds``): the same label, or for NER the same entity spans."""
    from transformers import pipeline

    from .formats.conll import words

    if kind == "classifier":
        pipe = pipeline("text-classification", model=str(folder), device="cpu")
        got = [r["label"] for r in pipe(list(texts), truncation=True, batch_size=32)]
        return agreement([p.label for p in preds], got)
    pipe = pipeline("token-classification", model=str(folder), aggregation_strategy="first", device="cpu")
    joined = [" ".join(words(t)) for t in texts]
    got = [_entity_key(r) for r in pipe(joined, batch_size=32)] if joined else []
    return agreement([_span_key(p, t) for p, t in zip(preds, texts)], got)


@dataclass
class ExportReport:
    """What :func:`export` wrote and what its checks found."""

    folder: Path
    method: str
    why: str
    kind: str
    checks: dict[str, Any] = field(default_factory=dict)
    onnx: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [self.why, f"exported {self.kind} student -> {self.folder}"]
        for k, v in self.checks.items():
            out.append(f"check: {k}: {v}")
        for name, r in self.onnx.items():
            out.append(f"onnx {_scheme(name, r)} ({r['file']}, {r['size_mb']:.1f} MB): agreement {r['agreement']:.4f} with torch, "
                       f"{r['metric']} {r['onnx_score']:.4f} vs {r['torch_score']:.4f} "
                       f"({'passed' if r['passed'] else 'FAILED'}: >= {MIN_AGREEMENT} and <= 0.5 points)")
        return out


def _scheme(name: str, r: dict[str, Any]) -> str:
    """``int8`` or ``int8 (int8-block)``: the file's name in ``llmkd.json`` and the scheme that made it."""
    scheme = r.get("scheme", name)
    return name if scheme == name else f"{name} ({scheme})"


def export(run_dir: str | Path, to: str | Path, *, method: str | None = None, onnx: bool = False,
           quantize: str | None = None, force: bool = False, check: bool = True) -> ExportReport:
    """Export ``method``'s student of ``run_dir`` (default: :func:`choose_method`) into ``to``.
    Writes into ``to``.tmp and renames it, so a failed export leaves no half folder."""
    run_dir, to = Path(run_dir), Path(to)
    from .onnx_export import QUANTIZE

    if quantize not in (None, *QUANTIZE):
        raise ConfigError(f"--quantize must be one of: " + "; ".join(f"{k}: {v}" for k, v in QUANTIZE.items())
                          + f". Got {quantize!r}.")
    if quantize and not onnx:
        raise ConfigError(f"--quantize {quantize} quantizes the ONNX export: add --onnx")
    if to.exists() and any(to.iterdir()) and not force:
        raise ConfigError(f"{to} exists and is not empty: choose another --to, or pass --force to replace it")
    results = _results(run_dir)
    why = f"method {method}: named with --method"
    if method is None:
        method, why = choose_method(run_dir)
    elif method not in results:
        raise ConfigError(f"--method {method}: not a finished method of {run_dir}; finished: {', '.join(results)}")
    src = find_student(run_dir, method, results[method])
    from .students.checkpoint import read_meta

    meta = read_meta(src)
    kind = meta.get("kind", "classifier")
    if onnx:
        from .onnx_export import require_onnx

        require_onnx()
    tmp = to.with_name(to.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    report = ExportReport(to, method, why, kind)
    data = run_data(run_dir)
    if kind not in PIPELINE_TASK:
        if kind not in OWN_FORMAT:
            raise ConfigError(_own_format_message(kind, src))
        if onnx:
            raise ConfigError(f"--onnx: a {kind} student cannot be exported to ONNX by llmkd; export without --onnx")
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("optimizer.safetensors"))
        report.checks["not checked"] = f"a {kind} student is copied as it is (no pipeline to compare)"
    else:
        report.checks.update(_export_pipeline_model(src, tmp, kind, meta, run_dir, method, data, check, onnx,
                                                    quantize, report))
    info = {"kind": kind, "labels": meta["labels"], "max_length": meta.get("max_length"), "method": method,
            "run": str(run_dir), "student_folder": str(src.relative_to(run_dir)), "base_model": meta.get("base_model"),
            "pipeline_task": PIPELINE_TASK.get(kind), "checks": report.checks, "onnx": report.onnx,
            "task": data.cfg.task.model_dump(mode="json")}
    (tmp / "llmkd.json").write_text(json.dumps(info, indent=1))
    (tmp / "README.md").write_text(model_card(run_dir, method, results, meta, data, report), encoding="utf-8")
    if to.exists():
        shutil.rmtree(to)
    os.replace(tmp, to)
    failed = [n for n, r in report.onnx.items() if not r["passed"]]
    if failed:
        other = " (or --quantize int8-block, block-wise int8: closer to fp32)" if quantize == "int8" else ""
        raise ExportCheckFailed(
            f"{to}: the ONNX export ({', '.join(failed)}) disagrees with the torch student beyond the limits "
            f"(agreement >= {MIN_AGREEMENT}, metric change <= 0.5 points; see {to / 'README.md'}). Use the torch "
            f"model, or export without --quantize{other}")
    return report


def _export_pipeline_model(src: Path, tmp: Path, kind: str, meta: dict[str, Any], run_dir: Path, method: str,
                           data: RunData, check: bool, onnx: bool, quantize: str | None,
                           report: ExportReport) -> dict[str, Any]:
    student = load_student(src)
    student.tokenizer_.model_max_length = student.max_length  # a pipeline with truncation=True cuts where llmkd cut
    student.model_.save_pretrained(tmp, safe_serialization=True)
    student.tokenizer_.save_pretrained(tmp)
    checks: dict[str, Any] = {}
    test = data.test if check else None
    if test is None:
        checks["not checked"] = data.why_not or "--no-check"
        if onnx:
            raise ConfigError(f"--onnx checks the export on the run's test set, but {checks['not checked']}; put "
                              "the test file back where the run's config.yaml says")
        preds = []
    else:
        preds = student.predict(test)
        saved = saved_predictions(run_dir, method)
        mine = [(e.id, p.label) for e, p in zip(test, preds) if e.id in saved]
        if mine:
            checks["reproduces the run's test predictions"] = round(agreement([saved[i] for i, _ in mine],
                                                                               [lab for _, lab in mine]), 4)
        checks["pipeline agreement on the test set"] = round(
            pipeline_agreement(tmp, kind, [e.text for e in test], preds), 4)
        checks["test examples"] = len(test)
    if onnx:
        from .onnx_export import FILES, ONNX_DIR, export_onnx, onnx_student, quantize_int8

        files = {"fp32": export_onnx(student.model_, student.tokenizer_, tmp / ONNX_DIR, student.max_length)}
        if quantize:
            files["int8"] = quantize_int8(files["fp32"], tmp / ONNX_DIR / FILES["int8"], quantize)
        metric, torch_score = score(data.task, test, [p.label for p in preds])
        for name, path in files.items():
            other = onnx_student(load_student(src), path)
            got = other.predict(test)
            agree = agreement([p.label for p in preds], [p.label for p in got])
            _, onnx_score = score(data.task, test, [p.label for p in got])
            report.onnx[name] = {
                "file": f"{ONNX_DIR}/{path.name}", "scheme": quantize if name == "int8" else "fp32",
                "size_mb": path.stat().st_size / 2**20, "agreement": agree,
                "metric": metric, "torch_score": torch_score, "onnx_score": onnx_score,
                "passed": agree >= MIN_AGREEMENT and abs(onnx_score - torch_score) <= MAX_METRIC_DELTA + 1e-12}
    return checks


# -- the model card ------------------------------------------------------------------------------------
def _pkg_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _zoo(name: str) -> Any:
    from .zoo import ZOO

    return ZOO.get(name)


def _count_lines(path: Path, **match: Any) -> int:
    from .io import read_jsonl

    if not path.exists():
        return 0
    return sum(all(r.get(k) == v for k, v in match.items()) for r in read_jsonl(path))


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def model_card(run_dir: Path, method: str, results: dict[str, dict[str, Any]], meta: dict[str, Any],
               data: RunData, report: ExportReport) -> str:
    """The README.md of an exported student: task, labels, teacher, method, data, metrics, checks,
    versions and licences."""
    cfg, res = data.cfg, results[method]
    manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").exists() else {}
    config_hash = hashlib.sha256((run_dir / "config.yaml").read_bytes()).hexdigest()
    teacher_zoo, student_zoo = _zoo(cfg.teacher.model), _zoo(cfg.student.model)
    extra = res.get("extra") or {}
    options = extra.get("options") or cfg.method_options.get(method) or {}
    gold = _count_lines(run_dir / "labels.jsonl", source="gold")
    pool = _count_lines(run_dir / "labels.jsonl", source="teacher")
    synthetic = sum(str(r.get("stage", "")).startswith(f"{method}-round") for r in _rows(run_dir / method / "labels.jsonl"))
    kind = report.kind
    task = {"classifier": "text classification", "tagger": "named-entity recognition (IOB2 tags per word)"}.get(
        kind, f"{cfg.task.kind} ({kind} student)")
    lines = [
        "---", "library_name: transformers" if kind in PIPELINE_TASK else "library_name: llmkd",
        *([f"pipeline_tag: {PIPELINE_TASK[kind]}"] if kind in PIPELINE_TASK else []), "tags: [llmkd, distillation]",
        "---", "", f"# {cfg.name}: {method} student", "",
        f"A {task} model distilled by llmkd from a large language model teacher.", "",
        "| | |", "|---|---|",
        f"| task | {task} |",
        f"| labels | {', '.join(f'`{x}`' for x in meta['labels'])} |",
        f"| student | `{cfg.student.model}` ({meta.get('kind')}), max_length {meta.get('max_length')} |",
        f"| teacher | `{cfg.teacher.model}` ({cfg.teacher.backend}), sha256 "
        f"{'`' + teacher_zoo.sha256 + '`' if teacher_zoo and teacher_zoo.sha256 else 'not pinned (not a zoo model)'}, "
        f"llmkd fingerprint `{(manifest.get('models') or {}).get('teacher', 'not recorded')}` |",
        f"| method | `{method}`; options: `{json.dumps(options, sort_keys=True)}` |",
        f"| data | gold labeled examples used: {extra.get('n_train') if method.startswith('supervised') else gold}; "
        f"teacher-labeled pool: {pool}; synthetic (LLM-written) examples: {synthetic}; student trained on "
        f"{extra.get('n_train', 'n/a')} |",
        f"| llmkd | {_pkg_version('llmkd')} (git {manifest.get('git_sha') or 'unknown'}); config sha256 "
        f"`{config_hash}` |", "",
        "## Test metrics (the run's test set)", "",
    ]
    names = [n for n in (method, "teacher") if n in results]
    keys = [k for k in results[method]["metrics"] if k != "n"]
    lines += ["| model | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for n in names:
        who = "teacher (few-shot LLM)" if n == "teacher" else f"this student ({n})"
        lines.append(f"| {who} | " + " | ".join(_fmt(results[n]["metrics"].get(k, "")) for k in keys) + " |")
    if "teacher" not in results:
        lines += ["", "The teacher was not scored on the test set in this run (method `teacher` not run)."]
    lines += ["", "## Use", ""]
    lines += _usage(kind, report)
    lines += ["", "## Export checks", ""]
    lines += [f"- {k}: {v}" for k, v in report.checks.items()]
    for name, r in report.onnx.items():
        lines.append(f"- ONNX {_scheme(name, r)} (`{r['file']}`, {r['size_mb']:.1f} MB): prediction agreement with the torch "
                     f"student {r['agreement']:.4f}; test {r['metric']} {r['onnx_score']:.4f} vs torch "
                     f"{r['torch_score']:.4f}: {'passed' if r['passed'] else 'did NOT pass'} (limits: agreement >= "
                     f"{MIN_AGREEMENT}, change <= 0.5 points)")
    lines += ["", "## Licences", "",
              f"- student base model `{cfg.student.model}`: {student_zoo.license if student_zoo else 'see its own model card'}",
              f"- teacher `{cfg.teacher.model}`: {teacher_zoo.license if teacher_zoo else 'see its own model card'}; "
              "the student learnt from its outputs, so the teacher's terms on the use of outputs apply",
              f"- training data (`{cfg.data.train}`): its own licence applies to this model's use",
              "- llmkd: Apache-2.0", ""]
    return "\n".join(lines)


def _rows(path: Path) -> list[dict[str, Any]]:
    from .io import read_jsonl

    return read_jsonl(path) if path.exists() else []


def _usage(kind: str, report: ExportReport) -> list[str]:
    if kind == "classifier":
        return ["```python", "from transformers import pipeline", "",
                'clf = pipeline("text-classification", model="PATH")',
                'clf(["a gripping, well acted film"], truncation=True, top_k=None)  # every label\'s probability',
                "```", "", "or `llmkd predict PATH --input texts.jsonl`."]
    if kind == "tagger":
        return ["```python", "from transformers import pipeline", "",
                'ner = pipeline("token-classification", model="PATH", aggregation_strategy="first")',
                'ner("Angela Merkel visited Paris")', "```", "",
                "llmkd tags whitespace-separated words (the first subword of each word carries its tag). The "
                "pipeline also starts a new word at punctuation inside a word (`U.S.`), so on such words its spans "
                "can differ; `llmkd predict PATH --input texts.jsonl` gives llmkd's own spans."]
    module, name = OWN_FORMAT[kind]
    return ["Not a transformers pipeline model. Load it with llmkd (`student.json` says its settings):", "",
            "```python", f"from {module} import {name}", "from llmkd.types import Unlabeled", "",
            f'student = {name}.load("PATH")', 'student.predict([Unlabeled("1", "your input")])', "```", "",
            "A seq2seq student's raw outputs are repaired by its task (`postprocess=`, as `llmkd.build` passes it)."]
