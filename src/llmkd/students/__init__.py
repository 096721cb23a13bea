"""Students: small Hugging Face models that methods train epoch by epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..config import StudentConfig
from .base import Student, StudentFactory
from .classifier import ClassifierStudent


def make_student_factory(cfg: StudentConfig, labels: Sequence[str]) -> tuple[StudentFactory, Callable[[Path], Student]]:
    """(factory, loader): ``factory(seed)`` builds a fresh student, ``loader(dir)`` restores one.
    The encoder is resolved through the zoo once (zoo name, local dir or Hugging Face id)."""
    from .. import zoo

    path, _ = zoo.resolve(cfg.model)

    def factory(seed: int) -> Student:
        return ClassifierStudent(model=path, labels=labels, max_length=cfg.max_length, batch_size=cfg.batch_size,
                                 lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
                                 seed=seed, device=cfg.device, threads=cfg.threads)

    def loader(directory: Path) -> Student:
        return ClassifierStudent.load(directory, device=cfg.device, threads=cfg.threads)

    return factory, loader


__all__ = ["Student", "StudentFactory", "ClassifierStudent", "make_student_factory"]
