"""llmkd: distil a large language model into a small, fast task model.

The public API (imported lazily, so ``import llmkd`` stays cheap)::

    import llmkd
    cfg = llmkd.load_config("examples/sst2.yaml", overrides=["student.epochs=3"])
    summary = llmkd.run(cfg)          # runs every method in cfg.methods; resumable
    print(summary.report)             # the comparison table (also RUN_DIR/report.md)

The pieces the run composes are importable too: :mod:`llmkd.teachers`, :mod:`llmkd.tasks`,
:mod:`llmkd.students`, :mod:`llmkd.methods`, :mod:`llmkd.data`, :mod:`llmkd.formats`, and
:mod:`llmkd.build`, which builds them from a config.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "llmkd.config",
    "parse_config": "llmkd.config",
    "RunConfig": "llmkd.config",
    "run": "llmkd.api",
    "label": "llmkd.api",
    "dry_run": "llmkd.api",
    "evaluate": "llmkd.api",
    "RunSummary": "llmkd.api",
    "make_splits": "llmkd.data",
    "build_teacher": "llmkd.build",
    "build_task": "llmkd.build",
    "make_student_factory": "llmkd.build",
    "METHODS": "llmkd.methods",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llmkd' has no attribute {name!r}")
