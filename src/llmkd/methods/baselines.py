"""Baselines: the few-shot teacher itself, a student trained on gold labels only, and the trivial
baseline that needs no model (right-branching trees, :class:`~llmkd.tasks.base.HasTrivialBaseline`).

``supervised`` trains on the k-shot labeled set; the runner reuses it with the full gold training
set for the ``supervised_full`` upper bound (the only place pool gold labels are used for training,
and the reason it is an upper bound, not a method).
"""

from __future__ import annotations

import time

from ..errors import ConfigError
from ..tasks.base import HasTrivialBaseline
from ..types import Prediction, RunResult
from .base import RunContext, fit_student


class TeacherFewShot:
    """The teacher LLM with few-shot prompts, evaluated directly on the test set."""

    name = "teacher"

    def run(self, ctx: RunContext) -> RunResult:
        t0 = time.perf_counter()
        labels = ctx.label(ctx.test, stage="teacher-test", desc="teacher on test")
        seconds = time.perf_counter() - t0
        preds = [None if lab.abstained else Prediction(lab.label, lab.probs or {}) for lab in labels]
        return RunResult(self.name, ctx.evaluate(preds, ctx.test), tuple(preds), tuple(labels),
                         stop_reason="single pass", timings={"label_seconds": seconds})


class Supervised:
    """A fresh student trained on the gold labeled set in ``ctx.labeled``."""

    def __init__(self, *, name: str = "supervised") -> None:
        self.name = name

    def run(self, ctx: RunContext) -> RunResult:
        t0 = time.perf_counter()
        student, record = fit_student(ctx, list(ctx.labeled), tag="student")
        train_s = time.perf_counter() - t0
        preds = student.predict(ctx.test)
        return RunResult(self.name, ctx.evaluate(preds, ctx.test), tuple(preds),
                         stop_reason=record["stop_reason"], timings={"train_seconds": train_s},
                         extra={"training": record, "n_train": len(ctx.labeled)})


class Trivial:
    """The task's structure-only prediction for every test input (no teacher, no training): the
    floor a teacher must clear to be worth distilling (MCKD's right-branching row)."""

    name = "trivial"

    def run(self, ctx: RunContext) -> RunResult:
        task = ctx.task
        if not isinstance(task, HasTrivialBaseline):
            raise ConfigError(f"method trivial: the {type(task).__name__} has no trivial baseline (classification, "
                              "parsing and slot filling have one: the most frequent class, right-branching trees, "
                              "all-O tags); remove 'trivial' from methods")
        preds = [Prediction(task.trivial(ex.text, ctx.labeled)) for ex in ctx.test]
        return RunResult(self.name, ctx.evaluate(preds, ctx.test), tuple(preds), stop_reason="single pass",
                         extra={"baseline": task.trivial_name})
