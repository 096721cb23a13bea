"""The MiniLM classifier student: it learns, saves/loads with safetensors, and resumes."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmkd.students.classifier import ClassifierStudent
from llmkd.types import Example

pytestmark = pytest.mark.slow

DATA = [Example(str(i), t, lab) for i, (t, lab) in enumerate([
    ("a wonderful , moving film", "pos"), ("dull and lifeless", "neg"), ("i loved it", "pos"),
    ("a boring mess", "neg"), ("great acting and a smart script", "pos"), ("terrible , just terrible", "neg"),
    ("a delight from start to finish", "pos"), ("the worst film of the year", "neg")] * 2)]


def test_student_learns_saves_and_resumes(minilm_path: str, tmp_path: Path) -> None:
    st = ClassifierStudent(model=minilm_path, labels=["neg", "pos"], seed=0, lr=2e-4, warmup_steps=0, batch_size=8)
    losses = [st.fit_epoch(DATA) for _ in range(6)]
    assert losses[-1] < losses[0]
    preds = st.predict(DATA)
    assert all(abs(sum(p.probs.values()) - 1) < 1e-5 for p in preds)
    assert sum(p.label == e.label for p, e in zip(preds, DATA)) >= 12

    st.save(tmp_path / "s")
    assert (tmp_path / "s" / "model.safetensors").exists() and (tmp_path / "s" / "optimizer.safetensors").exists()
    assert not list((tmp_path / "s").glob("*.bin")) and not list((tmp_path / "s").glob("*.pt"))
    back = ClassifierStudent.load(tmp_path / "s")
    assert back.epochs_done_ == 6 and back.steps_done_ == st.steps_done_
    for a, b in zip(back.predict(DATA), preds):
        assert a.label == b.label and a.probs == pytest.approx(b.probs, abs=1e-5)
    # the optimizer moments came back: a resumed epoch continues rather than restarting
    assert len(back.optimizer_.state) == len(st.optimizer_.state) > 0


def test_weights_zero_out_examples(minilm_path: str) -> None:
    st = ClassifierStudent(model=minilm_path, labels=["neg", "pos"], seed=0)
    assert st.fit_epoch(DATA, weights=[0.0] * len(DATA)) == 0.0
    with pytest.raises(ValueError, match="weights"):
        st.fit_epoch(DATA, weights=[1.0])


def test_factory_students_are_fresh_and_seeded(minilm_path: str) -> None:
    a = ClassifierStudent(model=minilm_path, labels=["neg", "pos"], seed=3).predict(DATA[:2])
    b = ClassifierStudent(model=minilm_path, labels=["neg", "pos"], seed=3).predict(DATA[:2])
    c = ClassifierStudent(model=minilm_path, labels=["neg", "pos"], seed=4).predict(DATA[:2])
    assert a[0].probs == pytest.approx(b[0].probs)
    assert a[0].probs != pytest.approx(c[0].probs)
