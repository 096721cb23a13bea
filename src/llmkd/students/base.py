"""The Student protocol. Methods drive the epochs (``fit_epoch``), so MCKD can train a fresh
student per part and stage, LLKD can reselect and reweight every epoch, and EvoKD can add data
between rounds. A :data:`StudentFactory` gives a fresh, seeded student on demand."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from ..types import Example, Prediction


class HasText(Protocol):
    text: str


@runtime_checkable
class Student(Protocol):
    labels: tuple[str, ...]

    def fit_epoch(self, examples: Sequence[Example], weights: Sequence[float] | None = None) -> float:
        """One pass over ``examples`` (loss optionally weighted per example); returns mean loss."""
        ...

    def predict(self, examples: Sequence[HasText]) -> list[Prediction]:
        """Label + probability of every class for each example."""
        ...

    def save(self, path: str | Path) -> None: ...


@runtime_checkable
class ProbaStudent(Student, Protocol):
    """A :class:`Student` that gives its class probabilities as a matrix (rows in ``labels``
    order) without building :class:`Prediction` objects: the sentence classifiers
    (:class:`~llmkd.students.classifier.ClassifierStudent` and its subclasses). LLKD's student
    term uses it where offered and falls back to :meth:`Student.predict`'s ``probs`` otherwise."""

    def predict_proba(self, texts: Sequence[str]) -> Any:
        """An ``(n, len(labels))`` array of class probabilities for ``texts``."""
        ...


StudentFactory = Callable[[int], Student]
"""``factory(seed)`` returns a fresh student whose initialisation and data order follow ``seed``."""
