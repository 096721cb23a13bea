"""How each method's records are shown: markdown sections inlined in the run's ``report.md``,
figures written beside its ``result.json``, and the method's sections of ``report.html``
(:data:`HTML_SECTIONS`, as :ref:`blocks <blocks>`). Pure functions of a method's result (the dict
of ``result.json``) and the files in its folder; :mod:`llmkd.report` calls them and writes what
they return. Nothing here decides anything, and the methods never import it.

Every reader here takes what a record has and skips what it lacks (``.get``), so a method that
records more (or less) than when this was written still gets its report.

.. _blocks:

Blocks are small dicts the HTML template draws by their ``kind``: ``table`` (headers, rows of
strings, which columns are numeric), ``figure`` (a PNG data URI), ``text``, ``quote``,
``details`` (a folded list of blocks). ``report_only=True`` marks a block scored against the
pool's gold after the run (no method saw it).
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import figures
from .io import read_jsonl
from .methods.training import main_score, primary_metric
from .synthesis import DROP_REASONS

log = logging.getLogger(__name__)

Gold = Callable[[str], Any]  #: the pool's gold label of an example id (KeyError if unknown); report-only


@dataclass
class Rendered:
    sections: list[str] = field(default_factory=list)  #: markdown, inlined in report.md in this order
    files: dict[str, str | bytes] = field(default_factory=dict)  #: written into the method's folder


# --------------------------------------------------------------------------------------------
# blocks of report.html
# --------------------------------------------------------------------------------------------
def _numeric(cell: str) -> bool:
    try:
        float(cell.rstrip("%").replace(",", ""))
        return True
    except ValueError:
        return cell in ("–", "")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "", note: str = "",
          report_only: bool = False) -> dict[str, Any]:
    """A table block; cells are shown as given (``None`` as a dash), numeric columns right-aligned."""
    cells = [["–" if c is None else str(c) for c in r] for r in rows]
    numeric = [bool(cells) and all(_numeric(r[j]) for r in cells if j < len(r)) for j in range(len(headers))]
    return {"kind": "table", "title": title, "headers": list(headers), "rows": cells, "numeric": numeric,
            "note": note, "report_only": report_only}


def figure(fig: Any, *, title: str = "", alt: str = "", report_only: bool = False) -> dict[str, Any]:
    """A figure block: the matplotlib figure as an inline PNG (no file, no network)."""
    data = base64.b64encode(figures.png(fig)).decode("ascii")
    return {"kind": "figure", "title": title, "src": f"data:image/png;base64,{data}", "alt": alt or title,
            "report_only": report_only}


def text(body: str, *, title: str = "", report_only: bool = False) -> dict[str, Any]:
    return {"kind": "text", "title": title, "text": body, "report_only": report_only}


def quote(body: str, *, title: str = "") -> dict[str, Any]:
    return {"kind": "quote", "title": title, "text": body}


def details(summary: str, blocks: Sequence[dict[str, Any]], *, open: bool = True) -> dict[str, Any]:
    return {"kind": "details", "summary": summary, "blocks": list(blocks), "open": open}


def cell(v: Any, fmt: str = "{:.4f}") -> str:
    """``v`` formatted as ``fmt`` for a table cell: a dash for None, ``str(v)`` where ``fmt`` does not fit."""
    if v is None:
        return "–"
    try:
        return fmt.format(v)
    except (TypeError, ValueError):
        return str(v)


def label_key(label: Any) -> Any:
    """A label comparable with ==: JSON gives NER tag tuples back as lists."""
    return tuple(label) if isinstance(label, list) else label


def read_rows(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path) if path.exists() else []


def label_accuracy(rows: Sequence[tuple[str, Any, bool]], gold: Gold) -> tuple[float | None, float | None, int]:
    """(accuracy of the answered labels, accuracy with an abstention counted wrong, n scored) of
    ``(id, label, abstained)`` against the pool's gold; ids without gold are left out."""
    scored = []
    for i, lab, abst in rows:
        try:
            g = gold(i)
        except KeyError:
            continue
        scored.append((abst, not abst and label_key(lab) == label_key(g)))
    answered = [ok for abst, ok in scored if not abst]
    if not scored:
        return None, None, 0
    return (sum(answered) / len(answered) if answered else None), sum(ok for _, ok in scored) / len(scored), len(scored)


# --------------------------------------------------------------------------------------------
# MCKD
# --------------------------------------------------------------------------------------------
def mckd_report(result: Mapping[str, Any], task: Any = None) -> Rendered:
    """MCKD: the per-stage tables and ``stages.json`` (every stage report and final student)."""
    extra = result.get("extra", {})
    stages, finals = extra.get("stages", []), extra.get("finals", {})
    return Rendered([stages_markdown(stages, finals, task=task)],
                    {"stages.json": json.dumps({"stages": stages, "finals": finals}, indent=1)})


def stages_markdown(stages: list[dict[str, Any]], finals: Mapping[Any, dict[str, Any]], *, task: Any = None) -> str:
    """The per-stage report as markdown (inlined into the run's report.md)."""
    def score(m: dict[str, float] | None) -> str:
        if not m:
            return "–"
        key = primary_metric(task, m)
        return f"{key} {m[key]:.4f}"

    lines = ["## MCKD per stage", "", "| stage | student | train size | epochs | stop | dev | test |",
             "|---|---|---:|---:|---|---|---|"]
    for st in stages:
        for s in st.get("students", []):
            lines.append(f"| {st.get('stage')} | part {s.get('part')} | {s.get('n_train')} | {s.get('epochs')} | "
                         f"{s.get('stop_reason')} | {score(s.get('dev'))} | {score(s.get('test'))} |")
    for k, f in sorted(finals.items(), key=lambda kv: int(kv[0])):
        lines.append(f"| final ({k}-stage MCKD) | all parts | {f.get('n_train')} | {f.get('epochs')} | {f.get('stop_reason')} | "
                     f"{score(f.get('dev'))} | {score(f.get('test'))} |")
    lines += ["", "| stage | label churn | agreement with teacher | teacher abstentions | filled in | kept previous |",
              "|---|---:|---:|---:|---:|---:|"]
    for st in stages:
        lines.append(f"| {st.get('stage')} | {cell(st.get('churn'), '{:.1%}')} | {cell(st.get('agreement_with_teacher'), '{:.1%}')} | "
                     f"{cell(st.get('teacher_abstentions'), '{}')} | {cell(st.get('abstentions_filled'), '{}')} | "
                     f"{cell(st.get('kept_previous'), '{}')} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# EvoKD / synth_nofeedback
# --------------------------------------------------------------------------------------------
def evokd_report(result: Mapping[str, Any], task: Any = None) -> Rendered:
    """EvoKD / synth_nofeedback: the per-round table and analyses, and the SVG learning curve."""
    name, extra = result["method"], result.get("extra", {})
    state = {"stop_reason": result.get("stop_reason"), "best_round": extra.get("best_round"),
             "best_score": extra.get("best_score", main_score(extra.get("best_dev"), task)), "round0_dev": extra.get("round0_dev"),
             "rounds": extra.get("rounds", [])}
    return Rendered([rounds_markdown(name, state, task=task)],
                    {"learning_curve.svg": curve_svg(state, title=f"{name}: dev score per round", task=task)})


def rounds_markdown(name: str, state: Mapping[str, Any], *, task: Any = None) -> str:
    """Per-round report: dev score, samples generated / kept / dropped by reason, the analysis."""
    lines = [f"## {name}: rounds", "", f"Stopped: {state.get('stop_reason')}. Best round: {state.get('best_round')} "
             f"(dev {state.get('best_score', -1):.4f}; round 0 = gold seeds only, dev "
             f"{main_score(state.get('round0_dev') or {}, task):.4f}).", "",
             "| round | dev | generated | kept | " + " | ".join(DROP_REASONS) + " | replayed | teacher calls | tokens |",
             "|---:|---:|---:|---:|" + "---:|" * len(DROP_REASONS) + "---:|---:|---:|"]
    for rec in state["rounds"]:
        c = rec.get("counts") or {}
        lines.append(f"| {rec.get('round')} | {main_score(rec.get('dev') or {}, task):.4f} | {c.get('generated', 0)} | "
                     f"{c.get('kept', 0)} | " + " | ".join(str((c.get("dropped") or {}).get(k, 0)) for k in DROP_REASONS)
                     + f" | {rec.get('n_replay', 0)} | {rec.get('teacher_calls', 0)} | {rec.get('teacher_tokens', 0)} |")
    lines += ["", "Student accuracy on each new batch before training on it (by kind), and the LLM's analysis:", ""]
    for rec in state["rounds"]:
        acc = rec.get("batch_accuracy_before_training") or {}
        acc_s = ", ".join(f"{k} {v:.2f}" for k, v in acc.items()) or "n/a"
        fb = rec.get("feedback")
        fb_s = f" Feedback set: {fb.get('evaluated', '?')} evaluated, {fb.get('wrong', '?')} wrong." if fb else ""
        lines.append(f"- Round {rec.get('round')} (batch accuracy: {acc_s}).{fb_s}")
        if rec.get("analysis"):
            lines.append(f"  > {rec['analysis']}")
    return "\n".join(lines) + "\n"


def curve_svg(state: Mapping[str, Any], *, title: str, task: Any = None) -> str:
    """The learning curve (dev score per round, round 0 = seeds only) as SVG, drawn by matplotlib."""
    return figures.svg(rounds_figure(state, title=title, task=task))


def rounds_figure(state: Mapping[str, Any], *, title: str, task: Any = None) -> Any:
    """Dev score per round: round 0 (the student on the gold seeds) then every recorded round."""
    pts = {0: main_score(state.get("round0_dev") or {}, task)} if state.get("round0_dev") else {}
    for rec in state.get("rounds", []):
        if rec.get("dev"):
            pts[int(rec.get("round", len(pts)))] = main_score(rec["dev"], task)
    xs = sorted(pts)
    return figures.rounds_curve(xs, [pts[x] for x in xs], title=title)


# --------------------------------------------------------------------------------------------
# LLKD
# --------------------------------------------------------------------------------------------
def llkd_report(result: Mapping[str, Any], task: Any = None) -> Rendered:
    """LLKD: how much of the pool was ever selected, and ``selection.png`` (option ``plot``)."""
    extra = result.get("extra", {})
    out = Rendered()
    if "data_fraction" in extra:
        out.sections.append(f"trained on {extra.get('n_train')} of {extra.get('pool_answered', '?')} pseudo-labels "
                            f"ever selected ({extra['data_fraction']:.1%} of the data)"
                            + (f"; {extra['batch_kept_fraction']:.1%} of each selection batch kept on average"
                               if "batch_kept_fraction" in extra else ""))
    if extra.get("options", {}).get("plot", True) and extra.get("epochs"):
        out.files["selection.png"] = selection_png(extra["epochs"], pool=extra.get("pool_answered"))
    return out


def _selection_axis(records: Sequence[Mapping[str, Any]]) -> str:
    """The x of LLKD's records: ``step`` where every record has one, else ``epoch``."""
    return "step" if records and all("step" in r for r in records) else "epoch"


def selection_png(epochs: list[dict[str, Any]], pool: int | None = None) -> bytes:
    """Share kept, selected counts per class and the thresholds per epoch, as a PNG."""
    return figures.png(figures.selection(epochs, pool=pool, x=_selection_axis(epochs)), dpi=110)


MAX_ROWS = 40  #: rows of a per-epoch / per-step table in report.html


def llkd_html(result: Mapping[str, Any], wd: Path, task: Any = None, gold: Gold | None = None) -> list[dict[str, Any]]:
    """LLKD's kept fraction and thresholds over its records, the record table, and (report-only)
    how accurate the labels it kept were beside those it never kept."""
    extra = result.get("extra", {})
    steps = extra.get("steps")
    steps = [r for r in steps if isinstance(r, Mapping) and "step" in r] if isinstance(steps, list) else []
    records = steps or [r for r in extra.get("epochs") or [] if isinstance(r, Mapping)]  # per step where recorded
    pool = extra.get("pool_answered")
    blocks = []
    if "data_fraction" in extra:
        blocks.append(text(f"Trained on {extra.get('n_train')} of {pool if pool is not None else '?'} answered "
                           f"pseudo-labels ever selected ({extra['data_fraction']:.1%}); on average "
                           f"{cell(extra.get('mean_epoch_fraction'), '{:.1%}')} of them per epoch"
                           + (f", {extra['batch_kept_fraction']:.1%} of each selection batch"
                              if isinstance(extra.get("batch_kept_fraction"), (int, float)) else "")
                           + (f"; {extra['steps']} steps of the budget's {extra['max_steps']}"
                              if isinstance(extra.get("steps"), int) and extra.get("max_steps") else "") + "."))
    trace = extra.get("trace")
    if isinstance(trace, Mapping) and trace.get("step"):
        blocks.append(figure(figures.selection_trace(trace), title="selection per step"))
    if records:
        x = _selection_axis(records)
        blocks.append(figure(figures.selection(records, pool=pool, x=x), title=f"selection per {x}"))
        classes = list(records[0].get("selected_per_class", {}))
        headers = [x, "selected", "ever selected", "share ever kept", "τ teacher", "τ student",
                   *[f"τ^T({c})" for c in classes], *[f"τ^S({c})" for c in classes]]
        rows = [[r.get(x), r.get("selected"), r.get("ever_selected"), cell(r.get("data_fraction"), "{:.1%}"),
                 cell(r.get("tau_teacher")), cell(r.get("tau_student")),
                 *[cell((r.get("teacher_thresholds") or {}).get(c)) for c in classes],
                 *[cell((r.get("student_thresholds") or {}).get(c)) for c in classes]] for r in records]
        every = -(-len(rows) // MAX_ROWS)  # a long per-step record: every n-th row (and the last)
        shown = rows[::every] + ([rows[-1]] if (len(rows) - 1) % every else [])
        blocks.append(table(headers, shown, title=f"selection record per {x}",
                            note=f"One {x} in {every} of the {len(rows)} is shown, and the last (the figure has them all)." if every > 1 else ""))
    rows = read_rows(wd / "selection.jsonl")
    if gold is not None and rows:
        kept = [(r["id"], r.get("label"), False) for r in rows if r.get("times_selected")]
        never = [(r["id"], r.get("label"), False) for r in rows if not r.get("times_selected")]
        body = [[name, len(part), cell(label_accuracy(part, gold)[0])] for name, part in
                (("ever selected", kept), ("never selected", never), ("all answered", kept + never))]
        blocks.append(table(["teacher labels", "n", "accuracy against the pool's gold"], body,
                            title="were the kept labels the right ones?", report_only=True))
    return blocks


# --------------------------------------------------------------------------------------------
# MCKD (HTML)
# --------------------------------------------------------------------------------------------
def mckd_html(result: Mapping[str, Any], wd: Path, task: Any = None, gold: Gold | None = None) -> list[dict[str, Any]]:
    """MCKD's stage tables: every student's dev / test score, and per stage the pool labels' churn,
    agreement with the teacher and (report-only) accuracy against the pool's gold."""
    extra = result.get("extra", {})
    stages, finals = extra.get("stages") or [], extra.get("finals") or {}

    def score(m: Mapping[str, Any] | None) -> str:
        return "–" if not m else f"{primary_metric(task, m)} {main_score(m, task):.4f}"

    rows = [[s.get("stage"), f"part {p.get('part')}", p.get("n_train"), p.get("epochs"), p.get("stop_reason"),
             score(p.get("dev")), score(p.get("test"))] for s in stages for p in s.get("students", [])]
    rows += [[f"final ({k}-stage MCKD)", "all parts", f.get("n_train"), f.get("epochs"), f.get("stop_reason"),
              score(f.get("dev")), score(f.get("test"))]
             for k, f in sorted(finals.items(), key=lambda kv: int(kv[0]))]
    blocks = [table(["stage", "student", "train size", "epochs", "stop", "dev", "test"], rows,
                    title="students per stage")]
    # the pool's labels at every stage (0 = the teacher's), from provenance.jsonl
    prov = read_rows(wd / "provenance.jsonl")
    n_stages = max([len(r.get("labels", [])) for r in prov] + [len(stages) + 1])
    acc: list[tuple[float | None, float | None, int]] = []
    for k in range(n_stages):
        labels = [(r["id"], r["labels"][k].get("label"), bool(r["labels"][k].get("abstained")))
                  for r in prov if k < len(r.get("labels", []))]
        acc.append(label_accuracy(labels, gold) if gold is not None and labels else (None, None, 0))
    by_stage = {s.get("stage"): s for s in stages}
    body = []
    for k in range(n_stages):
        st = by_stage.get(k, {})
        body.append([k, "teacher" if k == 0 else "students of the other parts", cell(st.get("churn"), "{:.1%}"),
                     cell(st.get("agreement_with_teacher"), "{:.1%}"), st.get("abstentions_filled"),
                     st.get("kept_previous"), cell(acc[k][0]), cell(acc[k][1])])
    note = ("Churn: share of the pool whose label changed at that stage. The two accuracy columns score the pool's "
            "labels against the pool's gold (kept apart from every method) after the run: report-only.")
    if gold is None:
        note += " The pool's gold was not available here, so they are empty."
    blocks.append(table(["stage", "labeled by", "churn", "agreement with teacher", "abstentions filled",
                         "kept previous", "pool label accuracy (answered)", "accuracy (abstention = wrong)"],
                        body, title="pool labels per stage", note=note, report_only=gold is not None))
    if gold is not None and any(a[0] is not None for a in acc):
        series = [("pool label accuracy", list(range(n_stages)), [a[0] if a[0] is not None else float("nan") for a in acc])]
        if stages:
            series.append(("churn", [s.get("stage") for s in stages], [s.get("churn", float("nan")) for s in stages]))
        blocks.append(figure(figures.curves(series, title="pool labels per stage", xlabel="stage", ylabel="share",
                                            ylim=(0.0, 1.02)),
                             title="pool label accuracy and churn per stage", report_only=True))
    return blocks


# --------------------------------------------------------------------------------------------
# EvoKD (HTML)
# --------------------------------------------------------------------------------------------
SAMPLES_PER_ROUND = 6  #: sample texts shown per round in report.html (synthetic.jsonl has them all)


def evokd_html(result: Mapping[str, Any], wd: Path, task: Any = None, gold: Gold | None = None) -> list[dict[str, Any]]:
    """EvoKD / synth_nofeedback: the dev curve over rounds, the per-round table, and every round's
    analysis and some of its samples (kept, and dropped with the reason)."""
    name, extra = result.get("method", "evokd"), result.get("extra", {})
    rounds = [r for r in extra.get("rounds") or [] if isinstance(r, Mapping)]
    state = {"round0_dev": extra.get("round0_dev"), "rounds": rounds}
    best = extra.get("best_score", main_score(extra.get("best_dev"), task))
    blocks = [text(f"Best round: {extra.get('best_round')} (dev {cell(best)}). Teacher calls "
                   f"{extra.get('teacher_calls_used', '–')}, tokens {extra.get('teacher_tokens_used', '–')}.")]
    if rounds or extra.get("round0_dev"):
        blocks.append(figure(rounds_figure(state, title=f"{name}: dev score per round", task=task),
                             title="dev score per round (round 0: the student on the gold seeds)"))
    seen = {k for r in rounds for k, v in ((r.get("counts") or {}).get("dropped") or {}).items() if v}
    drops = [k for k in DROP_REASONS if k in seen] + sorted(seen - set(DROP_REASONS))  # the reasons that dropped any
    rows = []
    for r in rounds:
        c = r.get("counts") or {}
        dropped = c.get("dropped") or {}
        rows.append([r.get("round"), cell(main_score(r.get("dev"), task)) if r.get("dev") else "–", c.get("generated"),
                     c.get("kept"), *[dropped.get(k, 0) for k in drops], r.get("n_replay"), r.get("teacher_calls"),
                     r.get("teacher_tokens")])
    if rows:
        blocks.append(table(["round", "dev", "generated", "kept", *[f"dropped: {k}" for k in drops], "replayed",
                             "teacher calls", "tokens"], rows, title="rounds",
                            note="Drop reasons that dropped nothing are left out (report.md lists them all)."))
    samples = read_rows(wd / "synthetic.jsonl")
    for r in rounds:
        inner: list[dict[str, Any]] = []
        fb = r.get("feedback") or {}
        acc = r.get("batch_accuracy_before_training") or {}
        facts = []
        if fb:
            facts.append(f"feedback set: {fb.get('evaluated', '?')} evaluated, {fb.get('wrong', '?')} wrong "
                         f"(shown {fb.get('shown_wrong', '?')} wrong, {fb.get('shown_right', '?')} right)")
        if acc:
            facts.append("student accuracy on the new batch before training on it: "
                         + ", ".join(f"{k} {cell(v, '{:.2f}')}" for k, v in acc.items()))
        if facts:
            inner.append(text("; ".join(facts) + "."))
        if r.get("analysis"):
            inner.append(quote(str(r["analysis"]), title="the teacher's analysis of the student's weaknesses"))
        mine = [s for s in samples if s.get("round") == r.get("round")]
        shown = [s for s in mine if s.get("status") == "kept"][:SAMPLES_PER_ROUND]
        shown += [s for s in mine if s.get("status") != "kept"][:max(2, SAMPLES_PER_ROUND - len(shown))]
        if shown:
            inner.append(table(["kind", "text", "teacher label", "confidence", "status"],
                               [[s.get("kind"), s.get("text"), _show_label(s.get("label")), cell(s.get("confidence"), "{:.2f}"),
                                 s.get("status")] for s in shown],
                               title=f"samples ({len(shown)} of {len(mine)} labeled this round; all in {wd.name}/synthetic.jsonl)"))
        if inner:
            blocks.append(details(f"round {r.get('round')}", inner, open=len(rounds) <= 5 or r is rounds[-1]))
    return blocks


def _show_label(label: Any) -> str:
    """A label in a table cell: NER tags as their non-O entities, others as they are."""
    if isinstance(label, (list, tuple)):
        tags = [t for t in label if t != "O"]
        return " ".join(tags) if tags else "(no entity)"
    return "–" if label is None else str(label)


#: method name -> how its result is shown (methods without an entry get the common table only)
RENDERERS = {"mckd": mckd_report, "evokd": evokd_report, "synth_nofeedback": evokd_report, "llkd": llkd_report}
#: method name -> its own sections of report.html (every method also gets the common ones)
HTML_SECTIONS = {"mckd": mckd_html, "evokd": evokd_html, "synth_nofeedback": evokd_html, "llkd": llkd_html}
