"""Labeling with a confidence: what scoring the label set costs after the reply is generated.

The default labeling (``teacher.labeling: generate`` with ``confidence: true``) asks the llama.cpp
teacher two things per prompt: the greedy reply, then the log-likelihood of every label
(``score_options``). The second call can start from the prompt's state and last logits, which the
generation left in the context (only each label's tokens after its first are evaluated). Until
2026-12-07 it did not: the memo of the prompt's state held the context's chunk list, which the
generation steps appended to, so it never matched and the example was evaluated a second time.

This benchmark labels the same prompts four ways, interleaved in blocks of ``--block`` prompts so
that the machine's load hits every row alike, each row with its own model instance (no shared
state between rows):

* reply only (``confidence: false``);
* reply + confidence, the prompt's state reused (llmkd now);
* reply + confidence, the state dropped before scoring (what llmkd did before the fix);
* reply + confidence, each label scored on its own (what llmkd did before it walked the labels in
  token order, so that labels sharing first tokens share those steps: BANKING77's
  "card_arrival", "card_linking", ...). The emulation also tokenizes the prompt once per label,
  which the old loop did once per prompt (about a millisecond per label).

It checks that the three confidence rows give the same labels and probabilities, and writes
docs/results/label_confidence_speed.md. The prompts are those of a real run: the split and the
demonstrations of ``examples/DATASET.yaml`` (seed 0), ``--n`` pool items after a first one that
warms each instance up (the shared demonstrations are evaluated once per instance, off the clock).

    python bench/label_confidence_speed.py --dataset ag_news --teacher qwen2.5-coder-1.5b-instruct --n 40
"""

from __future__ import annotations

import argparse

from _common import ROOT, SHORT, cpu_model, interleaved, machine_line, start, write_keeping_notes  # noqa: E402  (puts src/ on sys.path)

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ag_news")
    ap.add_argument("--teacher", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--n", type=int, default=40, help="pool prompts")
    ap.add_argument("--block", type=int, default=5, help="prompts per interleaved block")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "label_confidence_speed.md"))
    args = ap.parse_args()
    command, started = start("label_confidence_speed")
    cfg = load_config(ROOT / "examples" / f"{args.dataset}.yaml",
                      [f"teacher.model={args.teacher}", f"teacher.n_threads={args.threads}", "seed=0", "progress=false"])
    sess = Session(cfg)
    task, demos = sess.task, sess.demonstrations  # the demonstrations are fitted with the run's (cached) teacher
    warm, items = sess.splits.pool[0], list(sess.splits.pool[1 : args.n + 1])
    s = cfg.teacher
    rows = {"reply only": (build_teacher(s), False), "reply + confidence, state reused (now)": (build_teacher(s), True),
            "reply + confidence, state dropped (before the fix)": (DropState(build_teacher(s)), True),
            "reply + confidence, each label on its own (before the walk)": (OneAtATime(build_teacher(s)), True)}
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
    order = list(rows)
    now, old, alone = order[1], order[2], order[3]
    same = sum(a.label == b.label == c.label and a.probs == b.probs == c.probs
               for a, b, c in zip(labels[now], labels[old], labels[alone]))
    base = seconds[order[0]]
    lines = [
        "# Labeling with a confidence: the cost of scoring the label set after the reply",
        "",
        f"Command: `{command}`  ",
        machine_line(started) + f" CPU: {cpu_model()}.  ",
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
    for name in order:
        lines.append(f"| {name} | {seconds[name]:.1f} | {seconds[name] / len(items):.2f} | {evaluated[name]} | "
                     f"{seconds[name] / base:.2f} |")
    lines += [
        "",
        f"- Same label and probabilities in the three confidence rows: {same}/{len(items)}.",
        f"- Reused against dropped state: {seconds[old] / seconds[now]:.2f}x faster.",
        f"- Labels walked in token order against each label on its own: {seconds[alone] / seconds[now]:.2f}x faster, "
        f"{evaluated[alone] - evaluated[now]} fewer tokens evaluated.",
        f"- The confidence costs {100 * (seconds[now] / base - 1):.0f}% on top of the reply now, "
        f"{100 * (seconds[old] / base - 1):.0f}% before the fix.",
        "",
    ]
    write_keeping_notes(args.out, "\n".join(lines))
    print("\n".join(lines))
    assert same == len(items), "the confidence paths disagree"


if __name__ == "__main__":
    main()
