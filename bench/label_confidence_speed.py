"""Labeling with a confidence: what scoring the label set costs after the reply is generated.

The default labeling (``teacher.labeling: generate`` with ``confidence: true``) asks the llama.cpp
teacher two things per prompt: the greedy reply, then the log-likelihood of every label
(``score_options``). The second call starts from the prompt's state and last logits, which the
generation left in the context. Until 2026-12-07 it did not: the memo of the prompt's state held
the context's chunk list, which the generation steps appended to, so it never matched and the
example was evaluated a second time.

This benchmark labels the same prompts in up to five ways (``--rows``), interleaved in blocks of
``--block`` prompts so that the machine's load hits every row alike, each row with its own model
instance (no shared state between rows):

* ``reply``: reply only (``confidence: false``);
* ``batched``: reply + confidence, the labels' tokens as parallel sequences in one batch (llmkd
  now, ``LlamaCppTeacher(batch_options=True)``);
* ``walked``: reply + confidence, the labels walked one token at a time in token order, so that
  labels sharing first tokens share those steps (BANKING77's "card_arrival", "card_linking", ...);
  what llmkd did before batching;
* ``dropped``: as ``walked``, with the prompt's state dropped before scoring (before the fix above);
* ``alone``: as ``walked``, each label scored in its own call (before the walk). The emulation
  also tokenizes the prompt once per label, which the old loop did once per prompt (about a
  millisecond per label).

The three walked rows must give the same labels and probabilities, bit for bit. The batched row's
numbers differ from the walk's within llama.cpp's rounding for another batch shape: the doc gives
how many labels agree and the largest difference of a label's probability. It writes
docs/results/label_confidence_speed.md. The prompts are those of a real run: the split and the
demonstrations of ``examples/DATASET.yaml`` (seed 0), ``--n`` pool items after a first one that
warms each instance up (the shared demonstrations are evaluated once per instance, off the clock).

    python bench/label_confidence_speed.py --dataset ag_news --teacher qwen2.5-coder-1.5b-instruct --n 40
    python bench/label_confidence_speed.py --dataset banking77 --n 12 --block 3 --rows reply batched walked
"""

from __future__ import annotations

import argparse

from _common import ROOT, SHORT, interleaved, machine_line, start, write_keeping_notes  # noqa: E402  (puts src/ on sys.path)

from llmkd.build import Session, build_teacher  # noqa: E402
from llmkd.config import load_config  # noqa: E402
from llmkd.labeling import label_examples  # noqa: E402


class Delegate:
    """A teacher that forwards everything to ``teacher``; subclasses change one call."""

    def __init__(self, teacher):
        self.t = teacher

    def __getattr__(self, name):
        return getattr(self.t, name)


class DropState(Delegate):
    """A teacher whose prompt state is forgotten after each generation (the pre-fix behaviour)."""

    def generate(self, *a, **kw):
        out = self.t.generate(*a, **kw)
        self.t._memo = None
        return out


class OneAtATime(Delegate):
    """A teacher that scores each label in its own call (no steps shared between labels), and
    keeps the prompt's state (the fix above)."""

    def score_options(self, prompts, options):
        return [[self.t.score_options([p], [o])[0][0] for o in options] for p in prompts]


ROWS = {"reply": "reply only", "batched": "reply + confidence, labels batched (now)",
        "walked": "reply + confidence, labels walked one token at a time (before batching)",
        "dropped": "reply + confidence, walked, state dropped (before the fix)",
        "alone": "reply + confidence, walked, each label on its own (before the walk)"}


def walking(teacher):
    """``teacher`` (not loaded yet) set to walk the labels one token at a time."""
    teacher.batch_options = False
    return teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ag_news")
    ap.add_argument("--teacher", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--n", type=int, default=40, help="pool prompts")
    ap.add_argument("--block", type=int, default=5, help="prompts per interleaved block")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "label_confidence_speed.md"))
    args = ap.parse_args()
    if "reply" not in args.rows:
        ap.error("--rows needs reply (the baseline of the last column)")
    command, started = start("label_confidence_speed")
    cfg = load_config(ROOT / "examples" / f"{args.dataset}.yaml",
                      [f"teacher.model={args.teacher}", f"teacher.n_threads={args.threads}", "seed=0", "progress=false"])
    sess = Session(cfg)
    task, demos = sess.task, sess.demonstrations  # the demonstrations are fitted with the run's (cached) teacher
    warm, items = sess.splits.pool[0], list(sess.splits.pool[1 : args.n + 1])
    s = cfg.teacher
    make = {"reply": lambda: (build_teacher(s), False), "batched": lambda: (build_teacher(s), True),
            "walked": lambda: (walking(build_teacher(s)), True),
            "dropped": lambda: (DropState(walking(build_teacher(s))), True),
            "alone": lambda: (OneAtATime(walking(build_teacher(s))), True)}
    rows = {ROWS[k]: make[k]() for k in ROWS if k in args.rows}
    for t, conf in rows.values():  # load the model and evaluate the shared demonstrations outside the clock
        label_examples(task, t, [warm], demos, mode="generate", confidence=conf, max_tokens=s.max_tokens, progress=False)
    labels: dict[str, list] = {k: [] for k in rows}
    evaluated = {k: t.evaluated_tokens for k, (t, _) in rows.items()}  # the warm-up's, subtracted below

    def job(name: str):
        t, conf = rows[name]
        return lambda block: labels[name].extend(label_examples(task, t, block, demos, mode="generate", confidence=conf,
                                                                max_tokens=s.max_tokens, progress=False))

    seconds = interleaved(items, args.block, {name: job(name) for name in rows})
    evaluated = {k: t.evaluated_tokens - evaluated[k] for k, (t, _) in rows.items()}
    base = seconds[ROWS["reply"]]
    lines = [
        "# Labeling with a confidence: the cost of scoring the label set after the reply",
        "",
        f"Command: `{command}`  ",
        machine_line(started),
        f"Workload: {len(items)} pool items of examples/{args.dataset}.yaml (seed 0), each in its few-shot "
        f"prompt ({demos.per_prompt} demonstrations, {task.kind}, {len(task.labels)} labels), teacher "
        f"{SHORT.get(args.teacher, args.teacher)} (llama.cpp, {args.threads} threads, greedy, max "
        f"{s.max_tokens} new tokens). The rows are interleaved in blocks of {args.block} prompts, each with its own "
        "model instance; each instance first labels one more pool item outside the clock (loading the model and "
        "evaluating the shared demonstrations), so the table is the steady state of a long labeling run.",
        "",
        "| row | seconds | s per prompt | tokens evaluated | x reply only |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in rows:
        lines.append(f"| {name} | {seconds[name]:.1f} | {seconds[name] / len(items):.2f} | {evaluated[name]} | "
                     f"{seconds[name] / base:.2f} |")
    lines.append("")
    walked = [ROWS[k] for k in ("walked", "dropped", "alone") if k in args.rows]
    same = sum(all(lab.label == row[0].label and lab.probs == row[0].probs for lab in row)
               for row in zip(*(labels[k] for k in walked)))
    if len(walked) > 1:
        lines.append(f"- Same label and probabilities in the {len(walked)} walked rows: {same}/{len(items)}.")
    if "batched" in args.rows and walked:
        a, b = labels[ROWS["batched"]], labels[walked[0]]
        agree = sum(x.label == y.label for x, y in zip(a, b))
        diff = max((abs(x.probs.get(k, 0.0) - y.probs.get(k, 0.0)) for x, y in zip(a, b) if x.probs and y.probs
                    for k in set(x.probs) | set(y.probs)), default=0.0)
        lines.append(f"- Batched against walked: the same label on {agree}/{len(items)}; the largest difference of "
                     f"a label's probability {diff:.4f}; {seconds[walked[0]] / seconds[ROWS['batched']]:.2f}x faster, "
                     f"{evaluated[walked[0]] - evaluated[ROWS['batched']]} fewer tokens evaluated.")
    for k, what in (("dropped", "Reused against dropped state"), ("alone", "Labels walked in token order against "
                                                                            "each label on its own")):
        if k in args.rows and "walked" in args.rows:
            lines.append(f"- {what}: {seconds[ROWS[k]] / seconds[ROWS['walked']]:.2f}x faster, "
                         f"{evaluated[ROWS[k]] - evaluated[ROWS['walked']]} fewer tokens evaluated.")
    first = ROWS["batched"] if "batched" in args.rows else walked[0] if walked else None
    if first:
        lines.append(f"- The confidence costs {100 * (seconds[first] / base - 1):.0f}% on top of the reply now.")
    lines.append("")
    write_keeping_notes(args.out, "\n".join(lines))
    print("\n".join(lines))
    assert same == len(items) or len(walked) < 2, "the walked confidence paths disagree"


if __name__ == "__main__":
    main()
