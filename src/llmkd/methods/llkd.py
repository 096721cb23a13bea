"""LLKD: train on the pseudo-labels the teacher is sure of and the student still needs.

Li et al., "Learning with Less: Knowledge Distillation from Large Language Models via Unlabeled
Data", Findings of NAACL 2025 (arXiv 2411.08028). The paper's Sec. 3 (method) could not be read
here; the threshold update is the FreeMatch-style proposal documented in ``docs/methods/llkd.md``
and :mod:`llmkd.selection`. The algorithm box is :meth:`LLKD.run` and :meth:`SelectionEpochs.epoch`:

1. the teacher labels the pool once (cached); ``c_i`` = its probability of ``ŷ_i``, normalised
   over the label set (``teacher.confidence: true``); abstentions are left out;
2. every update ``t`` (each mini-batch with ``granularity: step``, the paper's reported choice;
   once per epoch over the whole pool with ``granularity: epoch``):
   a. the student predicts the examples (no gradient) -> need ``u_i`` = entropy of its prediction;
   b. the selector updates the moving-average thresholds τ^T_t(y), τ^S_t(y) from them;
   c. it keeps ``c_i ≥ τ^T_t(ŷ_i)`` and ``u_i ≥ τ^S_t(ŷ_i)``, weight ``w_i = c_i · u_i``;
   d. the student takes a gradient step on the kept examples with loss ``Σ w_i CE_i / |batch|``
      (``loss_norm: batch``, the default) or ``Σ w_i CE_i / Σ w_i`` (``loss_norm: kept``);
3. after every epoch: evaluate on the small gold dev set, keep the best student, stop early after
   ``student.patience`` epochs without gain (the shared loop, :func:`.training.train_loop`); with
   a step budget (``max_steps`` = ``student.max_steps``) training stops after that many drawn
   mini-batches, the last (cut) epoch evaluated;
4. evaluate the best student on the test set.

``selection: keep_all | fixed | topk | random`` swaps the selector and keeps the same loop (the
baselines of the benchmark); strategies that do not look at the student select once, up front.
The per-epoch record (thresholds, selected counts per class, steps, the two data fractions:
``data_fraction`` = share of the pool ever kept, ``batch_kept_fraction`` = mean share of each
selection batch kept), a per-step ``trace`` (kept fraction, τ^T_t, τ^S_t) and every example's
provenance go to the run's report (``llmkd.method_reports.llkd_report``: ``selection.png``; ``selection.jsonl``).

Resumable: the student and the selector's moving averages are checkpointed together by the
shared loop; a killed run restarts the unfinished epoch. ``student.targets: soft | mix`` swaps
CE_i in 2d for the soft-target loss (KL to the teacher's label distribution at
``student.temperature``, ``llmkd.students.losses``); selection and weights are unchanged.
Not handled: per-sample teacher confidence from generated-token logprobs when the label set
cannot be scored (it is used when ``labeling.py`` provides it), non-classification tasks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import TeacherError
from ..labeling import abstention_rate
from ..students.base import ProbaStudent
from ..selection import LLKDSelector, Selection, SelectionInput, build_selector, loss_weights
from ..types import Example, RunResult, TeacherLabel
from .base import RunContext, require_answers
from .training import budget_subset, teacher_examples, train_loop

log = logging.getLogger(__name__)


class LLKDOptions(BaseModel):
    """``method_options.llkd`` in a run config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    selection: Literal["llkd", "keep_all", "fixed", "topk", "random"] = Field(
        "llkd", description="selection strategy (llmkd.selection); the others are LLKD's baselines")
    granularity: Literal["step", "epoch"] = Field(
        "step", description="update thresholds and select every mini-batch (step) or once per epoch")
    momentum: float | None = Field(
        None, ge=0.0, lt=1.0, description="λ of the moving averages, per step; null = 1 - 1/(steps per epoch)")
    entropy: Literal["normalized", "raw"] = Field("normalized", description="student need: H/log C or H (nats)")
    class_norm: Literal["max", "none"] = Field("max", description="per-class thresholds m(y)/max m · τ, or global τ")
    weighting: Literal["product", "none"] = Field("product", description="loss weight c·u, or 1")
    teacher_init: float | None = Field(None, ge=0.0, le=1.0, description="τ^T_0 (default 1/C; warm_start: fixed)")
    student_init: float | None = Field(None, ge=0.0, description="τ^S_0 (default 0.5; warm_start: fixed)")
    warm_start: Literal["fixed", "data"] = Field(
        "fixed", description="thresholds start at teacher_init / student_init (fixed) or at the first batch's means (data)")
    loss_norm: Literal["kept", "batch"] = Field(
        "batch", description="a step's loss Σ w·CE / Σ w over the kept examples (kept) or Σ w·CE / batch size (batch)")
    max_steps: int | None = Field(
        None, ge=1, description="step budget (drawn mini-batches); sets student.max_steps for this method")
    teacher_threshold: float | None = Field(None, ge=0.0, le=1.0, description="selection=fixed: keep c ≥ this")
    student_threshold: float | None = Field(None, ge=0.0, le=1.0, description="selection=fixed: and u ≥ this")
    fraction: float | None = Field(None, gt=0.0, le=1.0, description="selection=topk|random: share of the pool")
    plot: bool = Field(True, description="write selection.png (matplotlib, a core dependency)")

    @model_validator(mode="after")
    def _fits_strategy(self) -> LLKDOptions:
        if self.selection in ("topk", "random") and self.fraction is None:
            raise ValueError(f"selection={self.selection} needs fraction (the share of the pool to keep), e.g. 0.25")
        if self.selection == "fixed" and self.teacher_threshold is None:
            raise ValueError("selection=fixed needs teacher_threshold (keep c ≥ it), e.g. 0.8")
        if self.fraction is not None and self.selection not in ("topk", "random"):
            raise ValueError(f"fraction applies to selection=topk or random, not {self.selection}")
        if (self.teacher_threshold is not None or self.student_threshold is not None) and self.selection != "fixed":
            raise ValueError(f"teacher_threshold / student_threshold apply to selection=fixed, not {self.selection}")
        if self.warm_start == "data" and self.selection != "llkd":
            raise ValueError(f"warm_start=data applies to selection=llkd, not {self.selection}")
        if self.warm_start == "data" and (self.teacher_init is not None or self.student_init is not None):
            raise ValueError("teacher_init / student_init set the fixed start; warm_start=data starts from the "
                             "first batch's means. Give one or the other")
        return self


def student_probs(student: Any, texts: Sequence[str]) -> np.ndarray:
    """The student's class probabilities (rows in ``student.labels`` order), no gradient."""
    if isinstance(student, ProbaStudent):
        return np.asarray(student.predict_proba(list(texts)), dtype=np.float64)
    preds = student.predict([Example("", t, None) for t in texts])
    if any(not isinstance(p.probs, dict) or not p.probs for p in preds):
        raise TypeError(f"LLKD needs the student's class probabilities: {type(student).__name__} has no "
                        "predict_proba (students.base.ProbaStudent) and its predict() gives no probs")
    return np.array([[p.probs.get(c, 0.0) for c in student.labels] for p in preds], dtype=np.float64)


class SelectionEpochs:
    """Step 2 as the shared loop's :class:`~.training.EpochTrainer`: selection and weights per
    mini-batch (or once per epoch / once up front), with a per-epoch record and provenance.

    Under a step budget (``max_steps`` of :meth:`epoch`) a step is one drawn mini-batch with
    per-step selection (its kept examples make at most one optimizer step), else one mini-batch
    of the kept examples. Two data fractions are counted: ``data_fraction``, the share of the
    pool kept (and trained on) at least once; ``batch_kept_fraction``, the mean over selection
    calls of kept / examples the call looked at (a mini-batch, or the whole pool)."""

    def __init__(self, selector: Any, train: list[Example], conf: np.ndarray, classes: Sequence[str], *,
                 granularity: str, seed: int, batch_size: int, loss_norm: str = "batch") -> None:
        self.selector, self.train, self.conf, self.classes = selector, train, conf, tuple(classes)
        self.y = [e.label for e in train]
        self.granularity, self.seed, self.bs, self.loss_norm = granularity, seed, batch_size, loss_norm
        self.steps = max(1, math.ceil(len(train) / batch_size))
        self.steps_taken = 0
        self.static: Selection | None = None
        if not selector.needs_student:                                                        # baselines: once
            self.static = selector.select(SelectionInput(self.y, conf, self.classes))
        self.ever = np.zeros(len(train), dtype=bool)
        self.first_epoch: dict[str, int] = {}
        self.times: dict[str, int] = {}
        self.calls, self.kept_share_sum, self.optimizer_steps = 0, 0.0, 0  # over the whole run
        self.trace: dict[str, list[float]] = {"step": [], "kept_fraction": [], "tau_teacher": [], "tau_student": []}

    def epoch(self, student: Any, epoch: int, tick: Callable[[int], None],
              max_steps: int | None = None) -> tuple[float, dict[str, Any]]:
        n, y, conf, classes = len(self.train), self.y, self.conf, self.classes
        kept = np.zeros(n, dtype=np.int64)   # times each example was kept (and trained on) this epoch
        losses: list[tuple[float, int]] = []
        if self.static is not None:                                                           # 2 (static)
            batches = [(np.arange(n), self.static)]
        elif self.granularity == "epoch":                                                     # 2 (per epoch)
            batches = [(np.arange(n), None)]
        else:                                                                                 # 2 (per step)
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
            batches = [(order[i:i + self.bs], None) for i in range(0, n, self.bs)][:max_steps]
        per_step = self.static is None and self.granularity == "step"
        steps = opt_steps = calls = 0
        share = 0.0
        for idx, sel in batches:
            sel = self._select(student, idx) if sel is None else sel                         # 2a, 2b, 2c
            calls, share = calls + 1, share + sel.n_kept / max(1, len(idx))
            left = None if max_steps is None else max_steps - steps
            loss, trained, taken = self._step(student, idx, sel, left, len(idx) if per_step else None)  # 2d
            losses.append((loss, len(trained)))
            kept[trained] += 1
            steps += 1 if per_step else taken
            opt_steps += taken
            self._trace(sel, len(idx))
            tick(self.steps if len(batches) == 1 else 1)
        self.steps_taken = steps
        self.calls, self.kept_share_sum = self.calls + calls, self.kept_share_sum + share
        self.optimizer_steps += opt_steps
        for i in np.flatnonzero(kept):                                                        # provenance
            self.first_epoch.setdefault(self.train[i].id, epoch)
            self.times[self.train[i].id] = self.times.get(self.train[i].id, 0) + int(kept[i])
        self.ever |= kept > 0
        n_loss = sum(k for _, k in losses)
        loss = sum(v * k for v, k in losses) / n_loss if n_loss else float("nan")
        rec = {"epoch": epoch, "loss": loss, "selected": int((kept > 0).sum()),
               "selected_per_class": {c: int(((kept > 0) & (np.array(y) == c)).sum()) for c in classes},
               "ever_selected": int(self.ever.sum()), "data_fraction": float(self.ever.mean()),
               "steps": steps, "optimizer_steps": opt_steps, "batch_kept_fraction": share / calls if calls else 0.0}
        if isinstance(self.selector, LLKDSelector):
            tt, ts = self.selector.thresholds()
            rec.update(tau_teacher=self.selector.tau_teacher_, tau_student=self.selector.tau_student_,
                       teacher_thresholds=dict(zip(classes, map(float, tt))),
                       student_thresholds=dict(zip(classes, map(float, ts))))
        return loss, rec

    def _select(self, student: Any, idx: np.ndarray) -> Selection:
        """2a-2c: the student's need on ``idx``, the threshold update and the kept examples."""
        probs = student_probs(student, [self.train[i].text for i in idx])                    # 2a
        return self.selector.select(SelectionInput([self.y[i] for i in idx], self.conf[idx], self.classes, probs))

    def _step(self, student: Any, idx: np.ndarray, sel: Selection, max_steps: int | None, drawn: int | None,
              ) -> tuple[float, np.ndarray, int]:
        """2d: train on the kept examples of ``idx`` (at most ``max_steps`` mini-batches of them),
        weighted by ``loss_norm`` (:func:`~llmkd.selection.loss_weights`; ``drawn``: the size of
        the mini-batch they were kept from, None when selected over the pool). Returns the mean
        loss, the indices trained on and the optimizer steps taken."""
        if not sel.n_kept:
            return 0.0, np.zeros(0, dtype=np.int64), 0
        weights = loss_weights(sel, self.loss_norm, drawn)
        # where the budget ends inside this pass, a seeded random part of the kept examples (as PlainEpochs)
        chosen, _ = budget_subset(range(sel.n_kept), None, self.bs, max_steps, [self.seed, self.calls, 7])
        trained = idx[sel.keep][np.asarray(chosen, dtype=np.int64)]
        loss = student.fit_epoch([self.train[i] for i in trained], [weights[i] for i in chosen])
        return loss, trained, math.ceil(len(trained) / self.bs)

    def _trace(self, sel: Selection, drawn: int) -> None:
        """Kept fraction and global thresholds after every selection call (LLKD's selector only)."""
        if isinstance(self.selector, LLKDSelector):
            t = self.trace
            t["step"].append(self.selector.updates_)
            t["kept_fraction"].append(sel.n_kept / max(1, drawn))
            t["tau_teacher"].append(float(self.selector.tau_teacher_))
            t["tau_student"].append(float(self.selector.tau_student_))

    def state_dict(self) -> dict[str, Any]:
        return {"selector": self.selector.state_dict(), "ever": np.flatnonzero(self.ever).tolist(),
                "first_epoch": self.first_epoch, "times": self.times, "calls": self.calls,
                "kept_share_sum": self.kept_share_sum, "optimizer_steps": self.optimizer_steps, "trace": self.trace}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("selector"):
            self.selector.load_state_dict(state["selector"])
        self.ever[:] = False
        self.ever[state.get("ever", [])] = True
        self.first_epoch = dict(state.get("first_epoch", {}))
        self.times = dict(state.get("times", {}))
        self.calls, self.kept_share_sum = int(state.get("calls", 0)), float(state.get("kept_share_sum", 0.0))
        self.optimizer_steps = int(state.get("optimizer_steps", 0))
        self.trace = {k: list(v) for k, v in state.get("trace", self.trace).items()}


class LLKD:
    """Teacher-confidence × student-need sample selection (see the module docstring)."""

    name = "llkd"

    def __init__(self, **options: Any) -> None:
        self.options = LLKDOptions.model_validate(options)

    def run(self, ctx: RunContext) -> RunResult:
        o, t0 = self.options, time.perf_counter()
        labels = ctx.label(ctx.pool, stage="teacher-pool", desc="teacher on pool")            # 1 teacher labels, c_i
        if o.max_steps is not None:  # the method's budget is the shared loop's student.max_steps
            ctx = dataclasses.replace(ctx, train=dataclasses.replace(ctx.train, max_steps=o.max_steps))
        label_s, t1 = time.perf_counter() - t0, time.perf_counter()
        train, conf = self._train_set(ctx, labels)                                           #   abstentions left out
        first = ctx.student_factory(ctx.seed)
        steps = max(1, math.ceil(len(train) / ctx.train.batch_size))
        trainer = SelectionEpochs(self._selector(first.labels, ctx.seed, steps), train, conf, first.labels,
                                  granularity=o.granularity, seed=ctx.seed, batch_size=ctx.train.batch_size,
                                  loss_norm=o.loss_norm)
        best, state = train_loop(ctx, trainer, n_train=len(train), tag="llkd", start=first)  # 2 select + step; 3 dev
        preds = best.predict(ctx.test)                                                        # 4 test
        return self._result(ctx, labels, train, conf, state, preds, label_s, time.perf_counter() - t1, steps)

    # -- setup ----------------------------------------------------------------------------------
    def step_momentum(self, steps_per_epoch: int) -> float:
        """λ per step: the configured one, else ``1 - 1/steps_per_epoch`` (an EMA horizon of one
        epoch; ≈0.998 at PubMed-RCT-20k scale, close to FreeMatch's 0.999)."""
        if self.options.momentum is not None:
            return self.options.momentum
        return 1.0 - 1.0 / steps_per_epoch if steps_per_epoch > 1 else 0.0

    def _selector(self, classes: Sequence[str], seed: int, steps_per_epoch: int) -> Any:
        o = self.options
        if o.selection == "llkd":
            lam = self.step_momentum(steps_per_epoch)
            momentum = lam if o.granularity == "step" else lam ** steps_per_epoch  # the same horizon in examples
            return LLKDSelector(classes=classes, momentum=momentum, entropy=o.entropy, class_norm=o.class_norm,
                                weighting=o.weighting, teacher_init=o.teacher_init, student_init=o.student_init,
                                warm_start=o.warm_start)
        return build_selector(o.selection, classes=classes, seed=seed, teacher=o.teacher_threshold,
                              student=o.student_threshold, fraction=o.fraction)

    def _train_set(self, ctx: RunContext, labels: list[TeacherLabel]) -> tuple[list[Example], np.ndarray]:
        texts = {u.id: u.text for u in ctx.pool}
        answered = require_answers(labels, ctx.task)
        needs_conf = self.options.selection in ("llkd", "fixed", "topk")
        missing = [lab.example_id for lab in answered if lab.confidence is None]
        if needs_conf and missing:
            raise TeacherError(
                f"selection={self.options.selection} needs the teacher's confidence in each pseudo-label, but "
                f"{len(missing)} of {len(answered)} labels have none (e.g. {missing[0]}). Set teacher.confidence=true "
                "(scores the label set) or use teacher.labeling=score.")
        train = teacher_examples(answered, texts, ctx.train.targets)  # soft / mix: + the teacher's probs
        conf = np.array([1.0 if lab.confidence is None else lab.confidence for lab in answered], dtype=np.float64)
        return train, np.clip(conf, 0.0, 1.0)

    # -- the record -----------------------------------------------------------------------------
    def _result(self, ctx: RunContext, labels: list[TeacherLabel], train: list[Example], conf: np.ndarray,
                state: dict[str, Any], preds: Any, label_s: float, train_s: float, steps: int) -> RunResult:
        n, kept = len(train), state.get("trainer", {})
        epochs = state.get("epochs", [])
        ever_n = len(kept.get("ever", []))
        first, times = kept.get("first_epoch", {}), kept.get("times", {})
        record = {k: state[k] for k in ("history", "best_epoch", "best_score", "epoch", "total_epochs")}
        record.update(steps=state.get("steps", 0), max_steps=ctx.train.max_steps)
        record.update(dev_metric=state.get("dev_metric"), stop_reason=state["stop_reason"])
        return RunResult(
            self.name, ctx.evaluate(preds, ctx.test), tuple(preds), tuple(labels), stop_reason=state["stop_reason"],
            timings={"label_seconds": label_s, "train_seconds": train_s},
            extra={"training": record, "n_train": ever_n, "pool_answered": n, "data_fraction": ever_n / n,
                   "mean_epoch_fraction": float(np.mean([r["selected"] for r in epochs]) / n) if epochs else 0.0,
                   "batch_kept_fraction": kept.get("kept_share_sum", 0.0) / kept["calls"] if kept.get("calls") else 0.0,
                   "steps": state.get("steps", 0), "optimizer_steps": kept.get("optimizer_steps", 0),
                   "max_steps": ctx.train.max_steps, "trace": kept.get("trace", {}),
                   "options": self.options.model_dump(), "momentum_per_step": self.step_momentum(steps),
                   "epochs": epochs, "pool_abstention_rate": abstention_rate(labels)},
            records={"selection": [{"id": e.id, "label": e.label, "confidence": float(c),
                                    "first_selected_epoch": first.get(e.id), "times_selected": times.get(e.id, 0)}
                                   for e, c in zip(train, conf)]},
        )
