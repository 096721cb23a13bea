"""Warnings for suspicious results: a student that predicts one class, a teacher whose labels of the
pool are far from the gold examples' class mix, a student whose dev score was still rising when its
epochs ran out. All are logged during the run and listed under "Warnings" in the report. The first
two are for classification only: the run calls them for ``task.kind: classification`` (a seq2seq
target is a string too, but no class); the third for every task.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

COLLAPSE_SHARE = 0.95  # one class in at least this share of a student's test predictions
SKEW_DISTANCE = 0.3  # total-variation distance between the teacher's pool labels and the gold mix
MIX_SHOWN = 6  # classes named in a label mix; the rest are counted


def _shares(labels: Sequence[Any]) -> dict[str, float]:
    counts = Counter(x for x in labels if isinstance(x, str))
    n = sum(counts.values())
    return {k: v / n for k, v in counts.most_common()} if n else {}


def prediction_collapse(method: str, predicted: Sequence[Any], gold: Sequence[Any]) -> str | None:
    """A warning when ``method`` predicts one class for nearly every test example while the test
    set has more than one class."""
    pred, truth = _shares(predicted), _shares(gold)
    if not pred or len(truth) < 2:
        return None
    top, share = next(iter(pred.items()))
    if share < COLLAPSE_SHARE:
        return None
    who = "the teacher" if method == "teacher" else "the student"
    return (f"{method}: {who} predicts {top!r} for {share:.0%} of the test set (which has {len(truth)} classes): "
            f"it has collapsed to one class. Check the pool's label mix; try student.class_balance=true, a larger "
            f"pool, teacher.labeling=score or a stronger teacher.")


def label_skew(pool_labels: Sequence[Any], gold_labels: Sequence[Any]) -> str | None:
    """A warning when the teacher's labels of the pool are far (total variation >= SKEW_DISTANCE)
    from the class mix of the gold labeled examples."""
    pool, gold = _shares(pool_labels), _shares(gold_labels)
    if not pool or len(gold) < 2:
        return None
    tv = 0.5 * sum(abs(pool.get(k, 0.0) - gold.get(k, 0.0)) for k in set(pool) | set(gold))
    if tv < SKEW_DISTANCE:
        return None

    def mix(shares: dict[str, float]) -> str:
        top = sorted(shares.items(), key=lambda kv: -kv[1])
        named = ", ".join(f"{k} {v:.0%}" for k, v in top[:MIX_SHOWN])
        rest = top[MIX_SHOWN:]
        return named + (f" and {len(rest)} more classes ({sum(v for _, v in rest):.0%})" if rest else "")

    return (f"the teacher's labels of the pool are far from the gold examples' class mix (total variation "
            f"{tv:.2f}): pool {mix(pool)}; gold {mix(gold)}. A student trained on them may lean to one class: "
            f"student.class_balance=true evens the classes out; a stronger teacher or teacher.labeling=score "
            f"may label better.")


def still_rising(method: str, records: Sequence[dict[str, Any]], epochs: int) -> str | None:
    """A warning when a student of ``method`` (``records``: its students' ``progress.json``) ran
    out of epochs while its dev score was still going up: the training stopped at
    ``student.epochs`` (not early stopping, not a step budget), its last evaluation was its best,
    and each of the last two evaluations beat the one before."""
    rising = []
    for rec in records:
        hist = rec.get("history") or []
        if (rec.get("stop_reason") != "max_epochs" or rec.get("kept", "best") != "best" or len(hist) < 3
                or rec.get("best_epoch") != hist[-1]["epoch"]):
            continue
        a, b, c = (h["score"] for h in hist[-3:])
        if a < b < c:
            rising.append(((a, b, c), hist[-1]["epoch"], rec.get("dev_metric") or "dev score"))
    if not rising:
        return None
    (a, b, c), last, metric = rising[0]
    who = "its student" if len(records) == 1 else f"{len(rising)} of its {len(records)} students"
    return (f"{method}: {who} ran out of epochs with the dev {metric} still rising ({a:.3f}, {b:.3f}, {c:.3f} "
            f"at the last three evaluations, the last one the best, after {last} epochs): it is likely "
            f"undertrained. Raise student.epochs (now {epochs}; early stopping still ends training once dev stops "
            f"improving) or student.lr.")


def training_warnings(run_dir: Any, methods: Sequence[str], epochs: int) -> list[str]:
    """:func:`still_rising` for each method, from the ``progress.json`` of its students under
    ``RUN_DIR/METHOD`` (any task)."""
    from pathlib import Path

    from .io import read_json

    found = []
    for m in methods:
        d = Path(run_dir) / m
        records = [read_json(p) for p in sorted(d.rglob("progress.json"))] if d.is_dir() else []
        found.append(still_rising(m, [r for r in records if r.get("done")], epochs))
    return [w for w in found if w]


def run_warnings(run_dir: Any, methods: Sequence[str], pool_labels: Sequence[Any], gold_labels: Sequence[Any]) -> list[str]:
    """Every warning of a run directory: the pool's label mix, then each method's test predictions
    (``RUN_DIR/METHOD/predictions.jsonl``)."""
    from pathlib import Path

    from .io import read_jsonl

    found = [label_skew(pool_labels, gold_labels)]
    for m in methods:
        path = Path(run_dir) / m / "predictions.jsonl"
        if path.exists():
            rows = read_jsonl(path)
            found.append(prediction_collapse(m, [r["pred"] for r in rows], [r["gold"] for r in rows]))
    return [w for w in found if w]
