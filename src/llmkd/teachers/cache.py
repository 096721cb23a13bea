"""SQLite (WAL) cache of teacher calls.

Key = sha256 of (teacher fingerprint, request kind, rendered prompt, request parameters). The
template version is part of the rendered prompt, so a template change is a miss; a parser change
is a hit (the raw reply is stored, never the parsed label). Every miss is written as soon as the
backend answers, so a killed run loses at most the request in flight.

The ``calls`` column counts how many times the backend was actually asked for a key: after any
number of reruns it stays 1, which ``llmkd cache stats`` shows.

What is stored is checked first: a reply whose text is not a string, or option scores that are
not one number per option, raise :class:`~llmkd.errors.TeacherError` and are never written; option
scores that are all ``-inf`` (they say nothing about the labels: e.g. a server that returned no
logprobs) are handed back but not written, and such a row found in the cache (written before this
check existed) is asked again. A row that does not parse is a miss (``llmkd cache check`` counts
them).

Several processes sharing one cache file ask the teacher once per key: before asking, a process
*claims* the keys it misses (a ``claims`` row per key with an owner and a lease of
:data:`DEFAULT_LEASE` seconds, renewed while the teacher works); a process that finds a key claimed
by another waits for that answer instead of paying for it again. A claim whose lease ran out, or
whose owner process on this machine is gone (killed), is taken over; a process that waited
:data:`DEFAULT_WAIT_TIMEOUT` seconds for another asks the teacher itself.

A reply asked for under a constraint is checked against it
(:meth:`~llmkd.teachers.base.Constraint.violation`), when it is asked and when it is read: one
that breaks it is stored with ``"constrained": false`` under the constrained request's key (a
rerun does not pay for it again) and handed back with ``Reply.constrained == False``; the
counters ``constrained_replies`` / ``unconstrained_replies`` / ``violations`` count them.

A file that is not a readable SQLite database raises :class:`~llmkd.errors.StateError` naming the
file and the fix (``llmkd cache check --repair`` keeps the readable rows, ``llmkd cache clear``
starts afresh); see :func:`check_cache_file`, :func:`repair_cache_file`, :func:`reset_cache_file`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..errors import StateError, TeacherError
from ..types import Reply
from .base import ChatTurn, Constraint, KnowsContext, Teacher, applies

log = logging.getLogger(__name__)

DEFAULT_LEASE = 30.0  # seconds a claim holds without renewal; the owner renews it every lease / 3
DEFAULT_WAIT_TIMEOUT = 600.0  # seconds a process waits for another's claimed keys before asking itself
LOCK_TIMEOUT = 60.0  # seconds a process waits for another's lock on the file before giving up

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 1,
    hits INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
);
"""
_COLUMNS = ("key", "fingerprint", "kind", "value", "calls", "hits", "seconds", "created")
_HOST = socket.gethostname()


def cache_key(fingerprint: str, kind: str, prompt: str, params: dict[str, Any], *, layout: bool = False) -> str:
    """``layout``: the backend evaluates a :class:`~llmkd.tasks.base.Prompt` around its shared
    part (``uses_shared_prefix``), which can move its numbers in the last bits, so the boundary
    is part of the key; for other backends it changes nothing and is left out."""
    if isinstance(prompt, ChatTurn):  # sent as a chat turn: another request than the plain text
        params = {**params, "chat_turn": True}
    if layout and getattr(prompt, "shared", 0):
        params = {**params, "shared": prompt.shared}
    blob = json.dumps([fingerprint, kind, str(prompt), params], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _is_corrupt(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc).lower()
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in text or "not a database" in text


def _state_error(path: Path, exc: sqlite3.Error) -> StateError:
    """The StateError for an SQLite failure on the cache file ``path``: what, where and the fix."""
    if _is_corrupt(exc):
        return StateError(
            f"teacher cache {path} is corrupt or not an SQLite database ({exc}). Run "
            f"`llmkd cache check --path {path} --repair` to keep its readable entries (the broken file is kept "
            f"as {path.name}.corrupt-<time>), or `llmkd cache clear --path {path}` to start an empty cache; "
            "entries that are lost are asked from the teacher again."
        )
    if _is_locked(exc):
        return StateError(
            f"teacher cache {path} stayed locked by another process for over {LOCK_TIMEOUT:.0f} s ({exc}); wait for that "
            f"process, or give this run its own cache file (cache: in the config)."
        )
    return StateError(
        f"teacher cache {path} cannot be used ({type(exc).__name__}: {exc}); check that its folder is writable "
        f"and the disk is not full, or point cache: in the config at another file."
    )


def _is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _owner_alive(owner: str) -> bool:
    """False when ``owner`` (``host:pid:token``) is a process on this machine that is gone; True
    when it runs or lives on another machine (then only its lease decides)."""
    parts = owner.split(":")
    if len(parts) < 3 or ":".join(parts[:-2]) != _HOST:
        return True
    try:
        pid = int(parts[-2])
    except ValueError:
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (PermissionError): it exists
        return True
    return True


class TeacherCache:
    """A small key-value store on SQLite in WAL mode; safe to share between processes, which
    ask the teacher once per key (see the module docstring: claims). ``lease`` and
    ``wait_timeout`` in seconds."""

    def __init__(self, path: str | Path, *, lease: float = DEFAULT_LEASE,
                 wait_timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        self.path = Path(path)
        self.lease = lease
        self.wait_timeout = wait_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=LOCK_TIMEOUT, check_same_thread=False)
        # Switching a new file to WAL, and its first schema, can answer "database is locked" at
        # once, without SQLite's busy wait, while another process does the same: retry those
        # until LOCK_TIMEOUT, as the busy wait does for everything else.
        give_up = time.monotonic() + LOCK_TIMEOUT
        delay = 0.01
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                self._db.commit()
                self._db.execute("SELECT key, value FROM entries LIMIT 1").fetchall()  # the first page reads
                break
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                if _is_locked(exc) and time.monotonic() < give_up:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
                    continue
                self._db.close()
                raise _state_error(self.path, exc) from None
            except sqlite3.Error as exc:
                self._db.close()
                raise _state_error(self.path, exc) from None

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Hold the lock; an SQLite failure becomes a StateError naming the file and the fix."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                raise _state_error(self.path, exc) from None

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[Any, float]]:
        """Cached (value, seconds the teacher originally took) for the keys present. A row whose
        value does not parse is left out (a miss), with a warning."""
        out: dict[str, tuple[Any, float]] = {}
        bad = 0
        with self._guard():
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                q = f"SELECT key, value, seconds FROM entries WHERE key IN ({','.join('?' * len(chunk))})"
                for k, v, sec in self._db.execute(q, chunk):
                    try:
                        out[k] = (json.loads(v), float(sec))
                    except (TypeError, ValueError):
                        bad += 1
            if out:
                self._db.executemany("UPDATE entries SET hits = hits + 1 WHERE key = ?", [(k,) for k in out])
                self._db.commit()
        if bad:
            log.warning("teacher cache %s: %d cached value(s) do not parse; asking the teacher again "
                        "(`llmkd cache check --path %s` lists the damage)", self.path, bad, self.path)
        return out

    def drain(self) -> list[tuple[str, str, str, Any, float]]:
        """Remove and return every entry as (key, fingerprint, kind, value, seconds): how a
        labeling worker's private cache (``TeacherCache(":memory:")``) hands its answers to the
        driver, the one process that writes the real cache (:mod:`llmkd.ray_labeling`)."""
        with self._guard():
            rows = self._db.execute("SELECT key, fingerprint, kind, value, seconds FROM entries").fetchall()
            self._db.execute("DELETE FROM entries")
            self._db.commit()
        return [(k, fp, kind, json.loads(v), float(sec)) for k, fp, kind, v, sec in rows]

    def put(self, key: str, fingerprint: str, kind: str, value: Any, seconds: float) -> None:
        """Store one answer (and drop any claim on its key: it is answered)."""
        with self._guard():
            self._db.execute(
                "INSERT INTO entries(key, fingerprint, kind, value, calls, hits, seconds, created) "
                "VALUES (?, ?, ?, ?, 1, 0, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value, calls=calls+1, seconds=seconds+excluded.seconds",
                (key, fingerprint, kind, json.dumps(value, ensure_ascii=False), seconds, time.time()),
            )
            self._db.execute("DELETE FROM claims WHERE key = ?", (key,))
            self._db.commit()

    # ---- claims: one teacher call per key across processes -----------------------------------

    @staticmethod
    def new_owner() -> str:
        """A claim owner id, ``host:pid:token``: one per call, so threads of one process wait on
        each other too."""
        return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def claim(self, keys: Sequence[str], owner: str) -> set[str]:
        """Claim ``keys`` for ``owner`` where nobody else holds them (or the holder's lease ran out,
        or the holder is a process on this machine that is gone); returns the keys ``owner`` holds."""
        keys = list(dict.fromkeys(keys))
        mine: set[str] = set()
        now = time.time()
        with self._guard():
            if self._db.in_transaction:
                self._db.commit()
            self._db.execute("BEGIN IMMEDIATE")  # one claimer at a time: check and insert atomically
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                held = self._db.execute(f"SELECT key, owner, expires FROM claims WHERE key IN ({marks})", chunk)
                stale = [(k,) for k, o, exp in held.fetchall() if o != owner and (exp < now or not _owner_alive(o))]
                if stale:
                    self._db.executemany("DELETE FROM claims WHERE key = ?", stale)
                self._db.executemany("INSERT OR IGNORE INTO claims(key, owner, expires) VALUES (?, ?, ?)",
                                     [(k, owner, now + self.lease) for k in chunk])
                mine.update(k for (k,) in self._db.execute(
                    f"SELECT key FROM claims WHERE owner = ? AND key IN ({marks})", [owner, *chunk]))
            self._db.commit()
        return mine

    def renew(self, keys: Sequence[str], owner: str) -> None:
        with self._guard():
            self._db.executemany("UPDATE claims SET expires = ? WHERE key = ? AND owner = ?",
                                 [(time.time() + self.lease, k, owner) for k in keys])
            self._db.commit()

    def release(self, keys: Sequence[str], owner: str) -> None:
        with self._guard():
            self._db.executemany("DELETE FROM claims WHERE key = ? AND owner = ?", [(k, owner) for k in keys])
            self._db.commit()

    @contextlib.contextmanager
    def holding(self, keys: Sequence[str], owner: str) -> Iterator[None]:
        """Keep ``owner``'s claims on ``keys`` alive (renewed every lease / 3 by a thread) while
        inside; release those still held when leaving (stored keys were released by :meth:`put`)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease / 3):
                try:
                    self.renew(keys, owner)
                except StateError as exc:  # pragma: no cover - the main thread meets it too
                    log.warning("%s", exc)

        thread = threading.Thread(target=beat, name="llmkd-cache-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.release(keys, owner)

    # ---- maintenance -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._guard():
            rows = self._db.execute(
                "SELECT kind, COUNT(*), SUM(calls), SUM(hits), SUM(seconds) FROM entries GROUP BY kind"
            ).fetchall()
            n_fp = self._db.execute("SELECT COUNT(DISTINCT fingerprint) FROM entries").fetchone()[0]
        by_kind = {k: {"entries": n, "teacher_calls": c, "hits": h, "teacher_seconds": round(s or 0.0, 2)} for k, n, c, h, s in rows}
        total = {
            "entries": sum(v["entries"] for v in by_kind.values()),
            "teacher_calls": sum(v["teacher_calls"] for v in by_kind.values()),
            "hits": sum(v["hits"] for v in by_kind.values()),
            "repeated_calls": sum(v["teacher_calls"] - v["entries"] for v in by_kind.values()),
        }
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.exists())
        return {"path": str(self.path), "bytes": size, "teachers": n_fp, **total, "by_kind": by_kind}

    def clear(self, fingerprint: str | None = None) -> int:
        with self._guard():
            if fingerprint:
                # a literal prefix: LIKE would treat '_' and '%' in it as wildcards
                cur = self._db.execute("DELETE FROM entries WHERE substr(fingerprint, 1, ?) = ?",
                                       (len(fingerprint), fingerprint))
            else:
                cur = self._db.execute("DELETE FROM entries")
                self._db.execute("DELETE FROM claims")
            self._db.commit()
            self._db.execute("VACUUM")
        return cur.rowcount

    def close(self) -> None:
        self._db.close()


# ---- a damaged cache file ------------------------------------------------------------------------


def _sidecars(path: Path) -> list[Path]:
    """The file and SQLite's WAL / shared-memory files beside it."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _read_rows(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int, list[str]]:
    """Every entries row that can be read, in rowid order, skipping damaged ones: (rows, rows that
    could not be read, problems). Reads in pages; a page that fails is read row by row."""
    rows: list[tuple[Any, ...]] = []
    problems: list[str] = []
    unreadable = 0
    cols = ", ".join(_COLUMNS)
    try:
        top = db.execute("SELECT max(rowid) FROM entries").fetchone()[0] or 0
    except sqlite3.Error as exc:
        problems.append(f"the entries table cannot be read: {exc}")
        return rows, 0, problems
    last = 0
    while last < top:
        try:
            page = db.execute(f"SELECT rowid, {cols} FROM entries WHERE rowid > ? ORDER BY rowid LIMIT 500",
                              (last,)).fetchall()
        except sqlite3.Error as exc:
            end = min(top, last + 500)
            for rowid in range(last + 1, end + 1):
                try:
                    one = db.execute(f"SELECT rowid, {cols} FROM entries WHERE rowid = ?", (rowid,)).fetchone()
                except sqlite3.Error:
                    unreadable += 1
                    continue
                if one is not None:
                    rows.append(one[1:])
            if not problems or problems[-1] != str(exc):
                problems.append(str(exc))
            last = end
            continue
        if not page:
            break
        rows.extend(r[1:] for r in page)
        last = page[-1][0]
    return rows, unreadable, problems


def _row_problem(row: tuple[Any, ...]) -> str:
    """Why a stored row cannot be used ("" if it can): its value must parse and fit its kind."""
    key, fp, kind, value = row[:4]
    if not isinstance(key, str) or not isinstance(fp, str) or not isinstance(value, str):
        return "a column has the wrong type"
    try:
        parsed = json.loads(value)
    except ValueError:
        return "the value is not JSON"
    return _value_problem(kind, parsed, None)


def check_cache_file(path: str | Path) -> dict[str, Any]:
    """What ``llmkd cache check`` reports: SQLite's ``PRAGMA integrity_check``, the rows that can be
    read, those that cannot, those whose value does not parse or fit its kind, all ``-inf`` option
    scores (never used), and open claims. Works on a damaged file; never writes to it."""
    path = Path(path)
    report: dict[str, Any] = {"path": str(path), "exists": path.exists()}
    if not path.exists():
        return {**report, "ok": True, "integrity": "no file (an empty cache)"}
    report["bytes"] = sum(p.stat().st_size for p in _sidecars(path) if p.exists())
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        return {**report, "ok": False, "integrity": [str(exc)], "readable_rows": 0}
    try:
        try:
            integrity = [line for r in db.execute("PRAGMA integrity_check").fetchall() for line in str(r[0]).splitlines()]
        except sqlite3.Error as exc:
            integrity = [str(exc)]
        try:
            top = db.execute("SELECT max(rowid) FROM entries").fetchone()[0] or 0
        except sqlite3.Error:
            top = None
        rows, unreadable, problems = _read_rows(db)
        bad = [(r[0], p) for r in rows if (p := _row_problem(r))]
        by_kind: dict[str, int] = {}
        for r in rows:
            by_kind[str(r[2])] = by_kind.get(str(r[2]), 0) + 1
        try:
            claims = db.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
        except sqlite3.Error:
            claims = 0
    finally:
        db.close()
    uninformative = sum(1 for _, p in bad if p == _ALL_INF)
    broken = [(k, p) for k, p in bad if p != _ALL_INF]
    ok = integrity == ["ok"] and not unreadable and not problems and not broken
    return {**report, "ok": ok, "integrity": "ok" if integrity == ["ok"] else integrity[:20],
            "readable_rows": len(rows), "unreadable_rows": unreadable,
            "rowids_not_found (lost, or deleted by clear)": None if top is None else max(0, top - len(rows) - unreadable),
            "read_errors": problems[:20],
            "rows_that_do_not_parse": len(broken), "examples": [f"{k[:16]}...: {p}" for k, p in broken[:5]],
            "all_-inf_scores (never used)": uninformative, "open_claims": claims, "by_kind": by_kind}


def repair_cache_file(path: str | Path) -> dict[str, Any]:
    """Copy the readable, parseable rows of ``path`` into a fresh file that takes its place; the
    damaged file (and its -wal / -shm files) is kept as ``<name>.corrupt-<time>``. Returns counts
    and where the old file went. No other process may use the cache meanwhile."""
    path = Path(path)
    if not path.exists():
        raise StateError(f"teacher cache {path} does not exist: nothing to repair (an empty cache is made on first use)")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows, unreadable, _ = _read_rows(db)
    finally:
        db.close()
    good = [r for r in rows if not _row_problem(r)]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fresh = path.with_name(path.name + f".repair-{stamp}")
    new = sqlite3.connect(str(fresh))
    try:
        new.executescript(_SCHEMA)
        new.executemany(f"INSERT OR IGNORE INTO entries({', '.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})",
                        good)
        new.commit()
    finally:
        new.close()
    kept_as = path.with_name(path.name + f".corrupt-{stamp}")
    for src in _sidecars(path):
        if src.exists():
            src.rename(kept_as.with_name(kept_as.name + src.name[len(path.name):]))
    fresh.rename(path)
    return {"path": str(path), "kept_rows": len(good), "dropped_rows": len(rows) - len(good),
            "unreadable_rows": unreadable, "damaged_file_kept_as": str(kept_as)}


def reset_cache_file(path: str | Path) -> None:
    """Delete the cache file (and its -wal / -shm files), readable or not: ``llmkd cache clear``
    on a damaged file. The next use makes an empty cache."""
    for p in _sidecars(Path(path)):
        p.unlink(missing_ok=True)


# ---- what may be stored --------------------------------------------------------------------------

_ALL_INF = "every option scores -inf (it says nothing about the labels)"


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _value_problem(kind: str, value: Any, n_options: int | None) -> str:
    """Why ``value`` may not be stored as an answer of request ``kind`` ("" if it may).
    ``n_options``: how many scores a score_options row must have (None: not checked)."""
    if kind == "generate":
        if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            return "a reply whose text is not a string"
        lp = value.get("token_logprobs")
        if lp is not None and (not isinstance(lp, list) or not all(_is_number(x) for x in lp)):
            return "token logprobs that are not numbers"
        return ""
    if kind == "score_options":
        if not isinstance(value, list) or not all(_is_number(x) for x in value):
            return "option scores that are not a list of numbers"
        if n_options is not None and len(value) != n_options:
            return f"{len(value)} scores for {n_options} options"
        if any(math.isnan(x) or x == math.inf for x in value):
            return "an option score that is NaN or +inf"
        if value and all(x == -math.inf for x in value):
            return _ALL_INF
    return ""


class CacheMiss(StateError):
    """A :class:`CachedTeacher` made with ``cache_only=True`` was asked something it has no cached
    answer for (it never asks the teacher)."""


class CachedTeacher:
    """Wraps any :class:`Teacher`; answers from the cache and sends only the misses on.

    ``cache_only=True``: answer from the cache alone; a request that misses raises
    :class:`CacheMiss` and the teacher is never called (nor loaded)."""

    def __init__(self, teacher: Teacher, cache: TeacherCache, *, cache_only: bool = False) -> None:
        self.teacher = teacher
        self.cache = cache
        self.cache_only = cache_only
        self.misses = 0
        self.hits = 0
        self.seconds = 0.0  # teacher time spent in this process (misses)
        self.cached_seconds = 0.0  # teacher time the cached answers originally took
        self.prompt_tokens = 0  # over generate requests, cached or not
        self.completion_tokens = 0
        self.asked_prompt_tokens = 0  # over the generate requests sent to the teacher in this process
        self.asked_completion_tokens = 0
        self.constrained_replies = 0  # replies asked for under a constraint that keep it
        self.unconstrained_replies = 0  # ... that do not: generated freely, or breaking it
        self.violations = 0  # ... of those, replies the backend was to constrain that break the constraint
        self._free: set[str] = set()  # constraint kinds the teacher said it does not apply (logged once)

    @property
    def name(self) -> str:
        return self.teacher.name

    @property
    def fingerprint(self) -> str:
        return self.teacher.fingerprint

    @property
    def batch_size(self) -> int:
        return getattr(self.teacher, "batch_size", 1)

    def count_tokens(self, text: str) -> int:
        return self.teacher.count_tokens(text)

    @property
    def context_tokens(self) -> int | None:
        """The teacher's context window, where the backend knows it (llama.cpp's n_ctx), else None."""
        return self.teacher.context_tokens if isinstance(self.teacher, KnowsContext) else None

    def _cached(self, kind: str, prompts: Sequence[str], params: dict[str, Any], call,
                store_params=None, n_options: int | None = None) -> list[Any]:
        """The values for ``prompts``, from the cache or from ``call(missing prompts)``. The new
        values are stored under ``store_params()`` (evaluated after the call) when given.

        Missing keys are claimed first (:meth:`TeacherCache.claim`): keys another process is
        asking right now are waited for, not asked again. Values are checked before they are
        stored (:func:`_value_problem`); a cached value that fails the check is asked again."""
        fp = self.teacher.fingerprint
        layout = bool(getattr(self.teacher, "uses_shared_prefix", False))
        keys = [cache_key(fp, kind, p, params, layout=layout) for p in prompts]
        found: dict[str, Any] = {}
        self._take_hits(kind, keys, n_options, found)
        first: dict[str, int] = {}  # each missing key once: a prompt repeated in one call is asked once
        for i, k in enumerate(keys):
            if k not in found:
                first.setdefault(k, i)
        pending = list(first)
        if pending and self.cache_only:
            raise CacheMiss(f"teacher cache {self.cache.path}: {len(pending)} of {len(keys)} {kind} requests are not "
                            f"cached for teacher {self.teacher.name} (cache_only: the teacher is not asked)")
        owner = self.cache.new_owner()
        deadline = time.monotonic() + self.cache.wait_timeout
        pause = 0.02
        while pending:
            mine = self.cache.claim(pending, owner)
            if mine:
                self._take_hits(kind, [k for k in pending if k in mine], n_options, found)  # answered meanwhile
                todo = [k for k in pending if k in mine and k not in found]
                with self.cache.holding(sorted(mine), owner):  # released on the way out, answered or not
                    self._ask(kind, [(k, first[k]) for k in todo], prompts, params, call, store_params,
                              n_options, found, fp, layout)
                deadline = time.monotonic() + self.cache.wait_timeout  # the timeout counts waiting only
            elif time.monotonic() > deadline:
                log.warning("teacher cache %s: %d prompt(s) claimed by another process are still unanswered after "
                            "%.0f s; asking the teacher here", self.cache.path, len(pending), self.cache.wait_timeout)
                self._ask(kind, [(k, first[k]) for k in pending], prompts, params, call, store_params,
                          n_options, found, fp, layout)
            else:  # another process is asking for all of them: wait for its answers
                time.sleep(pause)
                pause = min(0.5, pause * 1.5)
                self._take_hits(kind, pending, n_options, found)
            pending = [k for k in pending if k not in found]
        return [found[k] for k in keys]

    def _take_hits(self, kind: str, keys: Sequence[str], n_options: int | None, found: dict[str, Any]) -> None:
        """Move the usable cached values of ``keys`` into ``found`` (and count them as hits)."""
        if not keys:
            return
        for k, (v, sec) in self.cache.get_many(keys).items():
            if k in found or _value_problem(kind, v, n_options):  # e.g. all -inf scores cached before the check
                continue
            found[k] = v
            self.hits += 1
            self.cached_seconds += sec

    def _ask(self, kind: str, todo: list[tuple[str, int]], prompts: Sequence[str], params: dict[str, Any], call,
             store_params, n_options: int | None, found: dict[str, Any], fp: str, layout: bool) -> None:
        """Ask the teacher for ``todo`` ((key, prompt index) pairs), check and store its answers."""
        if not todo:
            return
        self.misses += len(todo)
        t0 = time.perf_counter()
        values = call([prompts[i] for _, i in todo])
        spent = time.perf_counter() - t0
        self.seconds += spent
        if not isinstance(values, list) or len(values) != len(todo):
            raise TeacherError(f"teacher {self.teacher.name}: {kind} returned "
                               f"{len(values) if isinstance(values, list) else type(values).__name__} answers for "
                               f"{len(todo)} prompts; nothing was cached. This is a bug in the teacher backend.")
        stored = store_params() if store_params is not None else params
        # answers are filed under the teacher as it answered them: an OpenAI server that could not be
        # identified at lookup and answered later is filed under its identified fingerprint
        now_fp = self.teacher.fingerprint
        same = stored == params and now_fp == fp
        wrong: list[str] = []
        uninformative = 0
        for (k, i), v in zip(todo, values):
            problem = _value_problem(kind, v, n_options)
            if problem == _ALL_INF:
                uninformative += 1
            elif problem:
                wrong.append(problem)
                continue
            else:
                key = k if same else cache_key(now_fp, kind, prompts[i], stored, layout=layout)
                self.cache.put(key, now_fp, kind, v, spent / len(todo))
            found[k] = v
        if uninformative:
            log.info("teacher %s: %d of %d option scorings put every option at -inf; they are not cached "
                     "(a rerun asks again)", self.teacher.name, uninformative, len(todo))
        if wrong:
            raise TeacherError(
                f"teacher {self.teacher.name}: {len(wrong)} of {len(todo)} {kind} answers are malformed "
                f"({wrong[0]}); they were not cached (the other {len(todo) - len(wrong)} were). This is a "
                "bug in the teacher backend or its server; report it with the teacher's config."
            )

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0, constraint: Constraint | None = None) -> list[Reply]:
        params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "stop": list(stop)}
        if temperature > 0:
            params["seed"] = seed
        free = dict(params)
        extra: dict[str, Any] = {}
        # A constraint the backend will not apply is no part of the key: its replies are free
        # ones. When the backend only finds out during the call (a server refusing guided
        # decoding), the replies are filed under the free key too.
        if constraint is not None and applies(self.teacher, constraint) is False:
            if constraint.kind not in self._free:
                self._free.add(constraint.kind)
                log.info("teacher %s does not apply %s constraints; it generates freely and the task's parser "
                         "decides (the cache keys these replies as unconstrained)", self.teacher.name, constraint.kind)
        elif constraint is not None:
            params["constraint"] = constraint.key()  # only then: unconstrained keys stay what they were
            extra["constraint"] = constraint

        def ask(ps: Sequence[str]) -> list[dict[str, Any]]:
            got = self.teacher.generate(ps, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed,
                                        **extra)
            self.asked_prompt_tokens += sum(r.prompt_tokens for r in got if isinstance(r, Reply))
            self.asked_completion_tokens += sum(r.completion_tokens for r in got if isinstance(r, Reply))
            kept = "constraint" in extra and applies(self.teacher, constraint) is not False
            # a reply that breaks the constraint is stored marked as such under the constrained key:
            # a rerun takes it from there (it is not paid for again) and counts it unconstrained
            return [r.to_dict() if not kept or not isinstance(r, Reply) or not constraint.violation(r.text)
                    else {**r.to_dict(), "constrained": False} for r in got]

        values = self._cached(
            "generate", prompts, params, ask,
            store_params=lambda: params if applies(self.teacher, extra.get("constraint")) is not False else free,
        )
        replies = [Reply.from_dict(v) for v in values]
        if constraint is not None:
            replies = self._check_constraint(replies, constraint, "constraint" in extra
                                             and applies(self.teacher, constraint) is not False)
        self.prompt_tokens += sum(r.prompt_tokens for r in replies)
        self.completion_tokens += sum(r.completion_tokens for r in replies)
        return replies

    def _check_constraint(self, replies: list[Reply], constraint: Constraint, applied: bool) -> list[Reply]:
        """``replies`` with ``constrained`` set: True for those the backend was to constrain that
        keep ``constraint`` (checked here, cached ones included: rows written before this check
        was made are checked when read), False for the rest; counted, with a warning for replies
        that break it."""
        from dataclasses import replace

        out, broken = [], []
        for r in replies:
            problem = constraint.violation(r.text) if applied else ""
            ok = applied and not problem and r.constrained is not False
            if applied and not ok:
                broken.append(problem or "marked as breaking it when it was cached")
            out.append(replace(r, constrained=ok))
        kept = sum(r.constrained for r in out)
        self.constrained_replies += kept
        self.unconstrained_replies += len(out) - kept
        self.violations += len(broken)
        if broken:
            log.warning("teacher %s: %d of %d replies asked for under the %s constraint break it (%s); they count "
                        "as unconstrained (the task's parser decides, as for free replies)%s", self.teacher.name,
                        len(broken), len(out), constraint.kind, broken[0],
                        "" if constraint.kind != "choice" else "; a server that ignores the constraint fields "
                        "answers this way: see docs/teachers.md (constrained decoding)")
        return out

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        return self._cached(
            "score_options", prompts, {"options": list(options)},
            lambda ps: self.teacher.score_options(ps, options), n_options=len(options),
        )
