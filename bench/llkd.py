"""LLKD benchmark: vanilla KD (all pseudo-labels) vs top-confidence and random subsets at LLKD's
data fraction vs LLKD, macro-F1 and the fraction of the pool trained on, mean ± std over seeds.

Writes docs/results/llkd.md (the tables, the exact command, machine, date, scale). For each
(dataset, teacher) the teacher labels one seeded pool once (split seed 0; cached in the shared
teacher cache); each benchmark seed then re-initialises the student, reshuffles its data order and
redraws the random subset. The data split is therefore *not* re-drawn per seed: the spread shows
training noise only (a smaller-scale choice that keeps teacher cost at one pool per teacher).
The top-k and random rows of a seed use the data fraction LLKD ever selected in that seed.

Every row is resumable: each (dataset, teacher, seed, row) writes its result.json and is skipped
on a rerun; student training checkpoints every epoch. Finished rows also go to the JSON store
beside the doc (docs/results/llkd.json), so later invocations with the same grid options add to
the tables even when the run folders are gone; `--report-only` rewrites the doc from it.

    python bench/llkd.py                                   # the grid of the issue (hours on a CPU)
    python bench/llkd.py --label-only                      # fill the teacher cache first
    python bench/llkd.py ... --report-only                 # rewrite the doc from docs/results/llkd.json

docs/results/llkd.md lists the commands that made its tables (smaller pools than the default).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

from _common import ROOT, SHORT, machine_line, parser, result_store, start, write_keeping_notes  # noqa: E402  (puts src/ on sys.path)
from _common import mean_std as _ms

from llmkd import api  # noqa: E402
from llmkd.build import Session  # noqa: E402
from llmkd.config import load_config  # noqa: E402
from llmkd.methods.llkd import LLKD  # noqa: E402
from llmkd.methods.vanilla import VanillaKD  # noqa: E402
from llmkd.report import write_json  # noqa: E402
from llmkd.students.checkpoint import drop_optimizer_state  # noqa: E402

ROWS = ["vanilla", "llkd", "topk", "random"]  # llkd first: topk and random use its fraction
ABLATIONS = ["llkd_epoch", "llkd_raw", "llkd_global"]
TITLES = {"vanilla": "vanilla KD (all pseudo-labels)", "topk": "top teacher confidence, LLKD's fraction",
          "random": "random subset, LLKD's fraction", "llkd": "LLKD (per step, normalised entropy)",
          "llkd_epoch": "LLKD, thresholds per epoch", "llkd_raw": "LLKD, raw entropy (τ^S_0 = 0.5 nats)",
          "llkd_global": "LLKD, no per-class adjustment"}


def method_for(row: str, fraction: float | None) -> Any:
    if row == "vanilla":
        return VanillaKD()
    opts: dict[str, Any] = {"plot": row == "llkd"}
    if row in ("topk", "random"):
        opts.update(selection=row, fraction=fraction)
    elif row == "llkd_epoch":
        opts.update(granularity="epoch")
    elif row == "llkd_raw":
        opts.update(entropy="raw")
    elif row == "llkd_global":
        opts.update(class_norm="none")
    return LLKD(**opts)


def selected_label_accuracy(selection: list[dict[str, Any]] | None, vault: Any) -> float | None:
    """Pseudo-label accuracy of the examples a selector ever kept (reporting only: pool gold)."""
    if not selection:
        return None
    rows = [r for r in selection if r["first_selected_epoch"] is not None]
    return sum(r["label"] == vault.label_of(r["id"]) for r in rows) / len(rows) if rows else None


def main() -> None:
    ap = parser(__doc__, "llkd", ["csabstruct", "trec"])
    ap.add_argument("--k", type=int, default=4, help="gold examples per class (the prompt demonstrations)")
    ap.add_argument("--dev", type=int, default=8, help="gold dev examples per class (early stopping)")
    ap.add_argument("--pool", type=int, default=1000)
    ap.add_argument("--pool-large", type=int, default=None, help="pool for the 1.5B teacher (default: --pool)")
    ap.add_argument("--pool-for", nargs="*", default=[], metavar="DATASET=N", help="per-dataset pool, e.g. trec=60")
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--min-steps", type=int, default=60, help="student.min_steps (tiny pools get more epochs)")
    ap.add_argument("--ablations", nargs="*", default=[], choices=ABLATIONS,
                    help="extra LLKD variants (rows), run for every dataset and teacher")
    ap.add_argument("--labeling", choices=["generate", "score"], default="generate",
                    help="teacher.labeling: parsed reply (+ label-set confidence) or argmax of the label scores")
    ap.add_argument("--threads", type=int, default=None, help="student.threads (1 is fastest on a crowded CPU)")
    ap.add_argument("--report-only", action="store_true", help="only tabulate rows that finished (no training)")
    ap.add_argument("--label-only", action="store_true", help="only label the pools (fills the teacher cache)")
    args = ap.parse_args()
    command, started = start("llkd")
    settings = {"k": args.k, "dev": args.dev, "pool": args.pool, "pool_large": args.pool_large,
                "pool_for": sorted(args.pool_for), "test_size": args.test_size, "epochs": args.epochs,
                "min_steps": args.min_steps, "labeling": args.labeling}
    store, store_path = result_store(args.out, settings, command)
    store.setdefault("pools", {})
    if args.report_only:
        store_path.write_text(json.dumps(store, indent=1))
        write(args, store, started)
        return
    for teacher in args.teachers:  # first teacher on every dataset first: partial results stay useful
        for ds in args.datasets:
            pool = dict(x.split("=") for x in args.pool_for).get(ds, args.pool)
            pool = int(args.pool_large if (args.pool_large and "1.5b" in teacher) else pool)
            name = SHORT.get(teacher, teacher)
            cfg = load_config(ROOT / "examples" / f"llkd_{ds}.yaml", [
                f"name=llkd-{ds}-{name}-{args.labeling}-k{args.k}-d{args.dev}-p{pool}-t{args.test_size}-e{args.epochs}-m{args.min_steps}",
                "seed=0", f"output_dir={args.runs}", f"teacher.model={teacher}", f"teacher.labeling={args.labeling}",
                f"data.split.labeled_per_class={args.k}", f"data.split.dev_per_class={args.dev}",
                f"data.split.pool_size={pool}", f"data.split.test_size={args.test_size}",
                f"student.epochs={args.epochs}", f"student.min_steps={args.min_steps}", "progress=false"]
                + ([f"student.threads={args.threads}"] if args.threads else []))
            run_dir = api.run_dir_for(cfg)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(api.dump_config(cfg))
            sess = Session(cfg)
            t0 = time.time()
            base = sess.context("vanilla", run_dir)
            labels = base.label(sess.splits.pool, stage="teacher-pool", desc=f"{ds} {name}")
            label_s = time.time() - t0
            print(f"{ds} {name}: labeled {len(labels)} in {label_s:.0f}s", flush=True)
            key = f"{ds}|{name}"
            old = store["pools"].get(key, {})
            store["pools"][key] = {"pool": pool, "teacher": name, "dataset": ds,
                                   "label_seconds": max(label_s, old.get("label_seconds", 0.0)),  # 0 when cached
                                   "pool_quality": api.pool_quality(labels, sess.vault)}
            store_path.write_text(json.dumps(store, indent=1))
            if args.label_only:
                continue
            for seed in args.seeds:
                fraction = None
                for row in ROWS + args.ablations:
                    wd = run_dir / f"seed{seed}" / row
                    done = wd / "result.json"
                    stored = store["runs"].get(f"{key}|{seed}|{row}")
                    if stored:
                        res = stored["result"]
                    elif done.exists():
                        res = json.loads(done.read_text())
                    else:
                        wd.mkdir(parents=True, exist_ok=True)
                        ctx = dataclasses.replace(sess.context("vanilla", wd), seed=seed, progress=False)
                        t1 = time.time()
                        out = method_for(row, fraction).run(ctx)
                        res = {"metrics": out.metrics, "extra": {k: v for k, v in out.extra.items() if k != "epochs"},
                               "epochs": out.extra.get("epochs"), "seconds": time.time() - t1,
                               "selected_label_accuracy": selected_label_accuracy(out.records.get("selection"), sess.vault)}
                        write_json(done, res)
                        drop_optimizer_state(wd)  # as llmkd.api.run does for a finished method
                        print(f"  {key} seed {seed} {row}: F1 {res['metrics']['macro_f1']:.3f} "
                              f"({res['seconds']:.0f}s)", flush=True)
                    if row == "llkd":
                        fraction = res["extra"]["data_fraction"]
                    store["runs"][f"{key}|{seed}|{row}"] = {"key": key, "seed": seed, "row": row, "result": res}
                    store_path.write_text(json.dumps(store, indent=1))
                write(args, store, started)
    write(args, store, started)


def write(args: argparse.Namespace, store: dict[str, Any], started: float) -> None:
    results = {key: {**pool, "rows": {}} for key, pool in store["pools"].items()}
    for run in store["runs"].values():  # rows in the order of ROWS + ABLATIONS, seeds in order
        results[run["key"]]["rows"].setdefault(run["row"], []).append((run["seed"], run["result"]))
    for r in results.values():
        r["rows"] = {row: [res for _, res in sorted(r["rows"][row], key=lambda x: x[0])]
                     for row in ROWS + ABLATIONS if row in r["rows"]}
    seeds = sorted({run["seed"] for run in store["runs"].values()})
    lines = [
        "# LLKD benchmark (generated by bench/llkd.py)",
        "",
        "Commands (in order; each adds its rows to the tables):  ",
        *[f"`{c}`  " for c in store["commands"]],
        machine_line(started, "of the last command"),
        f"Seeds {seeds}; k = {args.k} gold examples per class (prompt demonstrations), dev = {args.dev} per class "
        f"(early stopping), test subsample = {args.test_size}; student all-MiniLM-L6-v2 (max_length 64), up to "
        f"{args.epochs} epochs; teacher llama.cpp, teacher.labeling={args.labeling} (generate: the parsed reply; "
        "score: the argmax of the label-set scores), confidence = the label's probability normalised over the label set.",
        "",
    ]
    for key, r in results.items():
        lines += [f"## {r['dataset']}, teacher {r['teacher']} (pool {r['pool']})", ""]
        q = r["pool_quality"]
        if q:
            lines.append(f"Pseudo-label accuracy on the pool: {q['pseudo-label accuracy (answered)']:.3f} "
                         f"(scored afterwards against the pool's gold; labeling took {r['label_seconds']:.0f} s "
                         "when first computed, 0 if it came from the cache).")
            lines.append("")
        if not r["rows"]:
            continue
        lines += ["| row | macro-F1 | accuracy | data used | label acc. of used | epochs | n seeds |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for row, res in r["rows"].items():
            f1 = [x["metrics"]["macro_f1"] for x in res]
            acc = [x["metrics"]["accuracy"] for x in res]
            frac = [x["extra"].get("data_fraction", 1.0) for x in res]
            sel = [x.get("selected_label_accuracy") for x in res]
            if row == "vanilla":
                sel = [q.get("pseudo-label accuracy (answered)")] * len(res) if q else []
            ep = [x["extra"]["training"]["epoch"] for x in res]
            lines.append(f"| {TITLES[row]} | {_ms(f1)} | {_ms(acc)} | {_ms(frac, '{:.1%}')} | {_ms(sel)} | "
                         f"{_ms(ep, '{:.1f}')} | {len(res)} |")
        lines.append("")
    write_keeping_notes(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
