"""Text classification: few-shot prompt, tolerant label parser, accuracy / macro-F1.

Parsing rules (in order): strip whitespace, quotes and trailing punctuation; exact match; case-
insensitive match; configured aliases; a label that is the first word of the reply; a reply that
contains exactly one label as a whole word. Anything else is an abstention (ParseError) -- never a
default class. Not handled: multi-label classification.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from ..errors import ParseError
from ..metrics import classification_scores
from ..types import Example, Reply
from .base import load_template


class ClassificationTask:
    kind = "classification"
    stop = ("\n",)

    def __init__(self, *, labels: Sequence[str], instruction: str = "Classify the text into one of the labels.",
                 template: str = "classify.v1", label_descriptions: dict[str, str] | None = None,
                 aliases: dict[str, str] | None = None) -> None:
        self.labels = tuple(labels)
        self.instruction = instruction
        self.template = template
        self.label_descriptions = dict(label_descriptions or {})
        self.aliases = {k.lower().strip(): v for k, v in (aliases or {}).items()}
        bad = [v for v in self.aliases.values() if v not in self.labels]
        if bad:
            from ..errors import ConfigError

            raise ConfigError(f"task.aliases: target labels {bad} are not in the label set {list(self.labels)}")
        self._lower = {lab.lower(): lab for lab in self.labels}

    @property
    def template_id(self) -> str:
        return self.template

    def render(self, text: str, shots: Sequence[Example]) -> str:
        return load_template(self.template).render(
            instruction=self.instruction,
            labels=self.labels,
            descriptions=self.label_descriptions,
            shots=[{"text": s.text, "label": s.label} for s in shots],
            text=text,
        ).strip()

    def options(self) -> list[str]:
        """The verbalizers scored by ``Teacher.score_options``: the label set, as the reply's start."""
        return list(self.labels)

    def parse(self, raw: str) -> str:
        text = raw.strip()
        first_line = text.splitlines()[0].strip() if text else ""
        cand = first_line.strip("\"'`*.,;:!() \t").strip()
        if not cand:
            raise ParseError(raw, f"one of {list(self.labels)}")
        if cand in self.labels:
            return cand
        low = cand.lower()
        if low in self._lower:
            return self._lower[low]
        if low in self.aliases:
            return self.aliases[low]
        first_word = re.split(r"[\s,.;:!]+", low, maxsplit=1)[0]
        if first_word in self._lower:
            return self._lower[first_word]
        if first_word in self.aliases:
            return self.aliases[first_word]
        found = {lab for lw, lab in self._lower.items() if re.search(rf"(?<![\w-]){re.escape(lw)}(?![\w-])", low)}
        found |= {lab for a, lab in self.aliases.items() if re.search(rf"(?<![\w-]){re.escape(a)}(?![\w-])", low)}
        if len(found) == 1:
            return found.pop()
        raise ParseError(raw, f"one of {list(self.labels)}")

    def label_logprob(self, reply: Reply) -> float | None:
        if reply.token_logprobs is None:
            return None
        return float(sum(reply.token_logprobs))

    def score(self, gold: Sequence[Any], pred: Sequence[Any | None]) -> dict[str, float]:
        return classification_scores(gold, pred, self.labels)
