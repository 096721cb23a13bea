"""fit_student's early stopping waits for min_steps (a tagger scores 0 on dev before it learns)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pytest

from llmkd.methods import LabelSettings, RunContext, TrainSettings
from llmkd.methods.base import fit_student, patience_spent
from llmkd.tasks.classification import ClassificationTask
from llmkd.types import Example, Prediction
from tests.fakes import JsonStudent

LABELS = ["neg", "pos"]


class LateStudent(JsonStudent):
    """Predicts the dev labels right only after 7 epochs, like a tagger leaving its all-O phase."""

    def __init__(self, epochs: int = 0) -> None:
        self.epochs = epochs

    def fit_epoch(self, examples: Sequence[Example], weights: Sequence[float] | None = None) -> float:
        self.epochs += 1
        return 1.0 / self.epochs

    def predict(self, examples: Sequence[Any]) -> list[Prediction]:
        mode = "right" if self.epochs >= 7 else ("half" if self.epochs == 2 else "const")
        out = []
        for i, e in enumerate(examples):
            label = e.label if mode == "right" or (mode == "half" and i == 0) else "neg"
            out.append(Prediction(label, {}))
        return out

    def state(self) -> dict[str, Any]:
        return {"epochs": self.epochs}


def ctx(tmp_path: Path, min_steps: int) -> RunContext:
    gold = tuple(Example(f"g{i}", f"text {i}", LABELS[i % 2]) for i in range(4))
    return RunContext(task=ClassificationTask(labels=LABELS), teacher=None, student_factory=lambda seed: LateStudent(),
                      student_loader=LateStudent.load, labeled=gold, pool=(), dev=(gold[1], gold[0], gold[3], gold[2]),
                      test=gold, shots=gold, workdir=tmp_path, seed=0,
                      train=TrainSettings(epochs=4, patience=1, min_steps=min_steps, batch_size=4),
                      labeling=LabelSettings(confidence=False), progress=False)


def test_patience_does_not_stop_before_min_steps(tmp_path: Path) -> None:
    # 4 examples, batch 4: 1 step an epoch; min_steps 8 -> 8 epochs, dev every 2. The dev score
    # drops at epoch 4; patience 1 would stop there, but the 8 steps are not done yet.
    student, rec = fit_student(ctx(tmp_path, min_steps=8), ctx(tmp_path, 8).labeled, tag="t")
    assert [h["epoch"] for h in rec["history"]] == [2, 4, 6, 8]
    assert rec["best_epoch"] == 8 and rec["best_score"] == 1.0 and student.epochs == 8
    assert rec["stop_reason"] == "max_epochs"


def test_patience_stops_once_min_steps_are_done(tmp_path: Path) -> None:
    # min_steps 4 -> 4 epochs of 4 at least; the same drop at epoch 4 now stops training
    _, rec = fit_student(ctx(tmp_path, min_steps=4), ctx(tmp_path, 4).labeled, tag="t")
    assert rec["stop_reason"] == "no dev gain in 1 evaluations"
    assert rec["history"][-1]["epoch"] == 4 and rec["best_epoch"] == 2


class SilentStudent(LateStudent):
    """Answers nothing (dev score 0) for 5 epochs, then everything right."""

    def predict(self, examples: Sequence[Any]) -> list[Prediction]:
        return [Prediction(e.label if self.epochs >= 6 else None, {}) for e in examples]


def test_patience_waits_for_a_first_nonzero_dev_score(tmp_path: Path) -> None:
    # min_steps 1, patience 1: a dev score stuck at 0 (epochs 1-5) would stop at epoch 2, keeping a
    # student that answers nothing; it trains on, first scores at epoch 6, and stops after 7
    c = ctx(tmp_path, min_steps=1)
    c = type(c)(**{**c.__dict__, "student_factory": lambda seed: SilentStudent(), "student_loader": SilentStudent.load,
                   "train": TrainSettings(epochs=10, patience=1, min_steps=1, batch_size=4)})
    student, rec = fit_student(c, c.labeled, tag="t")
    assert [h["score"] for h in rec["history"]][:5] == [0.0] * 5
    assert rec["best_epoch"] == 6 and rec["best_score"] == 1.0 and student.epochs == 6
    assert rec["stop_reason"] == "no dev gain in 1 evaluations" and rec["history"][-1]["epoch"] == 7


def test_patience_spent_is_the_rule_of_every_loop() -> None:
    h0, h1 = [{"score": 0.0}, {"score": 0.0}], [{"score": 0.0}, {"score": 0.2}]
    assert patience_spent(2, 2, epoch=5, least=4, history=h1)
    assert not patience_spent(1, 2, epoch=5, least=4, history=h1)  # patience not used up
    assert not patience_spent(2, 2, epoch=3, least=4, history=h1)  # min_steps not done
    assert not patience_spent(2, 2, epoch=5, least=4, history=h0)  # every dev score so far is 0


class WeightRecorder(LateStudent):
    seen: list[list[float] | None] = []

    def fit_epoch(self, examples: Sequence[Example], weights: Sequence[float] | None = None) -> float:
        WeightRecorder.seen.append(None if weights is None else list(weights))
        return super().fit_epoch(examples, weights)


def test_class_balance_gives_every_class_the_same_total_weight(tmp_path: Path) -> None:
    from llmkd.methods.base import class_balanced

    skewed = [Example(f"p{i}", "t", "pos") for i in range(6)] + [Example(f"n{i}", "t", "neg") for i in range(2)]
    w = class_balanced(skewed)
    assert sum(w[:6]) == pytest.approx(sum(w[6:])) == 4.0 and sum(w) == pytest.approx(len(skewed))
    assert class_balanced(skewed, [2.0] * 8) == [2 * x for x in w]  # multiplies existing weights
    spans = [Example("s", "t", (("PER", 0, 1),))]
    assert class_balanced(spans) is None and class_balanced(spans, [0.5]) == [0.5]  # not class labels: unchanged

    c = ctx(tmp_path, min_steps=1)
    WeightRecorder.seen = []
    c = type(c)(**{**c.__dict__, "student_factory": lambda seed: WeightRecorder(), "student_loader": WeightRecorder.load,
                   "train": TrainSettings(epochs=1, patience=1, min_steps=1, batch_size=8, class_balance=True)})
    fit_student(c, skewed, tag="balanced")
    assert WeightRecorder.seen == [w]


def test_require_answers_is_one_clear_error_for_every_method() -> None:
    from llmkd.errors import TeacherError
    from llmkd.methods.base import require_answers
    from llmkd.tasks.ner import NerTask
    from llmkd.types import TeacherLabel

    ok, abst = TeacherLabel("a", "pos", 0.9, False), TeacherLabel("b", None, None, True, raw="Sure! Here you go")
    assert require_answers([abst, ok], ClassificationTask(labels=LABELS)) == [ok]
    with pytest.raises(TeacherError) as err:
        require_answers([abst, abst], ClassificationTask(labels=LABELS))
    assert str(err.value) == ("the teacher abstained on all 2 pool examples (no reply could be parsed, e.g. "
                              "'Sure! Here you go'), so there is nothing to train on. Try teacher.labeling=score "
                              "(argmax over the label set never abstains), a stronger teacher, or another "
                              "task.instruction.")
    with pytest.raises(TeacherError, match=r"Try teacher\.chat=false"):  # no label set to score
        require_answers([abst], NerTask(labels=["PER"]))


def test_primary_metric_is_the_tasks_own() -> None:
    from llmkd.methods.base import primary_metric
    from llmkd.metrics import classification_scores, span_scores
    from llmkd.tasks.ner import NerTask
    from llmkd.tasks.seq2seq import Seq2SeqTask

    cls, ner = ClassificationTask(labels=LABELS), NerTask(labels=["PER"])
    tree, slots = Seq2SeqTask(target="tree"), Seq2SeqTask(target="slots")
    assert (cls.primary_metric, ner.primary_metric, tree.primary_metric, slots.primary_metric) == (
        "macro_f1", "f1", "sentence_f1", "slot_f1")
    assert primary_metric(cls, classification_scores(["pos"], ["pos"], LABELS)) == "macro_f1"
    assert primary_metric(ner, span_scores([("B-PER",)], [("B-PER",)])) == "f1"
    # each is the key the old rule ("macro_f1" if present, else the first key) chose
    assert list(tree.score(["( ( a ) b )"], ["( ( a ) b )"]))[0] == "sentence_f1"
    assert list(slots.score(["a O b O"], ["a O b O"]))[0] == "slot_f1"
    # no dev set ({"loss": ...}) or a task without primary_metric: macro_f1, else the first key
    assert primary_metric(cls, {"loss": -0.5}) == "loss"
    assert primary_metric(object(), {"accuracy": 1.0, "macro_f1": 0.5}) == "macro_f1"
    assert primary_metric(None, {"exact": 1.0, "f1": 0.5}) == "exact"
