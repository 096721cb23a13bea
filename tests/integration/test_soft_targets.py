"""The MiniLM classifier trains on soft targets (issue 26 item 1): with targets soft and mix the
loss decreases, the settings survive save / load, and a resumed student continues identically."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmkd.students.classifier import ClassifierStudent
from llmkd.types import Example

pytestmark = pytest.mark.slow

TEXTS = [("a wonderful , moving film", "pos", 0.9), ("dull and lifeless", "neg", 0.2), ("i loved it", "pos", 0.8),
         ("a boring mess", "neg", 0.1), ("great acting and a smart script", "pos", 0.7),
         ("terrible , just terrible", "neg", 0.3), ("a delight from start to finish", "pos", 0.95),
         ("the worst film of the year", "neg", 0.15)]
DATA = [Example(str(i), t, lab, soft={"neg": 1 - p, "pos": p}) for i, (t, lab, p) in enumerate(TEXTS)]


@pytest.mark.parametrize("targets", ["soft", "mix"])
def test_minilm_learns_from_soft_targets(minilm_path: str, tmp_path: Path, targets: str) -> None:
    kw = dict(model=minilm_path, labels=["neg", "pos"], seed=0, lr=2e-4, warmup_steps=0, batch_size=8, threads=1,
              device="cpu", targets=targets, temperature=2.0)
    st = ClassifierStudent(**kw)
    losses = [st.fit_epoch(DATA) for _ in range(5)]
    assert losses[-1] < losses[0], losses
    st.save(tmp_path / "s")
    going_on = st.fit_epoch(DATA)
    back = ClassifierStudent.load(tmp_path / "s", device="cpu", threads=1)
    assert (back.targets, back.temperature, back.soft_weight) == (targets, 2.0, 0.5)
    assert back.fit_epoch(DATA) == pytest.approx(going_on, rel=1e-6)  # resumed: the same next epoch
