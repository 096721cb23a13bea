"""A training killed after an epoch and resumed gives the very model an uninterrupted run gives:
bit-identical test probabilities, for every student kind (the RNG state travels with the
checkpoint). Before the fix, loading a checkpoint re-seeded torch, so the dropout masks after the
resume differed (17 of 60 SST-2 predictions changed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from llmkd.errors import StateError
from llmkd.methods import LabelSettings, RunContext, TrainSettings, fit_student
from llmkd.students.checkpoint import drop_optimizer_state
from llmkd.students.classifier import ClassifierStudent
from llmkd.students.seq2seq import Seq2SeqStudent
from llmkd.students.span_parser import SpanParserStudent
from llmkd.students.tagger import TaggerStudent
from llmkd.tasks.classification import ClassificationTask
from llmkd.tasks.ner import NerTask
from llmkd.tasks.seq2seq import Seq2SeqTask
from llmkd.types import Example

pytestmark = pytest.mark.slow

CLS = [Example(f"c{i}", t, lab) for i, (t, lab) in enumerate([
    ("a wonderful , moving film", "pos"), ("dull and lifeless", "neg"), ("i loved it", "pos"),
    ("a boring mess", "neg"), ("great acting and a smart script", "pos"), ("terrible , just terrible", "neg")] * 2)]
NER = [Example(f"n{i}", t, tags) for i, (t, tags) in enumerate([
    ("John lives in Paris", ("B-PER", "O", "O", "B-LOC")), ("Mary saw Rome", ("B-PER", "O", "B-LOC")),
    ("Paris is big", ("B-LOC", "O", "O"))] * 3)]
SLOTS = [Example(f"s{i}", f"fly from {a} to {b}", f"fly O from O {a} B-from to O {b} B-to")
         for i, (a, b) in enumerate([("boston", "denver"), ("dallas", "miami"), ("austin", "seattle"), ("denver", "boston")])]
TREES = [Example(f"t{i}", f"the {a} sat on a {b}", f"( ( the {a} ) ( sat ( on ( a {b} ) ) ) )")
         for i, (a, b) in enumerate([("cat", "mat"), ("dog", "rug"), ("man", "chair"), ("bird", "branch")])]


def kinds(minilm: str) -> dict[str, tuple[Any, Callable[[int], Any], Callable[[Path], Any], list[Example]]]:
    common = dict(model=minilm, batch_size=4, lr=3e-4, warmup_steps=0, threads=1)
    return {
        "classifier": (ClassificationTask(labels=["neg", "pos"]),
                       lambda seed: ClassifierStudent(labels=["neg", "pos"], seed=seed, **common),
                       ClassifierStudent.load, CLS),
        "tagger": (NerTask(labels=["PER", "LOC"]),
                   lambda seed: TaggerStudent(labels=["PER", "LOC"], seed=seed, **common), TaggerStudent.load, NER),
        "seq2seq": (Seq2SeqTask(target="slots", labels=["B-from", "B-to", "O"]),
                    lambda seed: Seq2SeqStudent(labels=["B-from", "B-to", "O"], seed=seed, max_length=16,
                                                max_target_length=24, **common),
                    Seq2SeqStudent.load, SLOTS),
        "span_parser": (Seq2SeqTask(target="tree"), lambda seed: SpanParserStudent(seed=seed, max_length=16, **common),
                        SpanParserStudent.load, TREES),
    }


def ctx_for(workdir: Path, task: Any, factory: Callable[[int], Any], loader: Callable[[Path], Any],
            data: list[Example]) -> RunContext:
    return RunContext(task=task, teacher=None, student_factory=factory, student_loader=loader, labeled=(),
                      pool=(), dev=tuple(data[:3]), test=tuple(data), shots=(), workdir=workdir, seed=0,
                      train=TrainSettings(epochs=4, patience=10, min_steps=0, batch_size=4),
                      labeling=LabelSettings(), progress=False)


def killed_after(epochs: int, factory: Callable[[int], Any]) -> Callable[[int], Any]:
    """A factory whose student dies (as a kill would) when it starts epoch ``epochs + 1``."""
    def make(seed: int) -> Any:
        st = factory(seed)
        fit = st.fit_epoch

        def fit_epoch(*args: Any, **kw: Any) -> float:
            if st.epochs_done_ >= epochs:
                raise KeyboardInterrupt("killed")
            return fit(*args, **kw)

        st.fit_epoch = fit_epoch
        return st
    return make


def outputs(student: Any, data: list[Example]) -> list[Any]:
    return [(p.label, p.probs) for p in student.predict(data)]


@pytest.mark.parametrize("kind", ["classifier", "tagger", "seq2seq", "span_parser"])
def test_a_resumed_training_is_the_uninterrupted_one(kind: str, minilm_path: str, tmp_path: Path) -> None:
    task, factory, loader, data = kinds(minilm_path)[kind]
    whole, record = fit_student(ctx_for(tmp_path / "whole", task, factory, loader, data), data, tag="s")
    assert record["epoch"] == 4

    with pytest.raises(KeyboardInterrupt):
        fit_student(ctx_for(tmp_path / "killed", task, killed_after(2, factory), loader, data), data, tag="s")
    resumed, record2 = fit_student(ctx_for(tmp_path / "killed", task, factory, loader, data), data, tag="s")
    assert [h["epoch"] for h in record2["history"]] == [1, 2, 3, 4]
    assert outputs(resumed, data) == outputs(whole, data)  # bit-identical, not approximately
    assert [h["loss"] for h in record2["history"]] == [h["loss"] for h in record["history"]]


def test_a_checkpoint_without_its_optimizer_state_is_refused(minilm_path: str, tmp_path: Path) -> None:
    st = ClassifierStudent(model=minilm_path, labels=["neg", "pos"], seed=0, batch_size=4, threads=1)
    st.fit_epoch(CLS)
    st.save(tmp_path / "a")
    (tmp_path / "a" / "optimizer.safetensors").unlink()
    with pytest.raises(StateError, match=r"optimizer.safetensors is missing.*Delete the folder .*a"):
        ClassifierStudent.load(tmp_path / "a")
    st.save(tmp_path / "b")  # dropped on purpose once a method finished: loads, for prediction
    drop_optimizer_state(tmp_path / "b")
    assert ClassifierStudent.load(tmp_path / "b").predict(CLS[:1])
    (tmp_path / "b" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(StateError, match=r"cannot be loaded.*Delete the folder"):
        ClassifierStudent.load(tmp_path / "b")
