"""The Student protocol. Methods drive the epochs (``fit_epoch``), so MCKD can train a fresh
student per part and stage, LLKD can reselect and reweight every epoch, and EvoKD can add data
between rounds. A :data:`StudentFactory` gives a fresh, seeded student on demand."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

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


StudentFactory = Callable[[int], Student]
"""``factory(seed)`` returns a fresh student whose initialisation and data order follow ``seed``."""
