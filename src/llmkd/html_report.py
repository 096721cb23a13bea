"""``RUN_DIR/report.html``: one self-contained page per run (figures inline as PNG data URIs, styles
inline, no script, nothing fetched), readable offline and in any browser.

What it shows: the comparison table; the teacher gate; labeling time, tokens and cost; the
teacher's calibration (reliability diagram, accuracy vs coverage) on the dev set and, marked
report-only, on the pool against its gold; then per method its per-class F1 and confusion
matrix, the dev curve of every student it trained (their ``progress.json``) and its own sections
(:data:`llmkd.method_reports.HTML_SECTIONS`: MCKD stages, LLKD selection, EvoKD rounds).

:func:`render_html` builds the page from what :func:`llmkd.report.write_run_report` has (called
by every ``llmkd run`` / ``llmkd eval``); :func:`rebuild` (``llmkd report RUN_DIR``) builds it
again from the run folder alone. The page reads the run folder and never changes it; a section
whose records it cannot read says so in its place (and in the log) rather than failing the run.

Not handled: per-class tables and confusion matrices of parsing (seq2seq) tasks, whose labels
are trees; comparing runs with each other.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import figures
from .errors import ConfigError, LlmkdError
from .io import read_json, read_jsonl
from .method_reports import HTML_SECTIONS, Gold, figure, label_key, read_rows, table, text
from .report import flat_row, gate_of_total, gate_teacher, read_pool_labels, table_cells

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent / "templates" / "report.html.jinja"
ABSTAINED = "(abstained)"
#: labeling counters a run records per method (``timings``), in this order; any other key a teacher
#: backend adds (e.g. a cost) is shown after them under its own name
LABELING_COLUMNS = [("n_prompts", "prompts"), ("teacher_calls", "teacher calls (not cached)"),
                    ("cache_hits", "cache hits"), ("teacher_seconds", "labeling s (first computed)"),
                    ("label_seconds", "labeling s (this run)"), ("prompt_tokens", "prompt tokens"),
                    ("completion_tokens", "completion tokens"),
                    # teachers/usage.py: every request sent this run, and how the replies met their constraint
                    ("sent_prompt_tokens", "prompt tokens sent (this run)"),
                    ("sent_completion_tokens", "completion tokens sent (this run)"),
                    ("constrained_replies", "constrained replies"), ("unconstrained_replies", "unconstrained replies"),
                    ("constraint_violations", "constraint violations")]
NOT_LABELING = {"train_seconds", "method_seconds"}


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------
def render_html(run_dir: Path, cfg: Any, results: Mapping[str, dict[str, Any]], pool_stats: Mapping[str, Any],
                warnings: Sequence[str], *, gate: Mapping[str, Any] | None = None, task: Any = None,
                gold: Gold | None = None) -> str:
    """The page (a string) for the run in ``run_dir``. ``gold``: the pool's gold label of an id
    (report-only: the calibration on the pool and MCKD's label accuracy); None leaves those out."""
    from jinja2 import Environment, StrictUndefined

    kind = getattr(task, "kind", None) or getattr(getattr(cfg, "task", None), "kind", "classification")
    sections = [
        _guarded("results", "Test results", lambda: _results(results, warnings)),
        _guarded("labeling", "Labeling: time, tokens and cost",
                 lambda: _labeling(results, pool_stats, gate, getattr(cfg.teacher, "price_per_mtok", None))),
        _guarded("calibration", "Teacher calibration", lambda: _calibration(run_dir, kind, gold)),
    ]
    for name, result in results.items():
        sections.append(_guarded(f"method-{name}", f"Method: {name}",
                                 lambda n=name, r=result: _method(run_dir, n, r, kind, task, gold)))
    manifest = _read(run_dir / "manifest.json") or {}
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8") if (run_dir / "config.yaml").exists() else ""
    env = Environment(undefined=StrictUndefined, autoescape=True, trim_blocks=True, lstrip_blocks=True)
    page = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return page.render(
        name=cfg.name, teacher=f"{cfg.teacher.model} ({cfg.teacher.backend})", student=cfg.student.model,
        seed=cfg.seed, data_train=str(cfg.data.train), data_test=str(cfg.data.test or "–"), kind=kind,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        git_sha=manifest.get("git_sha") or "–", version=(manifest.get("packages") or {}).get("llmkd") or "–",
        sections=sections, config_text=config_text)


def write_html(run_dir: Path, html: str) -> Path:
    """Write ``RUN_DIR/report.html`` (a temporary file, then renamed: never half a page)."""
    path = run_dir / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path


def _guarded(anchor: str, title: str, build: Callable[[], list[dict[str, Any]]]) -> dict[str, Any]:
    """A section; where its records cannot be read (a record of another shape than expected), the
    section says so instead of failing the whole report."""
    try:
        blocks = build()
    except Exception as exc:  # noqa: BLE001 - the report must not fail a finished run
        log.warning("report.html: the section %r could not be drawn (%s: %s); the rest of the report is complete",
                    title, type(exc).__name__, exc)
        blocks = [text(f"This section could not be drawn ({type(exc).__name__}: {exc}). The run's files are "
                       "unchanged; `llmkd report RUN_DIR` draws the page again.")]
    return {"id": anchor, "title": title, "blocks": blocks}


def _read(path: Path) -> Any:
    return read_json(path) if path.exists() else None


# --------------------------------------------------------------------------------------------
# common sections
# --------------------------------------------------------------------------------------------
def _results(results: Mapping[str, dict[str, Any]], warnings: Sequence[str]) -> list[dict[str, Any]]:
    headers, rows = table_cells({m: flat_row(r) for m, r in results.items()})
    blocks = [table(headers, rows, note="Abstentions (unparseable teacher replies) count as errors in accuracy and F1 "
                                        "and are reported separately; they are never mapped to a class.")]
    if warnings:
        blocks.append({"kind": "warnings", "items": list(warnings)})
    return blocks


def _labeling(results: Mapping[str, dict[str, Any]], pool_stats: Mapping[str, Any],
              gate: Mapping[str, Any] | None, price: Any = None) -> list[dict[str, Any]]:
    from .teachers.usage import dollars, prices

    known = [k for k, _ in LABELING_COLUMNS]
    users = {m: r.get("timings") or {} for m, r in results.items()
             if any(k in (r.get("timings") or {}) for k in ("n_prompts", "teacher_calls", "teacher_seconds"))}
    blocks: list[dict[str, Any]] = []
    if users:
        extra_keys = sorted({k for t in users.values() for k in t} - set(known) - NOT_LABELING)
        cols = [(k, h) for k, h in LABELING_COLUMNS if any(k in t for t in users.values())] + [(k, k) for k in extra_keys]
        rows = [[m, *[_num(t.get(k)) for k, _ in cols]] for m, t in users.items()]
        heads = ["method", *[h for _, h in cols]]
        note = ("Per method, the teacher work its labels took. Cached answers keep the time they took when first "
                "computed (\"labeling s (first computed)\"); \"this run\" is the wall time here.")
        if price is not None:  # teacher.price_per_mtok
            heads.append("US$ (labels)")
            for row, t in zip(rows, users.values()):
                row.append(_num(dollars(price, t.get("prompt_tokens") or 0, t.get("completion_tokens") or 0)))
            note += (" Dollars at teacher.price_per_mtok (US$ per million tokens: input {}, output {}) over the tokens "
                     "of the labels used.".format(*map(_num, prices(price))))
        blocks.append(table(heads, rows, note=note))
    else:
        blocks.append(text("No method of this run asked the teacher."))
    if gate and gate.get("status") not in (None, "skipped"):
        blocks.append(text(f"The teacher gate estimated {gate.get('prompts_to_label', '?')} prompts at "
                           f"{_num(gate.get('seconds_per_prompt'))} s each: {_num(gate.get('estimated_labeling_seconds'))} s"
                           + (f" and {gate['estimated_prompt_tokens']} prompt tokens" if gate.get("estimated_prompt_tokens") else "")
                           + " before the pool was labeled."))
    if pool_stats:
        blocks.append(table(["pseudo-labels of the pool", "value"], [[k, _num(v)] for k, v in pool_stats.items()],
                            title="the teacher's labels of the pool, scored after the run against the pool's gold",
                            report_only=True))
    if gate:
        blocks.append(_gate_block(gate))
    return blocks


def _gate_block(gate: Mapping[str, Any]) -> dict[str, Any]:
    if gate.get("status") == "skipped":
        return text(f"Teacher gate skipped: {gate.get('reason')}.", title="teacher gate")
    m = gate.get("metric", "score")
    rows = [[f"teacher ({gate_teacher(gate)}; abstention rate {_num(gate.get('teacher_abstention_rate'))})", _score(gate.get("teacher"))],
            [f"student trained on the {gate.get('n_labeled', '?')} gold examples", _score(gate.get("student"))],
            ["chance", _score(gate.get("chance"))], ["margin", _score(gate.get("margin"))]]
    verdict = gate.get("status", "?") + (f": {'; '.join(gate['problems'])}" if gate.get("problems") else "")
    return table([f"on the {gate.get('n_dev', '?')}{gate_of_total(gate)} dev examples", m], rows, title="teacher gate (before labeling the pool)",
                 note=f"Verdict: {verdict}.")


def _score(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "–"


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool) or isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
    return str(v)


# --------------------------------------------------------------------------------------------
# teacher calibration
# --------------------------------------------------------------------------------------------
def teacher_pool_labels(run_dir: Path) -> list[dict[str, Any]]:
    """The teacher's labels of the pool: ``vanilla/labels.jsonl`` (or ``llmkd label``'s), else the
    first method folder whose ``labels.jsonl`` holds only teacher labels of the pool (LLKD's);
    [] if none."""
    labels = read_pool_labels(run_dir)
    if labels:
        return [lab.to_dict() for lab in labels]
    for path in sorted(run_dir.glob("*/labels.jsonl")):
        rows = read_jsonl(path)
        if rows and all(r.get("stage") == "teacher-pool" for r in rows):
            return rows
    return []


def _calibration(run_dir: Path, kind: str, gold: Gold | None) -> list[dict[str, Any]]:
    what = "the whole tag sequence right" if kind == "ner" else "the label right"
    blocks = [text(f"Confidence is the teacher's probability of its answer; correct means {what}. Abstentions "
                   "have no answer and are left out of the plots (counted below).")]
    dev = read_rows(run_dir / "gate" / "dev_labels.jsonl")
    if dev:
        rows = [(r.get("confidence"), r.get("abstained"), label_key(r.get("label")) == label_key(r.get("gold")))
                for r in dev]
        blocks += _calibration_blocks(rows, "on the dev set (labeled by the teacher gate)", report_only=False)
    else:
        blocks.append(text("Dev set: no teacher labels of the dev set in this run (the teacher gate did not run, "
                           "or the run predates it)."))
    pool = teacher_pool_labels(run_dir)
    if pool and gold is not None:
        rows = []
        for r in pool:
            try:
                g = gold(r["id"])
            except KeyError:
                continue
            rows.append((r.get("confidence"), r.get("abstained"), label_key(r.get("label")) == label_key(g)))
        blocks += _calibration_blocks(rows, "on the pool, against the pool's gold", report_only=True)
    elif pool:
        blocks.append(text("Pool: the pool's gold is not available here (the data files were not found), so the "
                           "teacher's pool labels are not scored."))
    else:
        blocks.append(text("Pool: no method of this run kept the teacher's labels of the pool."))
    return blocks


def _calibration_blocks(rows: Sequence[tuple[Any, Any, bool]], where: str, *, report_only: bool) -> list[dict[str, Any]]:
    answered = [(c, ok) for c, abst, ok in rows if not abst]
    scored = [(float(c), ok) for c, ok in answered if isinstance(c, (int, float))]
    acc = sum(ok for _, ok in answered) / len(answered) if answered else 0.0
    facts = (f"{len(rows)} examples, {len(rows) - len(answered)} abstentions; accuracy of the answers {acc:.3f}")
    if not scored:
        return [text(f"{where[0].upper() + where[1:]}: {facts}. The teacher gave no confidence with its answers "
                     "(teacher.confidence: false, or a backend without log-probabilities), so there is no plot.",
                     report_only=report_only)]
    conf, ok = [c for c, _ in scored], [o for _, o in scored]
    ece = figures.expected_calibration_error(conf, ok)
    return [text(f"{facts}; {len(scored)} answers with a confidence, mean confidence {sum(conf) / len(conf):.3f}, "
                 f"expected calibration error {ece:.3f} (10 bins).", title=f"The teacher {where}", report_only=report_only),
            figure(figures.calibration(conf, ok, title=f"teacher {where}"), title=f"teacher calibration {where}",
                   report_only=report_only)]


# --------------------------------------------------------------------------------------------
# per method
# --------------------------------------------------------------------------------------------
def _method(run_dir: Path, name: str, result: Mapping[str, Any], kind: str, task: Any,
            gold: Gold | None) -> list[dict[str, Any]]:
    wd = run_dir / name
    blocks = [text(_summary(result))]
    preds = read_rows(wd / "predictions.jsonl")
    if preds and kind == "classification":
        blocks += _classification_blocks(name, preds, task)
    elif preds and kind == "ner":
        blocks += _ner_blocks(name, preds, result.get("metrics") or {})
    curve = dev_curves(wd, name)
    if curve:
        blocks.append(curve)
    own = HTML_SECTIONS.get(name)
    if own is not None:
        blocks += own(result, wd, task, gold)
    return blocks


def _summary(result: Mapping[str, Any]) -> str:
    parts = [f"Stopped: {result.get('stop_reason') or '–'}."]
    tr = (result.get("extra") or {}).get("training") or {}
    if tr.get("best_score") is not None:
        parts.append(f"Kept the {tr.get('kept', 'best')} student: {_scored(tr)} {tr['best_score']:.4f} at epoch "
                     f"{tr.get('best_epoch')} of {tr.get('epoch')}.")
    n = (result.get("extra") or {}).get("n_train")
    if n is not None:
        parts.append(f"Trained on {n} examples.")
    return " ".join(parts)


def _scored(rec: Mapping[str, Any]) -> str:
    """What a training record's score is: e.g. "dev macro_f1", "training-fidelity macro_f1"."""
    on, metric = str(rec.get("scored_on") or "dev"), str(rec.get("dev_metric") or "score")
    return metric if on.replace(" ", "-") in metric else f"{on} {metric}"


def _classification_blocks(name: str, preds: Sequence[Mapping[str, Any]], task: Any) -> list[dict[str, Any]]:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    gold = [str(p["gold"]) for p in preds]
    pred = [ABSTAINED if p.get("pred") is None else str(p["pred"]) for p in preds]
    labels = [str(x) for x in getattr(task, "labels", None) or sorted(set(gold) | set(pred) - {ABSTAINED})]
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    rows = [[lab, f"{p[i]:.4f}", f"{r[i]:.4f}", f"{f[i]:.4f}", int(s[i])] for i, lab in enumerate(labels)]
    cols = labels + ([ABSTAINED] if ABSTAINED in pred else [])
    m = confusion_matrix(gold, pred, labels=cols)[: len(labels)]
    return [table(["class", "precision", "recall", "F1", "test support"], rows, title="per-class F1 on the test set"),
            figure(figures.confusion(m, labels, cols, title=f"{name}: confusion matrix (test)"),
                   title="confusion matrix (test)", alt=f"{name}: confusion matrix (test)")]


def _ner_blocks(name: str, preds: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-type span scores (seqeval, from the metrics) and a word-level confusion of entity types
    (B-/I- dropped; an abstained sentence predicts no entity, as in the scores)."""
    types = sorted({k[3:-1] for k in metrics if k.startswith("f1[") and k.endswith("]")})
    blocks = []
    if types:
        rows = [[t, _score(metrics.get(f"precision[{t}]")), _score(metrics.get(f"recall[{t}]")),
                 _score(metrics.get(f"f1[{t}]")), _num(metrics.get(f"support[{t}]"))] for t in types]
        blocks.append(table(["entity type", "precision", "recall", "span F1", "test entities"], rows,
                            title="per-type span F1 on the test set (seqeval, strict IOB2)"))
    pairs: Counter[tuple[str, str]] = Counter()
    for p in preds:
        g = list(p.get("gold") or [])
        q = list(p.get("pred") or ["O"] * len(g))
        for a, b in zip(g, q + ["O"] * (len(g) - len(q))):
            pairs[(_etype(a), _etype(b))] += 1
    names = sorted({t for pair in pairs for t in pair} - {"O"}) + ["O"]
    m = [[pairs[(a, b)] for b in names] for a in names]
    blocks.append(figure(figures.confusion(m, names, names, title=f"{name}: entity type per word (test)"),
                         title="confusion of entity types, word by word (test)", alt=f"{name}: entity type per word (test)"))
    return blocks


def _etype(tag: Any) -> str:
    tag = str(tag)
    return tag.split("-", 1)[1] if tag[:2] in ("B-", "I-") else tag


def dev_curves(wd: Path, name: str) -> dict[str, Any] | None:
    """One figure with the dev curve of every student trained in ``wd`` (each ``progress.json``:
    the shared training loop's record), or None when there is none."""
    series, scored = [], []
    for path in sorted(wd.rglob("progress.json")):
        try:
            rec = read_json(path)
        except Exception:  # noqa: BLE001 - a damaged state file is the training loop's business, not the report's
            continue
        hist = [h for h in (rec.get("history") or []) if isinstance(h, Mapping) and isinstance(h.get("score"), (int, float))
                and "epoch" in h] if isinstance(rec, Mapping) else []
        if hist:
            label = str(path.parent.relative_to(wd)) if path.parent != wd else name
            series.append((label, [h["epoch"] for h in hist], [h["score"] for h in hist]))
            scored.append(_scored(rec))
    if not series:
        return None
    if len(set(scored)) > 1:  # students scored on different things: say which on each line
        series = [(f"{label} ({what})", xs, ys) for (label, xs, ys), what in zip(series, scored)]
    ylabel = scored[0] if len(set(scored)) == 1 else "score"
    unit = all(0.0 <= y <= 1.0 for _, _, ys in series for y in ys)  # scores: one scale for every method
    what = "dev curve" if all(s.startswith("dev") for s in scored) else "selection score per epoch"  # MCKD: fidelity
    return figure(figures.curves(series, title=f"{name}: {ylabel} per epoch", xlabel="epoch", ylabel=ylabel,
                                 ylim=(0.0, 1.02) if unit else None),
                  title=f"{what} of every student ({len(series)})", alt=f"{name}: {what} of every student")


# --------------------------------------------------------------------------------------------
# llmkd report RUN_DIR
# --------------------------------------------------------------------------------------------
def rebuild(run_dir: str | Path, out: Path | None = None) -> Path:
    """Draw ``RUN_DIR/report.html`` (or ``out``) again from the run folder (``llmkd report``): the
    results of ``metrics.json`` (or, for a run still going, every finished method's
    ``result.json``). The pool's gold comes from the config's data files where they are still
    there. Returns the page's path."""
    from .build import build_task
    from .config import run_config
    from .data import make_splits

    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    metrics = _read(run_dir / "metrics.json") or {}
    results = metrics.get("results") or {m: read_json(run_dir / m / "result.json") for m in cfg.methods
                                         if (run_dir / m / "result.json").exists()}
    if not results:
        raise ConfigError(f"{run_dir} holds no finished method yet (no metrics.json, no */result.json); "
                          "the report is drawn once a method has finished")
    task, gold = None, None
    try:
        splits, vault = make_splits(cfg.data, cfg.seed)
        task, gold = build_task(cfg.task, splits.labels), vault.label_of
    except (OSError, LlmkdError) as exc:
        log.warning("the run's data could not be read (%s); the report leaves out what needs the pool's gold", exc)
    html = render_html(run_dir, cfg, results, metrics.get("pool") or {}, metrics.get("warnings") or [],
                       gate=metrics.get("gate"), task=task, gold=gold)
    if out is None:
        return write_html(run_dir, html)
    out.write_text(html, encoding="utf-8")
    return out
