"""llmkd.io: the one atomic JSON writer (report.py re-exports it; methods import it directly)."""

from __future__ import annotations

from pathlib import Path

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
