"""The data-parallel helpers alone (one process): nothing is shared, and a launched run without
Accelerate names the extra. The 2-process run itself: tests/integration/test_distributed.py."""

from __future__ import annotations

import sys

import pytest


def test_without_accelerate_a_launched_run_names_the_extra(monkeypatch) -> None:
    from llmkd import distributed
    from llmkd.errors import MissingExtraError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "accelerate", None)
    distributed._state.cache_clear()
    try:
        with pytest.raises(MissingExtraError, match=r"pip install 'llmkd\[hf\]'"):
            distributed.is_main()
    finally:
        distributed._state.cache_clear()


def test_alone_nothing_is_shared() -> None:
    from llmkd import distributed

    assert not distributed.active() and distributed.is_main() and distributed.share([3, 1, 2]) == [3, 1, 2]
    assert distributed.on_main(lambda: 7) == 7
