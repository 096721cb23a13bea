"""Small whole runs for the report tests (``llmkd.api.run`` with a scripted teacher and a fake
student, no model loaded, a few seconds each): a classification run with the teacher, supervised,
vanilla, MCKD, LLKD and EvoKD, and an NER run. The teacher is wrong on every fifth review and
gives a confidence with each answer, so the calibration plots have something to show."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from llmkd import api, build
from llmkd.config import parse_config
from llmkd.types import Example, Prediction, Reply
from tests.fakes import JsonStudent, MemoStudent, classify_text, ner_text

LABELS = ("negative", "positive")


def _number(text: str) -> int:
    return zlib.crc32(text.encode()) % 100


def teacher_answer(text: str) -> str:
    """Right by keyword ('good' = positive), except on every fifth numbered review."""
    right = "positive" if "good" in text else "negative"
    wrong = _number(text) % 5 == 0
    return LABELS[1 - LABELS.index(right)] if wrong else right


class ReportTeacher:
    """Labels by :func:`teacher_answer` with a confidence between 0.55 and 0.95 (lower on its wrong
    answers); answers EvoKD's analysis and generation prompts with canned text."""

    name = "scripted"
    fingerprint = "report-teacher"
    batch_size = 1

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0, **kw: Any) -> list[Reply]:
        out = []
        for p in prompts:
            if p.startswith("A small text classifier"):
                text = "The classifier misses negated praise such as 'not good' and sarcasm."
            elif p.startswith("We are collecting"):
                tag = "TEXT" if "TEXT: " in p else None
                text = "\n".join(f"{tag or ('HARD' if i % 2 == 0 else 'EASY')}: a synthetic review {seed} number {i} "
                                 f"was {'good' if i < 2 else 'awful'} in its own way" for i in range(4))
            else:
                text = teacher_answer(classify_text(p))
            out.append(Reply(text, prompt_tokens=len(p.split()), completion_tokens=len(text.split())))
        return out

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        out = []
        for p in prompts:
            t = classify_text(p)
            answer, right = teacher_answer(t), "positive" if "good" in t else "negative"
            conf = (0.75 if answer == right else 0.55) + 0.2 * (_number(t) % 10) / 10
            out.append([math.log(conf) if o == answer else math.log((1 - conf) / (len(options) - 1)) for o in options])
        return out

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class KeywordStudent(JsonStudent):
    """Remembers the labels it trained on; other texts by keyword, with probabilities (a
    ``ProbaStudent``, as LLKD needs). Each epoch's loss falls."""

    labels = LABELS

    def __init__(self, memory: dict[str, str] | None = None, epochs: int = 0) -> None:
        self.memory = dict(memory or {})
        self.epochs = epochs

    def fit_epoch(self, examples: Sequence[Example], weights: Any = None) -> float:
        self.memory.update({e.text: e.label for e in examples})
        self.epochs += 1
        return 1.0 / (1 + self.epochs)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for t in texts:
            lab = self.memory.get(t, "positive" if "good" in t else "negative")
            p = 0.9 if t in self.memory else 0.7
            rows.append([p, 1 - p] if lab == "negative" else [1 - p, p])
        return np.array(rows)

    def predict(self, examples: Sequence[Any]) -> list[Prediction]:
        probs = self.predict_proba([e.text for e in examples])
        return [Prediction(LABELS[int(np.argmax(p))], dict(zip(LABELS, map(float, p)))) for p in probs]

    def state(self) -> dict[str, Any]:
        return {"memory": self.memory, "epochs": self.epochs}


class NameTagger(MemoStudent):
    """An NER student that tags every word starting 'Name' as a person and 'Town' as a place."""

    def predict(self, examples: Any) -> list[Prediction]:
        return [Prediction(tuple(_tag(w) for w in e.text.split()), {}) for e in examples]


def _tag(word: str) -> str:
    return "B-person" if word.startswith("Name") else "B-place" if word.startswith("Town") else "O"


def classification_run(tmp: Path, methods: Sequence[str] = ("teacher", "supervised", "vanilla", "mckd", "llkd", "evokd")
                       ) -> Path:
    """A finished classification run in ``tmp/runs/report-cls``; returns its folder."""
    words = ["dull", "slow", "fine", "long", "bright", "odd"]
    rows = [{"text": f"review {i} was {'good' if i % 2 else 'bad'} and {words[i % 6]} {i * 7 % 13}",
             "label": "positive" if i % 2 else "negative"} for i in range(80)]
    for name in ("train", "test"):
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = parse_config({
        "name": "report-cls", "seed": 0,
        "data": {"train": str(tmp / "train.jsonl"), "test": str(tmp / "test.jsonl"),
                 "split": {"labeled_per_class": 3, "dev_per_class": 6, "pool_size": 24, "test_size": 20}},
        "task": {"instruction": "Classify the sentiment of the movie review."},
        "teacher": {"backend": "llamacpp", "model": "fake", "confidence": True},
        "student": {"epochs": 3, "min_steps": 0, "batch_size": 8},
        "methods": list(methods),
        "method_options": {"mckd": {"stages": 3, "final_every_stage": True},
                           "evokd": {"rounds": 2, "n_hard": 2, "n_easy": 2, "embedder": "ngram", "patience": 0,
                                     "leak_ngram": 0, "leak": 0.99}},
        "output_dir": str(tmp / "runs"), "cache": str(tmp / "cache.sqlite"), "progress": False,
    })
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "build_teacher", lambda cfg: ReportTeacher())
        mp.setattr(build, "make_student_factory", lambda cfg, labels, task=None: (lambda seed: KeywordStudent(),
                                                                                   KeywordStudent.load))
        return api.run(cfg).run_dir


def ner_run(tmp: Path) -> Path:
    """A finished NER run (teacher, supervised, vanilla) in ``tmp/runs/report-ner``; the teacher
    misses the places of every third sentence."""
    from tests.fakes import ScriptedTeacher

    sents = [f"Name{i}\tB-person\nsleeps\tO\nin\tO\nTown{i % 4}\tB-place\n\n" for i in range(40)]
    for name in ("train", "test"):
        (tmp / f"{name}.conll").write_text("".join(sents))

    def reply(text: str) -> str:
        words = text.split()
        found = [f"person: {words[0]}"] + ([] if int(words[0][4:]) % 3 == 0 else [f"place: {words[3]}"])
        return "\n".join(found)

    cfg = parse_config({
        "name": "report-ner", "seed": 0,
        "data": {"train": str(tmp / "train.conll"), "test": str(tmp / "test.conll"), "format": "conll",
                 "split": {"labeled_n": 4, "dev_n": 8, "pool_size": 10, "test_size": 12}},
        "task": {"kind": "ner"}, "teacher": {"model": "fake", "confidence": False},
        "student": {"epochs": 2, "min_steps": 0}, "methods": ["teacher", "supervised", "vanilla"],
        "output_dir": str(tmp / "runs"), "cache": str(tmp / "cache.sqlite"), "progress": False,
    })
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "build_teacher", lambda cfg: ScriptedTeacher(reply, text_of=ner_text))
        mp.setattr(build, "make_student_factory", lambda cfg, labels, task=None: (lambda seed: NameTagger(),
                                                                                   NameTagger.load))
        return api.run(cfg).run_dir
