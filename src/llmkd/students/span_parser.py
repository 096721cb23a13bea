"""Span-based chart-parser student for constituency trees (``task.target: tree``), on any Hugging
Face encoder (default: the packaged MiniLM). Its output is a tree over exactly the input words by
construction, and training costs one encoder pass per sentence (Stern et al. 2017, Kitaev & Klein
2018, simplified).

* **Words.** The input ``text`` is the words joined by single spaces (``text.split()``). The
  encoder sees them through its own tokenizer (``is_split_into_words``); a word's vector is the
  mean of its subword vectors of the last layer. A sentence longer than ``max_length`` subwords is
  encoded in consecutive windows of whole words (no overlap: words near a window edge see less
  context); a single word longer than a window keeps its first subwords; a word the tokenizer
  maps to no subword gets a learned vector. Every word therefore has a vector.
* **Span scores.** :class:`~llmkd.students.span_model.SpanScorer`: fenceposts (the vectors of the
  two words beside each word boundary, learned vectors at the edges) and, for every span
  ``(i, j)`` (words ``i .. j-1``), an MLP over ``[f_i ; f_j]`` giving a constituent logit (and, for
  labeled trees, label logits).
* **Loss.** Per sentence, the binary cross-entropy of the constituent logits of all spans of two
  or more words except the whole sentence (always a constituent) against the target tree's spans
  (unary chains are one span), summed and divided by the number of words (a mean over the
  O(n^2) spans would let the many easy non-constituents drown the n - 2 constituents: on 20 PTB
  trees training F1 stayed below right-branching after 8 epochs); with labels, plus the mean cross-entropy of the label logits
  over the target's constituents of two or more words and over every single word (a single word
  may carry a label: ``(NP it )``; class 0 = no label; a unary chain is trained on its outermost
  label). A per-example weight scales the sentence's loss (``weighted_epoch``).
  ``tree_loss: partial`` (``student.tree_loss``) trains only the target's spans (as constituents)
  and the spans that cross one of them (as non-constituents): a span the target neither has nor
  rules out is left untrained, as in training on partially bracketed text (Pereira & Schabes
  1992). LLM teachers bracket too little (Qwen-1.5B's PTB pool trees: precision 0.80, recall
  0.44); under ``full`` every bracket they left out is taught as a non-constituent and the student
  brackets even less (docs/students.md has the dev measurements).
* **Optimiser.** AdamW; the scorer, trained from scratch, at ``head_lr_scale`` x the encoder's
  learning rate (10 by default); the encoder's subword embedding matrix is frozen (speed).
* **Decoding.** Exact CKY (:func:`cky`, O(n^3)) finds the binary tree maximising the summed
  constituent logits (the most likely binary tree under the independent per-span model: every
  binary tree has ``n - 1`` spans and the non-tree spans' ``log(1 - p)`` is constant), then
  drops its spans with probability below 0.5 (the whole sentence stays): an n-ary tree.
  Unlabeled output brackets only spans of two or more words (the ones bracket F1 counts; a
  bracket around a single word changes no score but would split MCKD's vote on identical
  strings); labeled output gives each kept span its arg-max label class (class 0: an unlabeled
  bracket) and brackets a single word when its arg-max is a label. The string is
  :func:`llmkd.formats.trees.linearize` of that tree, so it reads as the task's targets do.
* **Confidence.** The mean of ``max(p, 1 - p)`` over the CKY tree's spans other than the whole
  sentence (the keep / drop decisions that shaped the output; 1.0 for sentences of one or two
  words). ``predict`` returns ``Prediction(tree, {tree: confidence})``, the seq2seq student's
  shape, so the methods' confidence filters (self-distillation, MCKD's vote) read it unchanged.

``save`` writes the encoder (safetensors), ``span_scorer.safetensors``, the tokenizer,
``student.json`` (``kind: span_parser``) and the AdamW moments + torch RNG state
(:mod:`~llmkd.students.checkpoint`): resuming is exact.
Not handled: words containing ``(`` or ``)`` (the bracket format cannot hold them; treebank
readers write ``-LRB-``); unary chains in labeled output (one label per span); empty inputs
(a ValueError); the constituent logits are independent per span (no tree-structured loss).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from ..formats.trees import Node, from_linearized, linearize
from ..types import Example, Prediction
from .base import HasText
from .checkpoint import LazyStudent, adamw, load_into, read_meta, weighted_epoch, write_checkpoint
from .classifier import pick_device

log = logging.getLogger(__name__)


# -- trees as span sets ---------------------------------------------------------------------------
def tree_spans(tree: Node) -> dict[tuple[int, int], str]:
    """Every constituent of ``tree`` as ``(start, end) -> label`` over word offsets, of every
    length; a unary chain (several nodes over one span) keeps its outermost label."""
    out: dict[tuple[int, int], str] = {}

    def walk(node: Node, start: int) -> int:
        end = start
        for c in node.children:
            end = walk(c, end) if isinstance(c, Node) else end + 1
        out[(start, end)] = node.label  # after its children: the outermost node of a chain is written last
        return end

    walk(tree, 0)
    return out


def tree_from_spans(words: Sequence[str], spans: dict[tuple[int, int], str]) -> Node:
    """The tree over ``words`` whose constituents are ``spans`` (``(start, end) -> label``, nested,
    with ``(0, len(words))``)."""
    n = len(words)
    if (0, n) not in spans:
        raise ValueError(f"spans {sorted(spans)} have no root span (0, {n})")
    root = Node(spans[(0, n)])
    stack: list[tuple[Node, int]] = [(root, n)]  # open nodes and where they end
    inner = sorted((s for s in spans if s != (0, n)), key=lambda s: (s[0], -s[1]))
    k = 0
    for w, word in enumerate(words):
        while k < len(inner) and inner[k][0] == w:
            start, end = inner[k]
            if end > stack[-1][1]:
                raise ValueError(f"span {(start, end)} crosses its parent span ending at {stack[-1][1]}")
            node = Node(spans[(start, end)])
            stack[-1][0].children.append(node)
            stack.append((node, end))
            k += 1
        stack[-1][0].children.append(word)
        while len(stack) > 1 and stack[-1][1] == w + 1:
            stack.pop()
    return root


def crossing(i: Any, j: Any, spans: Sequence[tuple[int, int]]) -> Any:
    """A bool tensor over the spans ``(i[k], j[k])``: True where the span crosses one of ``spans``
    (overlaps it without either holding the other), so it cannot be a constituent of any tree
    that has ``spans``."""
    import torch

    if not spans:
        return torch.zeros_like(i, dtype=torch.bool)
    c = torch.tensor([a for a, _ in spans], device=i.device)[None, :]
    d = torch.tensor([b for _, b in spans], device=i.device)[None, :]
    a, b = i[:, None], j[:, None]
    return (((a < c) & (c < b) & (b < d)) | ((c < a) & (a < d) & (d < b))).any(dim=1)


def kept_spans(binary: Sequence[tuple[int, int]], scores: Any) -> list[tuple[int, int]]:
    """The spans of the CKY tree ``binary`` (:func:`cky`, root first) that the student outputs:
    the root, and every other span with p >= 0.5 (constituent logit ``scores[i, j] >= 0``)."""
    return list(binary[:1]) + [s for s in binary[1:] if scores[s] >= 0.0]


def cky(scores: Any) -> list[tuple[int, int]]:
    """The binary tree over ``n`` words maximising the sum of ``scores[i, j]`` over its spans of
    two or more words (``scores``: an ``(n + 1, n + 1)`` array over fenceposts; single words are in
    every tree and do not count). Returns its ``n - 1`` spans ``(i, j)``, the root ``(0, n)`` first.
    Exact, O(n^3): one vectorised step per span length."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[0] - 1
    if n < 2:
        return [(0, n)] if n == 1 else []
    best = np.zeros((n + 1, n + 1))
    split = np.zeros((n + 1, n + 1), dtype=np.int64)
    for length in range(2, n + 1):
        i = np.arange(n - length + 1)
        k = i[:, None] + np.arange(1, length)[None, :]  # split points
        cand = best[i[:, None], k] + best[k, (i + length)[:, None]]
        arg = cand.argmax(1)
        rows = np.arange(len(i))
        best[i, i + length] = s[i, i + length] + cand[rows, arg]
        split[i, i + length] = k[rows, arg]
    out: list[tuple[int, int]] = []
    todo = [(0, n)]
    while todo:
        i, j = todo.pop()
        if j - i < 2:
            continue
        out.append((i, j))
        m = int(split[i, j])
        todo.extend([(m, j), (i, m)])
    return out


class SpanParserStudent(LazyStudent):
    """``labels``: the task's constituent labels (``data.tree_labels``); empty = unlabeled trees."""

    kind = "span_parser"  # written to student.json

    def __init__(self, *, model: str, labels: Sequence[str] = (), max_length: int = 128, batch_size: int = 16,
                 lr: float = 1e-4, weight_decay: float = 0.01, warmup_steps: int = 10, seed: int = 0,
                 hidden: int = 256, dropout: float = 0.1, head_lr_scale: float = 10.0, device: str = "auto",
                 threads: int | None = None, tree_loss: str = "partial") -> None:
        if max_length < 8:
            raise ValueError(f"max_length must be >= 8 subwords (got {max_length})")
        if tree_loss not in ("full", "partial"):
            raise ValueError(f"tree_loss must be 'full' or 'partial' (got {tree_loss!r})")
        self.tree_loss = tree_loss
        self.model_name = model
        self.labels = tuple(labels)
        self.max_length = max_length
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.seed = seed
        self.hidden = hidden
        self.dropout = dropout
        self.head_lr_scale = head_lr_scale
        self.device = device
        self.threads = threads
        self.epochs_done_ = 0
        self.steps_done_ = 0
        self._built = False

    @property
    def n_out(self) -> int:
        """Logits per span: the constituent logit, then (labeled) no-label + one per label."""
        return 1 + (len(self.labels) + 1 if self.labels else 0)

    # -- construction -------------------------------------------------------------------------
    def _build(self, source: str | None = None) -> None:
        import torch
        from transformers import AutoTokenizer

        from .span_model import SpanParserModel

        if self.threads:
            torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        src = source or self.model_name
        tok = AutoTokenizer.from_pretrained(src)
        if getattr(tok, "add_prefix_space", None) is False:  # byte-level BPE (RoBERTa, GPT-2)
            tok = AutoTokenizer.from_pretrained(src, add_prefix_space=True)
        if not getattr(tok, "is_fast", False):
            raise ValueError(f"student.model {self.model_name!r}: the span parser needs a fast tokenizer "
                             "(word_ids()); this model only has a slow one")
        self.tokenizer_ = tok
        self.model_ = SpanParserModel.build(src, n_out=self.n_out, hidden=self.hidden, dropout=self.dropout,
                                            trained=source is not None)
        self.device_ = pick_device(self.device)
        self.model_.to(self.device_)
        # the subword embedding matrix (half of MiniLM's weights) stays frozen: AdamW over its 11.7M
        # entries each step cost ~0.2 s of a ~1.4 s step on 2 CPU cores, for words a parser barely changes
        self.model_.encoder.get_input_embeddings().weight.requires_grad_(False)
        groups = [{"params": [p for p in self.model_.encoder.parameters() if p.requires_grad]},
                  {"params": list(self.model_.scorer.parameters()), "lr_scale": self.head_lr_scale}]
        self.optimizer_ = adamw(groups, lr=self.lr, weight_decay=self.weight_decay)
        self._built = True

    # -- encoding -----------------------------------------------------------------------------
    def _chunks(self, batch_words: Sequence[Sequence[str]]) -> list[tuple[int, int, int]]:
        """``(sentence, first word, end word)`` windows whose subwords fit ``max_length``."""
        budget = self.max_length - self.tokenizer_.num_special_tokens_to_add(pair=False)
        pieces = self.tokenizer_([list(w) for w in batch_words], is_split_into_words=True, add_special_tokens=False)
        out: list[tuple[int, int, int]] = []
        for s, words in enumerate(batch_words):
            counts = [0] * len(words)
            for w in pieces.word_ids(s):
                if w is not None:
                    counts[w] += 1
            start = used = 0
            for k, c in enumerate(counts):
                if k > start and used + c > budget:
                    out.append((s, start, k))
                    start, used = k, 0
                used += c
            out.append((s, start, len(words)))
        return out

    def _word_vectors(self, batch_words: Sequence[Sequence[str]]) -> list[Any]:
        """One ``(n_words, dim)`` tensor per sentence (one encoder pass over all its windows)."""
        import torch

        chunks = self._chunks(batch_words)
        enc = self.tokenizer_([list(batch_words[s][a:b]) for s, a, b in chunks], is_split_into_words=True,
                              truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        offsets = [0]
        for words in batch_words:
            offsets.append(offsets[-1] + len(words))
        width = enc["input_ids"].shape[1]
        positions, targets = [], []
        for c, (s, a, _) in enumerate(chunks):
            for t, w in enumerate(enc.word_ids(c)):
                if w is not None:
                    positions.append(c * width + t)
                    targets.append(offsets[s] + a + w)
        dev = self.device_
        vectors = self.model_.word_vectors(
            {"input_ids": enc["input_ids"].to(dev), "attention_mask": enc["attention_mask"].to(dev)},
            torch.tensor(targets, dtype=torch.long, device=dev), torch.tensor(positions, dtype=torch.long, device=dev),
            offsets[-1])
        return [vectors[offsets[i] : offsets[i + 1]] for i in range(len(batch_words))]

    # -- training -----------------------------------------------------------------------------
    def _gold(self, ex: Example) -> tuple[list[str], dict[tuple[int, int], str]]:
        words = ex.text.split()
        if not isinstance(ex.label, str) or not words:
            raise ValueError(f"fit_epoch: example {ex.id}: the span parser trains on a linearized tree over a "
                             f"non-empty sentence; got text {ex.text!r}, label {ex.label!r}")
        try:
            tree = from_linearized(ex.label, labels=self.labels)
        except ValueError as exc:
            raise ValueError(f"fit_epoch: example {ex.id}: the target is not a tree ({exc})") from None
        if tree.leaves() != words:
            raise ValueError(f"fit_epoch: example {ex.id}: the target's words {tree.leaves()} are not the input "
                             f"words {words}")
        return words, tree_spans(tree)

    def _sentence_loss(self, logits: Any, n: int, gold: dict[tuple[int, int], str]) -> Any:
        import torch
        import torch.nn.functional as F

        i, j = torch.triu_indices(n + 1, n + 1, offset=2, device=logits.device)  # spans of >= 2 words
        inner = ~((i == 0) & (j == n))
        i, j = i[inner], j[inner]
        loss = logits.new_zeros(())
        if len(i):
            y = torch.tensor([float((a, b) in gold) for a, b in zip(i.tolist(), j.tolist())], device=logits.device)
            if self.tree_loss == "partial":  # train only the target's spans and the spans that cross one of them
                keep = (y > 0) | crossing(i, j, [s for s in gold if s[1] - s[0] >= 2])
                i, j, y = i[keep], j[keep], y[keep]
            loss = loss + F.binary_cross_entropy_with_logits(logits[i, j, 0], y, reduction="sum") / n
        if self.labels:
            index = {lab: k + 1 for k, lab in enumerate(self.labels)}
            index[""] = 0
            spans = [(a, b) for (a, b) in gold if b - a >= 2] + [(a, a + 1) for a in range(n)]
            y_lab = [index.get(gold.get(s, ""), -100) for s in spans]  # a label outside the set: not trained
            si = torch.tensor([a for a, _ in spans], device=logits.device)
            sj = torch.tensor([b for _, b in spans], device=logits.device)
            target = torch.tensor(y_lab, device=logits.device)
            if (target != -100).any():
                loss = loss + F.cross_entropy(logits[si, sj, 1:], target, ignore_index=-100)
        return loss

    def fit_epoch(self, examples: Sequence[Example], weights: Sequence[float] | None = None) -> float:
        import torch

        self._ensure()
        gold = [self._gold(ex) for ex in examples]  # every target checked before the first step

        def batch_loss(idx: list[int]) -> Any:
            vectors = self._word_vectors([gold[k][0] for k in idx])
            return torch.stack([self._sentence_loss(self.model_.scorer(v), len(v), gold[k][1])
                                for k, v in zip(idx, vectors)])

        return weighted_epoch(self, len(examples), weights, batch_loss)

    # -- inference ----------------------------------------------------------------------------
    def _decode(self, words: list[str], logits: Any) -> tuple[str, float]:
        import numpy as np

        n = len(words)
        scores = logits[..., 0]
        binary = cky(scores)
        p = 1.0 / (1.0 + np.exp(-np.array([scores[a, b] for a, b in binary[1:]], dtype=np.float64)))
        confidence = float(np.maximum(p, 1 - p).mean()) if len(p) else 1.0
        kept = kept_spans(binary, scores)
        if not self.labels:
            return linearize(tree_from_spans(words, {s: "" for s in kept})), confidence
        names = ("",) + self.labels
        spans = {s: names[int(logits[s][1:].argmax())] for s in kept}
        for a in range(n):
            lab = names[int(logits[a, a + 1, 1:].argmax())]
            if lab and (a, a + 1) not in spans:
                spans[(a, a + 1)] = lab
        return linearize(tree_from_spans(words, spans), labeled=True), confidence

    def span_logits(self, texts: Sequence[str], *, batch_size: int = 32) -> list[Any]:
        """For each text, the scorer's ``(n + 1, n + 1, n_out)`` array over its ``n`` words'
        fenceposts (``[..., 0]``: the constituent logit), what :meth:`parse` decodes."""
        import torch

        self._ensure()
        self.model_.eval()
        batch_words = [t.split() for t in texts]
        empty = [k for k, w in enumerate(batch_words) if not w]
        if empty:
            raise ValueError(f"predict: text {empty[0]} is empty; a tree needs at least one word")
        out: list[Any] = [None] * len(texts)
        order = sorted(range(len(texts)), key=lambda k: len(batch_words[k]))
        with torch.no_grad():
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                vectors = self._word_vectors([batch_words[k] for k in idx])
                for k, v in zip(idx, vectors):
                    out[k] = self.model_.scorer(v).float().cpu().numpy()
        return out

    def parse(self, texts: Sequence[str], *, batch_size: int = 32) -> list[tuple[str, float]]:
        """(linearized tree, confidence) for each text."""
        return [self._decode(t.split(), logits)
                for t, logits in zip(texts, self.span_logits(texts, batch_size=batch_size))]

    def predict(self, examples: Sequence[HasText], *, batch_size: int = 32) -> list[Prediction]:
        return [Prediction(label=tree, probs={tree: conf})
                for tree, conf in self.parse([e.text for e in examples], batch_size=batch_size)]

    # -- persistence (students/checkpoint.py) -------------------------------------------------
    def save(self, path: str | Path) -> None:
        self._ensure()
        write_checkpoint(path, self, {
            "kind": self.kind, "base_model": self.model_name, "labels": list(self.labels),
            "max_length": self.max_length, "batch_size": self.batch_size, "lr": self.lr,
            "weight_decay": self.weight_decay, "warmup_steps": self.warmup_steps, "seed": self.seed,
            "hidden": self.hidden, "dropout": self.dropout, "head_lr_scale": self.head_lr_scale,
            "tree_loss": self.tree_loss,
        })

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", threads: int | None = None) -> SpanParserStudent:
        meta = read_meta(path)
        st = cls(model=meta["base_model"], labels=meta["labels"], max_length=meta["max_length"],
                 batch_size=meta["batch_size"], lr=meta["lr"], weight_decay=meta["weight_decay"],
                 warmup_steps=meta["warmup_steps"], seed=meta["seed"], hidden=meta["hidden"],
                 dropout=meta["dropout"], head_lr_scale=meta["head_lr_scale"], device=device, threads=threads,
                 tree_loss=meta.get("tree_loss", "full"))  # checkpoints from before the option: full
        load_into(st, path, meta)
        return st
