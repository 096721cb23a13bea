"""Slot-filling student on the token tagger (``task.target: slots``, ``student.slots: tagger``).

The task, the teacher's prompts and replies, the repair and the scores stay those of the seq2seq
slot task (:class:`~llmkd.tasks.seq2seq.Seq2SeqTask`): labels are target strings
``show O flights O from O boston B-fromloc.city_name``. This student reads such a target as one
BIO tag per input word and trains the NER token tagger (:class:`~llmkd.students.tagger.TaggerStudent`:
an encoder, a tag per word read at its first subword) on it, so it learns on a CPU in one encoder
pass per sentence, where the bert2bert student must first learn to copy the input words.

* **Slot types** are the task's tags without their ``B-``/``I-`` prefix (``labels``); the model's
  outputs are ``O`` and ``B-``/``I-`` of each type.
* **Training targets.** A tag whose type is not a known slot type (a teacher's invented
  ``B-airline``) is trained as ``O``; the count is logged once per epoch. A stray ``I-x`` becomes
  ``B-x`` (IOB2). A target whose words are not the input words is a ValueError (every teacher
  reply has been repaired onto the input words before it reaches a student).
* **Output.** ``predict`` returns ``Prediction(target, {target: confidence})``, the seq2seq
  student's shape, so vanilla KD, self-distillation, MCKD and the task's scorer run unchanged. The
  output covers exactly the input words (never an abstention). The confidence is the tagger's:
  the smallest top-tag probability over the words.

Not handled: intents (``data.with_intent: true`` is refused: use ``student.slots: seq2seq``).
Saving and resuming are the tagger's (``student.json``: ``kind: slot_tagger``).
"""

from __future__ import annotations

import logging
from typing import Sequence

from ..formats.conll import split_tag, to_iob2
from ..formats.slots import parse_target, to_target
from ..types import Example, Prediction
from .base import HasText
from .tagger import TaggerStudent

log = logging.getLogger(__name__)


def slot_types(tags: Sequence[str]) -> tuple[str, ...]:
    """The slot types of BIO ``tags`` (``B-fromloc.city_name`` -> ``fromloc.city_name``), sorted."""
    return tuple(sorted({typ for t in tags if (typ := split_tag(t)[1]) is not None}))


class SlotTaggerStudent(TaggerStudent):
    """``labels`` are the slot types (:func:`slot_types` of the task's tags)."""

    kind = "slot_tagger"

    def _tags(self, ex: Example) -> tuple[list[str], int]:
        """(IOB2 tags over the input words, how many tags of an unknown type became ``O``)."""
        if not isinstance(ex.label, str):
            raise ValueError(f"fit_epoch: example {ex.id}: the slot tagger trains on a 'word tag word tag ...' "
                             f"target string, got {ex.label!r}")
        try:
            intent, words, tags = parse_target(ex.label)
        except ValueError as exc:
            raise ValueError(f"fit_epoch: example {ex.id}: {exc}") from None
        if intent is not None:
            raise ValueError(f"fit_epoch: example {ex.id}: the target carries an intent ({intent!r}); the slot "
                             "tagger predicts slot tags only. Set data.with_intent: false, or student.slots: seq2seq")
        if words != ex.text.split():
            raise ValueError(f"fit_epoch: example {ex.id}: the target's words {words} are not the input words "
                             f"{ex.text.split()}")
        known = set(self.labels)
        kept = [t if split_tag(t)[1] in known else "O" for t in tags]
        unknown = sum(t != "O" and k == "O" for t, k in zip(tags, kept))
        return list(to_iob2(kept)), unknown

    def fit_epoch(self, examples: Sequence[Example], weights: Sequence[float] | None = None) -> float:
        tagged, unknown = [], 0
        for ex in examples:
            tags, n = self._tags(ex)
            tagged.append(Example(ex.id, ex.text, tuple(tags)))
            unknown += n
        if unknown:
            log.info("slot tagger: %d tags of a type outside the %d known slot types were trained as O",
                     unknown, len(self.labels))
        return super().fit_epoch(tagged, weights)

    def predict(self, examples: Sequence[HasText]) -> list[Prediction]:  # type: ignore[override]
        empty = [k for k, e in enumerate(examples) if not e.text.split()]
        if empty:
            raise ValueError(f"predict: text {empty[0]} is empty; slot filling needs at least one word")
        out = []
        for ex, p in zip(examples, super().predict(examples)):
            target = to_target(ex.text.split(), p.label)
            out.append(Prediction(label=target, probs={target: p.confidence}))
        return out
