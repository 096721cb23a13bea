"""How good are the teacher's labels of the EvoKD samples? Writes docs/results/evokd_labels.md.

Synthetic texts have no gold label, so this scores each kept sample's teacher label against a
*reference student*: the full-shot student of the same seed (trained on 500 gold texts by
``bench/evokd.py``). The reference errs too, so the same agreement is also measured on vanilla
KD's pool, where gold labels exist: it shows how far the proxy is from the truth. Reads finished
runs of ``bench/evokd.py`` only (no teacher calls, a few seconds of student inference).
For NER (conll03) agreement is the entity-level span F1 between the teacher's tags and the
reference tagger's (micro F1 is symmetric, so neither side plays gold), and the class shares
count entity mentions.

    python bench/evokd_labels.py --teachers qwen2.5-coder-1.5b-instruct --datasets sst2 trec conll03 --k 1 8 --seeds 0 1 2
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from _common import ROOT, SHORT, machine_line, mean_std, parser, start, write_keeping_notes  # noqa: E402  (puts src/ on sys.path)

from evokd import grid_dir  # noqa: E402  (bench/evokd.py, the grid whose runs this reads)

from llmkd.formats.conll import spans_from_tags  # noqa: E402
from llmkd.metrics import span_scores  # noqa: E402
from llmkd.students.classifier import ClassifierStudent  # noqa: E402
from llmkd.students.tagger import TaggerStudent  # noqa: E402


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    ap = parser(__doc__, "evokd_labels", ["sst2", "trec", "conll03"], dataset_choices=["sst2", "trec", "conll03"])
    ap.add_argument("--k", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--pool", type=int, default=200)
    ap.add_argument("--full-pool", type=int, default=500)
    ap.add_argument("--test-size", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--min-steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="the --threads the grid ran with, if any")
    ap.set_defaults(runs=str(ROOT / "runs" / "bench-evokd"))
    args = ap.parse_args()
    command, started = start("evokd_labels")
    lines = ["Reads the finished runs of `bench/evokd.py` (same grid options). *Agreement* = share of texts "
             "whose teacher label equals the prediction of the reference student: the full-shot student of the "
             f"same seed (trained on {args.full_pool} gold texts). On vanilla KD's pool, gold labels exist, so "
             "the table also gives the teacher's true accuracy there: the gap between the two columns is the "
             "proxy's own error. Mean ± std over seeds.", ""]
    for model in args.teachers:
        teacher = SHORT.get(model, model)
        root = grid_dir(args, teacher)
        for ds in args.datasets:
            ner = ds == "conll03"  # a token tagger, span F1 and entity types instead of labels
            rows: dict[tuple[int, str], list[float]] = collections.defaultdict(list)
            counts: dict[tuple[int, str], collections.Counter] = collections.defaultdict(collections.Counter)
            pool_true: dict[int, list[float]] = collections.defaultdict(list)
            for seed in args.seeds:
                ref_dir = root / f"{ds}-full{args.full_pool}-s{seed}" / "supervised_full" / "student" / "best"
                if not ref_dir.exists():
                    continue
                ref = (TaggerStudent if ner else ClassifierStudent).load(ref_dir)
                for k in args.k:
                    run = root / f"{ds}-k{k}-s{seed}"
                    for m in ("synth_nofeedback", "evokd"):
                        path = run / m / "synthetic.jsonl"
                        if not (run / m / "result.json").exists():
                            continue
                        kept = [s for s in _jsonl(path) if s.get("status") == "kept"]
                        if not kept:
                            continue
                        rows[(k, m)].append(_agreement(ref, kept, ner))
                        counts[(k, m)].update(_classes(kept, ner))
                    if (run / "vanilla" / "result.json").exists():
                        pool = [x for x in _jsonl(run / "labels.jsonl") if x.get("source") == "teacher" and not x["abstained"]]
                        rows[(k, "vanilla")].append(_agreement(ref, pool, ner))
                        counts[(k, "vanilla")].update(_classes(pool, ner))
                        quality = json.loads((run / "metrics.json").read_text())["pool"]
                        key = "pseudo-label span f1" if ner else "pseudo-label accuracy (answered)"
                        pool_true[k].append(float(quality[key]))
            if not rows:
                continue
            lines += [f"## {ds}, teacher {teacher}", "",
                      "| k | texts labeled by the teacher | agreement with the reference student"
                      + (" (span F1) | true span F1 | entity mentions given (share of each type" if ner else
                         " | true accuracy | labels given (share of each class") + ", pooled over seeds) |",
                      "|---:|---|---:|---:|---|"]
            names = {"synth_nofeedback": "generation without feedback (kept samples)",
                     "evokd": "EvoKD (kept samples)", "vanilla": "vanilla KD pool (real texts)"}
            for (k, m), vals in sorted(rows.items(), key=lambda kv: (kv[0][0], list(names).index(kv[0][1]))):
                c = counts[(k, m)]
                n = sum(c.values())
                share = ", ".join(f"{lab} {v / n:.0%}" for lab, v in c.most_common())
                true = mean_std(pool_true[k]) if m == "vanilla" else "–"
                lines.append(f"| {k} | {names[m]} | {mean_std(vals)} | {true} | {share} |")
            lines.append("")
    head = ["# EvoKD: quality of the teacher's labels on synthetic samples", "",
            f"Command: `{command}`  ", machine_line(started), ""]
    write_keeping_notes(args.out, "\n".join(head + lines) + "\n")


def _agreement(ref, items: list[dict], ner: bool) -> float:
    """Share of equal labels (classification) or span F1 (NER) between the teacher and ``ref``."""
    preds = ref.predict([_Text(x["text"]) for x in items])
    if not ner:
        return sum(p.label == x["label"] for p, x in zip(preds, items)) / len(items)
    pairs = [(x["label"], p.label) for p, x in zip(preds, items) if len(p.label) == len(x["label"])]
    if len(pairs) < len(items):
        print(f"warning: {len(items) - len(pairs)} of {len(items)} texts split into other words than labeled; skipped")
    return span_scores([t for t, _ in pairs], [p for _, p in pairs])["f1"]


def _classes(items: list[dict], ner: bool) -> list[str]:
    if not ner:
        return [x["label"] for x in items]
    return [sp.type for x in items for sp in spans_from_tags(x["label"])]


class _Text:
    def __init__(self, text: str) -> None:
        self.text = text


if __name__ == "__main__":
    main()
