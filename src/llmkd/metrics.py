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


def span_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str] | None],
                types: Sequence[str] = ()) -> dict[str, float]:
    """Entity-level precision / recall / F1 with seqeval in strict IOB2 mode (type and exact
    boundaries must match), micro-averaged, plus ``precision[T]`` / ``recall[T]`` / ``f1[T]`` /
    ``support[T]`` for every type T. An abstention (``None``) predicts no entity for that sentence
    and is counted in ``abstention_rate``. ``f1`` comes first (and is NerTask's primary metric)."""
    import warnings

    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} items, predictions {len(pred)}")
    y_true = [list(g) for g in gold]
    y_pred = []
    for i, (g, p) in enumerate(zip(gold, pred)):
        if p is not None and len(p) != len(g):
            raise ValueError(f"sentence {i}: gold has {len(g)} tags, the prediction {len(p)}")
        y_pred.append(["O"] * len(g) if p is None else list(p))
    out: dict[str, float] = {"f1": 0.0, "precision": 0.0, "recall": 0.0,
                             "abstention_rate": sum(p is None for p in pred) / len(gold) if gold else 0.0,
                             "n": len(gold)}
    has_entities = any(t != "O" for seq in y_true + y_pred for t in seq)
    report: dict[str, dict[str, float]] = {}
    if has_entities:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = classification_report(y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True,
                                           zero_division=0)
        micro = report.get("micro avg", {})
        out.update(f1=float(micro.get("f1-score", 0.0)), precision=float(micro.get("precision", 0.0)),
                   recall=float(micro.get("recall", 0.0)))
    else:  # nothing to find and nothing found: perfect, as seqeval would say with zero_division=1
        out.update(f1=1.0, precision=1.0, recall=1.0)
    for t in sorted(set(types) | {k for k in report if not k.endswith(" avg")}):
        r = report.get(t, {})
        out[f"precision[{t}]"] = float(r.get("precision", 0.0))
        out[f"recall[{t}]"] = float(r.get("recall", 0.0))
        out[f"f1[{t}]"] = float(r.get("f1-score", 0.0))
        out[f"support[{t}]"] = int(r.get("support", 0))
    return out
