"""Which prompt format suits a teacher: the few-shot labeling prompt sent as plain text (the model
continues ``Label:``) or wrapped in the model's chat template, with the label generated or chosen
by scoring the label set. Scored on the first N items of each dataset's seeded *unlabeled pool*
against the pool's gold (never the test set), as a user would choose a set-up on data they hold.

Writes docs/results/prompt_format.md.

    python bench/prompt_format.py                       # SST-2 and TREC, 40 pool items, Qwen-0.5B
    python bench/prompt_format.py --n 100 --teachers qwen2.5-coder-1.5b-instruct
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

from _common import ROOT, SHORT, machine_line, parser, start  # noqa: E402  (puts src/ on sys.path)

import llmkd  # noqa: E402
from llmkd.labeling import label_examples  # noqa: E402

VARIANTS = [(False, "generate"), (True, "generate"), (False, "score"), (True, "score")]


def main() -> None:
    ap = parser(__doc__, "prompt_format", ["sst2", "trec"], teachers=["qwen2.5-coder-0.5b-instruct"])
    ap.add_argument("--n", type=int, default=40, help="pool items scored per dataset")
    ap.add_argument("--threads", type=int, default=None, help="teacher.n_threads")
    args = ap.parse_args()
    command, started = start("prompt_format")
    lines = ["# Prompt format: plain few-shot text vs the chat template", "", f"Command: `{command}`  ",
             "", f"First {args.n} items of each dataset's unlabeled pool (seed {args.seeds[0]}, the example config's "
             "split: 8 gold demonstrations per class), scored against the pool's gold labels; greedy. "
             "\"generate\" parses the reply, \"score\" takes the argmax of the label-set log-likelihoods. "
             "\"labels used\" is how many distinct labels the teacher gave.", ""]
    for teacher in args.teachers:
        for ds in args.datasets:
            lines += [f"## {ds}, {SHORT.get(teacher, teacher)}", "",
                      "| prompt | label from | accuracy | abstained | labels used | most common label | seconds |",
                      "|---|---|---:|---:|---:|---|---:|"]
            for chat, mode in VARIANTS:
                overrides = [f"teacher.model={teacher}", f"teacher.chat={str(chat).lower()}", f"teacher.labeling={mode}"]
                if args.threads:
                    overrides.append(f"teacher.n_threads={args.threads}")
                cfg = llmkd.load_config(ROOT / "examples" / f"{ds}.yaml", overrides)
                splits, vault = llmkd.make_splits(cfg.data, seed=args.seeds[0])
                task = llmkd.build_task(cfg.task, splits.labels)
                items = list(splits.pool[: args.n])
                t0 = time.perf_counter()
                labs = label_examples(task, llmkd.build_teacher(cfg.teacher), items, splits.labeled, mode=mode,
                                      confidence=False, max_tokens=cfg.teacher.max_tokens, progress=False)
                seconds = time.perf_counter() - t0
                gold = [vault.label_of(u.id) for u in items]
                acc = sum(lab.label == g for lab, g in zip(labs, gold)) / len(items)
                counts = collections.Counter(lab.label for lab in labs if not lab.abstained)
                top, top_n = counts.most_common(1)[0] if counts else ("–", 0)
                lines.append(f"| {'chat template' if chat else 'plain text'} | {mode} | {acc:.3f} | "
                             f"{sum(lab.abstained for lab in labs)} | {len(counts)} of {len(splits.labels)} | "
                             f"{top} ({top_n}) | {seconds:.0f} |")
                print(lines[-1], flush=True)
            lines.append("")
    lines.append(machine_line(started))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
