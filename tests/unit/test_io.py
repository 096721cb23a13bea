"""llmkd.io: the one atomic JSON writer (report.py re-exports it; methods import it directly)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmkd import io, report
from llmkd.errors import StateError
from tests.unit.test_gate import fakes, load, write_config  # noqa: F401 - fakes is a fixture


def test_write_json_is_atomic_utf8_and_writes_unknown_objects_as_str(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    io.write_json(path, {"label": "café", "path": tmp_path, "n": 1})
    assert '"café"' in path.read_text(encoding="utf-8") and '\n "n": 1' in path.read_text(encoding="utf-8")
    assert io.read_json(path) == {"label": "café", "path": str(tmp_path), "n": 1}
    assert not (tmp_path / "state.json.tmp").exists()
    io.write_jsonl(tmp_path / "rows.jsonl", ({"i": i, "t": "ü"} for i in range(3)))
    assert io.read_jsonl(tmp_path / "rows.jsonl") == [{"i": i, "t": "ü"} for i in range(3)]
    assert (report.write_json, report.write_jsonl, report.read_jsonl) == (io.write_json, io.write_jsonl, io.read_jsonl)


@pytest.mark.parametrize("name, content, where", [
    ("progress.json", '{"epoch": 1, "history": [', "not valid JSON at line 1 column 26"),
    ("result.json", b"\xff\xfe{}", "not UTF-8 at byte 0"),
    ("labels.jsonl", '{"id": "a"}\n{"id": \n', "line 2 is not valid JSON"),
    ("predictions.jsonl", '{"id": "a"}\n[1, 2]\n', "line 2 is not a JSON object"),
])
def test_a_corrupt_state_file_is_one_line_naming_it_and_the_fix(tmp_path: Path, name: str, content: Any,
                                                               where: str) -> None:
    from llmkd.errors import StateError
    from llmkd.io import read_json, read_jsonl

    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(StateError) as exc:
        (read_jsonl if name.endswith(".jsonl") else read_json)(path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path} is unreadable ({where}") and "delete it and rerun" in msg


def test_a_finished_method_missing_a_file_it_wrote_is_run_again(tmp_path: Path) -> None:
    from llmkd.report import missing_files, write_method_result
    from llmkd.types import Example, Prediction, RunResult, TeacherLabel

    res = RunResult("vanilla", {"macro_f1": 1.0}, (Prediction("pos", {}),),
                    (TeacherLabel("u1", "pos", 0.9, False),), records={"selection": [{"id": "u1"}]})
    result = write_method_result(tmp_path, res, [Example("t1", "x", "pos")], {})
    assert result["files"] == ["predictions.jsonl", "labels.jsonl", "selection.jsonl"]
    assert missing_files(tmp_path, result) == []
    (tmp_path / "labels.jsonl").unlink()  # what a StateError about it says to do
    assert missing_files(tmp_path, io.read_json(tmp_path / "result.json")) == ["labels.jsonl"]
    assert missing_files(tmp_path, {"method": "old"}) == []  # a result.json from before the list: predictions there


HOLD = """
import sys, time
from pathlib import Path
from llmkd.io import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def hold_in_another_process(run_dir: Path) -> Any:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_run_directory_in_use_is_refused_at_once_and_freed_when_its_holder_dies(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "demo"
    proc = hold_in_another_process(run_dir)
    try:
        with pytest.raises(StateError, match=rf"runs/demo is in use by process {proc.pid} on .*give this run another "
                                             r"name \(--set name=\.\.\.\)"):
            with io.run_lock(run_dir):
                pass
        with io.run_lock(tmp_path / "runs" / "other"):  # another run beside it is not held
            pass
    finally:
        proc.kill()  # as kill -9: the OS drops the lock with the process
        proc.wait()
    with io.run_lock(run_dir):
        assert (tmp_path / "runs" / ".demo.pid").read_text().startswith("process ")
    assert not (tmp_path / "runs" / ".demo.pid").exists() and not run_dir.exists()  # the folder holds results only


def test_run_label_and_evaluate_refuse_a_held_run_directory_before_any_work(tmp_path: Path,
                                                                             fakes: dict[str, Any]) -> None:
    from llmkd import api

    path = write_config(tmp_path, methods=["vanilla"])
    summary = api.run(load(path))
    n_teachers = len(fakes["teachers"])
    proc = hold_in_another_process(summary.run_dir)
    try:
        for call in (lambda: api.run(load(path)), lambda: api.label(load(path)), lambda: api.evaluate(summary.run_dir)):
            with pytest.raises(StateError, match=f"is in use by process {proc.pid}"):
                call()
    finally:
        proc.kill()
        proc.wait()
    assert len(fakes["teachers"]) == n_teachers  # refused before a teacher was built
    assert api.evaluate(summary.run_dir).report == summary.report
