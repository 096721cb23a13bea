"""MCKD benchmark: teacher few-shot, supervised-k, vanilla KD, KD + self-distillation with filter,
MCKD-2, MCKD-3 and supervised on 10x the gold, per dataset, mean ± std over seeds.

Writes docs/results/mckd.md. Every (dataset, seed, variant) is an ordinary `llmkd run` of
examples/mckd_<dataset>.yaml with overrides, so a killed benchmark resumes where it stopped
(teacher answers are cached, finished methods and finished students are kept). One mckd run with
``stages=3, final_every_stage=true`` gives MCKD-1 (= vanilla KD with the same label-free model
selection), MCKD-2 and MCKD-3 from shared stage-1 students.

The per-stage table scores the pool's labels against the pool's gold *after the run*, for the
report only (no method ever reads them).

    python bench/mckd.py                                   # sst2, seeds 0 1 2
    python bench/mckd.py --datasets sst2 --seeds 0 1 --ablations pool40 dev
    python bench/mckd.py --seeds 0 1 2 --executor ray --cpus-per-cell 1   # the cells as parallel Ray tasks

Every (dataset, seed) run with its 10x-gold run, and every (ablation, seed) run, is one cell
(:func:`_common.run_cells`): one after another here by default, or with ``--executor ray`` as
parallel Ray tasks (a local cluster on 127.0.0.1, or ``--address``), each cell asking
``--cpus-per-cell`` CPUs; set the teacher's and the student's threads to match (``--set
teacher.n_threads=1 student.threads=1``). The doc is rewritten as each cell finishes, its tables
in seed order.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from _common import (ROOT, add_executor_args, add_set_arg, machine_line, mean_std, parser, run_cells, start,  # noqa: E402  (puts src/ on sys.path)
                     write_keeping_notes)

from llmkd import api  # noqa: E402
from llmkd.build import build_task  # noqa: E402
from llmkd.config import load_config  # noqa: E402
from llmkd.data import make_splits  # noqa: E402
from llmkd.report import read_jsonl  # noqa: E402

PRIMARY = ("macro_f1", "sentence_f1", "f1", "exact_match", "accuracy")  # the paper: per-sentence bracket F1
# v1 Table 1, 50 gold labels: (PTB, CRAFT) parsing F1 of each row, the paper's numbers.
PAPER = {"teacher": (69.1, 60.0), "supervised": (0.0, 0.0), "vanilla": (71.6, 63.8), "self_distill": (72.4, 64.3),
         "mckd2": (73.9, 66.9), "mckd3": (74.2, 67.5)}
ROWS = [  # key, label
    ("trivial", "trivial (right-branching trees; slots: every word O; classification: the majority class)"),
    ("teacher", "teacher few-shot"),
    ("supervised", "supervised-k (gold labeled set only)"),
    ("vanilla", "vanilla KD (dev-set early stopping)"),
    ("mckd1", "vanilla KD = MCKD-1 (fidelity selection)"),
    ("self_distill", "KD + self-distillation w/ filter"),
    ("mckd2", "MCKD-2"),
    ("mckd3", "MCKD-3"),
    ("supervised10", "supervised on 10x the gold"),
]
ABLATIONS = {  # name: (overrides, description)
    "dev": (["method_options.mckd.selection=dev", "method_options.self_distill.selection=dev"],
            "students selected on the small labeled dev set instead of training fidelity"),
    "pool40": (["data.split.pool_size=40"], "pool of 40 (a prefix of the same shuffled pool)"),
    "pool160": (["data.split.pool_size=160"], "pool of 160 (extends the same shuffled pool)"),
    "parts3": (["method_options.mckd.parts=3"], "three parts, majority vote of two students per item"),
    "mixgold": (["method_options.mckd.mix_gold=true", "method_options.self_distill.mix_gold=true"],
                "the gold labeled set added to every student's data (not in the paper's v1)"),
}


SECOND = ("accuracy", "slot_f1", "corpus_f1")  # beside the primary: seqeval slot F1 for slots, corpus F1 for trees


def primary(metrics: dict[str, float]) -> str:
    return next((m for m in PRIMARY if m in metrics), next(iter(metrics)))


def second(metrics: dict[str, float]) -> str | None:
    return next((m for m in SECOND if m in metrics), None)


def run_one(ds: str, seed: int, extra: list[str], name: str, args: argparse.Namespace,
            methods: list[str]) -> tuple[Any, api.RunSummary]:
    cfg = load_config(ROOT / "examples" / f"mckd_{ds}.yaml", [
        f"name={name}", f"seed={seed}", f"output_dir={args.runs}", "progress=false",
        f"methods={json.dumps(methods)}", "method_options.mckd.stages=3", "method_options.mckd.final_every_stage=true",
        *args.set, *extra])
    t0 = time.time()
    summary = api.run(cfg)
    print(f"{name}: {time.time() - t0:.0f}s", flush=True)
    return cfg, summary


def stage_quality(cfg: Any, run_dir: Path) -> list[dict[str, Any]]:
    """Pool label quality against the pool's gold at each stage (report only) + churn etc."""
    splits, vault = make_splits(cfg.data, cfg.seed)
    task = build_task(cfg.task, splits.labels)
    wd = run_dir / "mckd"
    prov = read_jsonl(wd / "provenance.jsonl")
    res = json.loads((wd / "result.json").read_text())
    stages = {s["stage"]: s for s in res["extra"]["stages"]}
    out = []
    for k in range(len(prov[0]["labels"])):
        ids = [r["id"] for r in prov]
        labs = [r["labels"][k] for r in prov]
        gold = [vault.label_of(i) for i in ids]
        pred = [None if lab["abstained"] else lab["label"] for lab in labs]
        if isinstance(gold[0], (list, tuple)):
            pred = [None if p is None else tuple(p) for p in pred]
            gold = [tuple(g) for g in gold]
        scores = task.score(gold, pred)
        m = primary(scores)
        row = {"stage": k, "metric": m, "pool": scores[m], "abstained": sum(p is None for p in pred)}
        for what in ("precision", "recall"):  # trees: corpus brackets; slots: chunks
            v = scores.get(f"corpus_{what}", scores.get(f"slot_{what}"))
            if v is not None:
                row[what] = v
        if k in stages:
            s = stages[k]
            row.update(churn=s["churn"], agree=s["agreement_with_teacher"], filled=s["abstentions_filled"],
                       students=[st["test"][primary(st["test"])] for st in s["students"] if "test" in st])
        out.append(row)
    return out


def teacher_repairs(run_dir: Path) -> dict[str, int]:
    """What repair did to the teacher's pool replies (seq2seq tasks: ``meta.repairs`` of each label in
    vanilla/labels.jsonl, summed), with the number of replies, repaired replies and abstentions."""
    rows = read_jsonl(run_dir / "vanilla" / "labels.jsonl") if (run_dir / "vanilla" / "labels.jsonl").exists() else []
    out: dict[str, int] = {"replies": len(rows), "abstained": 0, "repaired": 0}
    for r in rows:
        acts = (r.get("meta") or {}).get("repairs") or {}
        out["abstained"] += bool(r.get("abstained"))
        out["repaired"] += bool(acts)
        for k, v in acts.items():
            out[k] = out.get(k, 0) + int(v)
    return out


def labeling_cost(summary: api.RunSummary) -> dict[str, tuple[int, float]]:
    """(prompts, teacher seconds) of the test set (the teacher row) and of the pool (vanilla KD's
    labels), as first computed: cached answers keep their original cost."""
    out = {}
    for key, row in (("test", "teacher"), ("pool", "vanilla")):
        t = (summary.results.get(row) or {}).get("timings") or {}
        if t.get("n_prompts"):
            out[key] = (int(t["n_prompts"]), float(t.get("teacher_seconds", 0.0)))
    return out


def collect(summary: api.RunSummary) -> dict[str, dict[str, float]]:
    r = summary.results
    rows: dict[str, dict[str, float]] = {}
    for key in ("trivial", "teacher", "supervised", "vanilla", "self_distill"):
        if key in r:
            rows[key] = r[key]["metrics"]
    if "mckd" in r:
        for k, final in r["mckd"]["extra"]["finals"].items():
            rows[f"mckd{k}"] = final["test"]
    return rows


def training_notes(summary: api.RunSummary) -> dict[str, str]:
    """How long each row's student trained and why it stopped (``N ep, reason``), and the
    seconds per epoch; MCKD's finals and stage students from its stage reports."""
    out: dict[str, str] = {}

    def note(rec: dict[str, Any]) -> str:
        hist = rec.get("history") or []
        per = hist[-1]["seconds"] / hist[-1]["epoch"] if hist and hist[-1].get("epoch") else None
        return (f"{rec.get('epoch', len(hist))} ep ({rec.get('stop_reason', '?')}, kept {rec.get('best_epoch', '?')}"
                + (f", {per:.0f} s/ep" if per else "") + ")")

    for key in ("supervised", "vanilla", "self_distill", "mckd"):
        res = summary.results.get(key)
        if res and (res.get("extra") or {}).get("training"):
            out[key] = note(res["extra"]["training"])
    return out


def cell(spec: tuple) -> dict[str, Any]:
    """One cell: ("main", dataset, seed, args): the main run of a seed (and its 10x-gold run);
    ("ablation", dataset, name, seed, args): one ablation run. Its own run folders; returns its rows."""
    if spec[0] == "main":
        _, ds, seed, args = spec
        cfg, summary = run_one(ds, seed, [], f"mckd-{ds}-s{seed}", args,
                               ["trivial", "teacher", "supervised", "vanilla", "self_distill", "mckd"])
        out = {"config": cfg, "training": training_notes(summary), "rows": collect(summary),
               "stages": stage_quality(cfg, summary.run_dir), "repairs": teacher_repairs(summary.run_dir),
               "labeling": labeling_cost(summary)}
        if not args.no_supervised10:
            sp = cfg.data.split
            ten = ([f"data.split.labeled_per_class={10 * sp.labeled_per_class}"] if sp.labeled_per_class
                   else [f"data.split.labeled_n={10 * sp.labeled_n}"])
            _, s10 = run_one(ds, seed, ten, f"mckd-{ds}-s{seed}-gold10x", args, ["supervised"])
            out["rows"]["supervised10"] = s10.results["supervised"]["metrics"]
        return out
    _, ds, ab, seed, args = spec
    cfg, summary = run_one(ds, seed, ABLATIONS[ab][0], f"mckd-{ds}-s{seed}-{ab}", args, ["vanilla", "self_distill", "mckd"])
    return {"config": cfg, "rows": {**collect(summary), "stages": stage_quality(cfg, summary.run_dir)}}


def main() -> None:
    ap = parser(__doc__, "mckd", ["sst2"], dataset_help="examples/mckd_<name>.yaml for each", teachers=None)
    ap.add_argument("--ablations", nargs="*", default=[], choices=sorted(ABLATIONS))
    ap.add_argument("--ablation-seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--ablation-datasets", nargs="+", default=None,
                    help="the datasets the ablations run on (default: every --datasets)")
    ap.add_argument("--no-supervised10", action="store_true", help="skip the 10x-gold supervised row")
    add_set_arg(ap, "a.b=c")
    add_executor_args(ap)
    args = ap.parse_args()
    command, started = start("mckd")
    cells = [("main", ds, seed, args) for ds in args.datasets for seed in args.seeds]
    cells += [("ablation", ds, ab, seed, args) for ds in (args.ablation_datasets or args.datasets)
              for ab in args.ablations for seed in args.ablation_seeds]
    done: dict[tuple, dict[str, Any]] = {}

    def finished(spec: tuple, out: dict[str, Any]) -> None:  # rebuild the tables in seed order; rewrite the doc
        done[spec[:-1]] = out
        write(args, tables(args, done), command, started)

    run_cells(cell, cells, executor=args.executor, address=args.address, cpus=args.cpus_per_cell, on_result=finished)


def tables(args: argparse.Namespace, done: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """The finished cells gathered per dataset, rows in seed order (the order of --seeds)."""
    results: dict[str, Any] = {}
    for ds in args.datasets:
        d = results.setdefault(ds, {"rows": {}, "stages": {}, "ablations": {}, "training": {}, "config": None})
        for seed in args.seeds:
            out = done.get(("main", ds, seed))
            if out is None:
                continue
            d["config"] = out["config"]
            d["training"][seed] = out["training"]
            d["stages"][seed] = out["stages"]
            d.setdefault("repairs", {})[seed] = out.get("repairs") or {}
            d.setdefault("labeling", {})[seed] = out.get("labeling") or {}
            for key, metrics in out["rows"].items():
                d["rows"].setdefault(key, []).append(metrics)
        for ab in args.ablations:
            for seed in args.ablation_seeds:
                if ("ablation", ds, ab, seed) in done:
                    d["ablations"].setdefault(ab, {})[seed] = done[("ablation", ds, ab, seed)]["rows"]
    return results


def _ms(vals: list[float]) -> str:
    return mean_std(vals, "{:.1f}", 100)


def _delta(rows: dict[str, list[dict[str, float]]], key: str, ref: str, m: str) -> str:
    if key not in rows or ref not in rows or key == ref:
        return "–"
    diffs = [a[m] - b[m] for a, b in zip(rows[key], rows[ref])]
    return f"{100 * statistics.mean(diffs):+.1f}"


def _paper(key: str) -> str:
    base = "mckd3" if key == "mckd3" else key
    if key == "mckd1":
        base = "vanilla"
    if base not in PAPER or key in ("supervised", "teacher"):
        return "–"
    (p, c), (tp, tc) = PAPER[base], PAPER["teacher"]
    return f"{p - tp:+.1f} / {c - tc:+.1f}"


def write(args: argparse.Namespace, results: dict[str, Any], command: str, started: float) -> None:
    lines = [
        "# MCKD benchmark",
        "",
        f"Command: `{command}`  ",
        machine_line(started),
        f"Seeds: {args.seeds} (a seed draws the gold labeled set, the demonstrations, the dev set, the pool, the "
        "test subsample, the MCKD partition and the students' initialisation).",
        "",
    ]
    for ds, d in results.items():
        cfg = d["config"]
        if cfg is None:
            continue
        rows = d["rows"]
        m = primary(next(iter(rows.values()))[0])
        m2 = second(next(iter(rows.values()))[0])
        sp = cfg.data.split
        lines += [
            f"## {ds}",
            "",
            f"Config `examples/mckd_{ds}.yaml`: teacher {cfg.teacher.model} ({cfg.teacher.backend}, labels "
            f"{cfg.teacher.labeling}d), student {cfg.student.model} (max_length {cfg.student.max_length}, up to "
            f"{cfg.student.epochs} epochs, at least {cfg.student.min_steps} steps); gold labeled set "
            f"{sp.labeled_per_class or sp.labeled_n}{' per class' if sp.labeled_per_class else ''}, dev "
            f"{sp.dev_per_class or getattr(sp, 'dev_n', None)}{' per class' if sp.dev_per_class else ''}, pool "
            f"{sp.pool_size}, test subsample {sp.test_size}. MCKD: 2 parts, students selected by training fidelity "
            "(paper rule), no gold mixed in.",
            "",
            f"Test {m} (and {m2 or 'accuracy'}), in points, mean ± std over {len(args.seeds)} seed(s); abstentions "
            "(teacher replies that could not be repaired) count as wrong and are also reported. "
            "Δ columns are mean paired differences. The last column is the paper's gain over its teacher for the same "
            "row (v1 Table 1, 50 labels, PTB / CRAFT parsing F1).",
            "",
            f"| row | {m} | {m2 or 'accuracy'} | abstention | Δ vs teacher | Δ vs vanilla KD (MCKD-1) | "
            "paper Δ vs teacher (PTB / CRAFT) | n |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, label in ROWS:
            if key not in rows:
                continue
            vals = rows[key]
            two = [v[m2] for v in vals if m2 in v] if m2 else []
            abst = [v["abstention_rate"] for v in vals if "abstention_rate" in v]
            lines.append(f"| {label} | {_ms([v[m] for v in vals])} | {_ms(two)} | {_ms(abst)} | "
                         f"{_delta(rows, key, 'teacher', m)} | {_delta(rows, key, 'mckd1', m)} | {_paper(key)} | "
                         f"{len(vals)} |")
        lines += ["", "Per stage (seed by seed): quality of the pool's labels against the pool's gold (scored after "
                  "the run, report only; the primary metric, then corpus bracket or slot-chunk precision / recall), "
                  "churn from the previous stage, agreement with the teacher, teacher "
                  "abstentions filled in, and the test score of each part's student.", "",
                  "| seed | stage | pool labels (precision / recall) | abstained | churn | agree w/ teacher | filled | "
                  "part students (test) |",
                  "|---:|---:|---:|---:|---:|---:|---:|---|"]
        for seed, st in d["stages"].items():
            for r in st:
                pr = f" ({r['precision']:.2f} / {r['recall']:.2f})" if "precision" in r else ""
                lines.append(f"| {seed} | {r['stage']} {'(teacher)' if r['stage'] == 0 else ''} | {100 * r['pool']:.1f}{pr} | "
                             f"{r['abstained']} | {_pct(r.get('churn'))} | {_pct(r.get('agree'))} | {r.get('filled', '–')} | "
                             f"{', '.join(f'{100 * x:.1f}' for x in r.get('students', [])) or '–'} |")
        if any(r.get("replies") for r in d.get("repairs", {}).values()) and cfg.task.kind == "seq2seq":
            lines += ["", "Teacher replies on the pool (seed by seed): repaired onto the input words where possible "
                      "(the actions' counts), abstained where not (formats/trees.py, formats/slots.py).", "",
                      "| seed | replies | repaired | abstained | repair actions |", "|---:|---:|---:|---:|---|"]
            for seed, r in d["repairs"].items():
                acts = ", ".join(f"{k} {v}" for k, v in sorted(r.items())
                                 if k not in ("replies", "repaired", "abstained"))
                lines.append(f"| {seed} | {r.get('replies', 0)} | {r.get('repaired', 0)} | {r.get('abstained', 0)} | "
                             f"{acts or '–'} |")
        if any(d.get("labeling", {}).values()):
            lines += ["", "Teacher labeling time (seed by seed), as first computed (answers are cached and shared "
                      "by every row):", ""]
            for seed, lab in d["labeling"].items():
                parts = [f"{what} {n} prompts in {sec:.0f} s ({sec / n:.1f} s each)" for what, (n, sec) in lab.items()]
                lines.append(f"- seed {seed}: {'; '.join(parts)}")
        if d.get("training"):
            lines += ["", "Students (seed by seed): epochs run, why they stopped, the epoch kept, seconds per epoch "
                      "(vanilla KD and supervised: dev-set early stopping; KD+SD and MCKD: training fidelity).", "",
                      "| seed | row | training |", "|---:|---|---|"]
            for seed, notes in d["training"].items():
                for key, text in notes.items():
                    lines.append(f"| {seed} | {key} | {text} |")
        if d["ablations"]:
            lines += ["", "### Ablations", "",
                      "| variant | seed | vanilla KD (dev) | MCKD-1 | KD+SD | MCKD-2 | MCKD-3 | MCKD-3 − MCKD-1 | pool labels by stage |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
            main = {seed: {k: v[i] for k, v in rows.items() if i < len(v)} for i, seed in enumerate(d["stages"])}
            for seed in args.ablation_seeds:
                if seed in main:
                    lines.append(_ab_row("main", seed, main[seed], d["stages"].get(seed, []), m))
            for ab, by_seed in d["ablations"].items():
                for seed, r in by_seed.items():
                    lines.append(_ab_row(f"{ab}: {ABLATIONS[ab][1]}", seed, r, r["stages"], m))
        lines.append("")
    write_keeping_notes(args.out, "\n".join(lines) + "\n")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _ab_row(name: str, seed: int, r: dict[str, Any], stages: list[dict[str, Any]], m: str) -> str:
    g = lambda k: f"{100 * r[k][m]:.1f}" if k in r else "–"  # noqa: E731
    gain = f"{100 * (r['mckd3'][m] - r['mckd1'][m]):+.1f}" if "mckd3" in r and "mckd1" in r else "–"
    pool = " → ".join(f"{100 * s['pool']:.1f}" for s in stages)
    return (f"| {name} | {seed} | {g('vanilla')} | {g('mckd1')} | {g('self_distill')} | {g('mckd2')} | {g('mckd3')} | "
            f"{gain} | {pool} |")


if __name__ == "__main__":
    main()
