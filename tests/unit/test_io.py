"""llmkd.io: the one atomic JSON writer (report.py re-exports it; methods import it directly)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmkd import io, report


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
