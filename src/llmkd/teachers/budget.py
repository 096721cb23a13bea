"""A teacher wrapper that counts what reaches the teacher and enforces call / token budgets.

It sits beside :class:`~llmkd.teachers.cache.CachedTeacher`, on top of it: cached answers are
counted too, so a budget spends the same way on a rerun. A method checks the budget before it
asks (:meth:`BudgetMeter.charge`, :meth:`BudgetMeter.affordable`); :class:`BudgetSpent` says which
budget ran out. The budgets are the ``max_teacher_calls`` / ``max_teacher_tokens`` method options,
which the messages name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


class BudgetSpent(Exception):
    """Raised when a teacher budget is spent; the message names the budget and what was used."""


@dataclass
class BudgetMeter:
    """Counts what reaches the teacher (cached answers included, so budgets are reproducible):
    ``calls`` = prompts sent (generate + score), ``tokens`` = prompt + completion tokens of
    generate calls. ``max_calls`` / ``max_tokens``: the budgets, ``None`` = unlimited."""

    teacher: Any
    max_calls: int | None = None
    max_tokens: int | None = None
    calls: int = 0
    tokens: int = 0

    @property
    def batch_size(self) -> int:
        return getattr(self.teacher, "batch_size", 1)

    def generate(self, prompts: Sequence[str], **kw: Any) -> list[Any]:
        replies = self.teacher.generate(prompts, **kw)
        self.calls += len(prompts)
        self.tokens += sum(r.prompt_tokens + r.completion_tokens for r in replies)
        return replies

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        self.calls += len(prompts)
        return self.teacher.score_options(prompts, options)

    def charge(self, calls: int) -> None:
        """Raise :class:`BudgetSpent` if ``calls`` more prompts would pass the call budget, or the
        token budget is already spent."""
        if self.max_calls is not None and self.calls + calls > self.max_calls:
            raise BudgetSpent(f"max_teacher_calls={self.max_calls} reached ({self.calls} used)")
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            raise BudgetSpent(f"max_teacher_tokens={self.max_tokens} reached ({self.tokens} used)")

    def affordable(self, items: list[Any], per: int) -> tuple[list[Any], str]:
        """The items whose labeling (``per`` prompts each) still fits the call budget, and the
        budget message if some did not fit (the caller labels what fits, keeps it, then stops)."""
        self.charge(per)
        cap = self.max_calls
        if cap is None or per == 0 or self.calls + per * len(items) <= cap:
            return items, ""
        n = (cap - self.calls) // per
        return items[:n], f"max_teacher_calls={cap} reached while labeling ({len(items) - n} samples left unlabeled)"
