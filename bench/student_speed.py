"""Student vs teacher at inference: how much faster and smaller is the distilled student than the
LLM it replaces, and at what quality (issue 29, item 4).

Per dataset, on the same CPU, in one invocation, on the same test subsample (the first ``--n``
examples of the run's test split):

* teacher -- llama.cpp through llmkd's labeling path as ``llmkd run`` builds it (the run's config:
  task, fitted few-shot demonstrations, ``teacher.labeling`` / ``confidence`` / ``max_tokens``;
  shared-prefix KV reuse), writing a FRESH cache file (a temp path), so no answer comes from the
  cache. It labels one prompt at a time (llama.cpp's ``batch_size`` is 1), so its batch-1 and
  batch-32 rates are the same pass.
* student torch fp32 -- ``llmkd predict``'s loader over the exported folder;
* student ONNX fp32 / int8 -- the same with ``--onnx fp32`` / ``--onnx int8`` (llmkd tokenizes and
  decodes; ONNX Runtime runs the network);
* student ONNX int8, onnxruntime + tokenizers only -- a deployment without torch or transformers
  (the exported ``tokenizer.json`` and ``onnx/model_quantized.onnx``), classification only.

Every engine runs in its own child process (``--child``) so that its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) is its own; all use ``--threads`` threads. Batch 1: each
example alone, timed one by one (p50/p95 latency; throughput = n / sum). Batch 32: the whole
subsample in batches of 32 (llmkd sorts by length first). Each is repeated ``--reps`` times and
the median pass reported; the first pass over a couple of examples is a warm-up (not timed).

The student is exported with llmkd's own export (``llmkd.export.export(..., onnx=True,
quantize="int8")``, i.e. ``llmkd export RUN --method vanilla --to DIR --onnx --quantize int8``),
whose checks (agreement with torch >= 99.5 %, metric change <= 0.5 points, on the run's full test
set) are reported too.

Students: ``--student-run DATASET=RUN_DIR`` (a finished run with a ``vanilla`` student); by default
SST-2 uses bench/student_vs_teacher.py's Qwen-0.5B vanilla student where it has finished, and
otherwise (and for TREC) the run ``runs/bench-student_speed/<dataset>-speed`` trained with
``llmkd run examples/<dataset>.yaml`` and the small overrides in :data:`TRAIN_SETS` (started
here if missing; its teacher answers come from the shared cache).

    nice -n 10 python bench/student_speed.py --datasets sst2 trec --n 200
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, SHORT, cpu_model, machine_line, start, write_keeping_notes

NAME = "student_speed"
VS_TEACHER = ROOT / "runs" / "bench-student_vs_teacher" / "sst2-Qwen-0.5B-p1000-k8-t500-e6-s0-minilm-hard"
TRAIN_SETS = ["methods=[vanilla]", "data.split.pool_size=300", "data.split.test_size=200", "student.epochs=3",
              "teacher.n_threads=1"]
ENGINES = ["torch", "onnx-fp32", "onnx-int8", "ort-int8"]
ENGINE_NAME = {"torch": "student, torch fp32", "onnx-fp32": "student, ONNX fp32", "onnx-int8": "student, ONNX int8",
               "ort-int8": "student, ONNX int8 (onnxruntime + tokenizers only, no torch)"}


# ---- children: one engine each, so that peak RSS is the engine's own -----------------------------
def _peak_mb() -> float:
    """This process's peak RSS in MiB: VmHWM (the high-water mark of its own address space; getrusage's
    ru_maxrss would carry the parent's peak over fork + exec), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timings(predict, texts: list[str], reps: int) -> dict:
    """Batch 1 (one by one) and batch 32 passes of ``predict(texts, batch_size)``; median pass."""
    predict(texts[:2], 1)  # warm-up
    b1, b32, lat = [], [], []
    for _ in range(reps):
        one = []
        for t in texts:
            t0 = time.perf_counter()
            predict([t], 1)
            one.append(time.perf_counter() - t0)
        b1.append(sum(one))
        lat.append(one)
        t0 = time.perf_counter()
        predict(texts, 32)
        b32.append(time.perf_counter() - t0)
    mid = sorted(range(reps), key=lambda i: b1[i])[reps // 2]
    ms = sorted(x * 1000 for x in lat[mid])
    return {"b1_s": statistics.median(b1), "b32_s": statistics.median(b32), "p50_ms": ms[len(ms) // 2],
            "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))], "b1_passes_s": b1, "b32_passes_s": b32}


def child_student(spec: dict) -> dict:
    texts, threads, folder = spec["texts"], spec["threads"], Path(spec["folder"])
    t0 = time.perf_counter()
    if spec["engine"] == "ort-int8":
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        info = json.loads((folder / "llmkd.json").read_text())
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.enable_truncation(max_length=info["max_length"])
        tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0, pad_token="[PAD]")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(folder / "onnx" / "model_quantized.onnx"), opts,
                                    providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        labels = info["labels"]

        def probs(batch: list[str]) -> "np.ndarray":
            enc = tok.encode_batch(batch)
            feed = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                    "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
            return sess.run(["logits"], {n: feed[n] for n in names})[0]

        def predict(batch: list[str], bs: int) -> list[str]:
            order = sorted(range(len(batch)), key=lambda i: len(batch[i]))  # as llmkd batches
            out = [""] * len(batch)
            for s in range(0, len(order), bs):
                idx = order[s : s + bs]
                for i, row in zip(idx, probs([batch[i] for i in idx])):
                    out[i] = labels[int(row.argmax())]
            return out
    else:
        sys.path.insert(0, str(ROOT / "src"))
        from llmkd.predict import load_predictor

        student, _ = load_predictor(folder, onnx=None if spec["engine"] == "torch" else spec["engine"][5:],
                                    threads=threads)
        student._ensure()

        def predict(batch: list[str], bs: int) -> list[str]:
            p = student.predict_proba(batch, batch_size=bs)
            return [student.labels[int(r.argmax())] for r in p]
    load_s = time.perf_counter() - t0
    out = _timings(predict, texts, spec["reps"])
    out.update(load_s=load_s, preds=predict(texts, 32), peak_rss_mb=_peak_mb(), torch_imported="torch" in sys.modules)
    return out


def child_teacher(spec: dict) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    import yaml

    from llmkd.build import Session, build_teacher
    from llmkd.config import parse_config
    from llmkd.teachers.cache import CachedTeacher, TeacherCache
    from llmkd import zoo

    run_dir = Path(spec["run"])
    cfg = parse_config(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")), str(run_dir))
    cfg = cfg.model_copy(update={"progress": False, "teacher": cfg.teacher.model_copy(
        update={"model": spec["model"], "n_threads": spec["threads"]})})
    t0 = time.perf_counter()
    sess = Session(cfg)
    sess._teacher = CachedTeacher(build_teacher(cfg.teacher), TeacherCache(spec["cache"]))  # fresh: nothing cached
    shots = sess.teacher_shots
    ctx = sess.context("teacher", Path(spec["cache"]).parent)
    ctx.label([sess.splits.pool[0]], stage="warm-up")  # loads the model (and probes repacking); fills the shared prefix
    load_s = time.perf_counter() - t0
    before = (sess.teacher.misses, sess.teacher.prompt_tokens)
    test = list(sess.splits.test)[: spec["n"]]
    lat, labels = [], []
    for x in test:  # one at a time, as label_examples does for llama.cpp (batch_size 1); KV state carries over
        t1 = time.perf_counter()
        labels += ctx.label([x], stage="bench")
        lat.append(time.perf_counter() - t1)
    ms = sorted(x * 1000 for x in lat)
    path, _ = zoo.resolve(spec["model"])
    s = ctx.labeling
    return {"b1_s": sum(lat), "b32_s": sum(lat), "p50_ms": ms[len(ms) // 2],
            "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))], "load_s": load_s, "peak_rss_mb": _peak_mb(),
            "preds": [lab.label for lab in labels], "abstained": sum(lab.abstained for lab in labels),
            "misses": sess.teacher.misses - before[0], "hits": sess.teacher.hits, "size_mb": Path(path).stat().st_size / 2**20,
            "shots": len(shots), "labeling": {"mode": s.mode, "confidence": s.confidence, "max_tokens": s.max_tokens,
                                              "constrained": s.constrained},
            "prompt_tokens": sess.teacher.prompt_tokens - before[1]}


def run_child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"child {spec.get('engine')} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the parent -----------------------------------------------------------------------------------
def student_run(dataset: str, given: dict[str, str], runs: Path) -> tuple[Path, str]:
    """(run folder, how it was trained) of ``dataset``'s vanilla student; trains it if needed."""
    if dataset in given:
        return Path(given[dataset]), f"given (`--student-run {dataset}={given[dataset]}`)"
    if dataset == "sst2" and (VS_TEACHER / "vanilla" / "result.json").exists():
        return VS_TEACHER, (f"bench/student_vs_teacher.py's run `{VS_TEACHER.relative_to(ROOT)}` (pool 1000, "
                            "8 shots per class, 6 epochs, hard targets)")
    run_dir = runs / f"{dataset}-speed"
    sets = [f"name={dataset}-speed", f"output_dir={runs}", *TRAIN_SETS]
    cmd = [str(ROOT / ".venv" / "bin" / "llmkd"), "run", str(ROOT / "examples" / f"{dataset}.yaml"), "-q"]
    for s in sets:
        cmd += ["--set", s]
    if not (run_dir / "vanilla" / "result.json").exists():
        print("training:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return run_dir, f"`llmkd run examples/{dataset}.yaml " + " ".join(f"--set {s}" for s in sets[1:]) + "`"


def export_student(run_dir: Path, to: Path, again: bool) -> dict:
    from llmkd.export import ExportCheckFailed, export

    if again or not (to / "onnx" / "model_quantized.onnx").exists():
        print(f"exporting {run_dir} -> {to}", flush=True)
        try:
            export(run_dir, to, method="vanilla", onnx=True, quantize="int8", force=True)
        except ExportCheckFailed as exc:  # the folder is written; the failed check is reported below
            print(f"export check failed: {exc}", flush=True)
    return json.loads((to / "llmkd.json").read_text())


def sizes(folder: Path) -> dict[str, float]:
    mb = lambda p: p.stat().st_size / 2**20  # noqa: E731
    return {"torch": mb(folder / "model.safetensors"), "onnx-fp32": mb(folder / "onnx" / "model.onnx"),
            "onnx-int8": mb(folder / "onnx" / "model_quantized.onnx"),
            "ort-int8": mb(folder / "onnx" / "model_quantized.onnx")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--datasets", nargs="+", default=["sst2", "trec"], choices=["sst2", "trec"])
    ap.add_argument("--teachers", nargs="+", default=["qwen2.5-coder-0.5b-instruct"])
    ap.add_argument("--n", type=int, default=200, help="test examples (the first n of the run's test split)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="student passes per batch size (median reported)")
    ap.add_argument("--student-run", nargs="*", default=[], metavar="DATASET=RUN_DIR")
    ap.add_argument("--reexport", action="store_true", help="export again even where the folder exists")
    ap.add_argument("--runs", default=str(ROOT / "runs" / f"bench-{NAME}"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / f"{NAME}.md"))
    args = ap.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child_teacher(spec) if spec["engine"] == "teacher" else child_student(spec)))
        return
    command, started = start(NAME)
    sys.path.insert(0, str(ROOT / "src"))
    from llmkd.export import run_data, score

    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    given = dict(s.split("=", 1) for s in args.student_run)
    results: dict[str, dict] = {}
    for ds in args.datasets:
        run_dir, how = student_run(ds, given, runs)
        folder = runs / f"{ds}-export"
        info = export_student(run_dir, folder, args.reexport)
        data = run_data(run_dir)
        test = data.test[: args.n]
        texts, gold = [e.text for e in test], [e.label for e in test]
        rows: dict[str, dict] = {}
        for model in args.teachers:
            with tempfile.TemporaryDirectory(prefix="student_speed-") as tmp:
                print(f"{ds}: teacher {model} on {len(test)} test prompts (fresh cache)", flush=True)
                r = run_child({"engine": "teacher", "run": str(run_dir), "model": model, "n": args.n,
                               "threads": args.threads, "cache": str(Path(tmp) / "teacher.sqlite")})
            rows[f"teacher {SHORT.get(model, model)}"] = r
        size = sizes(folder)
        for eng in ENGINES:
            print(f"{ds}: {eng}", flush=True)
            r = run_child({"engine": eng, "folder": str(folder), "texts": texts, "threads": args.threads,
                           "reps": args.reps})
            r["size_mb"] = size[eng]
            rows[ENGINE_NAME[eng]] = r
        torch_preds = rows[ENGINE_NAME["torch"]]["preds"]
        for r in rows.values():
            r["metric"], r["score"] = score(data.task, test, r["preds"])
            r["agree_torch"] = sum(a == b for a, b in zip(r["preds"], torch_preds)) / len(test)
        results[ds] = {"run": str(run_dir), "how": how, "folder": str(folder), "n": len(test), "rows": rows,
                       "export_onnx": info.get("onnx", {}), "export_checks": info.get("checks", {})}
        print(json.dumps({k: {x: v[x] for x in ("b1_s", "b32_s", "p50_ms", "score")} for k, v in rows.items()}),
              flush=True)
    write_doc(args, command, started, results)


def write_doc(args, command: str, started: float, results: dict) -> None:
    lines = ["# Student vs teacher at inference: speed, memory, size, quality", "",
             machine_line(started), f"CPU: {cpu_model()}; {args.threads} threads for every engine (torch, ONNX "
             f"Runtime intra-op, llama.cpp); seeds: the runs' (0).  ",
             f"Command: `nice -n 10 {command}`", "",
             "Each row is one child process (its own peak RSS), on the same test subsample, in this one invocation. "
             "Batch 1: every example alone (p50/p95 latency per call; rate = n / total). Batch 32: the whole "
             f"subsample in batches of 32. Students: median of {args.reps} passes each, after a warm-up; the "
             "teacher: one pass through llmkd's labeling path (few-shot prompt, shared-prefix KV reuse, the run's "
             "`teacher.labeling`/`confidence` settings) into a fresh cache file, one prompt at a time (llama.cpp "
             "labels with batch size 1, so its two rates are the same pass). Size: the weights file (GGUF, "
             "safetensors, .onnx). Load s: process start to ready (imports, weights; for the teacher also one "
             "untimed warm-up prompt, a pool example, which loads llama.cpp and fills the shared few-shot prefix). "
             "Peak RSS: the child's VmHWM. Quality: the task's metric on the same subsample. See "
             "bench/student_speed.py.", ""]
    head = ("| engine | ex/s batch 1 | ex/s batch 32 | x teacher (b32) | p50 ms (b1) | p95 ms (b1) | peak RSS MB "
            "| size MB | load s | {metric} | agreement with torch |")
    missing = []
    if "qwen2.5-coder-1.5b-instruct" not in args.teachers:
        missing.append("the Qwen-1.5B teacher (not downloaded on this machine: the zoo fetches ~1.1 GB; not run "
                       "in this session's time)")
    if "conll2003" not in args.datasets:
        missing.append("CoNLL-03 NER (its teacher runs ~1-3 s a sentence here and its student needs a training "
                       "run of its own; not run in this session's time)")
    for ds, res in results.items():
        rows = res["rows"]
        teacher = next(v for k, v in rows.items() if k.startswith("teacher"))
        t_rate = res["n"] / teacher["b32_s"]
        metric = next(iter(rows.values()))["metric"]
        lines += [f"## {ds}", "", f"{res['n']} test examples (the first {res['n']} of the run's test split). "
                  f"Student: the `vanilla` (KD) MiniLM student of {res['how']}, exported to `{res['folder']}`.", "",
                  head.format(metric=metric), "|---|" + "---:|" * 10]
        for name, r in rows.items():
            b1, b32 = res["n"] / r["b1_s"], res["n"] / r["b32_s"]
            agree = "–" if name.startswith("teacher") else f"{r['agree_torch']:.3f}"
            lines.append(f"| {name} | {b1:.1f} | {b32:.1f} | {b32 / t_rate:.0f}x | {r['p50_ms']:.1f} | "
                         f"{r['p95_ms']:.1f} | {r['peak_rss_mb']:.0f} | {r['size_mb']:.1f} | {r['load_s']:.1f} | "
                         f"{r['score']:.3f} | {agree} |")
        lab = teacher["labeling"]
        lines += ["", f"Teacher: {teacher['shots']} demonstrations per prompt, labeling `{lab['mode']}`, confidence "
                  f"{lab['confidence']} (label-set scoring after the reply), max_tokens {lab['max_tokens']}; "
                  f"{teacher['misses']} teacher calls, {teacher['hits']} cache hits (fresh cache), "
                  f"{teacher['abstained']} abstentions (scored as wrong), {teacher['prompt_tokens']} prompt tokens.", ""]
        onnx = res["export_onnx"]
        if onnx:
            lines.append("`llmkd export`'s own ONNX checks (the run's full test set, "
                         f"{res['export_checks'].get('test examples', '?')} examples; limits: agreement >= 99.5 %, "
                         "change <= 0.5 points):")
            for k, r in onnx.items():
                lines.append(f"- ONNX {k}: agreement {r['agreement']:.4f}, {r['metric']} {r['onnx_score']:.4f} vs "
                             f"torch {r['torch_score']:.4f} ({100 * (r['onnx_score'] - r['torch_score']):+.2f} points): "
                             f"{'passed' if r['passed'] else 'NOT passed'}")
            lines.append("")
        stu = [v for k, v in rows.items() if not k.startswith("teacher")]
        best32 = max(res["n"] / r["b32_s"] for r in stu)
        int8 = rows[ENGINE_NAME["onnx-int8"]]
        lean = rows[ENGINE_NAME["ort-int8"]]
        lines += [f"Targets (issue 29): student >= 100x the teacher at batch 32: best student "
                  f"{best32 / t_rate:.0f}x, torch fp32 {res['n'] / rows[ENGINE_NAME['torch']]['b32_s'] / t_rate:.0f}x "
                  f"({'met' if best32 / t_rate >= 100 else 'NOT met'}); ONNX int8 p50 <= 10 ms at batch 1: "
                  f"{int8['p50_ms']:.1f} ms through llmkd, {lean['p50_ms']:.1f} ms onnxruntime-only "
                  f"({'met' if min(int8['p50_ms'], lean['p50_ms']) <= 10 else 'NOT met'}).", ""]
    if missing:
        lines += ["Not measured: " + "; ".join(missing) + ".", ""]
    write_keeping_notes(args.out, "\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"command": command, "results": results}, indent=1, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
