"""EvoKD benchmark: supervised-k vs generation without feedback vs vanilla KD vs EvoKD vs
supervised full-shot, with a "% of full-shot" column. Writes docs/results/evokd.md.

Every (dataset, k, seed) is an ordinary `llmkd run` of examples/evokd_<dataset>.yaml (or
examples/<dataset>.yaml for TREC) with overrides, so a killed benchmark resumes where it stopped
(teacher answers are cached, finished methods and finished EvoKD rounds are kept). The full-shot
row is a separate run per seed with a larger gold pool (``--full-pool``), since it does not
depend on k or on the teacher. Results accumulate in docs/results/evokd.json (keyed by teacher,
dataset, k, seed and method; reset when the grid settings change), so cells run by separate
invocations, or on machines whose run folders are gone, stay in one table.

    python bench/evokd.py                                   # the issue's grid (hours on a CPU)
    python bench/evokd.py --datasets sst2 --k 1 --seeds 0   # one cell; the doc says which
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import ROOT, SHORT, machine_line, mean_std, parser, result_store, start, write_keeping_notes  # noqa: E402  (puts src/ on sys.path)

from llmkd import api  # noqa: E402
from llmkd.config import load_config  # noqa: E402

CONFIG = {"sst2": "evokd_sst2.yaml", "trec": "trec.yaml", "conll03": "evokd_conll03.yaml"}
ROWS = [("supervised", "supervised-k (gold seeds only)"), ("synth_nofeedback", "generation without feedback"),
        ("vanilla", "vanilla KD (teacher labels a pool)"), ("evokd", "EvoKD"),
        ("supervised_full", "supervised full-shot (gold pool)")]


def grid_dir(args: argparse.Namespace, teacher: str) -> Path:
    """The folder of one teacher's grid under ``--runs``, named by the grid options that change its results.

    ``bench/evokd_labels.py`` reads the same folders through this function.
    """
    return Path(args.runs) / (f"{teacher}-r{args.rounds}x{args.per_round}-p{args.pool}-t{args.test_size}"
                              f"-e{args.epochs}-m{args.min_steps}" + (f"-thr{args.threads}" if args.threads else ""))


def split_overrides(ds: str, k: int, pool: int, test_size: int) -> list[str]:
    """k-shot: k gold examples per class; for NER (no classes) 4*k sentences in total."""
    if ds == "conll03":
        return [f"data.split.labeled_n={4 * k}", f"data.split.pool_size={pool}", f"data.split.test_size={test_size}"]
    return [f"data.split.labeled_per_class={k}", f"data.split.pool_size={pool}", f"data.split.test_size={test_size}"]


def main() -> None:
    ap = parser(__doc__, "evokd", ["sst2", "trec", "conll03"], dataset_choices=sorted(CONFIG))
    ap.add_argument("--k", nargs="+", type=int, default=[1, 8], help="gold examples per class (NER: 4k sentences)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--per-round", type=int, default=6, help="LLM samples asked for per round (half hard, half easy)")
    ap.add_argument("--pool", type=int, default=50, help="unlabeled pool for vanilla KD")
    ap.add_argument("--full-pool", type=int, default=500, help="gold pool of the full-shot row")
    ap.add_argument("--test-size", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--min-steps", type=int, default=30)
    ap.add_argument("--ner-min-steps", type=int, default=60,
                    help="min_steps of the NER student: a tagger tags everything O for its first ~15 steps (the "
                         "library default, 60; at 30, 32 gold sentences were still learning: dev F1 0.25 and rising)")
    ap.add_argument("--no-vanilla", action="store_true")
    ap.add_argument("--full-only", action="store_true", help="run only the full-shot rows (e.g. in a second process)")
    ap.add_argument("--no-full", action="store_true", help="skip the full-shot rows")
    ap.add_argument("--report-only", action="store_true", help="no runs: write the doc from the finished methods found")
    ap.add_argument("--methods", nargs="+", default=None, help="run only these methods of each cell (parallel processes)")
    ap.add_argument("--threads", type=int, default=None,
                    help="teacher.n_threads and student.threads (1 avoids spin-waiting threads on a busy CPU)")
    args = ap.parse_args()
    command, started = start("evokd")
    hard = args.per_round // 2
    synth = {"rounds": args.rounds, "n_hard": hard, "n_easy": args.per_round - hard}
    settings = {"rounds": args.rounds, "per_round": args.per_round, "pool": args.pool, "full_pool": args.full_pool,
                "test_size": args.test_size, "epochs": args.epochs, "min_steps": args.min_steps,
                "ner_min_steps": args.ner_min_steps,
                "round_min_steps": "student.min_steps"}  # EvoKD's per-round floor (the tables before it: doc notes)
    store, store_path = result_store(args.out, settings, command)

    def keep(teacher: str, ds: str, k: int | None, seed: int, results: dict[str, dict]) -> None:
        for m, res in results.items():
            store["runs"][f"{teacher}|{ds}|{k}|{seed}|{m}"] = {
                "teacher": teacher, "dataset": ds, "k": k, "seed": seed, "method": m, "result": _slim(res)}
        store_path.write_text(json.dumps(store, indent=1) + "\n")
        write(args, store, started)

    for model, ds, seed in ((t, d, s) for t in args.teachers for d in args.datasets for s in args.seeds):
        teacher = SHORT.get(model, model)
        out_dir = grid_dir(args, teacher)
        # the grid's rounds and samples replace the example's; its other options (NER: longer samples,
        # min_words) stay, with 30 tokens a sample and 100 analysis tokens where it names none
        base = load_config(ROOT / "examples" / CONFIG[ds]).method_options
        opts = {m: {"tokens_per_sample": 30, **({"analysis_max_tokens": 100} if m == "evokd" else {}),
                    **base.get(m, {}), **synth} for m in ("evokd", "synth_nofeedback")}
        common = [f"seed={seed}", f"output_dir={out_dir}", f"teacher.model={model}",
                  f"student.epochs={args.epochs}", "progress=false",
                  f"student.min_steps={args.ner_min_steps if ds == 'conll03' else args.min_steps}",
                  *([f"teacher.n_threads={args.threads}", f"student.threads={args.threads}"] if args.threads else []),
                  f"method_options={json.dumps(opts)}"]
        full_cfg = load_config(ROOT / "examples" / CONFIG[ds], common + split_overrides(ds, 1, args.full_pool, args.test_size) + [
            f"name={ds}-full{args.full_pool}-s{seed}", 'methods=["supervised_full"]'])
        for k in ([] if args.full_only else args.k):
            methods = ["supervised", "synth_nofeedback", "evokd"] + ([] if args.no_vanilla else ["vanilla"])
            methods = [m for m in methods if args.methods is None or m in args.methods]
            cfg = load_config(ROOT / "examples" / CONFIG[ds], common + split_overrides(ds, k, args.pool, args.test_size) + [
                f"name={ds}-k{k}-s{seed}",
                f"methods={json.dumps(methods)}"])
            t0 = time.time()
            results = finished(cfg, methods) if args.report_only else api.run(cfg).results
            print(f"{teacher} {ds} k={k} seed {seed}: {time.time() - t0:.0f}s", flush=True)
            keep(teacher, ds, k, seed, results)
        if args.no_full:
            continue
        t0 = time.time()
        full = finished(full_cfg, ["supervised_full"]) if args.report_only else api.run(full_cfg).results
        print(f"{teacher} {ds} full-shot seed {seed}: {time.time() - t0:.0f}s", flush=True)
        keep("-", ds, None, seed, full)  # the full-shot row depends on neither the teacher nor k


def finished(cfg, methods: list[str]) -> dict[str, dict]:
    """The results of the methods of ``cfg`` that already finished (``--report-only``)."""
    run_dir = api.run_dir_for(cfg)
    return {m: json.loads((run_dir / m / "result.json").read_text()) for m in methods
            if (run_dir / m / "result.json").exists()}


def _slim(res: dict) -> dict:
    """What the tables read of a method's result (metrics, hygiene, calls, rounds), not its predictions."""
    extra = res.get("extra", {})
    return {**{k: res[k] for k in ("metrics", "timings", "stop_reason") if k in res},
            "extra": {k: extra[k] for k in ("hygiene", "teacher_calls_used", "best_round", "rounds") if k in extra}}


def _ms(vals: list[float], scale: float = 1.0) -> str:
    return mean_std(vals, "{:.3f}" if scale == 1 else "{:.0f}%", scale)


def _rate(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"  # None: no sample of that kind was kept that round


def _metric(res: dict) -> float:
    m = res["metrics"]
    return float(m.get("macro_f1", m.get("f1", 0.0)))


def write(args: argparse.Namespace, store: dict, started: float) -> None:
    rows: dict[tuple[str, str, int], dict[str, list[dict]]] = {}  # (teacher, dataset, k) -> method -> results
    runs = sorted(store["runs"].values(), key=lambda r: (r["dataset"], r["teacher"], r["k"] or 0, r["seed"]))
    for r in runs:
        if r["k"] is not None:
            rows.setdefault((r["teacher"], r["dataset"], r["k"]), {}).setdefault(r["method"], []).append(r["result"])
    for r in runs:  # full-shot rows join every section of their dataset
        if r["k"] is None:
            for (_, ds, _), by_m in rows.items():
                if ds == r["dataset"]:
                    by_m.setdefault(r["method"], []).append(r["result"])
    teachers = sorted({t for t, _, _ in rows})
    seeds = sorted({r["seed"] for r in runs})
    lines = [
        "# EvoKD benchmark",
        "",
        "Commands (in order; each adds its cells to the tables):  ",
        *[f"`{c}`  " for c in store["commands"]],
        machine_line(started, "of the last command"),
        f"Teachers: {', '.join(teachers)} (llama.cpp; each section names its "
        f"own; generation sampled at temperature 0.7, labeling greedy with the "
        f"few-shot classify/ner prompt). Student: all-MiniLM-L6-v2. Seeds: {seeds}. Test subsample: "
        f"{args.test_size}. Synthesis: {args.rounds} rounds x {args.per_round} LLM samples asked for "
        f"(EvoKD: half hard, half easy; no-feedback baseline: the same number of plain samples, the same "
        f"rounds, hygiene, labeling, replay and training). Vanilla KD pool: {args.pool}. Full-shot: gold "
        f"labels of a {args.full_pool}-example pool plus the seeds. Student: up to {args.epochs} epochs, "
        f"at least {args.min_steps} steps (NER: {args.ner_min_steps}), early stopping on the small gold dev set "
        f"(never before those steps).",
        "",
        "Metric: macro-F1 (classification) or entity-level span F1 (NER), mean ± std over the seeds that "
        "finished. \"% of full\" divides by the mean full-shot score of the seeds that finished. \"kept / asked\": "
        "LLM samples kept after hygiene over samples asked for; \"leak\": samples dropped as too close to "
        "a dev/test text.",
        "",
    ]
    for (teacher, ds, k), by_m in rows.items():
        full = [_metric(r) for r in by_m.get("supervised_full", [])]
        full_mean = statistics.mean(full) if full else None
        lines += [f"## {ds}, k = {k}" + (" (4k gold sentences)" if ds == "conll03" else " gold per class")
                  + f", teacher {teacher}", "",
                  "| row | F1 | % of full | kept / asked | dropped (invalid / dup / leak / label) | teacher calls | n seeds |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for m, label in ROWS:
            res = by_m.get(m, [])
            if not res:
                continue
            f1 = [_metric(r) for r in res]
            pct = _ms([v / full_mean for v in f1], 100) if full_mean else "–"
            hyg = [r["extra"].get("hygiene") for r in res if r.get("extra", {}).get("hygiene")]
            if hyg:
                asked = args.rounds * args.per_round
                kept = statistics.mean(h["kept"] for h in hyg)
                d = lambda key: statistics.mean(h["dropped"][key] for h in hyg)  # noqa: E731
                hy = f"{kept:.1f} / {asked}"
                dr = (f"{d('invalid'):.1f} / {d('exact_dup') + d('near_dup'):.1f} / {d('leak'):.1f} / "
                      f"{d('abstained') + d('bad_label') + d('bad_span'):.1f}")
                calls = f"{statistics.mean(r['extra']['teacher_calls_used'] for r in res):.0f}"
            else:
                hy, dr = "–", "–"
                calls = f"{statistics.mean(r['timings'].get('n_prompts', 0) for r in res):.0f}" if m == "vanilla" else "–"
            lines.append(f"| {label} | {_ms(f1)} | {pct} | {hy} | {dr} | {calls} | {len(res)} |")
        lines.append("")
        evo = by_m.get("evokd", [])
        for r in evo[:1]:
            lines.append(f"EvoKD per round (first seed): stop reason \"{r['stop_reason']}\", best round "
                         f"{r['extra']['best_round']}.")
            lines.append("")
            lines.append("| round | dev F1 | kept | batch acc. before training (hard / easy) | analysis (excerpt) |")
            lines.append("|---:|---:|---:|---|---|")
            for rec in r["extra"]["rounds"]:
                dev = rec.get("dev") or {}
                acc = rec.get("batch_accuracy_before_training") or {}
                an = " ".join((rec.get("analysis") or "").split())[:160].replace("|", "/")
                lines.append(f"| {rec['round']} | {dev.get('macro_f1', dev.get('f1', float('nan'))):.3f} | "
                             f"{rec['counts']['kept']} | {_rate(acc.get('hard'))} / {_rate(acc.get('easy'))} | {an} |")
            lines.append("")
    write_keeping_notes(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
