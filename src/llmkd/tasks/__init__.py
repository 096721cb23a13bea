"""Task families: prompt template + parser + scorer."""

from __future__ import annotations

from typing import Sequence

from ..config import TaskConfig
from .base import Task, load_template
from .classification import ClassificationTask
from .ner import NerTask
from .seq2seq import Seq2SeqTask

TASKS = {"classification": ClassificationTask, "seq2seq": Seq2SeqTask, "ner": NerTask}


def build_task(cfg: TaskConfig, labels: Sequence[str]) -> Task:
    if cfg.kind == "seq2seq":
        return _build_seq2seq(cfg, labels)
    if cfg.kind == "ner":  # labels = the entity types
        return NerTask(labels=labels, instruction=cfg.instruction, template=cfg.template,
                       label_descriptions=cfg.label_descriptions, aliases=cfg.aliases)
    return ClassificationTask(labels=labels, instruction=cfg.instruction, template=cfg.template,
                              label_descriptions=cfg.label_descriptions, aliases=cfg.aliases)


def _build_seq2seq(cfg: TaskConfig, labels: Sequence[str]) -> Task:
    from ..errors import ConfigError

    if cfg.target is None:
        raise ConfigError("task.target: a seq2seq task needs task.target: tree (constituency parsing, "
                          "data.format: brackets) or slots (slot filling, data.format: slots)")
    default = TaskConfig()  # the classification defaults mean "not set" for seq2seq
    return Seq2SeqTask(target=cfg.target, labels=labels,
                       instruction=None if cfg.instruction == default.instruction else cfg.instruction,
                       template=None if cfg.template == default.template else cfg.template)


__all__ = ["Task", "ClassificationTask", "Seq2SeqTask", "NerTask", "build_task", "load_template", "TASKS"]
