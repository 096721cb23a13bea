"""Atomic JSON / JSON Lines files: the one writer every part of llmkd uses (run directories,
method checkpoints and states). A file is written to ``<name>.tmp`` and moved into place with
:func:`os.replace`, so a killed run leaves either the old file or the new one, never half of one.
UTF-8, non-ASCII characters kept as they are; objects JSON cannot encode are written as ``str``.
Low level on purpose: methods import it, not :mod:`llmkd.report`."""

from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import StateError


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _unreadable(path: Path, why: str) -> StateError:
    return StateError(f"{path} is unreadable ({why}). llmkd wrote it: delete it and rerun, and the step that wrote it "
                      "runs again (teacher answers come back from the cache)")


def read_json(path: Path) -> Any:
    """The JSON in ``path``; a :class:`~llmkd.errors.StateError` naming the file, where it
    breaks and the fix when it is not valid UTF-8 JSON (a file edited by hand, a full disk)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _unreadable(path, f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise _unreadable(path, f"not UTF-8 at byte {exc.start}") from exc


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON Lines file; a :class:`~llmkd.errors.StateError` naming file:line (as
    :func:`read_json`) when a line is not a JSON object."""
    rows = []
    try:
        with Path(path).open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise _unreadable(path, f"line {n} is not valid JSON: {exc.msg}") from exc
                if not isinstance(row, dict):
                    raise _unreadable(path, f"line {n} is not a JSON object")
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise _unreadable(path, f"not UTF-8 at byte {exc.start}") from exc
    return rows


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory ``run_dir`` for this process while it writes there (``llmkd run``,
    ``label``, ``evaluate``). A second process on the same directory would interleave its
    checkpoints, labels and report with this one's: it gets a :class:`StateError` naming the
    holder at once, instead of waiting. The lock is a sibling file, ``.<name>.lock`` beside the
    directory (so the run directory holds only results), taken with :mod:`filelock`; the OS drops
    it when the holder dies, so a killed run never leaves a stale lock (only the ``.pid`` note of
    who held it, which the next holder overwrites)."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f".{run_dir.name}.lock"
    holder = path.with_suffix(".pid")
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        who = holder.read_text(encoding="utf-8").strip() if holder.exists() else "another process"
        raise StateError(f"{run_dir} is in use by {who}: two runs writing one directory would mix their "
                         f"results. Wait for it to finish, or give this run another name (--set name=...)") from None
    try:
        holder.write_text(f"process {os.getpid()} on {socket.gethostname()}", encoding="utf-8")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()
