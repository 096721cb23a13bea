"""Every figure llmkd draws, with matplotlib: PNG bytes (or SVG text) from plain numbers.

Pure functions, no pyplot (each figure is a :class:`matplotlib.figure.Figure` of its own, so
nothing global is touched and no display is needed). :mod:`llmkd.method_reports` and
:mod:`llmkd.html_report` call them; the methods never do. Not handled: interactive figures.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

DPI = 90
BLUE, GREY = "#1f77b4", "#888888"


def _figure(width: float, height: float, cols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, cols, squeeze=False)[0]
    return fig, list(axes)


def png(fig: Any, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def svg(fig: Any) -> str:
    """The figure as an ``<svg>`` element (the XML prolog and doctype dropped, so the same text is a
    valid .svg file and inlines into HTML)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _integer_x(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# --------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------
def confusion(matrix: Sequence[Sequence[int]], rows: Sequence[str], cols: Sequence[str], *, title: str,
              xlabel: str = "predicted", ylabel: str = "gold") -> Any:
    """A confusion matrix: counts per (row = gold, column = predicted), shaded by the row's share
    (so a small class reads as clearly as a large one), with the counts written in while they fit."""
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    side = min(12.0, max(3.6, 0.45 * len(cols) + 2.2))
    fig, (ax,) = _figure(side, min(12.0, max(3.0, 0.45 * len(rows) + 1.8)))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    small = max(len(rows), len(cols)) > 30
    ax.set_xticks(range(len(cols)), [str(c) for c in cols], rotation=45 if len(cols) > 3 else 0, ha="right" if len(cols) > 3 else "center",
                  fontsize=6 if small else 8)
    ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=6 if small else 8)
    if max(len(rows), len(cols)) <= 20:
        for i in range(len(rows)):
            for j in range(len(cols)):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.6 else "black")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.title.set_fontsize(10)
    return fig


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------
def calibration_bins(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> list[dict[str, float]]:
    """Equal-width confidence bins over [0, 1]: count, mean confidence and accuracy of each
    non-empty bin (the reliability diagram's points)."""
    out = []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        idx = [i for i, c in enumerate(confidence) if lo <= c < hi or (b == n_bins - 1 and c == 1.0)]
        if idx:
            out.append({"lo": lo, "hi": hi, "n": len(idx), "confidence": sum(confidence[i] for i in idx) / len(idx),
                        "accuracy": sum(bool(correct[i]) for i in idx) / len(idx)})
    return out


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """ECE: the count-weighted mean gap between a bin's accuracy and its mean confidence."""
    bins = calibration_bins(confidence, correct, n_bins)
    n = sum(b["n"] for b in bins)
    return sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / n if n else 0.0


def coverage_curve(confidence: Sequence[float], correct: Sequence[bool]) -> tuple[list[float], list[float]]:
    """Accuracy of the most confident answers, as their share (coverage) grows from one answer to
    all of them (ties broken by the order given)."""
    order = sorted(range(len(confidence)), key=lambda i: -confidence[i])
    cov, acc, right = [], [], 0
    for k, i in enumerate(order, start=1):
        right += bool(correct[i])
        cov.append(k / len(order))
        acc.append(right / k)
    return cov, acc


def calibration(confidence: Sequence[float], correct: Sequence[bool], *, title: str) -> Any:
    """Two panels: the reliability diagram (accuracy per confidence bin against the diagonal, with
    each bin's count) and accuracy against coverage when only answers above a confidence are kept."""
    fig, (ax, bx) = _figure(9.0, 3.6, cols=2)
    bins = calibration_bins(confidence, correct)
    ax.plot([0, 1], [0, 1], ls="--", color=GREY, lw=1, label="perfect calibration")
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=0.09, color=BLUE,
           alpha=0.75, label="accuracy in the bin")
    for b in bins:
        ax.text((b["lo"] + b["hi"]) / 2, min(b["accuracy"], 0.92) + 0.02, str(b["n"]), ha="center", fontsize=7)
    ece = expected_calibration_error(confidence, correct)
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="teacher confidence", ylabel="accuracy",
           title=f"reliability (ECE {ece:.3f}, n={len(confidence)})")
    ax.legend(fontsize=7, loc="upper left")
    cov, acc = coverage_curve(confidence, correct)
    bx.plot(cov, acc, color=BLUE)
    overall = sum(map(bool, correct)) / len(correct) if correct else 0.0
    bx.axhline(overall, ls="--", color=GREY, lw=1, label=f"all answers ({overall:.3f})")
    bx.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="coverage (share of answers kept, most confident first)",
           ylabel="accuracy of the kept answers", title="accuracy vs coverage")
    bx.legend(fontsize=7, loc="lower left")
    for a in (ax, bx):
        a.title.set_fontsize(10)
    fig.suptitle(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# curves
# --------------------------------------------------------------------------------------------
def curves(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, title: str, xlabel: str,
           ylabel: str, ylim: tuple[float, float] | None = None) -> Any:
    """One line per (name, xs, ys), markers on the points; the legend beside the plot when long."""
    fig, (ax,) = _figure(7.5 if len(series) > 4 else 6.0, 3.4)
    for name, xs, ys in series:
        ax.plot(xs, ys, marker="o", ms=3, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.title.set_fontsize(10)
    _integer_x(ax)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="center left" if len(series) > 4 else "best",
                  bbox_to_anchor=(1.01, 0.5) if len(series) > 4 else None)
    return fig


def rounds_curve(rounds: Sequence[int], scores: Sequence[float], *, title: str, ylabel: str = "dev score") -> Any:
    """A dev score per round (EvoKD: round 0 = the student on the gold seeds only)."""
    fig, (ax,) = _figure(5.4, 3.3)
    ax.plot(rounds, scores, marker="o", color=BLUE)
    for x, y in zip(rounds, scores):
        ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set(title=title, xlabel="round", ylabel=ylabel, ylim=(0, 1.05))
    ax.title.set_fontsize(10)
    _integer_x(ax)
    return fig


# --------------------------------------------------------------------------------------------
# LLKD selection
# --------------------------------------------------------------------------------------------
def selection(records: Sequence[Mapping[str, Any]], *, pool: int | None = None, x: str = "epoch") -> Any:
    """LLKD's per-epoch (or per-step: ``x``) record: the share of the pool kept and ever kept,
    the selected count per class, and where the record has them the per-class teacher and student
    thresholds τ^T(y), τ^S(y) with the global τ."""
    xs = [r[x] for r in records]
    has_tau = all("teacher_thresholds" in r for r in records)
    fig, axes = _figure(15.0 if has_tau else 9.0, 3.5, cols=4 if has_tau else 2)
    classes = list(records[0].get("selected_per_class", {}))
    ax = axes[0]
    if pool:
        ax.plot(xs, [r.get("selected", math.nan) / pool for r in records], marker="o", ms=3, label="kept this " + x)
    if all("data_fraction" in r for r in records):
        ax.plot(xs, [r["data_fraction"] for r in records], "k--", marker="o", ms=3, label="ever kept")
    ax.set(title="share of the pool kept", xlabel=x, ylim=(0, 1.05))
    ax.legend(fontsize=7)
    bx = axes[1]
    for c in classes:
        bx.plot(xs, [r["selected_per_class"].get(c, 0) for r in records], marker="o", ms=3, label=c)
    if all("ever_selected" in r for r in records):
        bx.plot(xs, [r["ever_selected"] for r in records], "k--", label="ever selected (all)")
    bx.set(title="selected per class", xlabel=x, ylabel="examples")
    bx.legend(fontsize=7)
    if has_tau:
        for a, (key, glob, title) in zip(axes[2:], (("teacher_thresholds", "tau_teacher", "teacher threshold τ^T(y)"),
                                                    ("student_thresholds", "tau_student", "student threshold τ^S(y)"))):
            for c in classes:
                a.plot(xs, [r[key].get(c, math.nan) for r in records], marker="o", ms=3, label=c)
            if all(glob in r for r in records):
                a.plot(xs, [r[glob] for r in records], "k--", label="global τ")
            a.set(title=title, xlabel=x)
            a.legend(fontsize=7)
    for a in axes:
        a.title.set_fontsize(10)
        _integer_x(a)
    return fig


def selection_trace(trace: Mapping[str, Sequence[float]]) -> Any:
    """LLKD's per-step trace (``extra["trace"]``: ``step``, ``kept_fraction``, ``tau_teacher``,
    ``tau_student``): the share of each selection batch kept, and the global thresholds."""
    steps = list(trace["step"])
    fig, axes = _figure(9.0, 3.2, cols=2)
    axes[0].plot(steps, list(trace["kept_fraction"]), lw=1)
    axes[0].set(title="share of each selection batch kept", xlabel="threshold update", ylim=(0, 1.05))
    for key, name in (("tau_teacher", "τ^T (teacher)"), ("tau_student", "τ^S (student)")):
        if len(trace.get(key) or []) == len(steps):
            axes[1].plot(steps, list(trace[key]), lw=1, label=name)
    axes[1].set(title="global thresholds", xlabel="threshold update")
    axes[1].legend(fontsize=7)
    for a in axes:
        a.title.set_fontsize(10)
        _integer_x(a)
    return fig
