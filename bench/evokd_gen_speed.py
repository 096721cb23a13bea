"""EvoKD's teacher paths, timed: seconds per generated sample (free text vs a GBNF grammar of the
asked lines) and per labeled sample (free vs choice-constrained labeling), with the packaged
teacher. Writes docs/results/evokd_gen_speed.md.

No cache: every call runs the model (a fresh, uncached teacher), so the times are real. The
generation prompt is EvoKD's round-1 (plain) prompt for SST-2 with the run's seed examples; the
labeling prompt is the run's few-shot classify prompt on the texts the free path wrote.

    python bench/evokd_gen_speed.py --threads 1 --calls 3 --per-call 10
"""

from __future__ import annotations

import json
import time

from _common import ROOT, SHORT, machine_line, parser, start, write_keeping_notes  # noqa: E402  (puts src/ on sys.path)

from llmkd.build import Session, build_teacher  # noqa: E402
from llmkd.config import load_config  # noqa: E402
from llmkd.labeling import label_examples  # noqa: E402
from llmkd.methods.evokd import lines_grammar  # noqa: E402
from llmkd.synthesis import parse_generated  # noqa: E402
from llmkd.tasks.base import load_template  # noqa: E402
from llmkd.teachers.base import ChatTurn, Constraint  # noqa: E402
from llmkd.types import Unlabeled  # noqa: E402


def main() -> None:
    ap = parser(__doc__, "evokd_gen_speed", ["sst2"], teachers=["qwen2.5-coder-0.5b-instruct"], dataset_choices=["sst2"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, default=3, help="generation calls per path (each a new seed)")
    ap.add_argument("--per-call", type=int, default=10, help="samples asked for per call (EvoKD's max_per_call)")
    ap.add_argument("--tokens-per-sample", type=int, default=30)
    args = ap.parse_args()
    command, started = start("evokd_gen_speed")
    lines: list[str] = []
    for model in args.teachers:
        cfg = load_config(ROOT / "examples" / "evokd_sst2.yaml", [f"teacher.model={model}", f"teacher.n_threads={args.threads}",
                                                                  "progress=false"])
        sess = Session(cfg)
        teacher = build_teacher(cfg.teacher)  # uncached
        task = sess.task
        prompt = ChatTurn(load_template("evokd_generate_cls.v1").render(
            instruction=task.instruction, labels=list(task.labels), descriptions=task.synthesis_descriptions(),
            examples=[{"text": e.text, "label": e.label} for e in sess.splits.labeled], analysis="", n=args.per_call,
            n_hard=0, n_easy=0).strip())
        teacher.generate([ChatTurn("Say hi.")], max_tokens=2)  # load the model outside the timings
        rows, texts = [], []
        for path in ("free", "grammar"):
            constraint = Constraint("grammar", grammar=lines_grammar({"plain": args.per_call})) if path == "grammar" else None
            secs = toks = parsed = 0.0
            for c in range(args.calls):
                t0 = time.perf_counter()
                reply = teacher.generate([prompt], max_tokens=args.tokens_per_sample * args.per_call, temperature=0.7,
                                         seed=1009 + 101 * c, **({"constraint": constraint} if constraint else {}))[0]
                secs += time.perf_counter() - t0
                toks += reply.completion_tokens
                gens = parse_generated(reply.text, kinds=["plain"], labels=task.labels)[: args.per_call]
                parsed += len(gens)
                if path == "free":
                    texts += [g.text for g in gens]
            rows.append((f"generate, {path}", secs, toks, parsed, args.calls * args.per_call))
        items = [Unlabeled(f"s{i}", t) for i, t in enumerate(texts)]
        for constrained in (False, True):
            t0 = time.perf_counter()
            labs = label_examples(task, teacher, items, sess.teacher_shots, mode="generate", confidence=False,
                                  max_tokens=cfg.teacher.max_tokens, progress=False, constrained=constrained)
            secs = time.perf_counter() - t0
            rows.append((f"label, {'choice-constrained' if constrained else 'free'}", secs, 0,
                         sum(not lab.abstained for lab in labs), len(items)))
        lines += [f"## {SHORT.get(model, model)}, llama.cpp, n_threads={args.threads}", "",
                  "| path | seconds | completion tokens | usable / asked | seconds per usable sample |",
                  "|---|---:|---:|---:|---:|"]
        for name, secs, toks, ok, asked in rows:
            per = f"{secs / ok:.2f}" if ok else "–"
            lines.append(f"| {name} | {secs:.1f} | {int(toks) or '–'} | {int(ok)} / {asked} | {per} |")
        lines.append("")
        print(json.dumps(rows), flush=True)
    head = ["# EvoKD teacher paths: time per generated and per labeled sample", "", f"Command: `{command}`  ",
            machine_line(started), "",
            "Generation: EvoKD's plain-round prompt for SST-2 (chat turn, temperature 0.7, a new seed per call, "
            f"max {args.tokens_per_sample} tokens per sample asked); free text vs the GBNF grammar of `grammar: true`. "
            "Labeling: the run's few-shot classify prompt (greedy) on the texts the free path wrote; free vs "
            "`teacher.constrained: true` (a token trie of the labels). Usable: parsed lines (generation), "
            "non-abstained labels (labeling). Prefix reuse is on in every row (the default).", ""]
    write_keeping_notes(args.out, "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
