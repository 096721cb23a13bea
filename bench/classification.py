"""Classification benchmark: teacher few-shot vs supervised-k vs vanilla KD vs supervised-full.

Writes docs/results/classification.md (the table, the exact command, machine, date, seeds).
Every (dataset, teacher, seed) is an ordinary `llmkd run` of examples/<dataset>.yaml with
overrides, so a killed benchmark resumes where it stopped (teacher answers are cached, finished
methods are kept). The supervised rows do not depend on the teacher and run once per seed.

    python bench/classification.py                       # the full grid of the issue
    python bench/classification.py --seeds 0 --pool 300  # a smaller run; the doc says which
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from llmkd import api  # noqa: E402
from llmkd.config import load_config  # noqa: E402

SHORT = {"qwen2.5-coder-0.5b-instruct": "Qwen-0.5B", "qwen2.5-coder-1.5b-instruct": "Qwen-1.5B",
         "smollm2-135m-instruct": "SmolLM2-135M"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["sst2", "trec"])
    ap.add_argument("--teachers", nargs="+", default=["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--k", type=int, default=8, help="gold examples per class (labeled and dev each)")
    ap.add_argument("--pool", type=int, default=1000)
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench-classification"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "classification.md"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    command = "python bench/classification.py " + " ".join(sys.argv[1:])
    started = time.time()
    rows: dict[str, dict[str, list[dict]]] = {}
    for ds in args.datasets:
        for seed in args.seeds:
            for ti, teacher in enumerate(args.teachers):
                methods = ["teacher", "vanilla"] + (["supervised", "supervised_full"] if ti == 0 else [])
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
                    rows.setdefault(ds, {}).setdefault(label, []).append(res)
            write(args, rows, command, started)


def _ms(vals: list[float]) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def write(args: argparse.Namespace, rows: dict, command: str, started: float) -> None:
    order = ["teacher few-shot", "supervised-k", "vanilla KD", "supervised-full"]
    lines = [
        "# Classification benchmark",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{platform.platform()}; wall time {time.time() - started:.0f} s.  ",
        f"Seeds: {args.seeds} (each seed draws the k-shot labeled set, the demonstrations, the dev set, "
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
        lines += [f"## {ds}", "", "| row | macro-F1 | accuracy | abstention | labeling s | prompts/s | prompt tok/s | n seeds |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for prefix in order:
            for label, results in by_label.items():
                if not label.startswith(prefix):
                    continue
                f1 = [r["metrics"]["macro_f1"] for r in results]
                acc = [r["metrics"]["accuracy"] for r in results]
                ab = [r["metrics"]["abstention_rate"] for r in results]
                ts = [r["timings"].get("teacher_seconds") for r in results if r["timings"].get("teacher_seconds")]
                calls = [r["timings"].get("n_prompts", 0) for r in results]
                ptok = [r["timings"].get("prompt_tokens", 0) for r in results]
                pps = [c / t for c, t in zip(calls, ts)] if ts else []
                tps = [p / t for p, t in zip(ptok, ts)] if ts else []
                lines.append(f"| {label} | {_ms(f1)} | {_ms(acc)} | {_ms(ab)} | "
                             f"{(f'{statistics.mean(ts):.0f}' if ts else '–')} | "
                             f"{(f'{statistics.mean(pps):.2f}' if pps else '–')} | "
                             f"{(f'{statistics.mean(tps):.0f}' if tps else '–')} | {len(results)} |")
        lines.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
