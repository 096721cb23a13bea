"""Run directory writer: resolved config, manifest, labels with provenance, metrics, report.

Layout::

    RUN_DIR/config.yaml        the effective config
    RUN_DIR/manifest.json      package versions, seeds, model hashes, git sha, machine
    RUN_DIR/labels.jsonl       gold labeled examples + teacher labels of the pool (provenance)
    RUN_DIR/metrics.json       every method's test metrics, timings and training record
    RUN_DIR/report.md          the comparison table
    RUN_DIR/report.html        the whole report on one self-contained page (:mod:`llmkd.html_report`)
    RUN_DIR/gate/dev_labels.jsonl  the teacher's labels of the dev set (the teacher gate's)
    RUN_DIR/<method>/          predictions.jsonl, labels.jsonl, result.json, the method's records
                               (``RunResult.records`` -> NAME.jsonl) and figures
                               (:mod:`llmkd.method_reports`); the method's own checkpoints

This module is the only writer of the run directory's results: methods return a
:class:`~llmkd.types.RunResult` and keep only their checkpoints in their folder.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .io import read_jsonl, write_json, write_jsonl  # re-exported: the writers used to live here
from .method_reports import RENDERERS, Rendered, cell

__all__ = ["read_jsonl", "write_json", "write_jsonl", "manifest", "table", "per_type_table", "flat_row",
           "table_cells", "render_report", "start_run_dir", "write_manifest", "write_pool_labels", "read_pool_labels",
           "write_run_labels", "write_method_result", "write_result", "write_rendered", "render_method", "write_run_report",
           "gate_section", "gate_teacher"]


def _git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def manifest(cfg: Any, model_hashes: dict[str, str]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    from .teachers.native import cpu_info

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
        "cpu": cpu_info(),  # llama.cpp's kernels, hence a teacher's answers, depend on it
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
    return cell(v, fmt)


SPAN_COLUMNS = [("f1", "span F1", "{:.4f}"), ("precision", "precision", "{:.4f}"), ("recall", "recall", "{:.4f}")]
SLOT_COLUMNS = [("slot_f1", "slot F1", "{:.4f}"), ("sentence_f1", "sentence F1", "{:.4f}"),
                ("exact_match", "exact match", "{:.4f}"), ("intent_accuracy", "intent accuracy", "{:.4f}")]
TREE_COLUMNS = [("sentence_f1", "sentence F1", "{:.4f}"), ("corpus_f1", "corpus F1", "{:.4f}"),
                ("labeled_f1", "labeled F1", "{:.4f}"), ("exact_match", "exact match", "{:.4f}")]
#: a metric only one task family reports -> that family's leading columns
LEAD = (("f1", SPAN_COLUMNS), ("slot_f1", SLOT_COLUMNS), ("corpus_f1", TREE_COLUMNS))


def _columns(rows: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """COLUMNS; for span-scored tasks (NER: ``f1``), slot filling (``slot_f1``) and trees
    (``corpus_f1``) that family's columns first (each only where some row has it), and the
    classification columns only where some row has them."""
    def present(cols: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        return [c for c in cols if any(c[0] in r for r in rows.values())]

    lead = next((cols for key, cols in LEAD if any(key in r for r in rows.values())), None)
    if lead is None:
        return COLUMNS
    return present(lead) + [c for c in COLUMNS if c[0] not in ("macro_f1", "accuracy") or present([c])]


def table_cells(rows: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The comparison table's header and rows of formatted cells (report.md and report.html)."""
    columns = _columns(rows)
    return (["method", *(c[1] for c in columns)],
            [[method, *(_fmt(f, r.get(k)) for k, _, f in columns)] for method, r in rows.items()])


def table(rows: dict[str, dict[str, Any]]) -> str:
    head, body = table_cells(rows)
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
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


def start_run_dir(run_dir: Path, config_yaml: str) -> None:
    """Create ``run_dir`` and write the effective config into it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_yaml)


def write_manifest(run_dir: Path, cfg: Any, model_hashes: dict[str, str]) -> None:
    write_json(run_dir / "manifest.json", manifest(cfg, model_hashes))


def write_pool_labels(run_dir: Path, labels: Sequence[Any]) -> None:
    """The teacher's labels of the pool (``llmkd label``), where ``vanilla`` keeps them."""
    (run_dir / "vanilla").mkdir(parents=True, exist_ok=True)
    write_jsonl(run_dir / "vanilla" / "labels.jsonl", (lab.to_dict() for lab in labels))


def read_pool_labels(run_dir: Path) -> list[Any]:
    """The teacher's labels of the pool from an earlier ``vanilla`` / ``llmkd label`` ([] if none)."""
    from .types import TeacherLabel

    path = run_dir / "vanilla" / "labels.jsonl"
    return [TeacherLabel.from_dict(d) for d in read_jsonl(path)] if path.exists() else []


def write_run_labels(run_dir: Path, labeled: Sequence[Any], pool: Sequence[Any], pool_labels: Sequence[Any]) -> None:
    """``RUN_DIR/labels.jsonl``: the gold labeled examples, then the pool's teacher labels with
    their texts and provenance."""
    texts = {u.id: u.text for u in pool}
    rows = [{"id": e.id, "text": e.text, "label": e.label, "confidence": 1.0, "abstained": False, "source": "gold",
             "prompt_id": "", "raw": "", "stage": "gold"} for e in labeled]
    rows += [{**lab.to_dict(), "text": texts.get(lab.example_id, "")} for lab in pool_labels]
    write_jsonl(run_dir / "labels.jsonl", rows)


def write_result(wd: Path, result: dict[str, Any]) -> None:
    """Rewrite a method's ``result.json`` (``llmkd evaluate`` re-scores saved predictions)."""
    write_json(wd / "result.json", result)


def write_method_result(wd: Path, res: Any, test: Sequence[Any], timings: dict[str, Any]) -> dict[str, Any]:
    """A finished method's folder: ``predictions.jsonl`` (test), ``labels.jsonl`` (its teacher
    labels), one ``NAME.jsonl`` per record table, then ``result.json`` last (it marks the method
    done, and lists those files: :func:`missing_files`). Returns the result dict it holds."""
    write_jsonl(wd / "predictions.jsonl", (
        {"id": ex.id, "gold": ex.label, "pred": None if p is None else p.label, "probs": None if p is None else p.probs}
        for ex, p in zip(test, res.predictions)))
    files = ["predictions.jsonl"]
    if res.labels:
        write_jsonl(wd / "labels.jsonl", (lab.to_dict() for lab in res.labels))
        files.append("labels.jsonl")
    for name, rows in res.records.items():
        write_jsonl(wd / f"{name}.jsonl", rows)
        files.append(f"{name}.jsonl")
    result = {"method": res.method, "metrics": res.metrics, "timings": timings, "stop_reason": res.stop_reason,
              "extra": res.extra, "files": files}
    write_result(wd, result)
    return result


def missing_files(wd: Path, result: dict[str, Any]) -> list[str]:
    """The files a finished method wrote beside its ``result.json`` that are gone (deleted, e.g.
    after an error said to): the method then runs again, from the cache and its checkpoints."""
    return [f for f in result.get("files", ["predictions.jsonl"]) if not (wd / f).exists()]


def render_method(result: dict[str, Any], task: Any = None) -> Rendered:
    """How ``result`` is shown (:data:`llmkd.method_reports.RENDERERS`); nothing for other methods."""
    render = RENDERERS.get(result.get("method", ""))
    return render(result, task) if render else Rendered()


def write_rendered(wd: Path, out: Rendered) -> None:
    """A method's figures and files (:func:`render_method`) into its folder."""
    wd.mkdir(parents=True, exist_ok=True)
    for name, content in out.files.items():
        if isinstance(content, bytes):
            (wd / name).write_bytes(content)
        else:
            (wd / name).write_text(content, encoding="utf-8")


def write_run_report(run_dir: Path, cfg: Any, results: dict[str, dict[str, Any]], pool_stats: dict[str, Any],
                     warnings: list[str], task: Any = None, gate: dict[str, Any] | None = None,
                     gold: Callable[[str], Any] | None = None) -> str:
    """``metrics.json``, each method's figures, ``report.md`` and ``report.html``; returns the
    markdown report. ``gate``: the teacher gate's record (:mod:`llmkd.gate`), kept under ``gate``
    in metrics.json, its teacher labels of the dev set in ``gate/dev_labels.jsonl``. ``gold``: the
    pool's gold label of an id, for the report-only parts of report.html (never a method's input)."""
    from .html_report import render_html, write_html

    if gate is not None and "dev_labels" in gate:
        gate = dict(gate)
        (run_dir / "gate").mkdir(parents=True, exist_ok=True)
        write_jsonl(run_dir / "gate" / "dev_labels.jsonl", gate.pop("dev_labels"))
    metrics = {"results": results, "pool": pool_stats, "warnings": warnings}
    write_json(run_dir / "metrics.json", metrics if gate is None else {**metrics, "gate": gate})
    rendered = {m: render_method(r, task) for m, r in results.items()}
    for m, out in rendered.items():
        write_rendered(run_dir / m, out)
    report = render_report(cfg, results, pool_stats, warnings, rendered, gate=gate)
    (run_dir / "report.md").write_text(report, encoding="utf-8")
    write_html(run_dir, render_html(run_dir, cfg, results, pool_stats, warnings, gate=gate, task=task, gold=gold))
    return report


def gate_teacher(gate: Mapping[str, Any]) -> str:
    """How the gate's teacher was prompted, for its row: ``few-shot``, and where each item drew its
    own demonstrations (``task.demonstrations: per_query``) how many."""
    if gate.get("demonstrations") == "per_query":
        return f"few-shot, {gate.get('shots_per_prompt')} demonstrations drawn per query"
    return "few-shot"


def gate_of_total(gate: Mapping[str, Any]) -> str:
    """`` of N`` when the gate labeled part of the dev set (``teacher.gate_max_dev``), else empty."""
    total = gate.get("n_dev_total")
    return f" of {total}" if total and total != gate.get("n_dev") else ""


def gate_section(gate: dict[str, Any] | None) -> list[str]:
    """The report's lines on the teacher gate (:mod:`llmkd.gate`); none without a record."""
    if not gate:
        return []
    lines = ["## Teacher gate (dev set, before the pool was labeled)", ""]
    if gate["status"] == "skipped":
        return lines + [f"Skipped: {gate['reason']}.", ""]
    m = gate["metric"]
    chance = ", ".join(f"{k} {v:.4f}" for k, v in gate["chance_parts"].items())
    lines += [
        f"| on the {gate['n_dev']}{gate_of_total(gate)} dev examples | {m} |", "|---|---:|",
        f"| teacher ({gate_teacher(gate)}; abstention rate {gate['teacher_abstention_rate']:.3f}) | {gate['teacher']:.4f} |",
        f"| student trained on the {gate['n_labeled']} gold examples (`{gate['student_checkpoint']}`) | "
        f"{gate['student']:.4f} |",
        f"| chance ({chance}) | {gate['chance']:.4f} |", "",
        f"- margin {gate['margin']:.4f} (the larger of 0.05 and one dev example; the student's dev score is "
        "optimistic: its epoch was chosen on this dev set)",
        f"- estimated labeling cost: {gate['prompts_to_label']} prompts x {gate['seconds_per_prompt']:.3f} s = "
        f"{gate['estimated_labeling_seconds']:.0f} s" + (f", about {gate['estimated_prompt_tokens']} prompt tokens"
                                                        if gate["estimated_prompt_tokens"] else ""),
        f"- verdict: **{gate['status']}**" + (f" ({'; '.join(gate['problems'])}); teacher.gate: {gate['mode']}"
                                              if gate["problems"] else ""), "",
    ]
    return lines


def render_report(cfg: Any, results: dict[str, dict[str, Any]], pool_stats: dict[str, Any],
                  warnings: list[str] | None = None, rendered: dict[str, Rendered] | None = None,
                  gate: dict[str, Any] | None = None) -> str:
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
    lines += gate_section(gate)
    from .teachers.usage import usage_section

    lines += usage_section(cfg, results)  # measured teacher tokens, dollars at teacher.price_per_mtok
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
    for m, out in (rendered or {}).items():  # one-line notes, figures linked, then sections inlined
        texts = [t.strip() for t in out.sections]
        lines += [f"- {m}: {t}" for t in texts if not t.startswith("#")]
        lines += [f"- {m}: ![{m} {Path(f).stem}]({m}/{f})" for f in out.files if f.endswith((".png", ".svg"))]
        for t in texts:
            if t.startswith("#"):
                lines += ["", t, ""]
    lines.append("")
    return "\n".join(lines)
