"""NER benchmark: teacher few-shot vs supervised-k vs vanilla KD vs supervised-full, span F1.

Writes docs/results/ner.md (tables, the exact command, machine, date, seeds). Every
(dataset, k, teacher, seed) is an ordinary `llmkd run` of examples/<dataset>.yaml with
overrides, so a killed benchmark resumes where it stopped (teacher answers are cached, finished
methods are kept). The supervised rows do not depend on the teacher and run once per (k, seed).

    python bench/ner.py                                          # the grid of the issue
    python bench/ner.py --seeds 0 --pool 100 --test-size 100     # smaller; the doc says which

"k" is the number of gold labeled sentences (also the demonstration pool: the prompt shows
min(k, --shots) of them). "supervised-full" trains on the gold labels of the labeled set plus
the pool (the pool's upper bound), not on the whole train file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import ROOT, SHORT, doc_machine_line, parser, result_store, save_store, rows_in_order, start, write_keeping_notes  # noqa: E402  (puts src/ on sys.path)
from _common import mean_std as _ms

from llmkd import api  # noqa: E402
from llmkd.config import load_config  # noqa: E402
from llmkd.report import read_jsonl  # noqa: E402
from llmkd.tasks.ner import NerTask  # noqa: E402
from llmkd.types import TeacherLabel  # noqa: E402

ORDER = ["teacher few-shot", "supervised-k", "vanilla KD", "supervised-full"]


def main() -> None:
    ap = parser(__doc__, "ner", ["conll2003", "wnut17"])
    ap.add_argument("--k", nargs="+", type=int, default=[5, 50], help="gold labeled sentences")
    ap.add_argument("--dev-n", type=int, default=50, help="gold dev sentences (early stopping)")
    ap.add_argument("--pool", type=int, default=1000)
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--shots", type=int, default=8, help="demonstrations per prompt (at most k)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--min-steps", type=int, default=60)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the doc from the stored results (same grid options), running nothing")
    args = ap.parse_args()
    command, started = start("ner")
    settings = {"dev_n": args.dev_n, "pool": args.pool, "test_size": args.test_size, "shots": args.shots,
                "max_tokens": args.max_tokens, "epochs": args.epochs, "min_steps": args.min_steps,
                "max_length": args.max_length}
    store, store_path = result_store(args.out, settings, command, fresh=args.fresh, report_only=args.report_only)
    if args.report_only:  # nothing measured, nothing to store: the doc is redrawn from the store as read
        write(args, store, started)
        return
    for ds in args.datasets:
        for k in args.k:
            for seed in args.seeds:
                for teacher in args.teachers:
                    have_gold_rows = f"{ds}/{k}/supervised-k (k={k})/{seed}" in store["runs"]  # teacher-independent
                    methods = ["teacher", "vanilla"] + ([] if have_gold_rows else ["supervised", "supervised_full"])
                    name = SHORT.get(teacher, teacher)
                    cfg = load_config(ROOT / "examples" / f"{ds}.yaml", [
                        f"name={ds}-{name}-k{k}-d{args.dev_n}-p{args.pool}-t{args.test_size}-sh{args.shots}"
                        f"-e{args.epochs}-m{args.min_steps}-l{args.max_length}-s{seed}",
                        f"seed={seed}", f"output_dir={args.runs}", f"teacher.model={teacher}",
                        f"teacher.max_tokens={args.max_tokens}",
                        f"data.split.labeled_n={k}", f"data.split.dev_n={args.dev_n}",
                        f"data.split.pool_size={args.pool}", f"data.split.test_size={args.test_size}",
                        f"task.shots={min(k, args.shots)}", f"student.epochs={args.epochs}",
                        f"student.min_steps={args.min_steps}", f"student.max_length={args.max_length}",
                        f"methods={json.dumps(methods)}", "progress=false",
                    ])
                    t0 = time.time()
                    summary = api.run(cfg)
                    print(f"{ds} k={k} {teacher} seed {seed}: {time.time() - t0:.0f}s", flush=True)
                    pool = json.loads((summary.run_dir / "metrics.json").read_text()).get("pool", {})
                    for m, res in summary.results.items():
                        res = dict(res)
                        res["label_stats"] = _label_stats(summary.run_dir / m / "labels.jsonl")
                        if m == "vanilla":
                            res["pool"] = pool
                        label = {"teacher": f"teacher few-shot ({name})", "vanilla": f"vanilla KD ({name})",
                                 "supervised": f"supervised-k (k={k})",
                                 "supervised_full": f"supervised-full (gold labeled + pool, {k + args.pool})"}[m]
                        store["runs"][f"{ds}/{k}/{label}/{seed}"] = {"dataset": ds, "k": k, "label": label,
                                                                     "seed": seed, "result": res}
                    save_store(store, store_path)
                    write(args, store, started)


def _label_stats(path: Path) -> dict:
    if not path.exists():
        return {}
    labels = [TeacherLabel.from_dict(d) for d in read_jsonl(path)]
    return NerTask.label_stats(labels)


def write(args: argparse.Namespace, store: dict, started: float) -> None:
    rows: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for run in store["runs"].values():
        rows.setdefault((run["dataset"], run["k"]), {}).setdefault(run["label"], []).append(run["result"])
    seeds = sorted({run["seed"] for run in store["runs"].values()})
    ks = sorted({run["k"] for run in store["runs"].values()})
    lines = [
        "# NER benchmark (generated by bench/ner.py)",
        "",
        "Commands (in order; each adds its runs to the tables):  ",
        *[f"`{c}`  " for c in store["commands"]],
        doc_machine_line(args, started),
        f"Seeds: {seeds} (each seed draws the labeled sentences, the demonstrations, the dev set, the pool "
        f"and the test subsample, and initialises the student). k = {ks} gold labeled sentences; "
        f"demonstrations = min(k, {args.shots}); dev = {args.dev_n} gold sentences from the dev file; "
        f"pool = {args.pool}; test subsample = {args.test_size}; student all-MiniLM-L6-v2 token tagger, "
        f"max_length {args.max_length}, up to {args.epochs} epochs (min {args.min_steps} steps), early stopping "
        f"on dev span F1. Teacher: llama.cpp, greedy, prompt ner.v1, max {args.max_tokens} new tokens.",
        "",
        "Span F1 / precision / recall: seqeval, strict IOB2, micro over entities, mean ± std over seeds on the "
        "test subsample. Abstention = unparseable teacher replies (scored as 'no entity'). Dropped = share of "
        "the mentions the teacher wrote that were dropped (not in the sentence, unknown type, overlap, "
        "duplicate, cut at max_tokens); for teacher rows over the test prompts, for vanilla KD over the pool.",
        "",
    ]
    for (ds, k), by_label in rows.items():
        lines += [f"## {ds}, k = {k}", "",
                  "| row | span F1 | precision | recall | abstention | dropped mentions | pool pseudo-label F1 "
                  "| labeling s | n seeds |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label, results in rows_in_order(by_label, ORDER):
            met = [r["metrics"] for r in results]
            ab = [m["abstention_rate"] for m in met] if label.startswith("teacher few-shot") else [
                r.get("extra", {}).get("pool_abstention_rate") for r in results]
            dropped = [r["label_stats"].get("dropped-mention rate") for r in results if r.get("label_stats")]
            pool_f1 = [r["pool"].get("pseudo-label span f1") for r in results if r.get("pool")]
            ts = [r["timings"].get("teacher_seconds") for r in results if r["timings"].get("teacher_seconds")]
            lines.append(
                f"| {label} | {_ms([m['f1'] for m in met])} | {_ms([m['precision'] for m in met])} | "
                f"{_ms([m['recall'] for m in met])} | {_ms(ab)} | {_ms(dropped)} | {_ms(pool_f1)} | "
                f"{(f'{statistics.mean(ts):.0f}' if ts else '–')} | {len(results)} |")
        types = sorted({key[3:-1] for res in by_label.values() for r in res for key in r["metrics"]
                        if key.startswith("f1[")})
        if types:
            lines += ["", "Span F1 per type (mean over seeds):", "",
                      "| row | " + " | ".join(types) + " |", "|---|" + "---:|" * len(types)]
            for label, results in rows_in_order(by_label, ORDER):
                lines.append(f"| {label} | " + " | ".join(
                    f"{statistics.mean(r['metrics'].get(f'f1[{t}]', 0.0) for r in results):.3f}"
                    for t in types) + " |")
        lines.append("")
    write_keeping_notes(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
