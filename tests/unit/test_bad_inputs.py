"""Every case of the bad-input corpus (tests/bad_inputs.py) is refused with its one-line error:
exit code 2, the expected message, no traceback, and nothing run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_inputs import CORPUS, run_case, verdict


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_bad_input_gets_a_clear_error(case, tmp_path: Path) -> None:
    outcome = run_case(case, tmp_path)
    assert verdict(case, outcome) == "clear", outcome["output"][-2000:]
    assert not (tmp_path / "runs" / "bad" / "vanilla").exists()  # refused before any method ran
