"""Metrics. Library implementations are used (scikit-learn; seqeval for spans); nothing here
reimplements them. An abstention (``None`` prediction) counts as wrong and is also reported as a
rate, so it is never hidden in an average."""

from __future__ import annotations

from typing import Any, Sequence


def classification_scores(gold: Sequence[Any], pred: Sequence[Any | None], labels: Sequence[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} items, predictions {len(pred)}")
    if not gold:
        return {"accuracy": 0.0, "macro_f1": 0.0, "abstention_rate": 0.0, "n": 0}
    abst = sum(p is None for p in pred)
    filled = [p if p is not None else "<abstain>" for p in pred]
    return {
        "accuracy": float(accuracy_score(gold, filled)),
        "macro_f1": float(f1_score(gold, filled, labels=list(labels), average="macro", zero_division=0)),
        "abstention_rate": abst / len(gold),
        "n": len(gold),
    }
