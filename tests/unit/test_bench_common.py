"""The benchmarks' shared helpers (bench/_common.py) that decide what a speed table means."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _common import SHARED, cpu_model, doc_machine_line, interleaved, machine_line, result_store, save_store  # noqa: E402


def test_interleaved_rotates_the_rows_and_gives_each_all_items_once() -> None:
    calls: list[tuple[str, list[int]]] = []
    jobs = {name: (lambda block, name=name: calls.append((name, block))) for name in "abc"}
    seconds = interleaved(list(range(7)), 3, jobs)
    # block b starts with row b mod 3, so a shared machine's load hits every row alike
    assert [name for name, _ in calls] == list("abc" "bca" "cab")
    for name in "abc":
        assert [i for n, block in calls if n == name for i in block] == list(range(7))
    assert set(seconds) == set("abc") and all(s >= 0 for s in seconds.values())


def test_the_benchmarks_read_the_shared_data_beside_the_clone() -> None:
    assert SHARED == Path(__file__).resolve().parents[3] / "shared"


def test_a_store_with_results_made_with_other_settings_is_never_overwritten_silently(tmp_path: Path) -> None:
    out = tmp_path / "llkd.md"
    store, path = result_store(out, {"pool": 1000, "budgets": [0.25, 1.0]}, "first")
    store["runs"]["ag_news/vanilla/0"] = {"macro_f1": 0.8}
    path.write_text(json.dumps(store))
    # the same settings add to the table
    again, _ = result_store(out, {"pool": 1000, "budgets": [0.25, 1.0]}, "second")
    assert again["runs"] == store["runs"] and again["commands"] == ["first", "second"]
    # other settings stop, naming what differs; the store is untouched
    with pytest.raises(SystemExit, match=r"budgets: \[0.25, 1.0\] there, \[1.0\] here.*--fresh"):
        result_store(out, {"pool": 1000, "budgets": [1.0]}, "third")
    assert json.loads(path.read_text()) == store
    # --fresh starts a new table and keeps the old one beside it
    new, _ = result_store(out, {"pool": 1000, "budgets": [1.0]}, "fourth", fresh=True)
    assert new == {"settings": {"pool": 1000, "budgets": [1.0]}, "commands": ["fourth"], "runs": {}}
    assert json.loads((tmp_path / "llkd.old.json").read_text()) == store


def test_a_store_without_results_is_replaced_without_asking(tmp_path: Path) -> None:
    path = tmp_path / "ner.json"
    path.write_text(json.dumps({"settings": {"k": 1}, "commands": ["x"], "runs": {}}))
    store, _ = result_store(tmp_path / "ner.md", {"k": 5}, "y")
    assert store == {"settings": {"k": 5}, "commands": ["y"], "runs": {}}
    assert not (tmp_path / "ner.old.json").exists()


def test_two_processes_adding_to_one_store_keep_each_others_results(tmp_path: Path) -> None:
    out = tmp_path / "student_vs_teacher.md"
    a, path = result_store(out, {"k": 8}, "seed 0")  # two commands started before either wrote
    b, _ = result_store(out, {"k": 8}, "seed 1")
    a["runs"]["trec/0"] = {"f1": 0.7}
    save_store(a, path)
    b["runs"]["trec/1"] = {"f1": 0.8}
    save_store(b, path)  # b did not hold a's result: it is kept, and b's doc can show it
    assert set(b["runs"]) == {"trec/0", "trec/1"} and b["commands"] == ["seed 0", "seed 1"]
    on_disk = json.loads(path.read_text())
    assert on_disk == b and not list(tmp_path.glob("*.tmp"))
    a["runs"]["trec/0"] = {"f1": 0.75}  # a process's own entries win
    save_store(a, path)
    assert json.loads(path.read_text())["runs"] == {"trec/0": {"f1": 0.75}, "trec/1": {"f1": 0.8}}
    # a store with other settings on disk (a --fresh since) is replaced, not merged
    c, _ = result_store(out, {"k": 4}, "fresh", fresh=True)
    save_store(c, path)
    a["runs"]["trec/2"] = {"f1": 0.9}
    save_store(a, path)
    assert json.loads(path.read_text())["settings"] == {"k": 8} and "fresh" not in a["commands"]


def test_the_machine_line_of_every_results_doc_names_the_cpu_model():
    """The brief asks each results doc for its machine and CPU model: the shared line carries both."""
    import os
    import time

    line = machine_line(time.time() - 5, "of the last command")
    assert line.startswith("Date: ")
    assert f"{cpu_model()}, {os.cpu_count()} CPU cores" in line
    assert "wall time 5 s (of the last command)" in line


def test_a_report_only_rewrite_keeps_the_measuring_invocations_line_and_commands(tmp_path: Path) -> None:
    """``--report-only`` measures nothing: the doc keeps the date, load and wall time of the
    invocation that did, and the store does not list the rewrite among its commands."""
    import argparse
    import time

    out = tmp_path / "llkd.md"
    store, path = result_store(out, {"k": 8}, "python bench/llkd.py --seeds 0")
    save_store(store, path)
    measured = doc_machine_line(argparse.Namespace(out=str(out), report_only=False), time.time() - 100)
    out.write_text("# LLKD\n\nCommands:  \n`python bench/llkd.py --seeds 0`  \n" + measured + "\n\n| table |\n")
    again, _ = result_store(out, {"k": 8}, "python bench/llkd.py --report-only", report_only=True)
    assert again["commands"] == ["python bench/llkd.py --seeds 0"]
    assert doc_machine_line(argparse.Namespace(out=str(out), report_only=True), time.time()) == measured
    assert "wall time 100 s" in measured
    # no doc yet: a report-only invocation writes its own line
    fresh = doc_machine_line(argparse.Namespace(out=str(tmp_path / "none.md"), report_only=True), time.time())
    assert fresh.startswith("Date: ") and "wall time 0 s" in fresh
