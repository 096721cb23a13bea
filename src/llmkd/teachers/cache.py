"""SQLite (WAL) cache of teacher calls.

Key = sha256 of (teacher fingerprint, request kind, rendered prompt, request parameters). The
template version is part of the rendered prompt, so a template change is a miss; a parser change
is a hit (the raw reply is stored, never the parsed label). Every miss is written as soon as the
backend answers, so a killed run loses at most the request in flight.

The ``calls`` column counts how many times the backend was actually asked for a key: after any
number of reruns it stays 1, which ``llmkd cache stats`` shows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from ..types import Reply
from .base import ChatTurn, Constraint, KnowsContext, Teacher, applies

log = logging.getLogger(__name__)

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
"""


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


class TeacherCache:
    """A small key-value store on SQLite in WAL mode; safe to share between processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[Any, float]]:
        """Cached (value, seconds the teacher originally took) for the keys present."""
        out: dict[str, tuple[Any, float]] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                q = f"SELECT key, value, seconds FROM entries WHERE key IN ({','.join('?' * len(chunk))})"
                for k, v, sec in self._db.execute(q, chunk):
                    out[k] = (json.loads(v), float(sec))
            if out:
                self._db.executemany("UPDATE entries SET hits = hits + 1 WHERE key = ?", [(k,) for k in out])
                self._db.commit()
        return out

    def put(self, key: str, fingerprint: str, kind: str, value: Any, seconds: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO entries(key, fingerprint, kind, value, calls, hits, seconds, created) "
                "VALUES (?, ?, ?, ?, 1, 0, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value, calls=calls+1, seconds=seconds+excluded.seconds",
                (key, fingerprint, kind, json.dumps(value, ensure_ascii=False), seconds, time.time()),
            )
            self._db.commit()

    def stats(self) -> dict[str, Any]:
        with self._lock:
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
        with self._lock:
            if fingerprint:
                # a literal prefix: LIKE would treat '_' and '%' in it as wildcards
                cur = self._db.execute("DELETE FROM entries WHERE substr(fingerprint, 1, ?) = ?",
                                       (len(fingerprint), fingerprint))
            else:
                cur = self._db.execute("DELETE FROM entries")
            self._db.commit()
            self._db.execute("VACUUM")
        return cur.rowcount

    def close(self) -> None:
        self._db.close()


class CachedTeacher:
    """Wraps any :class:`Teacher`; answers from the cache and sends only the misses on."""

    def __init__(self, teacher: Teacher, cache: TeacherCache) -> None:
        self.teacher = teacher
        self.cache = cache
        self.misses = 0
        self.hits = 0
        self.seconds = 0.0  # teacher time spent in this process (misses)
        self.cached_seconds = 0.0  # teacher time the cached answers originally took
        self.prompt_tokens = 0  # over generate requests, cached or not
        self.completion_tokens = 0
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
                store_params=None) -> list[Any]:
        """The values for ``prompts``, from the cache or from ``call(missing prompts)``. The new
        values are stored under ``store_params()`` (evaluated after the call) when given."""
        fp = self.teacher.fingerprint
        layout = bool(getattr(self.teacher, "uses_shared_prefix", False))
        keys = [cache_key(fp, kind, p, params, layout=layout) for p in prompts]
        hit = self.cache.get_many(keys)
        self.hits += len(hit)
        self.cached_seconds += sum(sec for _, sec in hit.values())
        found = {k: v for k, (v, _) in hit.items()}
        first: dict[str, int] = {}  # each missing key once: a prompt repeated in one call is asked once
        for i, k in enumerate(keys):
            if k not in found:
                first.setdefault(k, i)
        miss_idx = list(first.values())
        if miss_idx:
            self.misses += len(miss_idx)
            t0 = time.perf_counter()
            values = call([prompts[i] for i in miss_idx])
            spent = time.perf_counter() - t0
            self.seconds += spent
            stored = store_params() if store_params is not None else params
            for i, v in zip(miss_idx, values):
                key = keys[i] if stored == params else cache_key(fp, kind, prompts[i], stored, layout=layout)
                self.cache.put(key, fp, kind, v, spent / len(miss_idx))
                found[keys[i]] = v
        return [found[k] for k in keys]

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
        values = self._cached(
            "generate", prompts, params,
            lambda ps: [r.to_dict() for r in self.teacher.generate(ps, max_tokens=max_tokens, temperature=temperature,
                                                                   stop=stop, seed=seed, **extra)],
            store_params=lambda: params if applies(self.teacher, extra.get("constraint")) is not False else free,
        )
        replies = [Reply.from_dict(v) for v in values]
        self.prompt_tokens += sum(r.prompt_tokens for r in replies)
        self.completion_tokens += sum(r.completion_tokens for r in replies)
        return replies

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        return self._cached(
            "score_options", prompts, {"options": list(options)},
            lambda ps: self.teacher.score_options(ps, options),
        )
