"""Token-classifier student for NER on any Hugging Face encoder (default: the packaged MiniLM).

Words are the whitespace tokens of an example's text (:func:`llmkd.formats.conll.words`); labels are
IOB2 tags. The encoder sees the words through its own tokenizer (``is_split_into_words``); the
**first subword** of every word carries the word's tag and the other subwords, special tokens
and padding get ``-100`` (ignored by the loss). The loss of a sentence is the mean token
cross-entropy over its labeled words; a per-example weight scales it (as in the classifier).

``predict`` returns a :class:`~llmkd.types.TagPrediction` per sentence: the IOB2 tags (argmax of
each word's first subword, then :func:`~llmkd.formats.conll.to_iob2` to repair a stray ``I-X`` into
``B-X``), the tag distribution of every word, the decoded spans and a sentence confidence (the
smallest top-tag probability over the words). Words cut off by ``student.max_length`` are
predicted ``O`` with probability 1 (raise max_length for long sentences).

Training state, saving and resuming are the classifier's (:class:`ClassifierStudent`): safetensors
weights + AdamW moments + ``student.json`` (``kind: tagger``, ``labels`` = the entity types).
Not handled: CRF decoding, label smoothing across subwords, documents longer than max_length.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..formats.conll import spans_from_tags, tag_set, to_iob2, words
from ..types import Example, TagPrediction
from .base import HasText
from .checkpoint import weighted_epoch
from .classifier import ClassifierStudent


class TaggerStudent(ClassifierStudent):
    """``labels`` are the entity types; the model's outputs are ``O`` plus ``B-``/``I-`` of each."""

    kind = "tagger"
    auto_model = "AutoModelForTokenClassification"
    soft_targets = False  # no per-token teacher distribution exists (the teacher gives spans at most)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tag_set(self.labels)

    def _build(self, source: str | None = None) -> None:
        super()._build(source)
        if getattr(self.tokenizer_, "add_prefix_space", None) is False:  # byte-level BPE (RoBERTa, GPT-2)
            from transformers import AutoTokenizer

            self.tokenizer_ = AutoTokenizer.from_pretrained(source or self.model_name, add_prefix_space=True)
        if not getattr(self.tokenizer_, "is_fast", False):
            raise ValueError(f"student.model {self.model_name!r}: the tagger needs a fast tokenizer (word_ids()); "
                             "this model only has a slow one")

    def _encode_words(self, batch_words: Sequence[list[str]]) -> Any:
        return self.tokenizer_([list(w) for w in batch_words], is_split_into_words=True, truncation=True,
                               max_length=self.max_length, padding=True, return_tensors="pt")

    def _targets(self, enc: Any, tags: Sequence[Sequence[str]]) -> Any:
        """Tag ids at the first subword of every word, -100 elsewhere."""
        import torch

        index = {t: i for i, t in enumerate(self.outputs)}
        y = torch.full(enc["input_ids"].shape, -100, dtype=torch.long)
        for b, seq in enumerate(tags):
            prev = None
            for pos, w in enumerate(enc.word_ids(b)):
                if w is not None and w != prev:
                    y[b, pos] = index[seq[w]]
                prev = w
        return y

    def fit_epoch(self, examples: Sequence[Example], weights: Sequence[float] | None = None) -> float:
        import torch.nn.functional as F

        self._ensure()
        known = set(self.outputs)
        batch_words, batch_tags = [], []
        for ex in examples:
            w, t = words(ex.text), tuple(ex.label)
            if len(w) != len(t):
                raise ValueError(f"example {ex.id}: {len(w)} words but {len(t)} tags; an NER label needs one "
                                 "IOB2 tag per whitespace token of the text")
            bad = [tag for tag in t if tag not in known]
            if bad:
                raise ValueError(f"example {ex.id}: tags {sorted(set(bad))} are not in the tag set {list(self.outputs)}")
            batch_words.append(w)
            batch_tags.append(t)

        def batch_loss(idx: list[int]) -> Any:
            enc = self._encode_words([batch_words[i] for i in idx])
            y = self._targets(enc, [batch_tags[i] for i in idx]).to(self.device_)
            logits = self.model_(**enc.to(self.device_)).logits  # (batch, seq, tags)
            tok = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-100, reduction="none")  # (batch, seq)
            return tok.sum(1) / (y != -100).sum(1).clamp(min=1)  # per sentence

        return weighted_epoch(self, len(examples), weights, batch_loss)

    def predict_word_proba(self, texts: Sequence[str], batch_size: int = 64) -> list[Any]:
        """For each text, an array (words x tags) of tag probabilities at each word's first subword."""
        import numpy as np
        import torch

        self._ensure()
        self.model_.eval()
        all_words = [words(t) for t in texts]
        out: list[Any] = [None] * len(texts)
        o_index = self.outputs.index("O")
        order = sorted(range(len(texts)), key=lambda i: len(all_words[i]))
        with torch.no_grad():
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                enc = self._encode_words([all_words[i] or ["."] for i in idx])
                probs = torch.softmax(self.model_(**enc.to(self.device_)).logits.float(), -1).cpu().numpy()
                for b, i in enumerate(idx):
                    p = np.zeros((len(all_words[i]), len(self.outputs)))
                    p[:, o_index] = 1.0  # words beyond max_length
                    prev = None
                    for pos, w in enumerate(enc.word_ids(b)):
                        if w is not None and w != prev and w < len(all_words[i]):
                            p[w] = probs[b, pos]
                        prev = w
                    out[i] = p
        return out

    def predict(self, examples: Sequence[HasText]) -> list[TagPrediction]:  # type: ignore[override]
        texts = [e.text for e in examples]
        preds = []
        for text, p in zip(texts, self.predict_word_proba(texts)):
            tags = to_iob2([self.outputs[int(k)] for k in p.argmax(-1)]) if len(p) else ()
            preds.append(TagPrediction(
                label=tags, probs={},
                spans=tuple(spans_from_tags(tags, words(text))),
                token_probs=tuple({t: float(v) for t, v in zip(self.outputs, row)} for row in p),
                confidence=float(p.max(-1).min()) if len(p) else 1.0,
            ))
        return preds
