"""Students: small Hugging Face models that methods train epoch by epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import StudentConfig
from .base import Student, StudentFactory
from .classifier import ClassifierStudent
from .tagger import TaggerStudent


def make_student_factory(cfg: StudentConfig, labels: Sequence[str], task: Any = None,
                         ) -> tuple[StudentFactory, Callable[[Path], Student]]:
    """(factory, loader): ``factory(seed)`` builds a fresh student, ``loader(dir)`` restores one.
    The encoder is resolved through the zoo once (zoo name, local dir or Hugging Face id).
    ``task`` picks the student family: a seq2seq task gets :class:`Seq2SeqStudent` (its outputs
    repaired by the task), an NER task the token tagger (:class:`TaggerStudent`, ``labels`` = the
    entity types), anything else the classifier."""
    from .. import zoo

    path, _ = zoo.resolve(cfg.model)
    if getattr(task, "kind", None) == "seq2seq":
        return _seq2seq_factory(cfg, path, labels, task)
    cls = TaggerStudent if getattr(task, "kind", None) == "ner" else ClassifierStudent

    def factory(seed: int) -> Student:
        return cls(model=path, labels=labels, max_length=cfg.max_length, batch_size=cfg.batch_size,
                                 lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
                                 seed=seed, device=cfg.device, threads=cfg.threads)

    def loader(directory: Path) -> Student:
        return cls.load(directory, device=cfg.device, threads=cfg.threads)

    return factory, loader


def _seq2seq_factory(cfg: StudentConfig, path: str, labels: Sequence[str], task: Any,
                     ) -> tuple[StudentFactory, Callable[[Path], Student]]:
    from .seq2seq import Seq2SeqStudent

    def factory(seed: int) -> Student:
        return Seq2SeqStudent(model=path, labels=labels, extra_tokens=task.vocabulary(), max_length=cfg.max_length,
                              max_target_length=cfg.max_target_length, batch_size=cfg.batch_size, lr=cfg.lr,
                              weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, seed=seed,
                              num_beams=cfg.num_beams, device=cfg.device, threads=cfg.threads,
                              postprocess=task.postprocess)

    def loader(directory: Path) -> Student:
        return Seq2SeqStudent.load(directory, device=cfg.device, threads=cfg.threads, postprocess=task.postprocess)

    return factory, loader


__all__ = ["Student", "StudentFactory", "ClassifierStudent", "TaggerStudent", "make_student_factory"]
