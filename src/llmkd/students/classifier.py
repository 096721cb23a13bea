"""Sequence-classifier student on any Hugging Face encoder (default: the packaged MiniLM).

``save`` writes safetensors weights, the tokenizer, ``student.json`` (labels, hyperparameters,
epochs done) and ``optimizer.safetensors`` (AdamW moments), so training resumes exactly where it
stopped. No pickle is written or read.
``targets`` (``student.targets``): ``hard`` trains on the label (cross-entropy); ``soft`` on the
teacher's label distribution (``Example.soft``) at ``temperature``, ``mix`` on both (weight
``soft_weight`` on the soft term): :func:`llmkd.students.losses.distill_loss`. An example without
``soft`` (gold) trains on its label whatever the setting.

Not handled: multi-label targets, gradient accumulation. Many devices: ``accelerate launch`` (:mod:`llmkd.distributed`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

from ..types import Example, Prediction
from .base import HasText
from .checkpoint import LazyStudent, adamw, load_into, read_meta, weighted_epoch, write_checkpoint
from .losses import distill_loss, hard_weight, soft_matrix

log = logging.getLogger(__name__)


def pick_device(device: str) -> str:
    """``auto``: CUDA where there is one, else the CPU. In a data-parallel run (``accelerate
    launch``) ``auto`` and ``cuda`` are this process's own device (:func:`llmkd.distributed.device`)."""
    import torch

    from .. import distributed

    if distributed.active() and device in ("auto", "cuda"):
        return distributed.device()
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


class ClassifierStudent(LazyStudent):
    kind = "classifier"  # written to student.json
    auto_model = "AutoModelForSequenceClassification"  # the transformers head class
    soft_targets = True  # trains on Example.soft (targets soft / mix); the tagger does not

    def __init__(self, *, model: str, labels: Sequence[str], max_length: int = 128, batch_size: int = 16,
                 lr: float = 1e-4, weight_decay: float = 0.01, warmup_steps: int = 10, seed: int = 0,
                 device: str = "auto", threads: int | None = None, progress: bool = False,
                 targets: str = "hard", temperature: float = 1.0, soft_weight: float = 0.5) -> None:
        hard_weight(targets, soft_weight)  # a ValueError for an unknown targets
        if targets != "hard" and not self.soft_targets:
            raise ValueError(f"{type(self).__name__} trains on hard labels only (targets={targets!r}): per-token "
                             "teacher distributions do not exist; use targets='hard'")
        if not temperature > 0 or not 0.0 <= soft_weight <= 1.0:
            raise ValueError(f"temperature must be > 0 and soft_weight in [0, 1] (got {temperature}, {soft_weight})")
        self.model_name = model
        self.labels = tuple(labels)
        self.max_length = max_length
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.seed = seed
        self.device = device
        self.threads = threads
        self.progress = progress
        self.targets = targets
        self.temperature = float(temperature)
        self.soft_weight = float(soft_weight)
        self.epochs_done_ = 0
        self.steps_done_ = 0
        self._built = False

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model's output classes: the label set (a tagger's are its BIO tags)."""
        return self.labels

    # -- construction -------------------------------------------------------------------------
    def _build(self, source: str | None = None) -> None:
        import torch
        import transformers
        from transformers import AutoTokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        src = source or self.model_name
        self.tokenizer_ = AutoTokenizer.from_pretrained(src)
        self.model_ = getattr(transformers, self.auto_model).from_pretrained(
            src,
            num_labels=len(self.outputs),
            id2label=dict(enumerate(self.outputs)),
            label2id={lab: i for i, lab in enumerate(self.outputs)},
            ignore_mismatched_sizes=source is None,
        )
        self.device_ = pick_device(self.device)
        self.model_.to(self.device_)
        self.optimizer_ = adamw(self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self._built = True

    # -- training -----------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str]) -> Any:
        return self.tokenizer_(list(texts), truncation=True, max_length=self.max_length, padding=True,
                               return_tensors="pt").to(self.device_)

    def fit_epoch(self, examples: Sequence[Example], weights: Sequence[float] | None = None) -> float:
        import torch
        import torch.nn.functional as F

        self._ensure()
        index = {lab: i for i, lab in enumerate(self.labels)}

        alpha = hard_weight(self.targets, self.soft_weight)

        def batch_loss(idx: list[int]) -> Any:
            y = torch.tensor([index[examples[i].label] for i in idx], device=self.device_)
            logits = self.model_(**self._encode([examples[i].text for i in idx])).logits
            if self.targets == "hard":  # exactly the loss before soft targets existed
                return F.cross_entropy(logits, y, reduction="none")
            soft, has_soft = soft_matrix([examples[i].soft for i in idx], self.labels)
            return distill_loss(logits, y, soft, has_soft, temperature=self.temperature, alpha=alpha)

        return weighted_epoch(self, len(examples), weights, batch_loss)

    # -- inference ----------------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> Any:
        import numpy as np
        import torch

        self._ensure()
        self.model_.eval()
        if not texts:
            return np.zeros((0, len(self.labels)))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        with torch.no_grad():
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                logits = self.model_(**self._encode([texts[i] for i in idx])).logits.float()
                out[idx] = torch.softmax(logits, -1).cpu().numpy()
        return out

    def predict(self, examples: Sequence[HasText]) -> list[Prediction]:
        probs = self.predict_proba([e.text for e in examples])
        return [
            Prediction(label=self.labels[int(row.argmax())], probs={lab: float(p) for lab, p in zip(self.labels, row)})
            for row in probs
        ]

    # -- persistence (students/checkpoint.py) -------------------------------------------------
    def save(self, path: str | Path) -> None:
        self._ensure()
        write_checkpoint(path, self, {
            "kind": self.kind, "base_model": self.model_name, "labels": list(self.labels),
            "max_length": self.max_length, "batch_size": self.batch_size, "lr": self.lr,
            "weight_decay": self.weight_decay, "warmup_steps": self.warmup_steps, "seed": self.seed,
            "targets": self.targets, "temperature": self.temperature, "soft_weight": self.soft_weight,
        })

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", threads: int | None = None) -> ClassifierStudent:
        meta = read_meta(path)
        st = cls(model=meta["base_model"], labels=meta["labels"], max_length=meta["max_length"],
                 batch_size=meta["batch_size"], lr=meta["lr"], weight_decay=meta["weight_decay"],
                 warmup_steps=meta["warmup_steps"], seed=meta["seed"], device=device, threads=threads,
                 # checkpoints written before soft targets existed trained on hard labels
                 targets=meta.get("targets", "hard"), temperature=meta.get("temperature", 1.0),
                 soft_weight=meta.get("soft_weight", 0.5))
        load_into(st, path, meta)
        return st


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))
