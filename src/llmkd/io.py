"""Atomic JSON / JSON Lines files: the one writer every part of llmkd uses (run directories,
method checkpoints and states). A file is written to ``<name>.tmp`` and moved into place with
:func:`os.replace`, so a killed run leaves either the old file or the new one, never half of one.
UTF-8, non-ASCII characters kept as they are; objects JSON cannot encode are written as ``str``.
Low level on purpose: methods import it, not :mod:`llmkd.report`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
