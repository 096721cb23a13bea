"""What every method gets (:class:`RunContext`) and the shared, resumable training loop.

Methods depend on protocols only: the context carries a task, a (cached) teacher, a student
factory, the labeled set, the unlabeled pool (no gold labels: see :class:`llmkd.data.GoldVault`),
a small labeled dev set for model selection, and the test set, which only the final evaluation
reads.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..errors import TeacherError
from ..io import read_json, write_json
from ..labeling import label_examples
from ..students.base import Student
from ..tasks.base import ScoresOptions, Task
from ..teachers.base import Teacher
from ..types import Example, Prediction, RunResult, TeacherLabel, Unlabeled

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    epochs: int = 8
    patience: int = 3
    min_steps: int = 60
    batch_size: int = 16
    class_balance: bool = False


def class_balanced(examples: Sequence[Example], weights: Sequence[float] | None = None) -> list[float] | None:
    """Per-example weights times ``n / (K * count(label))``, so that each of the K classes present
    carries the same total weight (sklearn's "balanced" rule). Only for class labels (strings);
    ``weights`` is returned unchanged for other label types (spans, trees)."""
    from collections import Counter

    if not examples or not all(isinstance(e.label, str) for e in examples):
        return None if weights is None else list(weights)
    counts = Counter(e.label for e in examples)
    base = [1.0] * len(examples) if weights is None else list(weights)
    return [w * len(examples) / (len(counts) * counts[e.label]) for w, e in zip(base, examples)]


@dataclass
class LabelSettings:
    mode: str = "generate"
    confidence: bool = True
    max_tokens: int = 8
    temperature: float = 0.0
    constrained: bool = False


@dataclass
class RunContext:
    task: Task
    teacher: Teacher | None
    student_factory: Callable[[int], Student]
    student_loader: Callable[[Path], Student]
    labeled: tuple[Example, ...]
    pool: tuple[Unlabeled, ...]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]
    shots: tuple[Example, ...]
    workdir: Path
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    labeling: LabelSettings = field(default_factory=LabelSettings)
    progress: bool = True
    embedder: Callable[[str], Any] | None = None
    """build.build_embedder: turns an embedder name into an embed function; set by the build step"""

    def label(self, items: Sequence[Any], *, stage: str = "teacher", desc: str = "labeling") -> list[TeacherLabel]:
        """Pseudo-label ``items`` with the few-shot teacher (through the cache)."""
        s = self.labeling
        return label_examples(self.task, self.teacher, items, self.shots, mode=s.mode, confidence=s.confidence,
                              max_tokens=s.max_tokens, temperature=s.temperature, stage=stage,
                              progress=self.progress, desc=desc, constrained=s.constrained)

    def evaluate(self, predictions: Sequence[Prediction | None], split: Sequence[Example]) -> dict[str, float]:
        return self.task.score([e.label for e in split], [None if p is None else p.label for p in predictions])


class Method(Protocol):
    name: str

    def run(self, ctx: RunContext) -> RunResult: ...


def primary_metric(task: Any, scores: Mapping[str, Any]) -> str:
    """The metric of ``scores`` that selects and compares students: the task's ``primary_metric``
    (classification ``macro_f1``, NER span ``f1``, seq2seq ``sentence_f1`` / ``slot_f1``) where
    ``scores`` has it; else ``macro_f1`` if present, else the first key (e.g. ``loss`` when
    there is no dev set, or a task that names no primary metric)."""
    name = getattr(task, "primary_metric", None)
    if name in scores:
        return name
    return "macro_f1" if "macro_f1" in scores else next(iter(scores))


def require_answers(labels: Sequence[TeacherLabel], task: Any) -> list[TeacherLabel]:
    """The labels the teacher answered (abstentions left out); a :class:`TeacherError` saying what
    happened and what to try when it abstained on every pool example, so that nothing is left to
    train on. The one wording of that error for every method."""
    answered = [lab for lab in labels if not lab.abstained]
    if answered:
        return answered
    example = labels[0].raw if labels else ""
    fix = ("teacher.labeling=score (argmax over the label set never abstains)" if isinstance(task, ScoresOptions)
           else "teacher.chat=false (small models copy the demonstrations' format more reliably)")
    raise TeacherError(
        f"the teacher abstained on all {len(labels)} pool examples (no reply could be parsed, e.g. {example[:80]!r}), "
        f"so there is nothing to train on. Try {fix}, a stronger teacher, or another task.instruction.")


def min_epochs(n_examples: int, train: TrainSettings, min_steps: int | None = None) -> int:
    """Epochs over ``n_examples`` that make at least ``min_steps`` (default ``train.min_steps``)
    optimizer steps: a tiny set gets more epochs."""
    steps = max(1, math.ceil(n_examples / train.batch_size))
    return math.ceil((train.min_steps if min_steps is None else min_steps) / steps)


def patience_spent(bad: int, patience: int, epoch: int, least: int, history: Sequence[dict[str, Any]]) -> bool:
    """The early-stopping rule of every student loop: ``patience`` evaluations without dev gain,
    but never before the ``least`` epochs that make ``min_steps`` (see :func:`min_epochs`), nor
    while every dev score so far is 0 (a tagger still tagging everything O gives nothing to
    compare)."""
    return bad >= patience and epoch >= least and any(h["score"] > 0 for h in history)


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
    from tqdm.auto import tqdm

    if not examples:
        raise ValueError(f"{tag}: no training examples (every teacher label abstained?)")
    s = ctx.train
    if s.class_balance:
        weights = class_balanced(examples, weights)
    d = ctx.workdir / tag
    d.mkdir(parents=True, exist_ok=True)
    state_path = d / "progress.json"
    least = min_epochs(len(examples), s)
    total_epochs = max(s.epochs, least)
    eval_every = max(1, round(total_epochs / s.epochs))
    state: dict[str, Any] = {"epoch": 0, "best_epoch": 0, "best_score": -1.0, "history": [], "done": False,
                             "n_train": len(examples), "total_epochs": total_epochs, "eval_every": eval_every}
    if state_path.exists():
        saved = read_json(state_path)
        if saved.get("n_train") == len(examples) and (d / "last").exists():
            state = saved
    if state["done"]:
        log.info("%s: already trained (best epoch %d); loading it", tag, state["best_epoch"])
        return ctx.student_loader(d / "best"), state
    student = ctx.student_loader(d / "last") if state["epoch"] > 0 else ctx.student_factory(ctx.seed if seed is None else seed)
    metric = None
    bad = sum(1 for h in state["history"] if h["epoch"] > state["best_epoch"])  # evaluations since the best
    bar = tqdm(total=total_epochs, initial=state["epoch"], desc=f"training {tag}", disable=not ctx.progress, unit="ep")
    reason = "max_epochs"
    t0 = time.perf_counter()
    while state["epoch"] < total_epochs:
        loss = student.fit_epoch(examples, weights)
        state["epoch"] += 1
        bar.update(1)
        if state["epoch"] % eval_every and state["epoch"] < total_epochs:
            continue
        scored = ctx.dev if select_on is None else select_on
        scores = ctx.evaluate(student.predict(scored), scored) if scored else {"loss": -loss}
        metric = metric or primary_metric(ctx.task, scores)
        score = float(scores[metric])
        state["history"].append({"epoch": state["epoch"], "loss": loss, "score": score, "seconds": time.perf_counter() - t0})
        bar.set_postfix(loss=f"{loss:.3f}", dev=f"{score:.3f}")
        if plateau is not None:  # keep the latest; stop when the score has flattened out
            state["best_score"], state["best_epoch"] = score, state["epoch"]
            student.save(d / "best")
            hist = state["history"]
            if len(hist) > s.patience and abs(score - hist[-1 - s.patience]["score"]) <= plateau:
                bad = s.patience
        elif score > state["best_score"]:
            state["best_score"], state["best_epoch"], bad = score, state["epoch"], 0
            student.save(d / "best")
        else:
            bad += 1
        student.save(d / "last")
        write_json(state_path, state)
        if patience_spent(bad, s.patience, state["epoch"], least, state["history"]):
            reason = (f"{metric} changed by <= {plateau} over {s.patience} evaluations" if plateau is not None
                      else f"no dev gain in {s.patience} evaluations")
            break
    bar.close()
    state["done"], state["stop_reason"], state["dev_metric"] = True, reason, metric
    state["scored_on"] = "dev" if select_on is None else "training fidelity"
    state["kept"] = "latest" if plateau is not None else "best"
    write_json(state_path, state)
    shutil.rmtree(d / "last", ignore_errors=True)
    (d / "last").mkdir()  # keeps the "resumable" marker small once finished
    return ctx.student_loader(d / "best"), state
