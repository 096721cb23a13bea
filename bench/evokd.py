"""EvoKD benchmark: seeds only vs generation without feedback vs vanilla KD vs EvoKD vs supervised
full-shot, with a "% of full-shot" column. Writes docs/results/evokd.md (``--out`` for another).

The paper's setting by default (docs/methods/evokd.md): SST-2, AG News and CoNLL-03; k = 1, 3, 5
gold examples per class for classification, 1-shot for NER (``--ner-k``); 11 rounds x 30 samples
(1 plain round + 10 with feedback, 330 samples asked, the ``paper`` preset); a fixed number of
rounds (patience 0). Equal budgets: the no-feedback row asks for the same samples in the same
generation calls (it lacks only the analysis calls); vanilla KD labels a real pool of as many
texts as EvoKD plans teacher calls (``--pool auto``); "% of full" divides by a student trained on
the dataset's whole training set (``--full-pool all``; its size is in the table).

Every (dataset, k, seed) is an ordinary `llmkd run` of examples/evokd_<dataset>.yaml (or
examples/<dataset>.yaml) with overrides, so a killed benchmark resumes where it stopped
(teacher answers are cached, finished methods and finished EvoKD rounds are kept). The full-shot
row is a separate run per seed, since it does not depend on k or on the teacher. Results
accumulate in the JSON beside the doc (keyed by teacher, dataset, k, seed and method; reset when
the grid settings change), so cells run by separate invocations stay in one table.

    python bench/evokd.py                                   # the paper-sized grid (days on a CPU)
    python bench/evokd.py --datasets sst2 --k 1 --seeds 0 --rounds 4 --per-round 10   # one small cell
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from _common import ROOT, SHORT, doc_machine_line, mean_std, parser, result_store, save_store, start, write_keeping_notes  # noqa: E402  (puts src/ on sys.path)

from llmkd import api  # noqa: E402
from llmkd.config import load_config  # noqa: E402

CONFIG = {"sst2": "evokd_sst2.yaml", "ag_news": "ag_news.yaml", "trec": "trec.yaml", "conll03": "evokd_conll03.yaml"}
ROWS = [("supervised", "seeds only (k gold per class)"), ("synth_nofeedback", "generation without feedback"),
        ("vanilla", "vanilla KD (teacher labels a real pool)"), ("evokd", "EvoKD"),
        ("supervised_full", "supervised full-shot (whole gold train set)")]
MAX_PER_CALL = 10  # EvoKD's default max_per_call


def planned_calls(rounds: int, per_round: int) -> int:
    """The teacher calls EvoKD plans: one label per sample asked, the generation calls
    (``max_per_call`` samples each) and an analysis in every round after the plain first one."""
    return rounds * (per_round + math.ceil(per_round / MAX_PER_CALL)) + (rounds - 1)


def pool_size(args: argparse.Namespace) -> int:
    return planned_calls(args.rounds, args.per_round) if args.pool == "auto" else int(args.pool)


def grid_dir(args: argparse.Namespace, teacher: str) -> Path:
    """The folder of one teacher's grid under ``--runs``, named by the grid options that change its results.

    ``bench/evokd_labels.py`` reads the same folders through this function (its grids, run before
    ``--patience`` existed, have no ``-pat`` part).
    """
    return Path(args.runs) / (f"{teacher}-r{args.rounds}x{args.per_round}-p{pool_size(args)}-t{args.test_size}"
                              f"-e{args.epochs}-m{args.min_steps}"
                              + (f"-pat{args.patience}" if getattr(args, "patience", None) is not None else "")
                              + (f"-thr{args.threads}" if args.threads else ""))


def split_overrides(ds: str, k: int, pool: int | str, test_size: int) -> list[str]:
    """k-shot: k gold examples per class; for NER (no classes) 4*k sentences in total. ``pool``
    "all": the rest of the training set (the full-shot row)."""
    size = "null" if pool == "all" else pool
    if ds == "conll03":
        return [f"data.split.labeled_n={4 * k}", f"data.split.pool_size={size}", f"data.split.test_size={test_size}"]
    return [f"data.split.labeled_per_class={k}", f"data.split.pool_size={size}", f"data.split.test_size={test_size}"]


def main() -> None:
    ap = parser(__doc__, "evokd", ["sst2", "ag_news", "conll03"], dataset_choices=sorted(CONFIG))
    ap.add_argument("--k", nargs="+", type=int, default=[1, 3, 5], help="gold examples per class (classification)")
    ap.add_argument("--ner-k", nargs="+", type=int, default=[1], help="NER k-shot: 4k gold sentences (the paper: 1-shot)")
    ap.add_argument("--rounds", type=int, default=11, help="rounds, the plain first round included (paper preset: 11)")
    ap.add_argument("--per-round", type=int, default=30,
                    help="LLM samples asked for per round (EvoKD: half hard, half easy; paper preset: 30)")
    ap.add_argument("--patience", type=int, default=0, help="EvoKD plateau stop; 0 = all rounds (the paper)")
    ap.add_argument("--pool", default="auto", help="real pool vanilla KD labels: 'auto' = as many texts as EvoKD plans "
                                                    "teacher calls (rounds x (per-round + generation calls) + analyses)")
    ap.add_argument("--full-pool", default="all", help="gold pool of the full-shot row: 'all' = the whole training set")
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
    ap.add_argument("--methods", nargs="+", default=None,
                    help="run only these methods of each cell; a second process running other methods of the same "
                         "cells at the same time needs its own --runs (a run folder takes one process at a time)")
    ap.add_argument("--threads", type=int, default=None,
                    help="teacher.n_threads and student.threads (1 avoids spin-waiting threads on a busy CPU)")
    args = ap.parse_args()
    command, started = start("evokd")
    hard = args.per_round // 2
    synth = {"rounds": args.rounds, "n_hard": hard, "n_easy": args.per_round - hard, "patience": args.patience,
             "max_per_call": MAX_PER_CALL}
    settings = {"rounds": args.rounds, "per_round": args.per_round, "pool": pool_size(args), "full_pool": args.full_pool,
                "patience": args.patience, "plain_first": True,
                "test_size": args.test_size, "epochs": args.epochs, "min_steps": args.min_steps,
                "ner_min_steps": args.ner_min_steps,
                "round_min_steps": "student.min_steps"}  # EvoKD's per-round floor (the tables before it: doc notes)
    store, store_path = result_store(args.out, settings, command, fresh=args.fresh, report_only=args.report_only)

    def keep(teacher: str, ds: str, k: int | None, seed: int, results: dict[str, dict]) -> None:
        for m, res in results.items():
            store["runs"][f"{teacher}|{ds}|{k}|{seed}|{m}"] = {
                "teacher": teacher, "dataset": ds, "k": k, "seed": seed, "method": m, "result": _slim(res)}
        save_store(store, store_path)
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
        for k in ([] if args.full_only else args.ner_k if ds == "conll03" else args.k):
            methods = ["supervised", "synth_nofeedback", "evokd"] + ([] if args.no_vanilla else ["vanilla"])
            methods = [m for m in methods if args.methods is None or m in args.methods]
            cfg = load_config(ROOT / "examples" / CONFIG[ds], common + split_overrides(ds, k, pool_size(args), args.test_size) + [
                f"name={ds}-k{k}-s{seed}",
                f"methods={json.dumps(methods)}"])
            t0 = time.time()
            results = finished(cfg, methods) if args.report_only else api.run(cfg).results
            results = {m: {**res, "samples": _samples(api.run_dir_for(cfg) / m)} if m in ("evokd", "synth_nofeedback")
                       else res for m, res in results.items()}
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


def _samples(wd: Path, per_round: int = 4) -> list[dict]:
    """A few kept samples of each round (synthetic.jsonl), for the doc: hard and easy alternating."""
    path = wd / "synthetic.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for r in sorted({row["round"] for row in rows if "round" in row}):
        kept = [row for row in rows if row.get("round") == r and row.get("status") == "kept"]
        kept.sort(key=lambda row: (row["kind"] != "hard", row["kind"]))
        by_kind = {k: [row for row in kept if row["kind"] == k] for k in dict.fromkeys(row["kind"] for row in kept)}
        picked = [row for group in zip(*by_kind.values()) for row in group] if len(by_kind) > 1 else kept
        out += [{k: row[k] for k in ("round", "kind", "text", "label")} for row in picked[:per_round]]
    return out


def _slim(res: dict) -> dict:
    """What the tables read of a method's result (metrics, hygiene, calls, rounds), not its predictions."""
    extra = res.get("extra", {})
    return {**{k: res[k] for k in ("metrics", "timings", "stop_reason", "samples") if k in res},
            "extra": {k: extra[k] for k in ("hygiene", "teacher_calls_used", "best_round", "rounds", "n_train")
                      if k in extra}}


def _ms(vals: list[float], scale: float = 1.0) -> str:
    return mean_std(vals, "{:.3f}" if scale == 1 else "{:.0f}%", scale)


def _round_details(m: str, r: dict) -> list[str]:
    """The per-round table of a method's first seed, then (EvoKD) each round's feedback set, analysis and samples."""
    name = "EvoKD" if m == "evokd" else "Generation without feedback"
    out = [f"{name} per round (first seed): stop reason \"{r.get('stop_reason')}\", best round "
           f"{r['extra'].get('best_round')} (0 = the seed student).", "",
           "| round | kind | dev F1 | kept | student acc. on the batch before training | wrong / judged in the "
           "feedback set | s / sample (generation) | s (analysis, labeling, training) |",
           "|---:|---|---:|---:|---|---:|---:|---|"]
    for rec in r["extra"]["rounds"]:
        dev = rec.get("dev") or {}
        acc = rec.get("batch_accuracy_before_training") or {}
        fb = rec.get("feedback") or {}
        gen = rec["counts"]["generated"]
        secs = rec.get("generation_seconds")
        out.append(f"| {rec['round']} | {'plain' if rec.get('plain') else 'hard + easy'} | "
                   f"{dev.get('macro_f1', dev.get('f1', float('nan'))):.3f} | {rec['counts']['kept']} | "
                   + " / ".join(f"{k} {_rate(v)}" for k, v in sorted(acc.items())) + " | "
                   + (f"{fb['wrong']} / {fb['evaluated']}" if fb else "–") + " | "
                   + (f"{secs / gen:.2f}" if secs and gen else "–") + " | "
                   + ", ".join(f"{rec.get(k, 0):.0f}" for k in ("analysis_seconds", "labeling_seconds", "training_seconds"))
                   + " |")
    out.append("")
    if m != "evokd":
        return out
    samples = r.get("samples", [])
    for rec in r["extra"]["rounds"]:
        out.append(f"**Round {rec['round']}** ({'plain batch, no analysis' if rec.get('plain') else 'feedback'}).")
        shown = rec.get("feedback_shown") or {}
        if shown:
            wrong = "; ".join(f"\"{s['text'][:90]}\" ({s['source']}: {_lab(s['label'])}, student: {_lab(s['pred'])})"
                              for s in shown.get("wrong", [])[:3])
            out.append(f"Shown wrong: {len(shown.get('wrong', []))}, right: {len(shown.get('right', []))}"
                       + (f"; e.g. {wrong}." if wrong else ". No mistake to show."))
        if rec.get("analysis"):
            out.append(f"Analysis: {' '.join(rec['analysis'].split())}".replace("|", "/"))
        wrote = [s for s in samples if s["round"] == rec["round"]]
        if wrote:
            out.append("Wrote (kept, with the teacher's label): " + "; ".join(
                f"[{s['kind']}] \"{s['text']}\" -> {_lab(s['label'])}" for s in wrote) + ".")
        out.append("")
    return out


def _lab(label: object) -> str:
    return label if isinstance(label, str) else " ".join(map(str, label))  # NER: the tag sequence


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
    full_sizes = {r["dataset"]: r["result"]["extra"].get("n_train") for r in runs if r["k"] is None}
    asked = args.rounds * args.per_round
    lines = [
        "# EvoKD benchmark",
        "",
        "Commands (in order; each adds its cells to the tables):  ",
        *[f"`{c}`  " for c in store["commands"]],
        doc_machine_line(args, started),
        f"Teachers: {', '.join(teachers)} (llama.cpp; each section names its "
        f"own; generation sampled at temperature 0.7, labeling greedy with the few-shot classify/ner prompt). "
        f"Student: all-MiniLM-L6-v2. Seeds: {seeds}. Test subsample: {args.test_size}. Synthesis: {args.rounds} "
        f"rounds x {args.per_round} LLM samples asked for ({asked} in all): round 1 asks for plain samples and "
        f"the seed student is judged on them before round 2's analysis; rounds 2-{args.rounds} analyse the "
        f"student's errors and ask for half hard, half easy samples. The no-feedback baseline asks for the same "
        f"samples in the same generation calls (its round 1 is EvoKD's round 1, shared through the cache), with the "
        f"same hygiene, labeling, replay and training; it makes no analysis calls. Patience {args.patience} "
        f"(0: every round runs; the best-dev round's student is kept). Vanilla KD: the teacher labels a real "
        f"pool of {pool_size(args)} texts, the teacher calls EvoKD plans. Full-shot: the whole gold training "
        f"set ({', '.join(f'{d}: {n} examples' for d, n in sorted(full_sizes.items()) if n) or 'not run'}). "
        f"Student: up to {args.epochs} epochs, at least {args.min_steps} steps (NER: {args.ner_min_steps}), early "
        f"stopping on the small gold dev set (never before those steps).",
        "",
        "Metric: macro-F1 (classification) or entity-level span F1 (NER), mean ± std over the seeds that "
        "finished. \"% of full\" divides by the mean full-shot score of the seeds that finished. \"kept / asked\": "
        "LLM samples kept after hygiene over samples asked for; \"leak\": samples dropped as too close to "
        "a dev/test text. \"s / sample\": seconds of generation calls per generated sample, teacher calls that ran "
        "(a cached answer takes no time, so a rerun shows less).",
        "",
    ]
    for (teacher, ds, k), by_m in rows.items():
        full = [_metric(r) for r in by_m.get("supervised_full", [])]
        full_mean = statistics.mean(full) if full else None
        lines += [f"## {ds}, k = {k}" + (" (4k gold sentences)" if ds == "conll03" else " gold per class")
                  + f", teacher {teacher}", "",
                  "| row | F1 | % of full | kept / asked | dropped (invalid / dup / leak / label) | teacher calls | "
                  "s / sample | n seeds |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for m, label in ROWS:
            res = by_m.get(m, [])
            if not res:
                continue
            f1 = [_metric(r) for r in res]
            pct = _ms([v / full_mean for v in f1], 100) if full_mean else "–"
            hyg = [r["extra"].get("hygiene") for r in res if r.get("extra", {}).get("hygiene")]
            gen_s = "–"
            if hyg:
                kept = statistics.mean(h["kept"] for h in hyg)
                d = lambda key: statistics.mean(h["dropped"][key] for h in hyg)  # noqa: E731
                hy = f"{kept:.1f} / {asked}"
                dr = (f"{d('invalid'):.1f} / {d('exact_dup') + d('near_dup'):.1f} / {d('leak'):.1f} / "
                      f"{d('abstained') + d('bad_label') + d('bad_span'):.1f}")
                calls = f"{statistics.mean(r['extra']['teacher_calls_used'] for r in res):.0f}"
                secs = sum(rec.get("generation_seconds", 0.0) for r in res for rec in r["extra"]["rounds"])
                n_gen = sum(rec["counts"]["generated"] for r in res for rec in r["extra"]["rounds"])
                gen_s = f"{secs / n_gen:.2f}" if n_gen and secs > 0 else "–"
            else:
                hy, dr = "–", "–"
                calls = f"{statistics.mean(r['timings'].get('n_prompts', 0) for r in res):.0f}" if m == "vanilla" else "–"
            lines.append(f"| {label} | {_ms(f1)} | {pct} | {hy} | {dr} | {calls} | {gen_s} | {len(res)} |")
        lines.append("")
        for m in ("evokd", "synth_nofeedback"):
            for r in by_m.get(m, [])[:1]:
                lines += _round_details(m, r)
    lines.append("")
    write_keeping_notes(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
