"""How each method's records are shown: markdown sections inlined in the run's ``report.md``
and figures written beside its ``result.json``. Pure functions of a method's result (the dict of
``result.json``); :mod:`llmkd.report` calls them and writes what they return. Nothing here
decides anything, and the methods never import it.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from .methods.training import main_score, primary_metric
from .synthesis import DROP_REASONS

log = logging.getLogger(__name__)


@dataclass
class Rendered:
    sections: list[str] = field(default_factory=list)  #: markdown, inlined in report.md in this order
    files: dict[str, str | bytes] = field(default_factory=dict)  #: written into the method's folder


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
        for s in st["students"]:
            lines.append(f"| {st['stage']} | part {s['part']} | {s['n_train']} | {s['epochs']} | {s['stop_reason']} | "
                         f"{score(s.get('dev'))} | {score(s.get('test'))} |")
    for k, f in sorted(finals.items(), key=lambda kv: int(kv[0])):
        lines.append(f"| final ({k}-stage MCKD) | all parts | {f['n_train']} | {f['epochs']} | {f['stop_reason']} | "
                     f"{score(f.get('dev'))} | {score(f.get('test'))} |")
    lines += ["", "| stage | label churn | agreement with teacher | teacher abstentions | filled in | kept previous |",
              "|---|---:|---:|---:|---:|---:|"]
    for st in stages:
        lines.append(f"| {st['stage']} | {st['churn']:.1%} | {st['agreement_with_teacher']:.1%} | "
                     f"{st['teacher_abstentions']} | {st['abstentions_filled']} | {st['kept_previous']} |")
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
        c = rec["counts"]
        lines.append(f"| {rec['round']} | {main_score(rec.get('dev') or {}, task):.4f} | {c['generated']} | {c['kept']} | "
                     + " | ".join(str(c["dropped"].get(k, 0)) for k in DROP_REASONS)
                     + f" | {rec.get('n_replay', 0)} | {rec.get('teacher_calls', 0)} | {rec.get('teacher_tokens', 0)} |")
    lines += ["", "Student accuracy on each new batch before training on it (by kind), and the LLM's analysis:", ""]
    for rec in state["rounds"]:
        acc = rec.get("batch_accuracy_before_training") or {}
        acc_s = ", ".join(f"{k} {v:.2f}" for k, v in acc.items()) or "n/a"
        fb = rec.get("feedback")
        fb_s = f" Feedback set: {fb['evaluated']} evaluated, {fb['wrong']} wrong." if fb else ""
        lines.append(f"- Round {rec['round']} (batch accuracy: {acc_s}).{fb_s}")
        if rec.get("analysis"):
            lines.append(f"  > {rec['analysis']}")
    return "\n".join(lines) + "\n"


def curve_svg(state: Mapping[str, Any], *, title: str, task: Any = None) -> str:
    """A dependency-free SVG learning curve: dev score (y) per round (x), round 0 = seeds only."""
    pts = [(0, main_score(state.get("round0_dev") or {}, task))]
    pts += [(rec["round"], main_score(rec.get("dev") or {}, task)) for rec in state["rounds"]]
    w, h, m = 480, 300, 45
    xmax = max(1, max(x for x, _ in pts))
    def sx(x: float) -> float: return m + (w - 2 * m) * x / xmax
    def sy(y: float) -> float: return h - m - (h - 2 * m) * max(0.0, min(1.0, y))
    poly = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>',
             f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
             f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>']
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{m - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
        parts.append(f'<line x1="{m}" y1="{sy(v):.1f}" x2="{w - m}" y2="{sy(v):.1f}" stroke="#ddd"/>')
    for x, y in pts:
        parts.append(f'<text x="{sx(x):.1f}" y="{h - m + 16}" text-anchor="middle">{x}</text>')
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="#1f77b4"/>')
    parts += [f'<polyline points="{poly}" fill="none" stroke="#1f77b4" stroke-width="2"/>',
              f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">round</text>',
              f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" text-anchor="middle">dev score</text>',
              "</svg>"]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# LLKD
# --------------------------------------------------------------------------------------------
def llkd_report(result: Mapping[str, Any], task: Any = None) -> Rendered:
    """LLKD: how much of the pool was ever selected, and ``selection.png`` (option ``plot``)."""
    extra = result.get("extra", {})
    out = Rendered()
    if "data_fraction" in extra:
        out.sections.append(f"trained on {extra['n_train']} of {extra.get('pool_answered', '?')} pseudo-labels "
                            f"ever selected ({extra['data_fraction']:.1%} of the data)"
                            + (f"; {extra['batch_kept_fraction']:.1%} of each selection batch kept on average"
                               if "batch_kept_fraction" in extra else ""))
    if extra.get("options", {}).get("plot", True) and extra.get("epochs"):
        png = selection_png(extra["epochs"])
        if png:
            out.files["selection.png"] = png
    return out


def selection_png(epochs: list[dict[str, Any]]) -> bytes | None:
    """Per-class selected counts and thresholds per epoch, as a PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        log.warning("matplotlib is not installed, so no selection plot was drawn; pip install 'llmkd[plot]'")
        return None
    classes = list(epochs[0]["selected_per_class"])
    xs = [r["epoch"] for r in epochs]
    has_tau = "teacher_thresholds" in epochs[0]
    fig, axes = plt.subplots(1, 3 if has_tau else 1, figsize=(15 if has_tau else 5, 3.6), squeeze=False)
    ax = axes[0]
    for c in classes:
        ax[0].plot(xs, [r["selected_per_class"][c] for r in epochs], marker="o", label=c)
    ax[0].plot(xs, [r["ever_selected"] for r in epochs], "k--", label="ever selected (all)")
    ax[0].set(title="selected per class", xlabel="epoch", ylabel="examples")
    ax[0].legend(fontsize=7)
    if has_tau:
        for j, (key, title) in enumerate((("teacher_thresholds", "teacher threshold τ^T(y)"),
                                          ("student_thresholds", "student threshold τ^S(y)")), start=1):
            for c in classes:
                ax[j].plot(xs, [r[key][c] for r in epochs], marker="o", label=c)
            ax[j].plot(xs, [r["tau_teacher" if j == 1 else "tau_student"] for r in epochs], "k--", label="global τ")
            ax[j].set(title=title, xlabel="epoch")
            ax[j].legend(fontsize=7)
    for a in ax:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    return buf.getvalue()


#: method name -> how its result is shown (methods without an entry get the common table only)
RENDERERS = {"mckd": mckd_report, "evokd": evokd_report, "synth_nofeedback": evokd_report, "llkd": llkd_report}
