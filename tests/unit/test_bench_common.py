"""The benchmarks' shared helpers (bench/_common.py) that decide what a speed table means."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _common import SHARED, interleaved  # noqa: E402


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
