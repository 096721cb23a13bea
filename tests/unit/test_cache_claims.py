"""Issue 25 item 6: processes sharing one cache file ask the teacher once per prompt. A missing
key is claimed before it is asked; others wait for its answer; a claim of a killed process or
with a lapsed lease is taken over; a waiter gives up after ``wait_timeout``."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import pytest

from llmkd.teachers.cache import CachedTeacher, TeacherCache, cache_key
from llmkd.types import Reply
from tests.fake_openai_server import FakeOpenAIServer
from tests.unit.test_cache import FakeTeacher

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys
from llmkd.teachers.cache import CachedTeacher, TeacherCache
from llmkd.teachers.openai import OpenAITeacher
url, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
teacher = CachedTeacher(OpenAITeacher(model="m", base_url=url, api_key_env=None, concurrency=4), TeacherCache(path))
prompts = [f"prompt {i}" for i in range(n)]
sys.stdin.readline()  # start together
for start in range(0, n, teacher.batch_size):
    replies = teacher.generate(prompts[start:start + teacher.batch_size], max_tokens=4)
    assert [r.text for r in replies] == ["positive"] * len(replies)
print(teacher.misses, teacher.hits)
"""


def run_together(code: str, args: Sequence[str], n: int, *, wait: float = 1.0) -> list[tuple[int, str, str]]:
    """Start ``n`` Python processes running ``code`` with ``args``, let them import, release them
    at once (each reads a line first), and return (exit code, stdout, stderr) of each."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    procs = [subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    time.sleep(wait)
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=120) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def test_processes_sharing_a_cache_ask_each_prompt_once(tmp_path: Path) -> None:
    n = 48
    with FakeOpenAIServer(delay=0.02) as server:
        done = run_together(CHILD, [server.base_url, str(tmp_path / "c.sqlite"), str(n)], 3)
    outs = [out for _, out, _ in done]
    assert all(rc == 0 for rc, _, _ in done), done
    misses = [int(o.split()[0]) for o in outs]
    assert len(server.requests) == n  # without claims: up to 3 * n
    assert sum(misses) == n and TeacherCache(tmp_path / "c.sqlite").stats()["repeated_calls"] == 0


def claim_row(path: Path, key: str, owner: str, expires: float) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO claims(key, owner, expires) VALUES (?, ?, ?)", (key, owner, expires))


def gen_key(prompt: str) -> str:
    return cache_key("fp-a", "generate", prompt, {"max_tokens": 8, "temperature": 0.0, "stop": []})


def test_a_claim_of_a_killed_process_is_taken_over_at_once(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    cache = TeacherCache(tmp_path / "c.sqlite", wait_timeout=30)
    claim_row(cache.path, gen_key("a"), f"{socket.gethostname()}:{gone.pid}:dead", time.time() + 3600)
    teacher = CachedTeacher(FakeTeacher(), cache)
    start = time.monotonic()
    assert [r.text for r in teacher.generate(["a"], max_tokens=8)] == ["reply:a"]
    assert time.monotonic() - start < 5 and teacher.misses == 1


def test_a_lapsed_lease_is_taken_over(tmp_path: Path) -> None:
    cache = TeacherCache(tmp_path / "c.sqlite", wait_timeout=30)
    claim_row(cache.path, gen_key("a"), "another-host:1:x", time.time() - 1)
    teacher = CachedTeacher(FakeTeacher(), cache)
    assert [r.text for r in teacher.generate(["a"], max_tokens=8)] == ["reply:a"] and teacher.misses == 1


def test_a_live_claim_is_waited_for_then_answered_from_the_cache(tmp_path: Path) -> None:
    release = threading.Event()

    class Slow(FakeTeacher):
        def generate(self, prompts: Sequence[str], **kw) -> list[Reply]:
            release.wait(10)
            return super().generate(prompts, **kw)

    first, second = Slow(), FakeTeacher()
    a = CachedTeacher(first, TeacherCache(tmp_path / "c.sqlite"))
    b = CachedTeacher(second, TeacherCache(tmp_path / "c.sqlite"))
    got: dict[str, list[str]] = {}
    ta = threading.Thread(target=lambda: got.__setitem__("a", [r.text for r in a.generate(["x", "y"], max_tokens=8)]))
    ta.start()
    time.sleep(0.3)  # a holds the claims on x and y
    tb = threading.Thread(target=lambda: got.__setitem__("b", [r.text for r in b.generate(["y", "z"], max_tokens=8)]))
    tb.start()
    time.sleep(0.3)
    assert second.generated == [["z"]]  # b asked only what nobody else was asking, and waits for y
    release.set()
    ta.join(10)
    tb.join(10)
    assert got == {"a": ["reply:x", "reply:y"], "b": ["reply:y", "reply:z"]}
    assert first.generated == [["x", "y"]] and b.hits == 1 and b.misses == 1


def test_a_waiter_asks_itself_after_wait_timeout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = TeacherCache(tmp_path / "c.sqlite", wait_timeout=0.3)
    claim_row(cache.path, gen_key("a"), "another-host:1:x", time.time() + 3600)  # alive, as far as we know
    teacher = CachedTeacher(FakeTeacher(), cache)
    caplog.set_level(logging.WARNING)
    assert [r.text for r in teacher.generate(["a"], max_tokens=8)] == ["reply:a"]
    assert "still unanswered after 0 s; asking the teacher here" in caplog.text


def test_claims_are_released_when_the_teacher_fails(tmp_path: Path) -> None:
    class Broken(FakeTeacher):
        def generate(self, prompts: Sequence[str], **kw) -> list[Reply]:
            raise RuntimeError("server gone")

    cache = TeacherCache(tmp_path / "c.sqlite")
    with pytest.raises(RuntimeError):
        CachedTeacher(Broken(), cache).generate(["a", "b"], max_tokens=8)
    import sqlite3

    with sqlite3.connect(cache.path) as db:
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    assert [r.text for r in CachedTeacher(FakeTeacher(), cache).generate(["a"], max_tokens=8)] == ["reply:a"]


def test_the_lease_is_renewed_while_the_teacher_works(tmp_path: Path) -> None:
    import sqlite3

    cache = TeacherCache(tmp_path / "c.sqlite", lease=0.3)
    seen: list[float] = []

    class Slow(FakeTeacher):
        def generate(self, prompts: Sequence[str], **kw) -> list[Reply]:
            for _ in range(4):
                time.sleep(0.25)
                with sqlite3.connect(cache.path) as db:
                    seen.append(db.execute("SELECT expires FROM claims").fetchone()[0] - time.time())
            return super().generate(prompts, **kw)

    CachedTeacher(Slow(), cache).generate(["a"], max_tokens=8)
    assert all(left > 0 for left in seen)  # never lapsed although the call took over 3 leases


OPENER = """
import sys
from llmkd.teachers.cache import TeacherCache
sys.stdin.readline()  # start together
TeacherCache(sys.argv[1])
"""


def test_processes_creating_one_cache_file_at_once_all_open_it(tmp_path: Path) -> None:
    """Switching a new file to WAL answers "database is locked" at once (no busy wait) while
    another process does the same; before the retry, about 1 open in 24 failed here."""
    for trial in range(4):
        done = run_together(OPENER, [str(tmp_path / f"c{trial}.sqlite")], 6, wait=0.8)
        assert all(rc == 0 for rc, _, _ in done), [err for _, _, err in done]
