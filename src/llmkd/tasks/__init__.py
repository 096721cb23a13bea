"""Task families: prompt template + parser + scorer."""

from __future__ import annotations

from typing import Sequence

from ..config import TaskConfig
from .base import Task, load_template
from .classification import ClassificationTask

TASKS = {"classification": ClassificationTask}


def build_task(cfg: TaskConfig, labels: Sequence[str]) -> Task:
    return ClassificationTask(labels=labels, instruction=cfg.instruction, template=cfg.template,
                              label_descriptions=cfg.label_descriptions, aliases=cfg.aliases)


__all__ = ["Task", "ClassificationTask", "build_task", "load_template", "TASKS"]
