"""The classification student's defaults (``student.lr``, ``warmup_steps``, ``epochs``,
``max_length``), chosen on held-out *training* data, never on test.

For each config (``examples/NAME.yaml``) and seed this labels the run's pool with its teacher
(``llmkd label``: cached answers cost nothing), then trains one student per (learning rate, warmup)
cell on the teacher's pool labels, exactly as vanilla KD trains (``teacher_examples``, the
student the factory builds from the config), and after every epoch scores two sets:

- **sweep-dev**: ``--sweep-dev`` gold examples drawn from the *training* file, outside the run's
  labeled set, dev set and pool. Large enough to tell cells apart; this is what picks the defaults.
  A user has no such set (their dev set is 8 per class), which is why the library ships defaults.
- **the run's dev set** (8 per class), to show how often a user's own dev set would pick the same
  cell (and how noisy it is).

No test file is read. ``max_length`` is judged by how many pool texts the student's tokenizer
would cut at each length (a cut text loses words; a longer limit only costs time), and by the
seconds per epoch of the cells.

    python bench/defaults.py --configs sst2 trec --seeds 0 --lrs 3e-5 1e-4 3e-4 --warmups 0 10 100

Writes docs/results/defaults.md (the per-epoch history in defaults.json beside it).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import _common as C

from llmkd import api  # noqa: E402
from llmkd.config import load_config  # noqa: E402


def sweep_dev(cfg: Any, splits: Any, n: int, seed: int) -> list[Any]:
    """``n`` gold training examples outside the run's labeled set, dev set and pool (seeded)."""
    from llmkd.data.readers import read_examples

    used = {e.id for e in splits.labeled} | {e.id for e in splits.dev} | {u.id for u in splits.pool}
    rest = [e for e in read_examples(cfg.data.train, cfg.data, prefix="train:") if e.id not in used]
    if len(rest) < n:
        raise SystemExit(f"{cfg.data.train}: only {len(rest)} training examples are left outside the run's splits; "
                         f"lower --sweep-dev ({n})")
    return random.Random(10_000 + seed).sample(rest, n)


def truncation(model: str, texts: list[str], lengths: list[int]) -> dict[str, Any]:
    """Token-length percentiles of ``texts`` under the student's tokenizer, and the share cut at
    each of ``lengths`` (special tokens counted, as the student counts them)."""
    from transformers import AutoTokenizer

    from llmkd import zoo

    tok = AutoTokenizer.from_pretrained(zoo.resolve(model)[0])
    n = sorted(len(ids) for ids in tok(texts)["input_ids"])
    q = lambda p: n[min(len(n) - 1, int(p * len(n)))]  # noqa: E731
    return {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": n[-1],
            "cut": {str(L): sum(x > L for x in n) / len(n) for L in lengths}}


def cell(cfg: Any, task: Any, train: list[Any], devs: dict[str, list[Any]], lr: float, warmup: int, epochs: int,
         max_length: int | None) -> list[dict[str, Any]]:
    """One student (the config's, with ``lr`` / ``warmup`` / ``max_length``), ``epochs`` epochs on
    ``train``; each epoch's macro-F1 on every set of ``devs`` and its seconds."""
    from llmkd.build import make_student_factory

    update: dict[str, Any] = {"lr": lr, "warmup_steps": warmup, "threads": cfg.student.threads or 1}
    if max_length is not None:
        update["max_length"] = max_length
    scfg = cfg.student.model_copy(update=update)
    st = make_student_factory(scfg, task.labels, task)[0](cfg.seed)
    history = []
    for ep in range(1, epochs + 1):
        t = time.time()
        loss = st.fit_epoch(train)
        row: dict[str, Any] = {"lr": lr, "warmup": warmup, "max_length": scfg.max_length, "epoch": ep,
                               "loss": loss, "seconds": time.time() - t}
        for name, dev in devs.items():
            preds = [p.label for p in st.predict(dev)]
            row[name] = task.score([e.label for e in dev], preds)["macro_f1"]
        print(json.dumps({"config": cfg.name, **row}), flush=True)
        history.append(row)
    return history


def best_epoch(h: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The epoch with the highest ``key`` score (the first of ties), as early stopping keeps it."""
    return max(h, key=lambda r: (r[key], -r["epoch"]))


def main() -> None:
    ap = C.parser(__doc__, "defaults", ["sst2", "trec"], teachers=None)
    ap.add_argument("--configs", nargs="+", default=None, help="example configs (examples/NAME.yaml); "
                    "overrides --datasets")
    ap.add_argument("--teacher", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--student", default=None, help="student.model (zoo name, HF id or path; default: the config's)")
    ap.add_argument("--pool", type=int, default=1000)
    ap.add_argument("--lrs", nargs="+", type=float, default=[3e-5, 1e-4, 3e-4])
    ap.add_argument("--warmups", nargs="+", type=int, default=[0, 10, 100])
    ap.add_argument("--max-lengths", nargs="*", type=int, default=[],
                    help="also train the sweep-dev-best (lr, warmup) at these max_length values")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--sweep-dev", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    command, started = C.start("defaults")
    names = args.configs or args.datasets
    out = Path(args.out)
    store_path = out.with_suffix(".json")
    store = json.loads(store_path.read_text()) if store_path.exists() else {"commands": [], "cells": [], "lengths": {}}
    store["commands"].append(command)

    from llmkd.build import build_task
    from llmkd.data import make_splits
    from llmkd.methods.training import teacher_examples

    for name in names:
        for seed in args.seeds:
            overrides = [f"seed={seed}", f"output_dir={args.runs}", f"teacher.model={args.teacher}",
                         f"name={name}-{C.SHORT.get(args.teacher, args.teacher)}-p{args.pool}-s{seed}"
                         + (f"-{args.student}" if args.student else ""),
                         f"data.split.pool_size={args.pool}", f"teacher.n_threads={args.threads}",
                         f"student.threads={args.threads}", "teacher.gate=off"]
            overrides += [f"student.model={args.student}"] if args.student else []
            cfg = load_config(C.ROOT / "examples" / f"{name}.yaml", overrides)
            t = time.time()
            _, labels = api.label(cfg)
            print(f"{cfg.name}: pool labeled in {time.time() - t:.0f} s", flush=True)
            splits, vault = make_splits(cfg.data, seed)
            task = build_task(cfg.task, splits.labels)
            train = teacher_examples(labels, {u.id: u.text for u in splits.pool})
            acc = sum(e.label == vault.label_of(e.id) for e in train) / len(train)
            devs = {"sweep_dev": sweep_dev(cfg, splits, args.sweep_dev, seed), "run_dev": list(splits.dev)}
            store["lengths"][cfg.name] = truncation(cfg.student.model, [u.text for u in splits.pool], [32, 64, 128])
            done = {(c["config"], c["lr"], c["warmup"], c["max_length"]) for c in store["cells"]}

            def train_cell(lr: float, w: int, ml: int | None) -> None:
                """Train and store one cell (skipped when the store has it); the store is saved after each."""
                if (cfg.name, lr, w, ml or cfg.student.max_length) in done:
                    return
                h = cell(cfg, task, train, devs, lr, w, args.epochs, ml)
                store["cells"].append({"config": cfg.name, "dataset": name, "seed": seed, "lr": lr, "warmup": w,
                                       "max_length": h[0]["max_length"], "n_train": len(train),
                                       "student": cfg.student.model, "pool_label_acc": acc, "history": h})
                store_path.write_text(json.dumps(store, indent=1), encoding="utf-8")

            for lr in args.lrs:
                for w in args.warmups:
                    train_cell(lr, w, None)
            mine = [c for c in store["cells"] if c["config"] == cfg.name and c["max_length"] == cfg.student.max_length]
            best = max(mine, key=lambda c: best_epoch(c["history"], "sweep_dev")["sweep_dev"])
            for ml in args.max_lengths:
                if ml != cfg.student.max_length:
                    train_cell(best["lr"], best["warmup"], ml)
    store_path.write_text(json.dumps(store, indent=1), encoding="utf-8")
    write_doc(out, store, started)


def write_doc(out: Path, store: dict[str, Any], started: float) -> None:
    cells = store["cells"]
    lines = ["# Classification student defaults, chosen on held-out training data", "",
             "Commands (in order; each adds its cells):  "] + [f"`{c}`  " for c in store["commands"]] + [
        C.machine_line(started, "of the last command"), "",
        "Each cell trains the config's student (MiniLM-L6 unless `--student` or the config says otherwise; batch 16, AdamW, "
        "weight decay 0.01, linear warmup to `lr` over `warmup` steps, then constant) on the teacher's labels "
        "of the pool, and scores macro-F1 after every epoch on **sweep-dev** (gold training examples outside "
        "the run's labeled set, dev set and pool) and on the run's own **dev** set (8 per class). No test data "
        "is read. \"best\" is the epoch early stopping would keep on that set.", ""]
    for cfg_name in dict.fromkeys(c["config"] for c in cells):
        mine = [c for c in cells if c["config"] == cfg_name]
        c0 = mine[0]
        lines += [f"## {cfg_name}", "",
                  f"Student {c0.get('student', 'all-minilm-l6-v2')}, trained on {c0['n_train']} teacher-labeled pool examples (label accuracy against the pool's gold "
                  f"{c0['pool_label_acc']:.3f}); seed {c0['seed']}.", ""]
        rows = []
        for c in sorted(mine, key=lambda c: (c["max_length"], c["lr"], c["warmup"])):
            h = c["history"]
            bs, br = best_epoch(h, "sweep_dev"), best_epoch(h, "run_dev")
            curve = " ".join(f"{r['sweep_dev']:.3f}" for r in h)
            rows.append([f"{c['lr']:g}", c["warmup"], c["max_length"], f"{bs['sweep_dev']:.3f} (ep {bs['epoch']})",
                         f"{h[-1]['sweep_dev']:.3f}", f"{br['run_dev']:.3f} (ep {br['epoch']})",
                         f"{br['sweep_dev']:.3f}", curve,
                         f"{statistics.mean(r['seconds'] for r in h):.0f}"])
        lines += C.md_table(["lr", "warmup", "max_length", "sweep-dev best (epoch)", "sweep-dev last",
                             "run dev best (epoch)", "sweep-dev at run-dev's epoch", "sweep-dev per epoch",
                             "s / epoch"], rows)
        ln = store["lengths"].get(cfg_name)
        if ln:
            cut = ", ".join(f"{100 * v:.1f}% over {k}" for k, v in ln["cut"].items())
            lines += [f"Pool texts in the student's tokens: median {ln['p50']}, 95th percentile {ln['p95']}, 99th "
                      f"{ln['p99']}, longest {ln['max']}; {cut}.", ""]
    C.write_keeping_notes(out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
