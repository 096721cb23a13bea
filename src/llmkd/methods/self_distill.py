"""KD + self-distillation with filter: the extra baseline of MCKD's paper (Zhao et al., ACL 2024,
arXiv 2311.08640, Sec. 4.2 baselines, "KD + SD w/ filter").

The algorithm, step by step in :meth:`SelfDistill.run`:

1. the few-shot teacher pseudo-labels the unlabeled pool D_U (cached, abstentions dropped);
2. a vanilla KD student is trained on the teacher's labels;
3. that student relabels the whole pool, its own training data included;
4. the ``keep_fraction`` most confident of its labels are kept;
5. a fresh student is trained on them: the output.

Checkpoint selection, ``mix_gold`` and ``relabel_decoding`` work as in MCKD (:mod:`llmkd.methods.mckd`,
whose helpers this module reuses). With ``student.targets: soft | mix`` the KD student (step 2)
learns the teacher's label distributions; the final student (step 5) trains on the KD student's
hard labels (there is no teacher distribution for them).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from ..types import Example, RunResult, TeacherLabel
from .base import RunContext
from .mckd import (_SelectionOptions, _examples, _predict, _selection_fit, _student_report, _teacher_labels,
                   prediction_confidence, stage_stats)


class SelfDistillOptions(_SelectionOptions):
    """``method_options.self_distill`` in a run config."""

    keep_fraction: float = Field(0.5, gt=0, le=1, description="share of the pool kept, most confident first")


class SelfDistill:
    """KD + self-distillation with filter (Zhao et al. 2024, Sec. 4.2 baselines): vanilla KD, then
    that student relabels the whole pool (including its own training data), the ``keep_fraction``
    most confident of its labels are kept, and a fresh student is trained on them.

    Confidence is the student's probability of its label (the paper: the mean token log-prob of a
    generated sequence; a seq2seq student exposes it as ``probs["confidence"]``). Items without a
    confidence rank last."""

    name = "self_distill"

    def __init__(self, *, keep_fraction: float = 0.5, mix_gold: bool = False, selection: str = "fidelity",
                 fidelity_tol: float = 0.001, fidelity_window: int = 3,
                 relabel_decoding: dict[str, Any] | None = None) -> None:
        self.keep_fraction = keep_fraction
        self.mix_gold = mix_gold
        self.selection = selection
        self.fidelity_tol = fidelity_tol
        self.fidelity_window = fidelity_window
        self.relabel_decoding = relabel_decoding

    def run(self, ctx: RunContext) -> RunResult:
        opts = SelfDistillOptions(keep_fraction=self.keep_fraction, mix_gold=self.mix_gold, selection=self.selection,
                                  fidelity_tol=self.fidelity_tol, fidelity_window=self.fidelity_window,
                                  relabel_decoding=self.relabel_decoding or {})
        gold = list(ctx.labeled) if opts.mix_gold else []
        t0 = time.perf_counter()
        teacher = {lab.example_id: lab for lab in _teacher_labels(ctx)}                      # 1 teacher labels D_U
        label_s = time.perf_counter() - t0
        kd, kd_record = _selection_fit(ctx, opts, _examples(ctx.pool, teacher, ctx.train.targets) + gold,  # 2 KD student
                                       tag="kd", seed=ctx.seed)
        preds = _predict(kd, ctx.pool, opts.relabel_decoding)                                 # 3 it relabels D_U
        scored = [(prediction_confidence(p), u, p) for u, p in zip(ctx.pool, preds) if p.label is not None]
        scored.sort(key=lambda t: -1.0 if t[0] is None else t[0], reverse=True)
        keep = scored[: max(1, round(opts.keep_fraction * len(ctx.pool)))]                   # 4 keep the most confident
        train = [Example(u.id, u.text, p.label) for _, u, p in keep] + gold
        student, record = _selection_fit(ctx, opts, train, tag="sd", seed=ctx.seed + 1)      # 5 fresh student on them
        test_preds = student.predict(ctx.test)
        kept = {u.id for _, u, _ in keep}
        labels = [TeacherLabel(u.id, p.label, prediction_confidence(p), p.label is None, "student", "",
                               stage="self-distill:kept" if u.id in kept else "self-distill:dropped")
                  for u, p in zip(ctx.pool, preds)]
        new = {lab.example_id: lab for lab in labels}
        return RunResult(
            self.name, ctx.evaluate(test_preds, ctx.test), tuple(test_preds), tuple(labels),
            stop_reason=record["stop_reason"],
            timings={"label_seconds": label_s, "train_seconds": time.perf_counter() - t0 - label_s},
            extra={"training": record, "n_train": len(train), "kd_student": _student_report(ctx, kd, kd_record)[0],
                   "kept": len(keep), "relabel": stage_stats(list(teacher.values()), teacher, new),
                   "options": opts.model_dump()},
        )
