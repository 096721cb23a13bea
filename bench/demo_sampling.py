"""What drawing the teacher's demonstrations per query costs (``task.demonstrations: per_query``,
the MCKD paper's 30 random gold demonstrations for each sentence) against one fixed set for the run
(``fixed``, every prompt sharing one prefix that llama.cpp evaluates once).

On PTB (``examples/mckd_ptb.yaml``: 50 gold trees), each setting labels the first N sentences of the
test split with the llama.cpp teacher on one thread, through a fresh, empty teacher cache (so no
earlier answer fakes the speed), and reports seconds per prompt (the first prompt apart: it pays
the model load and, for ``fixed``, the shared prefix), the tokens of a prompt, the tokens llama.cpp
actually evaluated (after prefix reuse), and the sentence F1 of the teacher's trees on those
sentences. A cost measurement on a handful of sentences: the F1 column is no quality claim.

Writes docs/results/demo_sampling.md.

    python bench/demo_sampling.py                                   # fixed:10 per_query:10 per_query:30, 12 sentences
    python bench/demo_sampling.py --n 5 --settings fixed:10 per_query:10
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from _common import ROOT, SHORT, add_set_arg, machine_line, md_table, parser, start, write_keeping_notes  # noqa: E402

import llmkd  # noqa: E402
from llmkd.build import Session  # noqa: E402
from llmkd.labeling import label_examples  # noqa: E402


def measure(setting: str, args, cache_dir: Path) -> dict:
    """Label the first ``args.n`` test sentences under ``setting`` (``MODE:SHOTS``) with a fresh cache."""
    mode, shots = setting.split(":")
    overrides = [f"task.demonstrations={mode}", f"task.shots={shots}", f"teacher.model={args.teacher}",
                 "teacher.n_threads=1", f"teacher.n_ctx={args.n_ctx}", f"seed={args.seeds[0]}",
                 f"cache={cache_dir / f'{mode}-{shots}.sqlite'}", "progress=false", *args.set]
    cfg = llmkd.load_config(ROOT / "examples" / "mckd_ptb.yaml", overrides)
    sess = Session(cfg)
    demos = sess.demonstrations  # fitted to teacher.n_ctx (the longest draw, for per_query)
    items = list(sess.splits.test[: args.n])
    teacher = sess.teacher
    native = teacher.teacher
    settings = {"mode": "generate", "confidence": False, "max_tokens": cfg.teacher.max_tokens, "progress": False}
    t0 = time.perf_counter()
    labels = label_examples(sess.task, teacher, items[:1], demos, **settings)  # model load (+ the shared prefix)
    t1 = time.perf_counter()
    before = (native.evaluated_tokens, teacher.prompt_tokens, teacher.completion_tokens)
    labels += label_examples(sess.task, teacher, items[1:], demos, **settings)
    t2 = time.perf_counter()
    evaluated, prompt_tokens, completion_tokens = (b - a for a, b in zip(
        before, (native.evaluated_tokens, teacher.prompt_tokens, teacher.completion_tokens)))
    scores = sess.task.score([x.label for x in items], [None if lab.abstained else lab.label for lab in labels])
    rest = max(1, len(items) - 1)
    return {"setting": setting, "mode": mode, "shots_asked": int(shots), "shots": demos.per_prompt,
            "n": len(items), "first_s": t1 - t0, "per_prompt_s": (t2 - t1) / rest,
            "prompt_tokens": prompt_tokens / rest, "evaluated_per_prompt": evaluated / rest,
            "completion_per_prompt": completion_tokens / rest, "pool": len(sess.splits.pool),
            "sentence_f1": scores["sentence_f1"], "abstained": sum(lab.abstained for lab in labels),
            "misses": teacher.misses, "hits": teacher.hits, "shots_at_4096": _shots_at(4096, overrides) if mode == "per_query" else None}


def _shots_at(n_ctx: int, overrides: list[str]) -> int:
    """The demonstrations per prompt that fitting to ``teacher.n_ctx=n_ctx`` keeps (the tokenizer only)."""
    cfg = llmkd.load_config(ROOT / "examples" / "mckd_ptb.yaml", [*overrides, f"teacher.n_ctx={n_ctx}"])
    return Session(cfg).demonstrations.per_prompt


def main() -> None:
    ap = parser(__doc__, "demo_sampling", ["ptb"], teachers=None, dataset_choices=["ptb"])
    ap.set_defaults(seeds=[0])
    ap.add_argument("--teacher", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n", type=int, default=12, help="test sentences labeled per setting")
    ap.add_argument("--n-ctx", type=int, default=8192, help="teacher.n_ctx of every setting (the doc also says what the default 4096 would keep)")
    ap.add_argument("--settings", nargs="+", default=["fixed:10", "per_query:10", "per_query:30"],
                    help="MODE:SHOTS, MODE one of fixed, per_query")
    add_set_arg(ap, "data.train=PATH data.test=PATH")
    args = ap.parse_args()
    command, started = start("demo_sampling")
    cache_dir = Path(tempfile.mkdtemp(prefix="llmkd-demo-sampling-", dir="/tmp"))  # fresh caches: cache misses only
    rows = []
    try:
        for setting in args.settings:
            r = measure(setting, args, cache_dir)
            rows.append(r)
            print(r, flush=True)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    base = next((r for r in rows if r["mode"] == "fixed"), None)
    table = [[f"{r['mode']}, {r['shots']} per prompt" + (f" (asked {r['shots_asked']})" if r["shots"] != r["shots_asked"]
                                                          else ""),
              f"{r['per_prompt_s']:.2f}" + (f" ({r['per_prompt_s'] / base['per_prompt_s']:.1f}x)" if base else ""),
              f"{r['first_s']:.1f}", f"{r['per_prompt_s'] * r['pool'] / 60:.0f}", f"{r['prompt_tokens']:.0f}",
              f"{r['evaluated_per_prompt'] - r['completion_per_prompt'] + 1:.0f}", f"{r['completion_per_prompt']:.0f}",
              f"{100 * r['sentence_f1']:.1f}", f"{r['abstained']}",
              f"{r['misses']} / {r['hits']}"]
             for r in rows]
    lines = ["# Demonstrations drawn per query vs one fixed set: the cost", "",
             f"Command: `{command}`  ", machine_line(started) + "Teacher on 1 thread.", "",
             f"PTB (`examples/mckd_ptb.yaml`, seed {args.seeds[0]}: 50 gold trees, the demonstrations drawn from "
             f"them), teacher {SHORT.get(args.teacher, args.teacher)} (llama.cpp, Q4_K_M, plain prompt, greedy, "
             f"max_tokens 200, teacher.n_ctx {args.n_ctx}), the first {args.n} sentences of the test split, each "
             "setting through a fresh, empty teacher cache (every answer a cache miss). `fixed`: one seeded draw in "
             "every prompt; `per_query`: a draw of its own per sentence (seeded by seed and sentence id, in the "
             "gold set's order).", "",
             *md_table(["demonstrations", "s / prompt (vs fixed)", "first prompt s", "pool of 500: min (est.)",
                        "prompt tokens", "prompt tokens evaluated", "reply tokens", "sentence F1", "abstained",
                        "cache misses / hits"], table),
             "\"s / prompt\" and the token columns: per prompt after the first (which pays the model load and, for "
             "`fixed`, the shared prefix: \"first prompt s\"). \"prompt tokens\": the whole prompt as the teacher "
             "reported it (its prompt format included); \"prompt tokens evaluated\": "
             "what llama.cpp computed of it after reusing the previous prompt's KV state (`fixed`: the sentence; "
             "`per_query`: from the first 32-token chunk the two prompts do not share; the teacher's count of "
             "evaluated tokens less those of the reply, which it evaluates but for the last, within a token per prompt). "
             "\"pool of 500\": s / prompt times the config's 500-sentence pool, the labeling a run does. Sentence F1 (MCKD's number: "
             "mean per-sentence unlabeled bracket F1, in points) on these few sentences only: a cost measurement, "
             "not a quality claim (the differences are within the noise of so few sentences).", ""]
    fits = [f"{r['shots_asked']} asked: {r['shots_at_4096']}" for r in rows if r["shots_at_4096"] is not None]
    if fits:
        lines += ["With the default teacher.n_ctx 4096, fitting the longest draw to the context "
                  "(`labeling.fit_demonstrations`) would keep per prompt: " + "; ".join(fits) + ".", ""]
    write_keeping_notes(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
