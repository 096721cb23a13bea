"""Issue 25 item 7: a damaged cache file. Opening it raises StateError naming the file and the
fix; ``llmkd cache check`` reports the damage, ``--repair`` keeps the readable rows (the damaged
file is kept as .corrupt-<time>); ``llmkd cache clear`` works on it."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmkd.cli import app
from llmkd.errors import StateError
from llmkd.teachers.cache import CachedTeacher, TeacherCache, check_cache_file
from tests.unit.test_cache import FakeTeacher

KEYS = [f"k{i:05d}" for i in range(3000)]


def err(res) -> str:
    return res.output if res.stderr_bytes is None else res.output + res.stderr


def garbage(path: Path) -> Path:
    path.write_bytes(b"this is not an SQLite file\n" * 200)
    return path


def damaged(path: Path) -> Path:
    """A cache of 3000 rows with one b-tree page overwritten, as a torn write leaves it."""
    cache = TeacherCache(path)
    for k in KEYS:
        cache.put(k, "fp", "generate", {"text": "x" * 150, "tokens": [], "token_logprobs": None}, 0.1)
    cache.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with open(path, "r+b") as f:
        f.seek(4096 * 60 + 100)
        f.write(b"\xff" * 2000)
    return path


def test_a_file_that_is_not_a_database_raises_state_error_with_the_fix(tmp_path: Path) -> None:
    path = garbage(tmp_path / "teacher.sqlite")
    with pytest.raises(StateError) as info:
        TeacherCache(path)
    message = str(info.value)
    assert str(path) in message and "corrupt or not an SQLite database" in message
    assert f"llmkd cache check --path {path} --repair" in message and f"llmkd cache clear --path {path}" in message


def test_a_damaged_page_is_a_state_error_not_a_traceback(tmp_path: Path) -> None:
    path = damaged(tmp_path / "teacher.sqlite")
    with pytest.raises(StateError, match="corrupt or not an SQLite database"):
        cache = TeacherCache(path)
        cache.get_many(KEYS)
    res = CliRunner().invoke(app, ["cache", "stats", "--path", str(path)])
    assert res.exit_code == 2 and "error: teacher cache" in err(res) and "Traceback" not in err(res)


def test_cache_check_reports_and_repair_keeps_the_readable_rows(tmp_path: Path) -> None:
    path = damaged(tmp_path / "teacher.sqlite")
    res = CliRunner().invoke(app, ["cache", "check", "--path", str(path)])
    assert res.exit_code == 1 and "--repair" in err(res)
    report = json.loads(res.stdout[: res.stdout.rindex("}") + 1])
    assert report["ok"] is False and report["integrity"] != "ok" and report["readable_rows"] > 2900
    res = CliRunner().invoke(app, ["cache", "check", "--path", str(path), "--repair"])
    assert res.exit_code == 0, err(res)
    done = json.loads(res.stdout[res.stdout.rindex("{"):])
    assert done["kept_rows"] == report["readable_rows"] and Path(done["damaged_file_kept_as"]).exists()
    assert ".corrupt-" in done["damaged_file_kept_as"]
    assert check_cache_file(path)["ok"] is True
    cache = TeacherCache(path)
    assert len(cache.get_many(KEYS)) == done["kept_rows"]
    assert CliRunner().invoke(app, ["cache", "check", "--path", str(path)]).exit_code == 0


def test_repair_of_a_file_that_is_not_a_database_starts_empty(tmp_path: Path) -> None:
    path = garbage(tmp_path / "teacher.sqlite")
    res = CliRunner().invoke(app, ["cache", "check", "--path", str(path), "--repair"])
    assert res.exit_code == 0, err(res)
    assert TeacherCache(path).stats()["entries"] == 0
    assert len(list(tmp_path.glob("teacher.sqlite.corrupt-*"))) == 1


@pytest.mark.parametrize("make", [garbage, damaged])
def test_cache_clear_works_on_a_damaged_file(tmp_path: Path, make) -> None:
    path = make(tmp_path / "teacher.sqlite")
    res = CliRunner().invoke(app, ["cache", "clear", "--path", str(path), "--fingerprint", "fp"])
    assert res.exit_code == 2 and "--repair" in err(res) and "Traceback" not in err(res)
    res = CliRunner().invoke(app, ["cache", "clear", "--path", str(path), "--yes"])
    assert res.exit_code == 0, err(res)
    # a file that is not a database is deleted; one with a damaged page may still be emptied in place
    assert "was damaged; deleted it" in res.stdout or (make is damaged and "deleted 3000 entries" in res.stdout)
    assert TeacherCache(path).stats()["entries"] == 0 and check_cache_file(path)["ok"] is True


def test_a_row_that_does_not_parse_is_asked_again_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "teacher.sqlite"
    cache = TeacherCache(path)
    teacher = CachedTeacher(FakeTeacher(), cache)
    teacher.generate(["a", "b"], max_tokens=8)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE entries SET value = 'not json {' WHERE rowid = 1")
    report = check_cache_file(path)
    assert report["rows_that_do_not_parse"] == 1 and report["ok"] is False
    caplog.set_level(logging.WARNING)
    again = CachedTeacher(FakeTeacher(), cache)
    assert [r.text for r in again.generate(["a", "b"], max_tokens=8)] == ["reply:a", "reply:b"]
    assert again.misses == 1 and again.hits == 1 and "do not parse" in caplog.text
    assert check_cache_file(path)["ok"] is True  # the answer asked again replaced the broken row
