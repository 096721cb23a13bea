"""The one student training loop: epochs, dev evaluation, early stopping, resumable checkpoints.

:func:`train_loop` runs it; what happens inside an epoch is an :class:`EpochTrainer`:

- :class:`PlainEpochs` (``fit_student``: vanilla, the baselines, MCKD, self-distillation, EvoKD's
  seed student and its rounds): one pass over fixed examples with fixed per-example weights;
- LLKD's trainer (``methods/llkd.py``): a selection and weights per mini-batch.

A trainer keeps its own state (LLKD: the thresholds' moving averages) in ``state_dict`` and the
loop checkpoints it with the student, so a killed run resumes both from the same epoch.

A step budget (``student.max_steps``, ``TrainSettings.max_steps``) replaces ``student.epochs`` as
the length of training: the loop hands each epoch the steps left, the trainer stops there (a
partial last epoch) and says how many it took (``steps_taken``). ``student.epochs`` is then the
number of dev evaluations, at evenly spaced points of the budget (see :func:`train_loop`). A
step is one mini-batch of ``batch_size`` examples drawn from the trainer's training set: an
optimizer step for :class:`PlainEpochs`; for LLKD's per-step selection a drawn batch, whose kept
examples make at most one optimizer step.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from ..errors import ConfigError
from ..io import read_json, write_json
from ..students.base import Student
from ..types import Example, TeacherLabel

if TYPE_CHECKING:
    from .base import RunContext

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    epochs: int = 8
    patience: int = 3
    min_steps: int = 60
    batch_size: int = 16
    max_steps: int | None = None  #: student.max_steps: a step budget that replaces epochs (see the module docstring)
    class_balance: bool = False
    targets: str = "hard"  #: student.targets: soft / mix put the teacher's distribution on examples (teacher_examples)


def class_balanced(examples: Sequence[Example], weights: Sequence[float] | None = None) -> list[float] | None:
    """Per-example weights times ``n / (K * count(label))``, so that each of the K classes present
    carries the same total weight (sklearn's "balanced" rule). Only for class labels (strings);
    ``weights`` is returned unchanged for other label types (spans, trees)."""
    if not examples or not all(isinstance(e.label, str) for e in examples):
        return None if weights is None else list(weights)
    counts = Counter(e.label for e in examples)
    base = [1.0] * len(examples) if weights is None else list(weights)
    return [w * len(examples) / (len(counts) * counts[e.label]) for w, e in zip(base, examples)]


def teacher_examples(labels: Sequence[TeacherLabel], texts: Mapping[str, str], targets: str = "hard",
                     ) -> list[Example]:
    """Training examples from the teacher's answered labels (abstentions left out), in order.

    With ``targets`` ``soft`` or ``mix`` (``student.targets``, ``ctx.train.targets``) each carries
    the teacher's label distribution (``TeacherLabel.probs``, computed when the label was asked and
    cached with it: no teacher call here) as ``Example.soft``. When no teacher label has one
    (teacher.confidence: false) that is a :class:`ConfigError` naming the fix; a few without one
    (a parsed reply whose label set scored -inf throughout) train on their label, with a warning.
    Labels a student gave (``source: student``, MCKD's relabels) train on the hard label. With
    ``hard`` the examples are exactly ``Example(id, text, label)``."""
    answered = [lab for lab in labels if not lab.abstained]
    if targets == "hard":
        return [Example(lab.example_id, texts[lab.example_id], lab.label) for lab in answered]
    by_teacher = [lab for lab in answered if lab.source == "teacher"]
    missing = [lab.example_id for lab in by_teacher if not lab.probs]
    if by_teacher and len(missing) == len(by_teacher):
        raise ConfigError(
            f"student.targets: {targets} trains on the teacher's label distribution, but none of the "
            f"{len(by_teacher)} teacher labels has one (e.g. {missing[0]!r}: teacher.confidence: false?). Set "
            "teacher.confidence: true (scores the label set; cached) or teacher.labeling: score, or use "
            "student.targets: hard")
    if missing:
        log.warning("student.targets: %s: %d of %d teacher labels have no label distribution (e.g. %r: every "
                    "label scored -inf); they train on their hard label", targets, len(missing), len(by_teacher),
                    missing[0])
    return [Example(lab.example_id, texts[lab.example_id], lab.label,
                    soft=dict(lab.probs) if lab.source == "teacher" and lab.probs else None) for lab in answered]


def primary_metric(task: Any, scores: Mapping[str, Any]) -> str:
    """The metric of ``scores`` that selects and compares students: the task's ``primary_metric``
    (classification ``macro_f1``, NER span ``f1``, seq2seq ``sentence_f1`` / ``slot_f1``) where
    ``scores`` has it; else ``macro_f1`` if present, else the first key (e.g. ``loss`` when
    there is no dev set, or a task that names no primary metric)."""
    name = getattr(task, "primary_metric", None)
    if name in scores:
        return name
    return "macro_f1" if "macro_f1" in scores else next(iter(scores))


def main_score(scores: Mapping[str, float] | None, task: Any) -> float:
    """The task's :func:`primary_metric` in ``scores``; -1 without scores (no dev set)."""
    if not scores:
        return -1.0
    return float(scores[primary_metric(task, scores)])


def min_epochs(n_examples: int, train: TrainSettings, min_steps: int | None = None) -> int:
    """Epochs over ``n_examples`` that make at least ``min_steps`` (default ``train.min_steps``)
    optimizer steps: a tiny set gets more epochs."""
    steps = max(1, math.ceil(n_examples / train.batch_size))
    return math.ceil((train.min_steps if min_steps is None else min_steps) / steps)


def patience_spent(bad: int, patience: int, epoch: int, least: int, history: Sequence[dict[str, Any]]) -> bool:
    """The early-stopping rule: ``patience`` evaluations without dev gain, but never before the
    ``least`` epochs that make ``min_steps`` (see :func:`min_epochs`), nor while every dev score
    so far is 0 (a tagger still tagging everything O gives nothing to compare)."""
    return bad >= patience and epoch >= least and any(h["score"] > 0 for h in history)


class EpochTrainer(Protocol):
    """What one epoch does. ``steps``: progress units per epoch (``tick`` is called with them);
    ``steps_taken``: budget steps (see the module docstring) the last :meth:`epoch` call took."""

    steps: int
    steps_taken: int

    def epoch(self, student: Student, epoch: int, tick: Callable[[int], None],
              max_steps: int | None = None) -> tuple[float, dict[str, Any]]:
        """Train ``student`` one epoch, or its first ``max_steps`` steps; returns the mean loss and
        a per-epoch record ({} = none)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class PlainEpochs:
    """One pass over ``examples`` with per-example ``weights`` (None = 1) per epoch. Cut to
    ``max_steps`` steps, the pass covers a seeded random ``max_steps · batch_size`` of them."""

    examples: Sequence[Example]
    weights: Sequence[float] | None = None
    steps: int = 1
    batch_size: int = 16
    seed: int = 0
    steps_taken: int = 0

    def epoch(self, student: Student, epoch: int, tick: Callable[[int], None],
              max_steps: int | None = None) -> tuple[float, dict[str, Any]]:
        examples, weights = budget_subset(self.examples, self.weights, self.batch_size, max_steps, [self.seed, epoch])
        loss = student.fit_epoch(examples, weights)
        self.steps_taken = math.ceil(len(examples) / self.batch_size)
        tick(1)
        return loss, {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def budget_subset(examples: Sequence[Any], weights: Sequence[float] | None, batch_size: int, max_steps: int | None,
                  seed: Any) -> tuple[list[Any], list[float] | None]:
    """``examples`` (and their ``weights``) cut to what ``max_steps`` mini-batches of
    ``batch_size`` hold: a seeded random subset in the original order; all of them when they
    fit or ``max_steps`` is None."""
    import numpy as np

    if max_steps is None or len(examples) <= max_steps * batch_size:
        return list(examples), None if weights is None else list(weights)
    keep = np.sort(np.random.default_rng(seed).permutation(len(examples))[: max_steps * batch_size])
    return [examples[i] for i in keep], None if weights is None else [weights[i] for i in keep]


def _fresh_state(n_train: int, total_epochs: int, eval_every: int | None) -> dict[str, Any]:
    return {"epoch": 0, "steps": 0, "best_epoch": 0, "best_score": -1.0, "history": [], "done": False,
            "n_train": n_train, "total_epochs": total_epochs, "eval_every": eval_every, "last": None}


def train_loop(ctx: RunContext, trainer: EpochTrainer, *, n_train: int, tag: str, seed: int | None = None,
               start: Student | None = None, select_on: Sequence[Example] | None = None,
               plateau: float | None = None, fixed_epochs: int | None = None) -> tuple[Student, dict[str, Any]]:
    """Train a student epoch by epoch with ``trainer`` (see :func:`fit_student` for the rules).

    ``start``: continue this student instead of a fresh ``ctx.student_factory(seed)``.
    ``fixed_epochs``: exactly that many epochs, no evaluation, no early stopping and no
    checkpoints (the caller checkpoints: EvoKD's rounds); the trained ``start`` is returned.
    ``ctx.train.max_steps`` (a step budget) applies to the other case only: it replaces
    ``epochs`` as the length of training (the last epoch is cut where the budget ends, and is
    evaluated), and ``epochs`` becomes the number of dev evaluations, spread over the budget's
    steps: the epoch that reaches the next 1/``epochs`` of the budget is evaluated (at most one
    evaluation per epoch). Rows whose epochs differ in length (a pass over a subset is shorter
    than one over the pool) are then evaluated at the same points of the budget as nearly as
    their epochs allow; with ``epochs: 1`` every row once, at the end. Patience may still stop
    earlier; ``min_steps`` is then ignored.
    Otherwise the student and the trainer's state are checkpointed into ``workdir/tag`` after
    every evaluation (``epoch-N``, then the state pointing at it, then the older slot removed, so
    a kill at any moment leaves a consistent epoch to resume from); a finished run just loads
    ``workdir/tag/best``."""
    from tqdm.auto import tqdm

    s = ctx.train
    desc = f"training {tag}"

    def first_student() -> Student:  # ``start``, else a fresh one; not built when a checkpoint is resumed
        return start if start is not None else ctx.student_factory(ctx.seed if seed is None else seed)

    if fixed_epochs is not None:
        student = first_student()
        bar = tqdm(total=fixed_epochs * trainer.steps, desc=desc, disable=not ctx.progress, unit="ep")
        losses = [trainer.epoch(student, e, bar.update)[0] for e in range(1, fixed_epochs + 1)]
        bar.close()
        return student, {"epoch": fixed_epochs, "loss": losses[-1] if losses else float("nan"), "losses": losses}

    d = ctx.workdir / tag
    d.mkdir(parents=True, exist_ok=True)
    state_path = d / "progress.json"
    budget = s.max_steps
    if budget is None:
        least = min_epochs(n_train, s)
        total_epochs = max(s.epochs, least)
        eval_every = max(1, round(total_epochs / s.epochs))
    else:  # the epochs the budget makes over n_train (a selecting trainer may make more, over fewer)
        least = 0
        total_epochs = max(1, math.ceil(budget / max(1, math.ceil(n_train / s.batch_size))))
        eval_every = None  # evaluations follow the budget's steps (below), not an epoch count
    state = {**_fresh_state(n_train, total_epochs, eval_every), "max_steps": budget}
    if state_path.exists():
        saved = read_json(state_path)  # resumed only when made with the same data size and budget
        usable = saved.get("done") or (saved.get("last") and (d / saved["last"]).exists())
        if saved.get("n_train") == n_train and saved.get("max_steps") == budget and usable:
            state = saved
    if state["done"]:
        log.info("%s: already trained (best epoch %d); loading it", tag, state["best_epoch"])
        return ctx.student_loader(d / "best"), state
    if state["last"]:
        student = ctx.student_loader(d / state["last"])
        trainer.load_state_dict(state.get("trainer") or {})
    else:
        student = first_student()
    metric = state.get("dev_metric")
    bad = sum(1 for h in state["history"] if h["epoch"] > state["best_epoch"])  # evaluations since the best
    unit = "step" if trainer.steps > 1 else "ep"
    bar = tqdm(total=total_epochs * trainer.steps, initial=state["epoch"] * trainer.steps, desc=desc,
               disable=not ctx.progress, unit=unit)
    records: list[dict[str, Any]] = list(state.get("epochs", []))
    reason = "max_epochs" if budget is None else f"step budget ({budget} steps) spent"

    def spent() -> bool:
        return state["epoch"] >= total_epochs if budget is None else state.get("steps", 0) >= budget

    t0 = time.perf_counter() - (state["history"][-1]["seconds"] if state["history"] else 0.0)
    while not spent():
        epoch = state["epoch"] + 1
        left = None if budget is None else budget - state.get("steps", 0)
        loss, rec = trainer.epoch(student, epoch, bar.update, max_steps=left)
        state["epoch"] = epoch
        state["steps"] = state.get("steps", 0) + trainer.steps_taken
        if budget is not None and not trainer.steps_taken:  # nothing to train on: the budget would never be spent
            raise ConfigError(f"{tag}: epoch {epoch} took no training step (an empty selection?), so the step "
                              f"budget student.max_steps={budget} can never be spent; loosen the selection or "
                              "unset max_steps")
        if rec:
            records.append(rec)
        if budget is None:
            due = not epoch % eval_every
        else:  # student.epochs evaluations over the budget: after the epoch that reaches the next
            # 1/epochs of it, so rows whose epochs differ in length are scored at the same points
            last = state["history"][-1].get("steps", 0) if state["history"] else 0
            due = state["steps"] * s.epochs // budget > last * s.epochs // budget
        if not due and not spent():
            continue
        scored = ctx.dev if select_on is None else select_on
        scores = ctx.evaluate(student.predict(scored), scored) if scored else {"loss": -loss}
        metric = metric or primary_metric(ctx.task, scores)
        score = float(scores[metric])
        if rec:
            rec["dev"] = score
        state["history"].append({"epoch": epoch, "steps": state["steps"], "loss": loss, "score": score,
                                 "seconds": time.perf_counter() - t0})
        bar.set_postfix(loss=f"{loss:.3f}", dev=f"{score:.3f}")
        if plateau is not None:  # keep the latest; stop when the score has flattened out
            state["best_score"], state["best_epoch"] = score, epoch
            student.save(d / "best")
            hist = state["history"]
            if len(hist) > s.patience and abs(score - hist[-1 - s.patience]["score"]) <= plateau:
                bad = s.patience
        elif score > state["best_score"]:
            state["best_score"], state["best_epoch"], bad = score, epoch, 0
            student.save(d / "best")
        else:
            bad += 1
        previous = state["last"]
        student.save(d / f"epoch-{epoch}")
        state.update(last=f"epoch-{epoch}", dev_metric=metric)
        _keep_extras(state, trainer, records)
        write_json(state_path, state)
        if previous and previous != state["last"]:
            shutil.rmtree(d / previous, ignore_errors=True)
        if patience_spent(bad, s.patience, epoch, least, state["history"]):
            reason = (f"{metric} changed by <= {plateau} over {s.patience} evaluations" if plateau is not None
                      else f"no dev gain in {s.patience} evaluations")
            break
    bar.close()
    if not (d / "best").exists():  # no evaluation improved on -1 (cannot happen with scores >= 0)
        student.save(d / "best")
    last = state["last"]
    state.update(done=True, stop_reason=reason, dev_metric=metric, last=None,
                 scored_on="dev" if select_on is None else "training fidelity",
                 kept="latest" if plateau is not None else "best")
    _keep_extras(state, trainer, records)
    write_json(state_path, state)
    if last:
        shutil.rmtree(d / last, ignore_errors=True)
    return ctx.student_loader(d / "best"), state


def _keep_extras(state: dict[str, Any], trainer: EpochTrainer, records: list[dict[str, Any]]) -> None:
    """The trainer's state and per-epoch records, where it has any (LLKD)."""
    extra = trainer.state_dict()
    if extra:
        state["trainer"] = extra
    if records:
        state["epochs"] = records


def fit_student(ctx: RunContext, examples: Sequence[Example], *, tag: str, seed: int | None = None,
                weights: Sequence[float] | None = None, select_on: Sequence[Example] | None = None,
                plateau: float | None = None) -> tuple[Student, dict[str, Any]]:
    """Train a fresh student on ``examples`` with early stopping on the dev set (the task's
    :func:`primary_metric`). Checkpoints after every evaluation into ``workdir/tag``; a rerun resumes
    from the last checkpoint and a finished run just loads the best student.

    Tiny training sets get more epochs so that at least ``min_steps`` optimizer steps happen;
    the dev set is then evaluated every ``eval_every`` epochs and patience counts evaluations.
    Patience never stops training before those ``min_steps``: a token tagger on 32 sentences
    scores 0 span F1 on dev for its first epochs (it tags everything O) and used to be stopped
    there, at 0.06 test F1, while 4 sentences trained for the full 30 steps reached 0.33. Nor does
    it stop a student whose dev score has never risen above 0 (no signal to compare): the WNUT-17
    tagger on 200 sparse teacher labels scored 0 on dev for 6 epochs, then 0.19 and 0.23; stopped
    after 5 it had 0.00 test F1, trained 8 epochs 0.16.
    Returns the best student and a record (history, best epoch, stop reason).

    ``select_on`` scores these examples instead of the dev set (e.g. the training examples
    themselves: MCKD's label-free "training fidelity"). With ``plateau`` set, the rule becomes:
    stop once the score changed by at most ``plateau`` over the last ``patience`` evaluations,
    and keep the latest checkpoint (MCKD, Zhao et al. 2024, Sec. 3), instead of keeping the best.
    """
    if not examples:
        raise ValueError(f"{tag}: no training examples (every teacher label abstained?)")
    if ctx.train.class_balance:
        weights = class_balanced(examples, weights)
    trainer = PlainEpochs(examples, weights, batch_size=ctx.train.batch_size, seed=ctx.seed if seed is None else seed)
    return train_loop(ctx, trainer, n_train=len(examples), tag=tag, seed=seed, select_on=select_on, plateau=plateau)
