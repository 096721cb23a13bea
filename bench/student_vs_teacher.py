"""Student vs teacher: what closes the gap between a distilled student and its few-shot teacher.

Writes docs/results/student_vs_teacher.md (the tables, the exact commands, machine, CPU, date,
seeds). For each (dataset, teacher, pool size, seed) one `llmkd run` of examples/<dataset>.yaml
labels the test subsample and the pool (rows: teacher few-shot, supervised-k, and the first
student configuration); every further student configuration is another `llmkd run` of the
vanilla method over the same, cached teacher answers (no new teacher calls), plus the same
student trained on the pool's gold labels. A student configuration is the student model, its
targets (hard: the teacher's label; soft: its label distribution; mix: both, see
docs/students.md) and class balancing.

    python bench/student_vs_teacher.py                               # the issue's grid
    python bench/student_vs_teacher.py --datasets sst2 --seeds 0 --pools 1000 --students minilm

`--lrs` adds a learning-rate sweep of each student (hard targets), chosen on the dev set
(8 per class), never on test: the table marks the chosen rate.

Results accumulate in docs/results/student_vs_teacher.json (keyed by dataset, teacher, pool,
configuration and seed; a killed run resumes from its run folders and the teacher cache).
`--report-only` rewrites the doc from the store.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _common import ROOT, SHORT, doc_machine_line, parser, result_store, save_store, start, write_keeping_notes  # noqa: E402
from _common import mean_std as _ms

from llmkd import api  # noqa: E402
from llmkd.config import load_config  # noqa: E402

STUDENTS = {"minilm": "all-minilm-l6-v2", "mpnet": "all-mpnet-base-v2"}
STUDENT_NAME = {"minilm": "MiniLM-L6", "mpnet": "mpnet-base"}
DEFAULT_LR = 1e-4  # StudentConfig.lr


def epoch_counts(args: argparse.Namespace) -> list[int]:
    """The epoch counts the rows are trained with: the table's (unless --no-base-epochs), then --more-epochs."""
    return ([] if args.no_base_epochs else [args.epochs]) + [e for e in args.more_epochs if e != args.epochs]


def variants(args: argparse.Namespace) -> list[dict]:
    """The student configurations of one cell, the first one run with the teacher rows."""
    out = []
    for epochs in epoch_counts(args):
        base = {"balance": False, "lr": DEFAULT_LR, "mix_gold": False, "epochs": epochs}
        for st in args.students:
            for tg in args.targets:
                out.append({**base, "student": st, "targets": tg})
            if args.balance:
                out.append({**base, "student": st, "targets": "hard", "balance": True})
            if args.mix_gold:
                out.append({**base, "student": st, "targets": "hard", "mix_gold": True})
            for lr in args.lrs:
                if lr != DEFAULT_LR:
                    out.append({**base, "student": st, "targets": "hard", "lr": lr})
    return out


def _epochs(v: dict, args: argparse.Namespace) -> str:
    """The label's suffix for a row trained with more than the table's epochs."""
    return "" if v["epochs"] == args.epochs else f", {v['epochs']} epochs"


def tag(v: dict, args: argparse.Namespace) -> str:
    return f"{v['student']}-{v['targets']}" + ("-bal" if v["balance"] else "") + (
        "" if v["lr"] == DEFAULT_LR else f"-lr{v['lr']:g}") + ("-gold" if v["mix_gold"] else "") + (
        "" if v["epochs"] == args.epochs else f"-ep{v['epochs']}")


def label(v: dict, args: argparse.Namespace) -> str:
    return (f"vanilla KD, {STUDENT_NAME[v['student']]}, {v['targets']}" + (", balanced" if v["balance"] else "")
            + ("" if v["lr"] == DEFAULT_LR else f", lr {v['lr']:g}")
            + (", + the k gold" if v["mix_gold"] else "") + _epochs(v, args))


def main() -> None:
    ap = parser(__doc__, "student_vs_teacher", ["sst2", "trec", "ag_news", "banking77"])
    ap.add_argument("--pools", nargs="+", type=int, default=[1000, 5000])
    ap.add_argument("--students", nargs="+", choices=sorted(STUDENTS), default=["minilm", "mpnet"])
    ap.add_argument("--targets", nargs="*", choices=["hard", "soft", "mix"], default=["hard", "soft", "mix"],
                    help="the plain rows' targets; none (`--targets` alone): only the --balance / --mix-gold / --lrs "
                         "rows, and no pool's-gold row (it comes with the plain hard row)")
    ap.add_argument("--balance", action="store_true", help="add each student with class-balanced hard targets")
    ap.add_argument("--lrs", nargs="*", type=float, default=[], help="learning rates to sweep (hard targets)")
    ap.add_argument("--mix-gold", action="store_true",
                    help="add each student with hard targets and the k gold examples mixed in (method_options."
                         "vanilla.mix_gold)")
    ap.add_argument("--more-epochs", nargs="*", type=int, default=[],
                    help="also run every row (supervised-k, the students, the pool's gold) with up to this many "
                         "epochs; early stopping as usual. For tasks whose dev score still rises at --epochs")
    ap.add_argument("--no-base-epochs", action="store_true",
                    help="run only the --more-epochs rows (the teacher rows come with the first of them)")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--n-threads", type=int, default=None, help="teacher threads (1 when other jobs share the CPU)")
    ap.add_argument("--no-confidence", action="store_true",
                    help="teacher.confidence: false (the label set is not scored: hard rows only; BANKING77's 77 "
                         "labels cost about 4x the reply)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if args.no_confidence and set(args.targets) - {"hard"}:
        ap.error("--no-confidence gives no label distribution, so --targets can only be hard")
    if not epoch_counts(args):  # only --no-base-epochs empties it
        ap.error(f"--no-base-epochs drops the {args.epochs}-epoch rows, so give --more-epochs with another count "
                 "(e.g. --more-epochs 20), or leave --no-base-epochs out")
    if not variants(args):
        ap.error("no student rows to run: give --targets, or --balance, --mix-gold or --lrs")
    command, started = start("student_vs_teacher")
    settings = {"k": args.k, "test_size": args.test_size, "epochs": args.epochs}
    store, store_path = result_store(args.out, settings, command, fresh=args.fresh, report_only=args.report_only)
    if args.report_only:
        write(args, store, started)
        return
    for ds in args.datasets:
        for teacher in args.teachers:
            for pool in args.pools:
                for seed in args.seeds:
                    seen: set[int] = set()
                    for v in variants(args):  # the teacher and supervised-k rows with the first of each epochs
                        run_cell(args, store, store_path, started, ds, teacher, pool, seed, v,
                                 first=v["epochs"] not in seen)
                        seen.add(v["epochs"])
                    for v in variants(args):  # the gold rows last: they do not tell targets apart
                        if is_plain(v):
                            run_cell(args, store, store_path, started, ds, teacher, pool, seed, v, first=False,
                                     gold=True)


def is_plain(v: dict) -> bool:
    """The student's default configuration (hard targets, no balancing, default lr): its run
    folder also trains the same student on the pool's gold labels."""
    return v["targets"] == "hard" and not v["balance"] and v["lr"] == DEFAULT_LR and not v["mix_gold"]


def run_cell(args: argparse.Namespace, store: dict, store_path, started: float, ds: str, teacher: str, pool: int,
             seed: int, v: dict, *, first: bool, gold: bool = False) -> None:
    """One `llmkd run`: the variant's vanilla KD (with the teacher rows when ``first``), or with
    ``gold`` the supervised-on-the-pool's-gold row in the same run folder."""
    name = SHORT.get(teacher, teacher)
    prefix = f"{ds}/{name}/{pool}"
    gold_label = f"supervised on the pool's gold, {STUDENT_NAME[v['student']]}" + _epochs(v, args)
    key = f"{prefix}/{gold_label if gold else label(v, args)}/{seed}"
    if key in store["runs"]:
        return
    methods = ["supervised_full"] if gold else (["teacher", "supervised"] if first else []) + ["vanilla"]
    overrides = [
        f"name={ds}-{name}-p{pool}-k{args.k}-t{args.test_size}-e{args.epochs}-s{seed}-{tag(v, args)}" + ("-noconf" if args.no_confidence else ""),
        f"seed={seed}", f"output_dir={args.runs}", f"teacher.model={teacher}",
        f"data.split.labeled_per_class={args.k}", f"data.split.dev_per_class={args.k}",
        f"data.split.pool_size={pool}", f"data.split.test_size={args.test_size}",
        f"student.model={STUDENTS[v['student']]}", f"student.targets={v['targets']}",
        f"student.class_balance={str(v['balance']).lower()}", f"student.lr={v['lr']}",
        f"student.epochs={v['epochs']}", f"methods={json.dumps(methods)}", "progress=false",
        f"teacher.gate={'warn' if first and not gold else 'off'}",
    ] + ([f"teacher.n_threads={args.n_threads}"] if args.n_threads else []) + (
        ["teacher.confidence=false"] if args.no_confidence else []) + (
        ["method_options.vanilla.mix_gold=true"] if v["mix_gold"] else [])  # only then: older run folders have none
    cfg = load_config(ROOT / "examples" / f"{ds}.yaml", overrides)
    t0 = time.time()
    summary = api.run(cfg)
    wall = time.time() - t0
    print(f"{ds} {name} pool {pool} seed {seed} {tag(v, args)}: {wall:.0f}s", flush=True)
    pool_metrics = json.loads((summary.run_dir / "metrics.json").read_text()).get("pool", {})
    for m, res in summary.results.items():
        row = {"teacher": f"teacher few-shot ({name})", "supervised": ("supervised-k (k gold per class), MiniLM-L6"
               if v["student"] == "minilm" else f"supervised-k, {STUDENT_NAME[v['student']]}") + _epochs(v, args),
               "vanilla": label(v, args), "supervised_full": gold_label}[m]
        training = (res.get("extra") or {}).get("training") or {}
        entry = {"dataset": ds, "teacher": name, "pool": pool, "label": row, "seed": seed,
                 "metrics": res["metrics"], "dev": training.get("best_score"), "timings": res.get("timings", {}),
                 "lr": v["lr"], "student": v["student"], "targets": v["targets"], "balance": v["balance"],
                 "confidence": not args.no_confidence, "mix_gold": v["mix_gold"], "epochs": v["epochs"]}
        if m == "vanilla":
            entry["pool_label_accuracy"] = pool_metrics.get("pseudo-label accuracy (all, abstention = wrong)")
            entry["wall_seconds"] = wall if not first else None
        if m == "supervised_full":
            entry["wall_seconds"] = wall
        store["runs"][f"{prefix}/{row}/{seed}"] = entry
    save_store(store, store_path)
    write(args, store, started)


def _paired(by_seed_a: dict[int, float], by_seed_b: dict[int, float]) -> list[float]:
    return [by_seed_a[s] - by_seed_b[s] for s in by_seed_a if s in by_seed_b]


def write(args: argparse.Namespace, store: dict, started: float) -> None:
    cells: dict[str, dict[str, list[dict]]] = {}
    for run in store["runs"].values():
        cells.setdefault(f"{run['dataset']} — teacher {run['teacher']}, pool {run['pool']}", {}) \
             .setdefault(run["label"], []).append(run)
    s = store["settings"]
    lines = [
        "# Student vs teacher",
        "",
        "Commands (in order; each adds its runs to the tables):  ",
        *[f"`{c}`  " for c in store["commands"]],
        doc_machine_line(args, started),
        f"Seeds: {sorted({r['seed'] for r in store['runs'].values()})} (each seed draws the k-shot labeled set, the "
        f"demonstrations, the dev set, the pool and the test subsample, and initialises the student). k = {s['k']} "
        f"gold per class (labeled set, demonstrations) and {s['k']} per class for dev; test subsample "
        f"{s['test_size']}; students up to {s['epochs']} epochs (a row marked \"N epochs\": up to N; more for tiny "
        "sets, min 60 steps), early stopping on the dev set (patience 3); \"+ the k gold\": the k gold examples "
        "mixed into the pool (method_options.vanilla.mix_gold); teacher prompt classify.v2, greedy, confidence from scoring the label set (the soft "
        "targets' distribution, from the cache).",
        "",
        "Numbers: test macro-F1 and accuracy, mean ± std over seeds; \"Δ teacher\" is the row's macro-F1 minus "
        "the teacher's, paired by seed; \"dev\" is the dev macro-F1 early stopping kept (what a user sees "
        "before test); \"train s\" the wall time of that row's `llmkd run` with the teacher's answers cached.",
        "",
    ]
    soft_vs_hard: list[float] = []
    for cell, rows in sorted(cells.items()):
        teacher_rows = [r for label_, rs in rows.items() if label_.startswith("teacher") for r in rs]
        t_by_seed = {r["seed"]: r["metrics"]["macro_f1"] for r in teacher_rows}
        if any(r.get("confidence") is False for rs in rows.values() for r in rs):
            cell += " (teacher.confidence off: hard targets only)"
        lines += [f"## {cell}", "", "| row | macro-F1 | accuracy | Δ teacher | dev | pool label acc | train s | n |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        order = ["teacher", "supervised-k", "vanilla", "supervised on"]
        for prefix in order:
            for row, rs in rows.items():
                if not row.startswith(prefix):
                    continue
                f1 = {r["seed"]: r["metrics"]["macro_f1"] for r in rs}
                delta = _paired(f1, t_by_seed) if not row.startswith("teacher") else []
                walls = [r["wall_seconds"] for r in rs if r.get("wall_seconds")]
                lines.append(f"| {row} | {_ms(list(f1.values()))} | {_ms([r['metrics']['accuracy'] for r in rs])} | "
                             f"{_ms(delta, '{:+.3f}')} | {_ms([r['dev'] for r in rs])} | "
                             f"{_ms([r.get('pool_label_accuracy') for r in rs])} | "
                             f"{(f'{statistics.mean(walls):.0f}' if walls else '–')} | {len(rs)} |")
        lines.append("")
        # soft vs hard, same student, pool and seed
        for st in STUDENT_NAME.values():
            hard = {r["seed"]: r["metrics"]["macro_f1"] for r in rows.get(f"vanilla KD, {st}, hard", [])}
            for tg in ("soft", "mix"):
                soft = {r["seed"]: r["metrics"]["macro_f1"] for r in rows.get(f"vanilla KD, {st}, {tg}", [])}
                soft_vs_hard += [(tg, d) for d in _paired(soft, hard)]  # type: ignore[misc]
        sweep = {r[0]["lr"]: r for label_, r in rows.items() if label_.startswith("vanilla KD") and
                 r[0]["targets"] == "hard" and not r[0]["balance"] and r[0]["student"] == "minilm"}
        if len(sweep) > 1:
            best = max(sweep, key=lambda lr: statistics.mean(x["dev"] or 0 for x in sweep[lr]))
            lines += [f"Learning-rate sweep (MiniLM-L6, hard targets): chosen on dev: **{best:g}** "
                      f"(dev {statistics.mean(x['dev'] for x in sweep[best]):.3f}; test macro-F1 "
                      f"{statistics.mean(x['metrics']['macro_f1'] for x in sweep[best]):.3f}).", ""]
    if soft_vs_hard:
        lines += ["## Soft / mix against hard targets (same student, pool and seed)", "",
                  "| targets | cells | mean Δ macro-F1 vs hard | soft better in |", "|---|---:|---:|---:|"]
        for tg in ("soft", "mix"):
            ds_ = [d for t, d in soft_vs_hard if t == tg]
            if ds_:
                lines.append(f"| {tg} | {len(ds_)} | {statistics.mean(ds_):+.3f} | {sum(d > 0 for d in ds_)}/{len(ds_)} |")
        lines.append("")
    write_keeping_notes(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
