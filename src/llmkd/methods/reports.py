"""The reports the methods write into their run directory: markdown sections inlined into the
run's ``report.md`` (``sections``), plots (``plots``) and the per-stage / per-round records.

Method files call these after their algorithm has run; nothing here decides anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..io import write_json, write_jsonl
from ..synthesis import DROP_REASONS
from .base import primary_metric


# --------------------------------------------------------------------------------------------
# MCKD
# --------------------------------------------------------------------------------------------
def write_stages_report(workdir: Path, stages: list[dict[str, Any]], finals: dict[int, dict[str, Any]],
                        provenance: Sequence[dict[str, Any]], *, task: Any = None) -> None:
    """MCKD's ``stages.json``, ``stages.md`` (a report section) and ``provenance.jsonl``."""
    write_json(workdir / "stages.json", {"stages": stages, "finals": finals})
    (workdir / "stages.md").write_text(stages_markdown(stages, finals, task=task), encoding="utf-8")
    write_jsonl(workdir / "provenance.jsonl", provenance)


def stages_markdown(stages: list[dict[str, Any]], finals: dict[int, dict[str, Any]], *, task: Any = None) -> str:
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
    for k, f in sorted(finals.items()):
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
def write_rounds_report(workdir: Path, name: str, state: dict[str, Any], samples: Sequence[dict[str, Any]], *,
                        task: Any = None) -> None:
    """EvoKD's ``synthetic.jsonl`` (every kept sample), ``learning_curve.svg`` (a plot) and
    ``rounds.md`` (a report section)."""
    write_jsonl(workdir / "synthetic.jsonl", samples)
    write_curve(workdir / "learning_curve.svg", state, title=f"{name}: dev score per round", task=task)
    (workdir / "rounds.md").write_text(rounds_markdown(name, state, task=task))


def _main_metric(scores: dict[str, float], task: Any) -> float:
    """The task's :func:`primary_metric` in ``scores``; -1 without scores (no dev set)."""
    if not scores:
        return -1.0
    return float(scores[primary_metric(task, scores)])


def rounds_markdown(name: str, state: dict[str, Any], *, task: Any = None) -> str:
    """Per-round report: dev score, samples generated / kept / dropped by reason, the analysis."""
    lines = [f"# {name}: rounds", "", f"Stopped: {state.get('stop_reason')}. Best round: {state.get('best_round')} "
             f"(dev {state.get('best_score', -1):.4f}; round 0 = gold seeds only, dev "
             f"{_main_metric(state.get('round0_dev') or {}, task):.4f}).", "",
             "| round | dev | generated | kept | " + " | ".join(DROP_REASONS) + " | replayed | teacher calls | tokens |",
             "|---:|---:|---:|---:|" + "---:|" * len(DROP_REASONS) + "---:|---:|---:|"]
    for rec in state["rounds"]:
        c = rec["counts"]
        lines.append(f"| {rec['round']} | {_main_metric(rec.get('dev') or {}, task):.4f} | {c['generated']} | {c['kept']} | "
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


def write_curve(path: Path, state: dict[str, Any], *, title: str, task: Any = None) -> None:
    """A dependency-free SVG learning curve: dev score (y) per round (x), round 0 = seeds only."""
    pts = [(0, _main_metric(state.get("round0_dev") or {}, task))]
    pts += [(rec["round"], _main_metric(rec.get("dev") or {}, task)) for rec in state["rounds"]]
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
    path.write_text("\n".join(parts) + "\n")
