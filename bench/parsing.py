"""Sequence-generation benchmark (MCKD's tasks): constituency parsing (CRAFT, PTB sample) and slot
filling (ATIS, SNIPS) with teacher few-shot, supervised-50, vanilla KD and supervised-N rows.

Writes docs/results/parsing.md (the table, the exact command, machine, date, seeds, sizes). Every
(dataset, teacher, seed) is an ordinary `llmkd run` of examples/<config>.yaml with overrides, so a
killed benchmark resumes where it stopped (teacher answers are cached, finished methods kept).
The supervised rows do not depend on the teacher and run once per seed.

    python bench/parsing.py                                   # the issue's grid (hours on 2 CPU cores)
    python bench/parsing.py --datasets atis_slots --pool 40 --test-size 40 --seeds 0   # what fits
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import ROOT, SHORT, machine_line, parser, rows_in_order, start  # noqa: E402  (puts src/ on sys.path)
from _common import mean_std as _ms

from llmkd import api  # noqa: E402
from llmkd.config import load_config  # noqa: E402

MAIN = {"tree": ("sentence_f1", "corpus_f1"), "slots": ("slot_f1", "sentence_f1")}


def main() -> None:
    ap = parser(__doc__, "parsing", ["craft", "ptb", "atis_slots", "snips_slots"])
    ap.add_argument("--labeled", type=int, default=50, help="gold examples (also the demonstration source)")
    ap.add_argument("--dev", type=int, default=50)
    ap.add_argument("--pool", type=int, default=500)
    ap.add_argument("--full", type=int, default=500, help="supervised-N: gold labeled + pool gold, pool size")
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--min-steps", type=int, default=60)
    args = ap.parse_args()
    command, started = start("parsing")
    rows: dict[str, dict[str, list[dict]]] = {}
    for ds in args.datasets:
        for seed in args.seeds:
            for ti, teacher in enumerate(args.teachers):
                methods = ["teacher", "vanilla"] + (["supervised", "supervised_full"] if ti == 0 else [])
                common = [f"seed={seed}", f"output_dir={args.runs}", f"teacher.model={teacher}",
                          f"data.split.labeled_n={args.labeled}", f"data.split.dev_n={args.dev}",
                          f"data.split.test_size={args.test_size}", f"student.epochs={args.epochs}",
                          f"student.min_steps={args.min_steps}", "progress=false"]
                tag = f"l{args.labeled}-d{args.dev}-t{args.test_size}-e{args.epochs}-s{seed}"
                runs = [(f"{ds}-{SHORT.get(teacher, teacher)}-p{args.pool}-{tag}", args.pool,
                         [m for m in methods if m != "supervised_full"])]
                if "supervised_full" in methods:  # its own pool size: supervised-N uses N gold examples
                    runs.append((f"{ds}-full{args.full}-{tag}", args.full, ["supervised_full"]))
                for name, pool, ms in runs:
                    cfg = load_config(ROOT / "examples" / f"{ds}.yaml", common + [
                        f"name={name}", f"data.split.pool_size={pool}", f"methods={json.dumps(ms)}"])
                    t0 = time.time()
                    summary = api.run(cfg)
                    print(f"{ds} {teacher} seed {seed} {ms}: {time.time() - t0:.0f}s", flush=True)
                    tname = SHORT.get(teacher, teacher)
                    for m, res in summary.results.items():
                        label = {"teacher": f"teacher few-shot ({tname})", "vanilla": f"vanilla KD ({tname})",
                                 "supervised": f"supervised-{args.labeled}",
                                 "supervised_full": f"supervised-{args.labeled + args.full} (gold pool)"}[m]
                        res["target"] = cfg.task.target
                        rows.setdefault(ds, {}).setdefault(label, []).append(res)
                write(args, rows, command, started)


def write(args: argparse.Namespace, rows: dict, command: str, started: float) -> None:
    order = ["teacher few-shot", "supervised-", "vanilla KD"]
    lines = [
        "# Sequence generation benchmark (parsing, slot filling)",
        "",
        f"Command: `{command}`  ",
        machine_line(started),
        f"Seeds: {args.seeds}. Sizes: labeled {args.labeled} gold (demonstrations drawn from them), dev {args.dev}, "
        f"pool {args.pool}, supervised-N = labeled + {args.full} gold, test subsample {args.test_size}; student "
        f"bert2bert from all-MiniLM-L6-v2, up to {args.epochs} epochs (min {args.min_steps} steps), early stopping "
        "on the dev set's first metric. Teacher: llama.cpp, greedy, outputs repaired (llmkd.formats.trees / llmkd.formats.slots), "
        "unrepairable outputs are abstentions (scored 0 and counted).",
        "",
        "Parsing: sentence F1 = mean of per-sentence unlabeled bracket F1 (MCKD's number), corpus F1 pooled; "
        "slots: slot F1 = seqeval corpus F1, sentence F1 = mean per-sentence chunk F1.",
        "",
    ]
    for ds, by_label in rows.items():
        target = next(iter(by_label.values()))[0]["target"]
        k1, k2 = MAIN[target]
        lines += [f"## {ds}", "", f"| row | {k1} | {k2} | exact match | abstention | labeling s | n seeds |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for label, results in rows_in_order(by_label, order):
            get = lambda k: [r["metrics"][k] for r in results]  # noqa: E731
            ts = [r["timings"].get("teacher_seconds") for r in results if r["timings"].get("teacher_seconds")]
            lines.append(f"| {label} | {_ms(get(k1))} | {_ms(get(k2))} | {_ms(get('exact_match'))} | "
                         f"{_ms(get('abstention_rate'))} | {(f'{statistics.mean(ts):.0f}' if ts else '–')} | "
                         f"{len(results)} |")
        lines.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
