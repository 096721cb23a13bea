"""Classification benchmark: teacher few-shot vs supervised-k vs vanilla KD vs supervised-full.

Writes docs/results/classification.md (the table, the exact command, machine, date, seeds).
Every (dataset, teacher, seed) is an ordinary `llmkd run` of examples/<dataset>.yaml with
overrides, so a killed benchmark resumes where it stopped (teacher answers are cached, finished
methods are kept). The supervised rows do not depend on the teacher and run once per seed.

    python bench/classification.py                       # the full grid of the issue
    python bench/classification.py --seeds 0 --pool 300  # a smaller run; the doc says which

Results accumulate in docs/results/classification.json (keyed by dataset, teacher, seed and
method): a later invocation with the same sizes (k, pool, test size, epochs) adds its runs to the
table, e.g. a second teacher on fewer seeds, and the doc lists every command that contributed.
An invocation with other sizes stops, naming them, unless `--fresh` (which keeps the old store as
classification.old.json and starts the table afresh); `--report-only` rewrites the doc from the
store (after a change to its layout, or to keep hand notes, which follow the notes marker).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _common import ROOT, SHORT, doc_machine_line, parser, result_store, save_store, rows_in_order, start, write_keeping_notes  # noqa: E402  (puts src/ on sys.path)
from _common import mean_std as _ms

from llmkd import api  # noqa: E402
from llmkd.config import load_config  # noqa: E402


def main() -> None:
    ap = parser(__doc__, "classification", ["sst2", "trec"])
    ap.add_argument("--k", type=int, default=8, help="gold examples per class (labeled and dev each)")
    ap.add_argument("--pool", type=int, default=1000)
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the doc from the stored results (same grid options), running nothing")
    args = ap.parse_args()
    command, started = start("classification")
    settings = {"k": args.k, "pool": args.pool, "test_size": args.test_size, "epochs": args.epochs}
    store, store_path = result_store(args.out, settings, command, fresh=args.fresh, report_only=args.report_only)
    if args.report_only:  # nothing measured, nothing to store: the doc is redrawn from the store as read
        write(args, store, started)
        return
    for ds in args.datasets:
        for seed in args.seeds:
            for teacher in args.teachers:
                have_gold_rows = f"{ds}/supervised-full (gold pool)/{seed}" in store["runs"]  # teacher-independent
                methods = ["teacher", "vanilla"] + ([] if have_gold_rows else ["supervised", "supervised_full"])
                cfg = load_config(ROOT / "examples" / f"{ds}.yaml", [
                    f"name={ds}-{SHORT.get(teacher, teacher)}-k{args.k}-p{args.pool}-t{args.test_size}-e{args.epochs}-s{seed}",
                    f"seed={seed}", f"output_dir={args.runs}", f"teacher.model={teacher}",
                    f"data.split.labeled_per_class={args.k}", f"data.split.dev_per_class={args.k}",
                    f"data.split.pool_size={args.pool}", f"data.split.test_size={args.test_size}",
                    f"student.epochs={args.epochs}", f"methods={json.dumps(methods)}", "progress=false",
                ])
                t0 = time.time()
                summary = api.run(cfg)
                print(f"{ds} {teacher} seed {seed}: {time.time() - t0:.0f}s", flush=True)
                name = SHORT.get(teacher, teacher)
                for m, res in summary.results.items():
                    label = {"teacher": f"teacher few-shot ({name})", "vanilla": f"vanilla KD ({name})",
                             "supervised": f"supervised-k (k={args.k}/class)", "supervised_full": "supervised-full (gold pool)"}[m]
                    if m == "vanilla":  # pseudo-label accuracy on the pool, scored after the fact
                        pool = json.loads((summary.run_dir / "metrics.json").read_text()).get("pool", {})
                        res = {**res, "pool_label_accuracy": pool.get("pseudo-label accuracy (all, abstention = wrong)")}
                    key = f"{ds}/{label}/{seed}"
                    store["runs"][key] = {"dataset": ds, "label": label, "seed": seed, "result": res}
                save_store(store, store_path)
                write(args, store, started)


def write(args: argparse.Namespace, store: dict, started: float) -> None:
    order = ["teacher few-shot", "supervised-k", "vanilla KD", "supervised-full"]
    rows: dict[str, dict[str, list[dict]]] = {}
    for run in store["runs"].values():
        rows.setdefault(run["dataset"], {}).setdefault(run["label"], []).append(run["result"])
    seeds = sorted({run["seed"] for run in store["runs"].values()})
    lines = [
        "# Classification benchmark",
        "",
        "Commands (in order; each adds its runs to the table):  ",
        *[f"`{c}`  " for c in store["commands"]],
        doc_machine_line(args, started),
        f"Seeds: {seeds} (each seed draws the k-shot labeled set, the demonstrations, the dev set, "
        f"the pool and the test subsample, and initialises the student). k = {args.k} gold examples per class "
        f"(also the prompt demonstrations); dev = {args.k} per class; pool = {args.pool}; test subsample = "
        f"{args.test_size}; student all-MiniLM-L6-v2, up to {args.epochs} epochs (more for tiny sets, "
        "min 60 steps), early stopping on the dev set. Teacher: llama.cpp, greedy, plain-text few-shot prompt "
        "(teacher.chat default: no chat template), label parsed from the reply; confidence from scoring the "
        "label set.",
        "",
        "Numbers are mean ± std over the seeds on the test subsample. \"labeling s\" is teacher time for "
        "that row's prompts (test for teacher rows, pool for vanilla KD), measured when first computed; "
        "tokens/s counts prompt tokens sent (the shared few-shot prefix is evaluated once and reused).",
        "",
    ]
    for ds, by_label in rows.items():
        lines += [f"## {ds}", "", "| row | macro-F1 | accuracy | abstention | pool pseudo-label acc | labeling s | prompts/s | "
                  "prompt tok/s | n seeds |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label, results in rows_in_order(by_label, order):
            f1 = [r["metrics"]["macro_f1"] for r in results]
            acc = [r["metrics"]["accuracy"] for r in results]
            ab = [r["metrics"]["abstention_rate"] for r in results]
            timed = [r["timings"] for r in results if r["timings"].get("teacher_seconds")]  # teacher rows only
            ts = [t["teacher_seconds"] for t in timed]
            pps = [t.get("n_prompts", 0) / t["teacher_seconds"] for t in timed]
            tps = [t.get("prompt_tokens", 0) / t["teacher_seconds"] for t in timed]
            pool_acc = [r["pool_label_accuracy"] for r in results if r.get("pool_label_accuracy") is not None]
            lines.append(f"| {label} | {_ms(f1)} | {_ms(acc)} | {_ms(ab)} | {_ms(pool_acc)} | "
                         f"{(f'{statistics.mean(ts):.0f}' if ts else '–')} | "
                         f"{(f'{statistics.mean(pps):.2f}' if pps else '–')} | "
                         f"{(f'{statistics.mean(tps):.0f}' if tps else '–')} | {len(results)} |")
        lines.append("")
    write_keeping_notes(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
