"""Text classification: few-shot prompt, tolerant label parser, accuracy / macro-F1.

Parsing rules (in order), on the reply's first line: strip whitespace, quotes and trailing
punctuation; exact match; case-insensitive match; configured aliases; otherwise the line must name
exactly one label (or alias) as a whole word, not negated ("not positive" names none). A line
that names two labels ("positive or negative") is ambiguous. Anything else is an abstention
(ParseError) -- never a default class. Not handled: multi-label classification, labels that
contain other labels as words ("positive" and "very positive").
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

from ..errors import ParseError
from ..metrics import classification_scores
from ..types import Example, Reply, TeacherLabel
from .base import render_prompt


#: templates that show texts exactly as written (kept to reproduce earlier results); every other
#: template gets them through :func:`as_data`
RAW_TEMPLATES = frozenset({"classify.v1"})
_FIELD = re.compile(r"\b(text|labels?|answer)\s*:", re.IGNORECASE)
_TAG = re.compile(r"</?\s*text\s*>", re.IGNORECASE)


def as_data(text: str) -> str:
    """A text as the prompt shows it between ``<text>`` and ``</text>`` (``classify.v2``): on one
    line (whitespace runs become one space, so no line of it can pass for a demonstration), without
    the delimiters themselves (it cannot close its own block), and with the prompt's field markers
    (``Text:``, ``Label:``, ``Labels:``, ``Answer:``) written ``Label -`` (a fake ``Label: positive``
    inside a review is no longer the prompt's answer field). Our choice; measured in
    ``bench/reliability.py`` (injection flip rates)."""
    flat = " ".join(_TAG.sub(" ", text).split())
    return _FIELD.sub(lambda m: m.group(1) + " -", flat)


class ClassificationTask:
    kind = "classification"
    stop = ("\n",)
    primary_metric = "macro_f1"

    def __init__(self, *, labels: Sequence[str], instruction: str = "Classify the text into one of the labels.",
                 template: str = "classify.v2", label_descriptions: dict[str, str] | None = None,
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
        data = (lambda t: t) if self.template in RAW_TEMPLATES else as_data
        return render_prompt(
            self.template,
            instruction=self.instruction,
            labels=self.labels,
            descriptions=self.label_descriptions,
            shots=[{"text": data(s.text), "label": s.label} for s in shots],
            text=data(text),
        )

    def constraint(self) -> Any:
        """The choice constraint for ``teacher.constrained``: the reply is one of the labels."""
        from ..teachers.base import Constraint

        return Constraint.choice(self.labels)

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
        words = {**self._lower, **self.aliases}  # reply word -> label
        found = {lab for w, lab in words.items() if re.search(rf"(?<![\w-])(?<!not )(?<!n't ){re.escape(w)}(?![\w-])", low)}
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            raise ParseError(raw, f"exactly one of {list(self.labels)}, got {sorted(found)}")
        raise ParseError(raw, f"one of {list(self.labels)}")

    def label_logprob(self, reply: Reply) -> float | None:
        if reply.token_logprobs is None:
            return None
        return float(sum(reply.token_logprobs))

    def score(self, gold: Sequence[Any], pred: Sequence[Any | None]) -> dict[str, float]:
        return classification_scores(gold, pred, self.labels)

    # -- the trivial baseline (tasks.base.HasTrivialBaseline) -----------------------------------
    trivial_name = "the labeled set's most frequent class"

    def trivial(self, text: str, labeled: Sequence[Example]) -> str:
        """The most frequent class of the gold ``labeled`` examples (ties: the first in label
        order); the same for every ``text``."""
        counts = Counter(ex.label for ex in labeled)
        if not counts:
            raise ValueError("the trivial baseline needs at least one labeled example")
        return max(self.labels, key=lambda lab: (counts.get(lab, 0), -self.labels.index(lab)))

    # -- synthesis (tasks.base.Synthesizes: EvoKD writes new texts) ----------------------------
    synthesis_prompts = "cls"

    def synthesis_descriptions(self) -> dict[str, str]:
        return self.label_descriptions

    def synthesis_label(self, text: str, label: Any) -> Any:
        """The label itself."""
        return label

    def synthesis_text(self, text: str) -> str:
        """The text as written."""
        return text

    def synthesis_label_problem(self, label: TeacherLabel, text: str) -> str | None:
        """``bad_label`` for a label outside the label set (:func:`llmkd.synthesis.validate_label`)."""
        from ..synthesis import validate_label

        return validate_label(label.label, self.labels, text)
