"""Human review: what 50 and 100 corrected labels chosen by `llmkd review` buy, against as many
corrected labels on random pool items.

Writes docs/results/review.md (tables, the exact command, machine, CPU, date, seeds). For each
cell (dataset, pool size, split seed):

1. the run's splits and task from examples/<dataset>.yaml; the teacher (Qwen-0.5B) labels the pool
   from the shared cache ONLY: a prompt that is not cached is an error (no llama.cpp job starts);
2. the student: MiniLM-L6 sentence embeddings (frozen, mean-pooled, llmkd.synthesis.EncoderEmbedder)
   and a logistic regression on them (scikit-learn, C=1), retrained per row: a cheap stand-in for
   the fine-tuned student, which costs 5-15 min a training on these 2 shared cores;
3. base row: the student on the teacher's answered labels; its pool predictions are the
   disagreement signal of llmkd.review.select_for_review (what `llmkd review export` runs);
4. for N in --ns: the N items `uncertain` picks, or N random pool items (--random-seeds draws),
   get their gold label from the vault (standing in for the person) through
   llmkd.review.with_human_labels (what a run with data.human_labels does); the student is
   retrained and scored on the test set (macro-F1, accuracy). "teacher errors among the N" counts
   the chosen items whose teacher label was wrong or missing: what a correction can fix.

`--finetune N` also runs the whole path on each of --finetune-cells with the real student (fine-tuned
MiniLM, `llmkd run` vanilla, --epochs): the base run, `llmkd review export` (jsonl) of N items
(uncertain, confidence, and random with each --random-seeds draw), the vault's answers written into the file, `llmkd review import`,
and `llmkd run` with data.human_labels, each reviewed run under its own name.

    python bench/review.py --cells sst2:1000:0 trec:300:0
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from _common import ROOT, machine_line, mean_std, start, write_keeping_notes  # noqa: E402

import numpy as np  # noqa: E402

from llmkd import api, build  # noqa: E402
from llmkd.config import load_config  # noqa: E402
from llmkd.errors import TeacherError  # noqa: E402
from llmkd.review import export_review, import_review, select_for_review, with_human_labels  # noqa: E402

WHAT = {"uncertain": "chosen by llmkd review (uncertain, the default)",
        "confidence": "chosen by llmkd review --strategy confidence", "random": "random pool items"}


def row_name(n: int, strategy: str) -> str:
    return f"+{n} human labels, {WHAT[strategy]}"


class CacheOnly:
    """A teacher that answers from the cache only: any prompt that reaches it is an error."""

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def _refuse(self, prompts):
        raise TeacherError(f"bench/review.py uses cached teacher answers only; {len(prompts)} prompt(s) of this cell "
                           "are not in the cache. Choose a cell whose pool is cached (llmkd label CONFIG --dry-run)")

    def generate(self, prompts, **kw):
        self._refuse(prompts)

    def score_options(self, prompts, options):
        self._refuse(prompts)


def cache_only() -> None:
    real = build.build_teacher
    build.build_teacher = lambda cfg: CacheOnly(real(cfg))


def overrides(ds: str, pool: int, seed: int, runs: str) -> list[str]:
    out = [f"seed={seed}", f"data.split.pool_size={pool}", "progress=false", "teacher.gate=off", "teacher.n_threads=1",
           f"output_dir={runs}", "student.threads=1"]
    if ds == "sst2":  # the split bench/student_vs_teacher.py labeled (cached)
        out += ["data.split.labeled_per_class=8", "data.split.dev_per_class=8", "data.split.test_size=500"]
    return out


def probe_scores(task, x_train, y_train, x_test, test) -> dict:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=2000).fit(x_train, y_train)
    return task.score([e.label for e in test], list(clf.predict(x_test))), clf


def probe_cell(args, ds: str, pool_n: int, seed: int, embed) -> dict:
    cfg = load_config(Path(args.examples) / f"{ds}.yaml", overrides(ds, pool_n, seed, args.runs))
    sess = build.Session(cfg)
    ctx = sess.context("vanilla", Path(args.runs) / "probe")
    t0 = time.time()
    labels = ctx.label(sess.splits.pool, stage="teacher-pool", desc="teacher on pool")  # the cache only
    pool, test = sess.splits.pool, sess.splits.test
    gold = {u.id: sess.vault.label_of(u.id) for u in pool}  # the person's answers (stand-in) and scoring only
    emb = {}
    vecs = embed([u.text for u in pool] + [e.text for e in test])
    for u, v in zip(pool, vecs[: len(pool)]):
        emb[u.id] = v
    x_test = vecs[len(pool):]
    embed_s = time.time() - t0

    def fit(labs):
        used = [lab for lab in labs if not lab.abstained]
        x = np.stack([emb[lab.example_id] for lab in used])
        scores, clf = probe_scores(sess.task, x, [lab.label for lab in used], x_test, test)
        return scores, clf, sum(lab.label == gold[lab.example_id] for lab in used) / len(pool)

    wrong = {lab.example_id for lab in labels if lab.abstained or lab.label != gold[lab.example_id]}
    base, clf, acc = fit(labels)
    probs = clf.predict_proba(np.stack([emb[u.id] for u in pool]))
    from llmkd.types import Prediction

    preds = {u.id: Prediction(str(clf.classes_[int(p.argmax())]), {str(c): float(q) for c, q in zip(clf.classes_, p)})
             for u, p in zip(pool, probs)}
    texts = {u.id: u.text for u in pool}
    ranked = select_for_review(labels, texts, preds, n=len(pool))  # every item, in review order, with its reasons
    signals = {"whole pool": [it.id for it in ranked]}
    for reason in ("abstained", "disagree", "low_confidence"):
        signals[f"flagged {reason}"] = [it.id for it in ranked if reason in it.reasons]
    by_conf = select_for_review(labels, texts, preds, n=len(pool), strategy="confidence")
    for n in args.ns:
        signals[f"first {n}, strategy uncertain (the default)"] = [it.id for it in ranked[:n]]
        signals[f"first {n}, strategy confidence"] = [it.id for it in by_conf[:n]]
    signal_rows = {k: {"n": len(ids), "wrong": len(wrong & set(ids))} for k, ids in signals.items()}
    rows = {"teacher labels only": [{"metrics": base, "label_acc": acc, "fixed": 0}]}
    for n in args.ns:
        for strategy, seeds in (("uncertain", [0]), ("confidence", [0]), ("random", args.random_seeds)):
            key = row_name(n, strategy)
            for s in seeds:
                picked = select_for_review(labels, texts, preds, n=n, strategy=strategy, seed=s)
                human = {it.id: gold[it.id] for it in picked}
                scores, _, acc = fit(with_human_labels(labels, human))
                rows.setdefault(key, []).append({"metrics": scores, "label_acc": acc,
                                                 "fixed": len(wrong & set(human)), "seed": s})
    gold_labels = with_human_labels(labels, gold)
    scores, _, _ = fit(gold_labels)
    rows["all pool labels gold (upper bound)"] = [{"metrics": scores, "label_acc": 1.0, "fixed": len(wrong)}]
    return {"dataset": ds, "pool": len(pool), "seed": seed, "test": len(test), "abstained": sum(lab.abstained for lab in labels),
            "teacher_wrong": len(wrong), "rows": rows, "signals": signal_rows, "seconds": time.time() - t0, "embed_seconds": embed_s,
            "labels": list(sess.task.labels)}


def finetune_cell(args, ds: str, pool_n: int, seed: int, n: int) -> dict:
    """The real path: llmkd run, review export, the vault's answers, review import, llmkd run again."""
    def config(*extra: str):
        return load_config(Path(args.examples) / f"{ds}.yaml", overrides(ds, pool_n, seed, args.runs) + [
            f"student.epochs={args.epochs}", 'methods=["vanilla"]', *extra])

    name = f"review-{ds}-p{pool_n}-s{seed}-e{args.epochs}"
    out: dict[str, list] = {}
    t0 = time.time()
    summary = api.run(config(f"name={name}"))
    out["teacher labels only"] = [{"metrics": summary.results["vanilla"]["metrics"], "seconds": time.time() - t0}]
    sess = build.Session(config(f"name={name}"))
    for strategy, seeds in (("uncertain", [0]), ("confidence", [0]), ("random", args.random_seeds)):
        for s in seeds:
            t0 = time.time()
            tag = f"{strategy}-{n}-d{s}"
            file = summary.run_dir / "review" / f"bench-{tag}.jsonl"
            export_review(summary.run_dir, file, fmt="jsonl", n=n, method="vanilla", strategy=strategy, seed=s)
            rows = [json.loads(line) for line in file.read_text().splitlines()]
            for r in rows:  # the person: the vault's gold label
                r["label"] = sess.vault.label_of(r["id"])
            file.write_text("".join(json.dumps(r) + "\n" for r in rows))
            rep = import_review(file, summary.run_dir)
            human = summary.run_dir / "review" / f"human-{tag}.jsonl"
            shutil.move(rep.human_file, human)  # one file per condition (import merges into one)
            res = api.run(config(f"data.human_labels={human}", f"name={name}-{tag}"))
            pool = json.loads((res.run_dir / "metrics.json").read_text())["pool"]
            out.setdefault(row_name(n, strategy), []).append({
                "metrics": res.results["vanilla"]["metrics"], "fixed": rep.changed, "seconds": time.time() - t0,
                "gold_used": pool.get("gold labels used (labeled + dev + human)")})
            print(f"finetune {tag}: {time.time() - t0:.0f} s", flush=True)
    return out


def gain_over_base(rows: dict[str, list], ns: list[int]) -> dict[str, float]:
    """Macro-F1 gain over "teacher labels only" per (N, strategy); random: the mean over its draws."""
    base = rows["teacher labels only"][0]["metrics"]["macro_f1"]
    return {f"+{n} {strategy}": float(np.mean([r["metrics"]["macro_f1"] for r in rows[row_name(n, strategy)]])) - base
            for n in ns for strategy in WHAT if row_name(n, strategy) in rows}


def across_seeds(title: str, groups: dict[str, list[dict[str, float]]]) -> list[str]:
    """One row per dataset: each gain's mean ± std over the split seeds."""
    keys = sorted({k for g in groups.values() for d in g for k in d}, key=lambda k: (int(k.split()[0][1:]), k))
    lines = [title, "", "| dataset | split seeds | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for name, g in groups.items():
        cells = []
        for k in keys:
            v = [d[k] for d in g if k in d]
            cells.append("–" if not v else f"{np.mean(v):+.3f}" + (f" ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else ""))
        lines.append(f"| {name} | {len(g)} | " + " | ".join(cells) + " |")
    return lines + [""]


def write(args, command: str, started: float, cells: list[dict], finetunes: list[dict], partial: bool) -> None:
    lines = ["# Human review: corrected labels chosen by `llmkd review` against random ones", "",
             f"Command: `nice -n 10 {command}`  ", machine_line(started), "Torch threads 1.  ",
             "Teacher: Qwen2.5-coder-0.5B-instruct (few-shot, classify.v2, greedy; confidence from scoring the label "
             "set), answers from the shared cache only. Student: all-MiniLM-L6-v2 sentence embeddings (frozen, "
             "mean-pooled) + logistic regression (scikit-learn, C=1), retrained per row; test macro-F1 / accuracy. "
             "The person is simulated: the pool's gold label (the vault) is their answer.", ""]
    if partial:
        lines += ["**PARTIAL: the benchmark stopped before every cell finished; the rows below are the finished ones.**", ""]
    for c in cells:
        lines += [f"## {c['dataset']}, pool {c['pool']}, split seed {c['seed']}", "",
                  f"Pool {c['pool']} items, teacher wrong or abstained on {c['teacher_wrong']} "
                  f"({c['abstained']} abstentions); test {c['test']} items; labels {', '.join(c['labels'])}. "
                  f"Cell time {c['seconds']:.0f} s (embedding {c['embed_seconds']:.0f} s).", "",
                  "| training labels | macro-F1 | accuracy | train-label accuracy | teacher errors among the corrected | draws |",
                  "|---|---:|---:|---:|---:|---:|"]
        for key, runs in c["rows"].items():
            f1 = [r["metrics"]["macro_f1"] for r in runs]
            acc = [r["metrics"]["accuracy"] for r in runs]
            lines.append(f"| {key} | {mean_std(f1)} | {mean_std(acc)} | {mean_std([r['label_acc'] for r in runs])} | "
                         f"{mean_std([r['fixed'] for r in runs], '{:.1f}')} | {len(runs)} |")
        lines.append("")
        base = c["rows"]["teacher labels only"][0]["metrics"]["macro_f1"]
        gains = []
        for n in args.ns:
            ch = c["rows"][row_name(n, "uncertain")][0]["metrics"]["macro_f1"]
            cf = c["rows"][row_name(n, "confidence")][0]["metrics"]["macro_f1"]
            rnd = [r["metrics"]["macro_f1"] for r in c["rows"][row_name(n, "random")]]
            gains.append(f"+{n}: uncertain {ch - base:+.3f}, confidence {cf - base:+.3f}, random "
                         f"{np.mean(rnd) - base:+.3f} (mean of {len(rnd)})")
        lines += ["Macro-F1 gain over teacher labels only: " + "; ".join(gains) + ".", "",
                  "How well each signal finds the teacher's errors (pool items, scored with the vault's gold; the "
                  "student here is the base row's):", "",
                  "| items | count | teacher wrong | share wrong |", "|---|---:|---:|---:|"]
        for key, r in c["signals"].items():
            share = f"{r['wrong'] / r['n']:.2f}" if r["n"] else "–"
            lines.append(f"| {key} | {r['n']} | {r['wrong']} | {share} |")
        lines.append("")
    by_ds: dict[str, list] = {}
    for c in cells:
        by_ds.setdefault(f"{c['dataset']} (pool {c['pool']})", []).append(gain_over_base(c["rows"], args.ns))
    if any(len(g) > 1 for g in by_ds.values()):
        lines += across_seeds("## Across split seeds (frozen probe): macro-F1 gain over teacher labels only", by_ds)
    by_ds = {}
    for f in finetunes:
        by_ds.setdefault(f"{f['dataset']} (pool {f['pool']})", []).append(gain_over_base(f["rows"], [args.finetune]))
    if any(len(g) > 1 for g in by_ds.values()):
        lines += across_seeds("## Across split seeds (fine-tuned student): macro-F1 gain over teacher labels only", by_ds)
    for finetune in finetunes:
        lines += [f"## The whole path with the fine-tuned student ({finetune['cell']}, {args.epochs} epochs)", "",
                  "`llmkd run` (vanilla), `llmkd review export --format jsonl`, the vault's answers written into the "
                  "file, `llmkd review import`, `llmkd run` with data.human_labels: one training per row and draw; "
                  "the disagreement signal is this fine-tuned student's.", "",
                  "| training labels | macro-F1 | accuracy | teacher errors among the corrected | gold labels used "
                  "(report) | draws | wall s per run |", "|---|---:|---:|---:|---|---:|---:|"]
        for key, runs in finetune["rows"].items():
            lines.append(f"| {key} | {mean_std([r['metrics']['macro_f1'] for r in runs])} | "
                         f"{mean_std([r['metrics']['accuracy'] for r in runs])} | "
                         f"{mean_std([r['fixed'] for r in runs if 'fixed' in r], '{:.1f}')} | "
                         f"{runs[0].get('gold_used') or '–'} | {len(runs)} | "
                         f"{np.mean([r['seconds'] for r in runs]):.0f} |")
        lines.append("")
    write_keeping_notes(args.out, "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", nargs="+", default=["sst2:1000:0", "trec:300:0"],
                    help="dataset:pool:split-seed cells whose pool labels are in the teacher cache")
    ap.add_argument("--ns", nargs="+", type=int, default=[50, 100])
    ap.add_argument("--random-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--finetune", type=int, default=0, help="N: also the whole path with the fine-tuned student")
    ap.add_argument("--finetune-cells", nargs="+", default=["trec:300:0"], help="the cells of --finetune")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--examples", default=str(ROOT / "examples"), help="the folder of the dataset configs")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench-review"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "review.md"))
    args = ap.parse_args()
    command, started = start("review")
    import torch

    torch.set_num_threads(1)
    cache_only()
    from llmkd import zoo
    from llmkd.synthesis import EncoderEmbedder

    embed = EncoderEmbedder(str(zoo.resolve("all-minilm-l6-v2")[0]))
    cells: list[dict] = []
    for spec in args.cells:
        ds, pool, seed = spec.split(":")
        cells.append(probe_cell(args, ds, int(pool), int(seed), embed))
        print(f"{spec}: {cells[-1]['seconds']:.0f} s", flush=True)
        write(args, command, started, cells, [], partial=len(cells) < len(args.cells) or bool(args.finetune))
    finetunes: list[dict] = []
    for spec in args.finetune_cells if args.finetune else []:
        ds, pool, seed = spec.split(":")
        finetunes.append({"cell": f"{ds}, pool {pool}, split seed {seed}", "dataset": ds, "pool": int(pool),
                          "rows": finetune_cell(args, ds, int(pool), int(seed), args.finetune)})
        write(args, command, started, cells, finetunes, partial=len(finetunes) < len(args.finetune_cells))
    write(args, command, started, cells, finetunes, partial=False)


if __name__ == "__main__":
    main()
