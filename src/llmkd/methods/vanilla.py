"""Vanilla KD: the few-shot teacher pseudo-labels the unlabeled pool; one student trains on it.

1. label the pool with the teacher (cached; abstentions are counted and left out);
2. train a fresh student on the pseudo-labels, early-stopping on the small gold dev set;
3. evaluate it on the test set.
Gold labeled examples are not mixed into the student's data (``mix_gold=True`` adds them; they
train on their label). With ``student.targets: soft | mix`` the student also learns the teacher's
label distribution of each pool example (cached with its label; :func:`.training.teacher_examples`).
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from ..labeling import abstention_rate
from ..types import RunResult
from .base import RunContext, fit_student, require_answers
from .training import teacher_examples


class VanillaKDOptions(BaseModel):
    """``method_options.vanilla`` in a run config."""

    model_config = ConfigDict(extra="forbid")

    mix_gold: bool = Field(False, description="add the labeled gold examples to the student's data")


class VanillaKD:
    name = "vanilla"

    def __init__(self, *, mix_gold: bool = False) -> None:
        self.mix_gold = mix_gold

    def run(self, ctx: RunContext) -> RunResult:
        t0 = time.perf_counter()
        labels = ctx.label(ctx.pool, stage="teacher-pool", desc="teacher on pool")         # 1
        label_s = time.perf_counter() - t0
        texts = {u.id: u.text for u in ctx.pool}
        train = teacher_examples(require_answers(labels, ctx.task), texts, ctx.train.targets)  # soft: + probs
        if self.mix_gold:
            train += list(ctx.labeled)
        t1 = time.perf_counter()
        student, record = fit_student(ctx, train, tag="student")                           # 2
        preds = student.predict(ctx.test)                                                  # 3
        return RunResult(
            self.name, ctx.evaluate(preds, ctx.test), tuple(preds), tuple(labels),
            stop_reason=record["stop_reason"],
            timings={"label_seconds": label_s, "train_seconds": time.perf_counter() - t1},
            extra={"training": record, "n_train": len(train), "pool_abstention_rate": abstention_rate(labels)},
        )
