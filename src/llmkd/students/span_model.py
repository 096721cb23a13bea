"""The torch module of :class:`~llmkd.students.span_parser.SpanParserStudent`: a Hugging Face
encoder, subword vectors mean-pooled into word vectors, and a span scorer over fenceposts.

Kept apart from ``span_parser.py`` so that importing the student (the build step does, to make a
factory) does not import torch; this module is imported when a student is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

SCORER_FILE = "span_scorer.safetensors"  #: the scorer's weights, beside the encoder's model.safetensors


class SpanScorer(nn.Module):
    """Scores every span ``(i, j)`` (words ``i .. j-1``) of one sentence from its word vectors.

    Fencepost ``k`` (between word ``k-1`` and word ``k``, ``k = 0 .. n``) is the concatenation of
    the vectors of the two words beside it; learned vectors stand for the sentence edges. A span's
    hidden vector is ``relu(LayerNorm(A f_i + B f_j + b))``: the first layer of an MLP over
    ``[f_i ; f_j]`` (start fencepost: the word before the span and its first word; end fencepost:
    its last word and the word after it), computed for all ``(i, j)`` at once as a sum of two
    projections. A linear layer maps it to ``n_out`` logits: the constituent logit first, then,
    for labeled trees, one logit per label class (class 0 = no label)."""

    def __init__(self, dim: int, hidden: int, n_out: int, dropout: float) -> None:
        super().__init__()
        self.edges = nn.Parameter(torch.randn(2, dim) * 0.02)  # before the first word, after the last
        self.unknown = nn.Parameter(torch.zeros(dim))  # a word the tokenizer maps to no subword at all
        self.dropout = nn.Dropout(dropout)
        self.start = nn.Linear(2 * dim, hidden)
        self.end = nn.Linear(2 * dim, hidden, bias=False)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        """``words``: ``(n, dim)`` -> logits ``(n + 1, n + 1, n_out)`` indexed by fenceposts; only
        ``i < j`` is meaningful."""
        ext = torch.cat([self.edges[:1], words, self.edges[1:]], 0)
        fence = self.dropout(torch.cat([ext[:-1], ext[1:]], -1))
        hidden = torch.relu(self.norm(self.start(fence)[:, None] + self.end(fence)[None, :]))
        return self.out(hidden)


class SpanParserModel(nn.Module):
    """Encoder + :class:`SpanScorer`; ``save_pretrained`` writes both (safetensors)."""

    def __init__(self, encoder: Any, scorer: SpanScorer) -> None:
        super().__init__()
        self.encoder = encoder
        self.scorer = scorer

    @classmethod
    def build(cls, source: str, *, n_out: int, hidden: int, dropout: float, trained: bool) -> SpanParserModel:
        """The encoder from ``source`` (a pretrained encoder, or a saved student when ``trained``:
        then the scorer's weights come from its ``span_scorer.safetensors``)."""
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(source)  # a pooler, where it has one, gets no gradient and stays as is
        scorer = SpanScorer(encoder.config.hidden_size, hidden, n_out, dropout)
        if trained:
            from safetensors.torch import load_file

            scorer.load_state_dict(load_file(str(Path(source) / SCORER_FILE)))
        return cls(encoder, scorer)

    def save_pretrained(self, directory: str | Path, safe_serialization: bool = True) -> None:
        from safetensors.torch import save_file

        self.encoder.save_pretrained(directory, safe_serialization=safe_serialization)
        state = {k: v.detach().contiguous() for k, v in self.scorer.state_dict().items()}
        save_file(state, str(Path(directory) / SCORER_FILE))

    def word_vectors(self, enc: Any, targets: torch.Tensor, positions: torch.Tensor, n_words: int) -> torch.Tensor:
        """Mean of the subword vectors of each word: the encoder's last layer at flat ``positions``
        (chunk x token) belongs to word ``targets`` (of ``n_words`` in the batch); a word with no
        subword gets the learned ``unknown`` vector."""
        hidden = self.encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        flat = hidden.reshape(-1, hidden.size(-1))[positions]
        sums = torch.zeros(n_words, flat.size(-1), dtype=flat.dtype, device=flat.device).index_add(0, targets, flat)
        counts = torch.bincount(targets, minlength=n_words).to(flat.dtype)[:, None]
        return torch.where(counts > 0, sums / counts.clamp(min=1), self.scorer.unknown.to(flat.dtype))
