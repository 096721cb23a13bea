"""Task families: prompt template + parser + scorer. :func:`llmkd.build.build_task` turns a
config into one."""

from __future__ import annotations

from typing import Any

from .base import Task, load_template
from .classification import ClassificationTask
from .ner import NerTask
from .seq2seq import Seq2SeqTask

TASKS = {"classification": ClassificationTask, "seq2seq": Seq2SeqTask, "ner": NerTask}


def __getattr__(name: str) -> Any:
    if name == "build_task":  # moved to llmkd.build; kept importable from here
        from ..build import build_task

        return build_task
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Task", "ClassificationTask", "Seq2SeqTask", "NerTask", "load_template", "TASKS"]
