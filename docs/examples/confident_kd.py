"""A new method in one file plus one registry line (docs/architecture.md; the contract test runs it)."""
from pydantic import BaseModel, Field

from llmkd.methods import MethodSpec, RunContext, fit_student, register, require_answers
from llmkd.types import Example, RunResult


class ConfidentKDOptions(BaseModel):
    min_confidence: float = Field(0.5, ge=0, le=1, description="keep teacher labels at least this confident")


class ConfidentKD:
    name = "confident_kd"

    def __init__(self, min_confidence: float = 0.5) -> None:
        self.min_confidence = min_confidence

    def run(self, ctx: RunContext) -> RunResult:
        labels = require_answers(ctx.label(ctx.pool), ctx.task)                   # 1. the teacher labels the pool
        texts = {u.id: u.text for u in ctx.pool}
        train = [Example(lab.example_id, texts[lab.example_id], lab.label) for lab in labels
                 if lab.confidence is None or lab.confidence >= self.min_confidence]  # 2. keep the confident ones
        student, record = fit_student(ctx, train, tag="student")                  # 3. the shared training loop
        preds = student.predict(ctx.test)                                         # 4. evaluate on the test set
        return RunResult(self.name, ctx.evaluate(preds, ctx.test), tuple(preds), tuple(labels),
                         extra={"training": record, "n_train": len(train)})


register(MethodSpec("confident_kd", ConfidentKD, options=ConfidentKDOptions, uses_teacher=True,
                    summary="vanilla KD on the teacher labels above a confidence threshold"))
