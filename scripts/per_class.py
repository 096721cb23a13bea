"""Per-class test F1 and prediction counts of a run's methods, from their predictions.jsonl.

    python scripts/per_class.py RUN_DIR[/METHOD] ...

Each argument is a run folder (every method in it that wrote test predictions) or one method's
folder. Prints a markdown table: one row per method, one column per gold class, each cell "F1
(number of predictions of that class)", then the gold counts. A prediction of None (the teacher
abstained) counts as wrong and as no class. This is how the per-class tables in
docs/results/student_vs_teacher.md were made.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

from sklearn.metrics import f1_score

from llmkd.io import read_jsonl


def method_dirs(arg: str) -> list[Path]:
    p = Path(arg)
    if (p / "predictions.jsonl").exists():
        return [p]
    return sorted(d for d in p.iterdir() if (d / "predictions.jsonl").exists())


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rows, gold_counts, classes = [], None, None
    for arg in sys.argv[1:]:
        for d in method_dirs(arg):
            recs = read_jsonl(d / "predictions.jsonl")
            gold = [r["gold"] for r in recs]
            pred = [r["pred"] if r["pred"] is not None else "(abstained)" for r in recs]
            classes = classes or sorted(set(gold))
            gold_counts = gold_counts or collections.Counter(gold)
            f1 = f1_score(gold, pred, labels=classes, average=None, zero_division=0)
            n = collections.Counter(pred)
            rows.append(f"| {d.parent.name}/{d.name} | " + " | ".join(f"{f:.2f} ({n[c]})" for f, c in zip(f1, classes))
                        + " |")
    if not rows:
        sys.exit("no predictions.jsonl under " + " ".join(sys.argv[1:]))
    print("| method | " + " | ".join(classes) + " |")
    print("|---|" + "---|" * len(classes))
    print("\n".join(rows))
    print("\ngold: " + ", ".join(f"{c} {gold_counts[c]}" for c in classes))


if __name__ == "__main__":
    main()
