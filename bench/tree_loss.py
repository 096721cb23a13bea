"""Which spans a target tree trains (``student.tree_loss``), measured on the dev set only.

Given finished run folders of a tree task (``llmkd run examples/mckd_ptb.yaml ...``), this trains
span-parser students with ``tree_loss: full`` and ``partial`` on (a) the teacher's pool trees of
the run (``vanilla/labels.jsonl``, abstentions left out) and (b) the gold labeled set, and scores
the run's dev set after every epoch with two decodings: ``thr`` (the student's: the CKY tree's
spans with p >= 0.5) and ``bin`` (the whole CKY binary tree). No test data is read: the table is
what chose the default.

    python bench/tree_loss.py --runs-from runs/bench-mckd-15b/mckd-ptb-s0 --epochs 15

Writes docs/results/tree_loss.md (per epoch in a JSON file beside it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import _common as C


def dev_scores(st: Any, task: Any, dev: list) -> dict[str, tuple[float, float, float]]:
    """(sentence F1, corpus precision, corpus recall) of the dev set under each decoding."""
    from llmkd.formats.trees import linearize
    from llmkd.students.span_parser import cky, kept_spans, tree_from_spans

    logits = [lg[..., 0] for lg in st.span_logits([e.text for e in dev])]
    out = {}
    for mode in ("thr", "bin"):
        preds = []
        for e, lg in zip(dev, logits):
            binary = cky(lg)
            spans = kept_spans(binary, lg) if mode == "thr" else binary
            preds.append(linearize(tree_from_spans(e.text.split(), {s: "" for s in spans})))
        sc = task.score([e.label for e in dev], preds)
        out[mode] = (sc["sentence_f1"], sc["corpus_precision"], sc["corpus_recall"])
    return out


def cell(run_dir: Path, source: str, loss: str, epochs: int) -> list[dict[str, Any]]:
    from llmkd.build import build_task, make_student_factory
    from llmkd.config import run_config
    from llmkd.data import make_splits
    from llmkd.methods.training import teacher_examples
    from llmkd.report import read_pool_labels

    cfg = run_config(run_dir)
    splits, _ = make_splits(cfg.data, cfg.seed)
    task = build_task(cfg.task, splits.labels)
    if source == "gold":
        train = list(splits.labeled)
    else:  # the teacher's answered pool labels, as vanilla KD trains on them
        train = teacher_examples(read_pool_labels(run_dir), {e.id: e.text for e in splits.pool})
    student_cfg = cfg.student.model_copy(update={"tree_loss": loss, "threads": cfg.student.threads or 1})
    st = make_student_factory(student_cfg, splits.labels, task)[0](cfg.seed)
    history = []
    for ep in range(1, epochs + 1):
        t = time.time()
        st.fit_epoch(train)
        row = {"run": run_dir.name, "source": source, "loss": loss, "epoch": ep, "n_train": len(train),
               "seconds": time.time() - t, **dev_scores(st, task, list(splits.dev))}
        print(json.dumps(row), flush=True)
        history.append(row)
    return history


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-from", nargs="+", required=True, help="finished run folders of a tree task")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", default=str(C.ROOT / "docs" / "results" / "tree_loss.md"))
    args = ap.parse_args()
    command, started = C.start("tree_loss")
    rows: list[dict[str, Any]] = []
    for run in args.runs_from:
        for source in ("teacher", "gold"):
            for loss in ("full", "partial"):
                rows += cell(Path(run), source, loss, args.epochs)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    lines = ["# Which spans a target tree trains: `student.tree_loss` on the dev set", "",
             f"Command: `{command}`  ", C.machine_line(started) + "  ",
             "Seed: the run's (it draws the split and the student's initialisation). Dev set only: no test data "
             "is read.", "",
             "Span-parser students (the run's `student:` settings) trained on the teacher's pool trees of the "
             "run, or on its gold labeled set, with each loss; after every epoch the run's gold dev set is "
             "parsed and scored. `thr`: the student's decoding (CKY, spans with p >= 0.5 kept); `bin`: the "
             "whole binary CKY tree. Cells: sentence F1 (corpus precision / recall) in points, at the epoch "
             "with the best `thr` dev F1, and at the last epoch.", ""]
    table = []
    for run in dict.fromkeys(r["run"] for r in rows):
        for source in ("teacher", "gold"):
            for loss in ("full", "partial"):
                h = [r for r in rows if (r["run"], r["source"], r["loss"]) == (run, source, loss)]
                if not h:
                    continue
                best = max(h, key=lambda r: r["thr"][0])

                def f(r: dict[str, Any], mode: str) -> str:
                    return f"{100 * r[mode][0]:.1f} ({100 * r[mode][1]:.0f} / {100 * r[mode][2]:.0f})"

                table.append([run, f"{source} ({h[0]['n_train']})", loss, f"{best['epoch']}", f(best, "thr"),
                              f(best, "bin"), f(h[-1], "thr"), f(h[-1], "bin"),
                              f"{sum(r['seconds'] for r in h) / len(h):.0f}"])
    lines += C.md_table(["run", "trained on (n)", "tree_loss", "best epoch (thr)", "thr at best", "bin at best",
                         "thr at last", "bin at last", "s / epoch"], table)
    C.write_keeping_notes(out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
