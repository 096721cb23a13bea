"""A run's pseudo-labeled pool as a table (``llmkd label --output``, ``llmkd export-labels``): one
row per pool example with its text, the teacher's label, its confidence and its provenance, written
as jsonl, parquet or a ``datasets`` folder by :func:`llmkd.data.writers.write_rows`.

Columns (:data:`LABEL_COLUMNS`; docs/data.md, "Exporting the pseudo-labels"): per example what
:class:`~llmkd.types.TeacherLabel` records (``id``, ``label`` (null where the teacher abstained),
``confidence``, ``abstained``, ``source``, ``stage``, ``prompt_id`` (a hash of the rendered
prompt), ``raw`` (the reply), ``error`` (why it abstained), ``probs``, ``meta``), then what the
run's config and manifest record for all of them: the teacher's backend, model and fingerprint
(the teacher cache files each answer under a hash of this fingerprint, the prompt and the
generation parameters), ``labeling`` (generate / score), ``constrained``, the prompt
``template`` and ``labeled_at`` (when the labels file was written, UTC).

Not exported, because llmkd does not record them per example: the teacher cache key itself and
the time each answer took. The pool's gold labels are never part of the table.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .errors import StateError
from .types import TeacherLabel

LABEL_COLUMNS = ("id", "text", "label", "confidence", "abstained", "source", "stage", "prompt_id", "raw", "error",
                 "probs", "meta", "teacher_backend", "teacher_model", "teacher_fingerprint", "labeling", "constrained",
                 "template", "labeled_at")
LABEL_TYPES = {"id": "string", "text": "string", "confidence": "double", "abstained": "bool", "source": "string",
               "stage": "string", "prompt_id": "string", "raw": "string", "error": "string", "probs": "string",
               "meta": "string", "teacher_backend": "string", "teacher_model": "string",
               "teacher_fingerprint": "string", "labeling": "string", "constrained": "bool", "template": "string",
               "labeled_at": "string"}
"""The Arrow types of the columns in parquet / datasets (all but ``label``: a string, or for NER a
list of strings), the same whichever values a pool has."""


def label_rows(labels: Sequence[TeacherLabel], texts: dict[str, str], provenance: dict[str, Any], *,
               answered_only: bool = False, where: str = "") -> list[dict[str, Any]]:
    """The rows of :data:`LABEL_COLUMNS`: each label with its text (``texts``: example id ->
    text) and the run-wide ``provenance`` columns; abstentions left out if ``answered_only``."""
    rows = []
    for lab in labels:
        if answered_only and lab.abstained:
            continue
        if lab.example_id not in texts:
            raise StateError(f"{where}: the label of example {lab.example_id!r} has no example in the run's pool; the "
                             "data files changed since the labels were made? Restore them, or label again")
        d = lab.to_dict()
        rows.append({**{k: d.get(k) for k in LABEL_COLUMNS[:12]}, "text": texts[lab.example_id], **provenance})
    return rows


def run_provenance(run_dir: Path, cfg: Any, labels_file: Path) -> dict[str, Any]:
    """The provenance columns every row of a run shares (see the module docstring)."""
    from .io import read_json

    manifest = run_dir / "manifest.json"
    models = read_json(manifest).get("models", {}) if manifest.exists() else {}
    mtime = datetime.fromtimestamp(labels_file.stat().st_mtime, tz=timezone.utc)
    return {"teacher_backend": cfg.teacher.backend, "teacher_model": cfg.teacher.model,
            "teacher_fingerprint": models.get("teacher"), "labeling": cfg.teacher.labeling,
            "constrained": cfg.teacher.constrained, "template": cfg.task.template,
            "labeled_at": mtime.isoformat(timespec="seconds")}


def export_labels(run_dir: str | Path, to: str | Path, fmt: str = "auto", *,
                  answered_only: bool = False) -> tuple[Path, int]:
    """Write the teacher's labels of ``run_dir``'s pool (``vanilla/labels.jsonl``, from ``llmkd
    label`` or the vanilla method) to ``to``; returns the path and the number of rows. The texts
    come from the run's data files (read again, split with the run's seed)."""
    from .config import run_config, run_config_path
    from .data import make_splits
    from .data.writers import output_format, write_rows
    from .report import read_pool_labels

    run_dir = Path(run_dir)
    fmt = output_format(to, fmt)  # a wrong name fails before the data is read
    run_config_path(run_dir)  # a folder without a config fails before its labels are looked for
    labels_file = run_dir / "vanilla" / "labels.jsonl"
    if not labels_file.exists():
        raise StateError(f"{run_dir} has no pool labels ({labels_file} is missing); label the pool first: "
                         "`llmkd label CONFIG`, or `llmkd run` with the vanilla method")
    cfg = run_config(run_dir)
    labels = read_pool_labels(run_dir)
    splits, _ = make_splits(cfg.data, cfg.seed)  # the pool's gold labels (the vault) are not used
    texts = {u.id: u.text for u in splits.pool}
    rows = label_rows(labels, texts, run_provenance(run_dir, cfg, labels_file), answered_only=answered_only,
                      where=str(labels_file))
    return write_rows(to, rows, fmt, columns=LABEL_COLUMNS, types=LABEL_TYPES), len(rows)
