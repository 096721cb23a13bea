"""Run directory writer: resolved config, manifest, labels with provenance, metrics, report.

Layout::

    RUN_DIR/config.yaml        the effective config
    RUN_DIR/manifest.json      package versions, seeds, model hashes, git sha, machine
    RUN_DIR/labels.jsonl       gold labeled examples + teacher labels of the pool (provenance)
    RUN_DIR/metrics.json       every method's test metrics, timings and training record
    RUN_DIR/report.md          the comparison table
    RUN_DIR/<method>/          predictions.jsonl, result.json, student checkpoints
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from .io import read_jsonl, write_json, write_jsonl  # re-exported: the writers used to live here

__all__ = ["read_jsonl", "write_json", "write_jsonl", "manifest", "table", "per_type_table", "flat_row",
           "render_report"]


def _git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def manifest(cfg: Any, model_hashes: dict[str, str]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    pkgs = {}
    for name in ("llmkd", "torch", "transformers", "tokenizers", "llama-cpp-python", "scikit-learn", "numpy", "seqeval", "httpx"):
        try:
            pkgs[name] = version(name)
        except PackageNotFoundError:
            pkgs[name] = None
    return {
        "seed": cfg.seed,
        "packages": pkgs,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "git_sha": _git_sha(),
        "models": model_hashes,
    }


COLUMNS = [
    ("macro_f1", "macro-F1", "{:.4f}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("abstention_rate", "abstention", "{:.3f}"),
    ("teacher_seconds", "labeling s", "{:.1f}"),
    ("train_seconds", "training s", "{:.1f}"),
    ("n_train", "train size", "{:d}"),
]


def _fmt(fmt: str, v: Any) -> str:
    if v is None:
        return "–"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


SPAN_COLUMNS = [("f1", "span F1", "{:.4f}"), ("precision", "precision", "{:.4f}"), ("recall", "recall", "{:.4f}")]


def _columns(rows: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """COLUMNS; for span-scored tasks (NER: an ``f1`` metric) the span columns first, and the
    classification columns only where some row has them."""
    if not any("f1" in r for r in rows.values()):
        return COLUMNS
    kept = [c for c in COLUMNS if c[0] not in ("macro_f1", "accuracy") or any(c[0] in r for r in rows.values())]
    return SPAN_COLUMNS + kept


def table(rows: dict[str, dict[str, Any]]) -> str:
    columns = _columns(rows)
    head = "| method | " + " | ".join(c[1] for c in columns) + " |"
    sep = "|---|" + "---:|" * len(columns)
    lines = [head, sep]
    for method, r in rows.items():
        lines.append(f"| {method} | " + " | ".join(_fmt(f, r.get(k)) for k, _, f in columns) + " |")
    return "\n".join(lines)


def per_type_table(rows: dict[str, dict[str, Any]]) -> str:
    """F1 per entity type (metrics ``f1[T]``, NER) per method, with the test support; "" if none."""
    types = sorted({k[3:-1] for r in rows.values() for k in r if k.startswith("f1[") and k.endswith("]")})
    if not types:
        return ""
    lines = ["| method | " + " | ".join(types) + " |", "|---|" + "---:|" * len(types)]
    for method, r in rows.items():
        lines.append(f"| {method} | " + " | ".join(_fmt("{:.4f}", r.get(f"f1[{t}]")) for t in types) + " |")
    support = next((r for r in rows.values() if f"support[{types[0]}]" in r), None)
    if support is not None:
        lines.append("| *test entities* | " + " | ".join(str(support.get(f"support[{t}]", "–")) for t in types) + " |")
    return "\n".join(lines)


def flat_row(result: dict[str, Any]) -> dict[str, Any]:
    row = dict(result["metrics"])
    row.update(result.get("timings", {}))
    row["n_train"] = result.get("extra", {}).get("n_train")
    return row


def render_report(cfg: Any, results: dict[str, dict[str, Any]], pool_stats: dict[str, Any], run_dir: Path,
                  warnings: list[str] | None = None) -> str:
    lines = [
        f"# llmkd run `{cfg.name}`",
        "",
        f"Teacher `{cfg.teacher.model}` ({cfg.teacher.backend}), student `{cfg.student.model}`, seed {cfg.seed}.",
        f"Data: {cfg.data.train} (labeled, pool, dev drawn by seed), test {cfg.data.test}.",
        "",
        "## Test results",
        "",
        table({m: flat_row(r) for m, r in results.items()}),
        "",
        "Abstentions (unparseable teacher replies) count as errors in accuracy and F1 and are",
        "reported separately; they are never mapped to a class. \"labeling s\" is the teacher time",
        "the labels took when first computed (cached answers keep their original cost).",
        "",
    ]
    if warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]
    by_type = per_type_table({m: flat_row(r) for m, r in results.items()})
    if by_type:
        lines += ["## Span F1 per entity type (seqeval, strict IOB2)", "", by_type, ""]
    if pool_stats:
        lines += ["## Pseudo-labels of the pool (scored after the fact against the pool's gold)", ""]
        lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in pool_stats.items()]
        lines.append("")
    for m, r in results.items():
        tr = r.get("extra", {}).get("training")
        if tr:
            on = tr.get("scored_on", "dev")  # MCKD scores training fidelity and keeps the latest checkpoint
            lines.append(f"- {m}: {tr.get('kept', 'best')} {on} {tr.get('dev_metric')} {tr['best_score']:.4f} at epoch "
                         f"{tr['best_epoch']} of {tr['epoch']} ({r.get('stop_reason')})")
    lines.append("")
    for m, r in results.items():  # a method lists its figures in extra["plots"], relative to its folder
        extra = r.get("extra", {})
        if "data_fraction" in extra:
            lines.append(f"- {m}: trained on {extra['n_train']} of {extra.get('pool_answered', '?')} pseudo-labels "
                         f"ever selected ({extra['data_fraction']:.1%} of the data)")
        for plot in extra.get("plots", []):
            lines.append(f"- {m}: ![{m} {Path(plot).stem}]({m}/{plot})")
        for doc in extra.get("sections", []):  # markdown a method wrote into its folder, inlined one level down
            path = run_dir / m / doc
            if path.exists():
                lines += ["", "#" + path.read_text(encoding="utf-8").strip(), ""]
    lines.append("")
    return "\n".join(lines)
