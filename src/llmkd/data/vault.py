"""The gold labels of the unlabeled pool, kept apart from the splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GoldVault:
    """Gold labels of the unlabeled pool, for after-the-fact reporting only. Method code never
    receives this object (it is not a field of :class:`Splits` nor of the method's context)."""

    _labels: dict[str, Any]

    def label_of(self, example_id: str) -> Any:
        return self._labels[example_id]

    def __len__(self) -> int:
        return len(self._labels)
