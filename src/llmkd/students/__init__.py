"""Students: small Hugging Face models that methods train epoch by epoch.
:func:`llmkd.build.make_student_factory` turns a config into a factory of fresh ones."""

from __future__ import annotations

from typing import Any

from .base import Student, StudentFactory
from .classifier import ClassifierStudent
from .tagger import TaggerStudent


def __getattr__(name: str) -> Any:
    if name == "make_student_factory":  # moved to llmkd.build; kept importable from here
        from ..build import make_student_factory

        return make_student_factory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Student", "StudentFactory", "ClassifierStudent", "TaggerStudent"]
