"""LLKD benchmark: vanilla KD (all pseudo-labels) vs top-confidence and random subsets at LLKD's
data fraction vs LLKD, macro-F1 and the fraction of the pool trained on, mean ± std over seeds.

Writes docs/results/llkd.md (the tables, the exact command, machine, date, scale). For each
(dataset, teacher, seed) the split is redrawn with the benchmark seed (labeled shots, dev, pool,
test) and the teacher labels that pool (cached in the shared teacher cache); the seed also
re-initialises the student, reshuffles its data order and redraws the random subset.
`--fixed-split` keeps split seed 0 for every seed (one pool per teacher: the spread then shows
training noise only; the tables of before issue 28 were made so).
The top-k and random rows of a seed use the data fraction LLKD ever selected in that seed.

`--budgets P ...` trains every row under a step budget (student.max_steps) of P passes over the
pool (P x ceil(pool / batch size) steps; LLKD counts each drawn mini-batch as a step, see
docs/methods/llkd.md), one table block per budget; the tables then give the dev macro-F1 (the
score defaults are chosen on), the share of the pool ever trained on and the mean share of each
selection batch kept.

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
import math
import time
from typing import Any

from _common import ROOT, SHORT, add_set_arg, doc_machine_line, parser, result_store, save_store, start, write_keeping_notes  # noqa: E402  (puts src/ on sys.path)
from _common import mean_std as _ms

from llmkd import api  # noqa: E402
from llmkd.build import Session  # noqa: E402
from llmkd.config import load_config  # noqa: E402
from llmkd.methods.llkd import LLKD  # noqa: E402
from llmkd.methods.vanilla import VanillaKD  # noqa: E402
from llmkd.report import write_json  # noqa: E402
from llmkd.students.checkpoint import drop_optimizer_state  # noqa: E402

ROWS = ["vanilla", "llkd", "topk", "random"]  # llkd first: topk and random use its fraction
ABLATIONS = ["llkd_epoch", "llkd_raw", "llkd_global", "llkd_batchnorm", "llkd_keptnorm", "llkd_datainit",
             "llkd_fixedinit", "llkd_m080", "llkd_m099", "llkd_noweight"]
TITLES = {"vanilla": "vanilla KD (all pseudo-labels)", "topk": "top teacher confidence, LLKD's fraction",
          "random": "random subset, LLKD's fraction", "llkd": "LLKD (per step, normalised entropy)",
          "llkd_epoch": "LLKD, thresholds per epoch", "llkd_raw": "LLKD, raw entropy (τ^S_0 = 0.5 nats)",
          "llkd_global": "LLKD, no per-class adjustment", "llkd_batchnorm": "LLKD, loss_norm: batch",
          "llkd_keptnorm": "LLKD, loss_norm: kept", "llkd_datainit": "LLKD, warm_start: data",
          "llkd_fixedinit": "LLKD, warm_start: fixed (1/C, 0.5)", "llkd_m080": "LLKD, momentum 0.8",
          "llkd_m099": "LLKD, momentum 0.99", "llkd_noweight": "LLKD, loss weight 1 (selection only)"}
ROW_OPTIONS = {"llkd_epoch": {"granularity": "epoch"}, "llkd_raw": {"entropy": "raw"},
               "llkd_global": {"class_norm": "none"}, "llkd_batchnorm": {"loss_norm": "batch"},
               "llkd_keptnorm": {"loss_norm": "kept"}, "llkd_datainit": {"warm_start": "data"},
               "llkd_fixedinit": {"warm_start": "fixed"}, "llkd_m080": {"momentum": 0.8},
               "llkd_m099": {"momentum": 0.99}, "llkd_noweight": {"weighting": "none"}}


def method_for(row: str, fraction: float | None) -> Any:
    if row == "vanilla":
        return VanillaKD()
    opts: dict[str, Any] = {"plot": row == "llkd"}
    if row in ("topk", "random"):
        opts.update(selection=row, fraction=fraction)
    opts.update(ROW_OPTIONS.get(row, {}))
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
    ap.add_argument("--budgets", nargs="*", type=float, default=[],
                    help="step budgets in passes over the pool (e.g. 0.25 1); none = train by --epochs")
    ap.add_argument("--fixed-split", action="store_true", help="split seed 0 for every seed (the split is not redrawn)")
    ap.add_argument("--report-only", action="store_true", help="only tabulate rows that finished (no training)")
    ap.add_argument("--label-only", action="store_true", help="only label the pools (fills the teacher cache)")
    add_set_arg(ap, "teacher.n_threads=1")
    args = ap.parse_args()
    command, started = start("llkd")
    settings = {"k": args.k, "dev": args.dev, "pool": args.pool, "pool_large": args.pool_large,
                "pool_for": sorted(args.pool_for), "test_size": args.test_size, "epochs": args.epochs,
                "min_steps": args.min_steps, "labeling": args.labeling}
    if args.budgets or not args.fixed_split:  # the tables of before issue 28: fixed split, no budgets
        settings.update(budgets=args.budgets, split="fixed (seed 0)" if args.fixed_split else "redrawn per seed")
    store, store_path = result_store(args.out, settings, command, fresh=args.fresh, report_only=args.report_only)
    store.setdefault("pools", {})
    if args.report_only:  # nothing measured, nothing to store: the doc is redrawn from the store as read
        write(args, store, started)
        return
    for teacher in args.teachers:  # first teacher on every dataset first: partial results stay useful
        for ds in args.datasets:
            pool = dict(x.split("=") for x in args.pool_for).get(ds, args.pool)
            pool = int(args.pool_large if (args.pool_large and "1.5b" in teacher) else pool)
            name = SHORT.get(teacher, teacher)
            key = f"{ds}|{name}"
            for split_seed in sorted({0 if args.fixed_split else s for s in args.seeds}):
                sess, run_dir = session(args, ds, teacher, name, pool, split_seed)
                t0 = time.time()
                base = sess.context("vanilla", run_dir)
                labels = base.label(sess.splits.pool, stage="teacher-pool", desc=f"{ds} {name}")
                label_s = time.time() - t0
                print(f"{ds} {name} split {split_seed}: labeled {len(labels)} in {label_s:.0f}s", flush=True)
                old = store["pools"].get(key, {})
                quality = {**old.get("quality_by_split", {}), str(split_seed): api.pool_quality(labels, sess.vault)}
                store["pools"][key] = {"pool": pool, "teacher": name, "dataset": ds,
                                       "max_length": sess.cfg.student.max_length,
                                       "label_seconds": max(label_s, old.get("label_seconds", 0.0)),  # 0 when cached
                                       "pool_quality": quality[str(split_seed)], "quality_by_split": quality}
                save_store(store, store_path)
                if args.label_only:
                    continue
                for seed in [s for s in args.seeds if args.fixed_split or s == split_seed]:
                    for budget in args.budgets or [None]:
                        run_rows(args, store, store_path, sess, run_dir, key, seed, budget, pool)
                    write(args, store, started)
    write(args, store, started)


def session(args: argparse.Namespace, ds: str, teacher: str, name: str, pool: int, split_seed: int) -> tuple[Any, Any]:
    """The benchmark's config for one dataset, teacher and split seed, its Session and run folder."""
    split = "" if args.fixed_split else f"-s{split_seed}"
    cfg = load_config(ROOT / "examples" / f"llkd_{ds}.yaml", [
        f"name=llkd-{ds}-{name}-{args.labeling}-k{args.k}-d{args.dev}-p{pool}-t{args.test_size}-e{args.epochs}-m{args.min_steps}{split}",
        f"seed={split_seed}", f"output_dir={args.runs}", f"teacher.model={teacher}", f"teacher.labeling={args.labeling}",
        f"data.split.labeled_per_class={args.k}", f"data.split.dev_per_class={args.dev}",
        f"data.split.pool_size={pool}", f"data.split.test_size={args.test_size}",
        f"student.epochs={args.epochs}", f"student.min_steps={args.min_steps}", "progress=false"]
        + ([f"student.threads={args.threads}"] if args.threads else []) + args.set)
    run_dir = api.run_dir_for(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(api.dump_config(cfg))
    return Session(cfg), run_dir


def row_key(row: str, budget: float | None) -> str:
    return row if budget is None else f"{row}@{budget:g}"


def run_rows(args: argparse.Namespace, store: dict[str, Any], store_path: Any, sess: Any, run_dir: Any, key: str,
             seed: int, budget: float | None, pool: int) -> None:
    """Every row of one (dataset, teacher, seed, budget); each is skipped when stored or done."""
    fraction = None
    max_steps = None if budget is None else max(1, round(budget * math.ceil(pool / sess.cfg.student.batch_size)))
    for row in ROWS + args.ablations:
        name = row_key(row, budget)
        wd = run_dir / f"seed{seed}" / name
        done = wd / "result.json"
        stored = store["runs"].get(f"{key}|{seed}|{name}")
        if stored:
            res = stored["result"]
        elif done.exists():
            res = json.loads(done.read_text())
        else:
            wd.mkdir(parents=True, exist_ok=True)
            ctx = dataclasses.replace(sess.context("vanilla", wd), seed=seed, progress=False)
            ctx = dataclasses.replace(ctx, train=dataclasses.replace(ctx.train, max_steps=max_steps))
            t1 = time.time()
            out = method_for(row, fraction).run(ctx)
            res = {"metrics": out.metrics, "extra": {k: v for k, v in out.extra.items() if k not in ("epochs", "trace")},
                   "epochs": out.extra.get("epochs"), "seconds": time.time() - t1, "max_steps": max_steps,
                   "batch_size": ctx.train.batch_size,
                   "selected_label_accuracy": selected_label_accuracy(out.records.get("selection"), sess.vault)}
            write_json(done, res)
            drop_optimizer_state(wd)  # as llmkd.api.run does for a finished method
            print(f"  {key} seed {seed} {name}: F1 {res['metrics']['macro_f1']:.3f} "
                  f"dev {res['extra']['training']['best_score']:.3f} ({res['seconds']:.0f}s)", flush=True)
        if row == "llkd":
            fraction = max(res["extra"]["data_fraction"], 1 / max(1, res["extra"]["pool_answered"]))
        store["runs"][f"{key}|{seed}|{name}"] = {"key": key, "seed": seed, "row": row, "budget": budget, "result": res}
        save_store(store, store_path)


def max_lengths(store: dict[str, Any]) -> str:
    """The student's max_length, one value or per dataset (each examples/llkd_*.yaml sets its own)."""
    by_ds = {p["dataset"]: p.get("max_length", 64) for p in store["pools"].values()}  # 64: stores of before
    values = set(by_ds.values())
    if len(values) == 1:
        return str(values.pop())
    return ", ".join(f"{d} {v}" for d, v in sorted(by_ds.items())) or "–"


def data_used(row: str, res: dict[str, Any], batch_size: int) -> float:
    """Share of the answered pool trained on: LLKD's rows count it; vanilla saw min(1, steps·B/n)."""
    if row != "vanilla":
        return res["extra"].get("data_fraction", 1.0)
    steps, n = res["extra"]["training"].get("steps"), res["extra"]["n_train"]
    return 1.0 if not steps or res.get("max_steps") is None else min(1.0, steps * batch_size / n)


def split_label_accuracy(by_split: dict[str, Any], seed: int) -> float | None:
    """Pseudo-label accuracy of the pool a seed trained on: its own split's, or the one split when it is fixed."""
    q = by_split.get(str(seed)) or (next(iter(by_split.values())) if len(by_split) == 1 else None)
    return (q or {}).get("pseudo-label accuracy (answered)")


def write(args: argparse.Namespace, store: dict[str, Any], started: float) -> None:
    results = {key: {**pool, "blocks": {}} for key, pool in store["pools"].items()}
    for run in store["runs"].values():  # one block per budget; rows in the order of ROWS + ABLATIONS, seeds in order
        block = results[run["key"]]["blocks"].setdefault(run.get("budget"), {})
        block.setdefault(run["row"], []).append((run["seed"], run["result"]))
    for r in results.values():
        r["blocks"] = {b: {row: sorted(rows[row], key=lambda x: x[0])  # (seed, result) pairs
                           for row in ROWS + ABLATIONS if row in rows}
                       for b, rows in sorted(r["blocks"].items(), key=lambda x: -1 if x[0] is None else x[0])}
    seeds = sorted({run["seed"] for run in store["runs"].values()})
    split = store["settings"].get("split", "fixed (seed 0)")
    lines = [
        "# LLKD benchmark (generated by bench/llkd.py)",
        "",
        "Commands (in order; each adds its rows to the tables):  ",
        *[f"`{c}`  " for c in store["commands"]],
        doc_machine_line(args, started),
        f"Seeds {seeds}; data split {split}; k = {args.k} gold examples per class (prompt demonstrations), dev = "
        f"{args.dev} per class (early stopping; the dev column), test subsample = {args.test_size}; student "
        f"all-MiniLM-L6-v2 (max_length {max_lengths(store)}), up to {args.epochs} epochs or the step budget of the block; teacher "
        f"llama.cpp, teacher.labeling={args.labeling} (generate: the parsed reply; score: the argmax of the label-set "
        "scores), confidence = the label's probability normalised over the label set.",
        "",
    ]
    budgeted = any(b is not None for r in results.values() for b in r["blocks"])
    for key, r in results.items():
        lines += [f"## {r['dataset']}, teacher {r['teacher']} (pool {r['pool']})", ""]
        by_split = r.get("quality_by_split") or {"0": r["pool_quality"]}
        accs = [q["pseudo-label accuracy (answered)"] for q in by_split.values() if q]
        if accs:
            lines.append(f"Pseudo-label accuracy on the pool: {_ms(accs)} over {len(accs)} split(s) (scored afterwards "
                         f"against the pool's gold; labeling took {r['label_seconds']:.0f} s when first computed, 0 if "
                         "it came from the cache).")
            lines.append("")
        for budget, rows in r["blocks"].items():
            if budget is not None:
                lines += [f"Step budget {budget:g} pass(es) over the pool.", ""]
            head = "| row | macro-F1 | accuracy |" + (" dev macro-F1 | kept per batch | steps |" if budgeted else "")
            lines += [head + " data used | label acc. of used | epochs | n seeds |",
                      "|---|---:|---:|" + ("---:|---:|---:|" if budgeted else "") + "---:|---:|---:|---:|"]
            for row, pairs in rows.items():
                res = [x for _, x in pairs]
                f1 = [x["metrics"]["macro_f1"] for x in res]
                acc = [x["metrics"]["accuracy"] for x in res]
                frac = [data_used(row, x, x.get("batch_size", 16)) for x in res]
                sel = [x.get("selected_label_accuracy") for x in res]
                if row == "vanilla":  # every pseudo-label of the seed's split
                    sel = [a for a in (split_label_accuracy(by_split, s) for s, _ in pairs) if a is not None]
                ep = [x["extra"]["training"]["epoch"] for x in res]
                extra = ""
                if budgeted:
                    dev = [x["extra"]["training"]["best_score"] for x in res]
                    kept = [x["extra"].get("batch_kept_fraction", 1.0) for x in res]
                    steps = [x["extra"]["training"].get("steps") for x in res]
                    extra = f" {_ms(dev)} | {_ms(kept, '{:.1%}')} | {_ms(steps, '{:.0f}')} |"
                lines.append(f"| {TITLES[row]} | {_ms(f1)} | {_ms(acc)} |{extra} {_ms(frac, '{:.1%}')} | {_ms(sel)} | "
                             f"{_ms(ep, '{:.1f}')} | {len(res)} |")
            lines.append("")
    write_keeping_notes(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
