"""Teacher backends behind one protocol. :func:`llmkd.build.build_teacher` turns a config into
one; every backend is imported lazily, so a missing extra only matters when that backend is used."""

from __future__ import annotations

from typing import Any

from .base import Teacher, make_fingerprint, normalize_options
from .budget import BudgetMeter, BudgetSpent
from .cache import CachedTeacher, TeacherCache

BACKENDS = ("llamacpp", "hf", "openai", "vllm")


def __getattr__(name: str) -> Any:
    if name == "build_teacher":  # moved to llmkd.build; kept importable from here
        from ..build import build_teacher

        return build_teacher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Teacher", "CachedTeacher", "TeacherCache", "BudgetMeter", "BudgetSpent", "make_fingerprint", "normalize_options", "BACKENDS"]
