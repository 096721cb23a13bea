"""What every method gets (:class:`RunContext`); the training loop is in :mod:`.training`.

Methods depend on protocols only: the context carries a task, a (cached) teacher, a student
factory, the labeled set, the unlabeled pool (no gold labels: see :class:`llmkd.data.GoldVault`),
a small labeled dev set for model selection, and the test set, which only the final evaluation
reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar

from ..errors import TeacherError
from ..labeling import Demonstrations, label_examples
from ..review import with_human_labels
from ..students.base import Student
from ..tasks.base import ScoresOptions, Task
from ..teachers.base import Teacher
from ..types import Example, Prediction, RunResult, TeacherLabel, Unlabeled
from .training import (TrainSettings, class_balanced, fit_student, min_epochs, patience_spent,  # noqa: F401
                       primary_metric, train_loop)


J = TypeVar("J")
R = TypeVar("R")


class StudentExecutor(Protocol):
    """Where independent students train (:func:`fit_independent`): ``None`` on the context = one
    after another in this process; :class:`llmkd.ray_students.RayStudents` = as parallel Ray tasks."""

    def map(self, ctx: RunContext, fn: Callable[[RunContext, J], R], jobs: Sequence[J], *, tags: Sequence[str],
            desc: str) -> list[R]: ...


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
    shots: tuple[Example, ...] | Demonstrations
    """the teacher's demonstrations: the same ones in every prompt, or a
    :class:`~llmkd.labeling.Demonstrations` (``task.demonstrations: per_query``: a draw per item)"""
    workdir: Path
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    labeling: LabelSettings = field(default_factory=LabelSettings)
    progress: bool = True
    embedder: Callable[[str], Any] | None = None
    """build.build_embedder: turns an embedder name into an embed function; set by the build step"""
    human_labels: Mapping[str, Any] = field(default_factory=dict)
    """``data.human_labels`` (:mod:`llmkd.review`): pool id -> a person's label, which :meth:`label`
    gives in place of the teacher's"""
    executor: StudentExecutor | None = None
    """where :func:`fit_independent` trains independent students (None: here, one after another;
    ``llmkd run --executor ray``: :class:`llmkd.ray_students.RayStudents`)"""

    def label(self, items: Sequence[Any], *, stage: str = "teacher", desc: str = "labeling") -> list[TeacherLabel]:
        """Pseudo-label ``items`` with the few-shot teacher (through the cache); an item with a
        human label (:attr:`human_labels`) gets it in place of the teacher's (source ``human``)."""
        s = self.labeling
        labels = label_examples(self.task, self.teacher, items, self.shots, mode=s.mode, confidence=s.confidence,
                                max_tokens=s.max_tokens, temperature=s.temperature, stage=stage,
                                progress=self.progress, desc=desc, constrained=s.constrained)
        return with_human_labels(labels, self.human_labels) if self.human_labels else labels

    def evaluate(self, predictions: Sequence[Prediction | None], split: Sequence[Example]) -> dict[str, float]:
        return self.task.score([e.label for e in split], [None if p is None else p.label for p in predictions])


def fit_independent(ctx: RunContext, fn: Callable[[RunContext, J], R], jobs: Sequence[J], *, tags: Sequence[str],
                    desc: str = "students") -> list[R]:
    """``[fn(ctx, job) for job in jobs]``: students that do not depend on each other (MCKD's part
    students of one stage), each trained by ``fn`` under the tag ``tags[i]`` (its folder
    ``ctx.workdir / tags[i]``, as :func:`fit_student` writes it). ``fn`` must not ask the teacher
    and returns what the method needs (predictions, a report), not the student. With
    ``ctx.executor`` set the jobs run there (in parallel), else here, one after another; the
    results, in the order of ``jobs``, are the same either way."""
    if ctx.executor is None or len(jobs) < 2:
        return [fn(ctx, job) for job in jobs]
    return ctx.executor.map(ctx, fn, jobs, tags=tags, desc=desc)


class Method(Protocol):
    name: str

    def run(self, ctx: RunContext) -> RunResult: ...


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



