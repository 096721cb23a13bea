"""Student vs teacher at inference: how much faster and smaller is the distilled student than the
LLM it replaces, and at what quality (issue 29, item 4).

Per dataset, on the same CPU, on the same test subsample (the first ``--n`` examples of the run's
test split; the teacher rows may use fewer, ``--teacher-n``):

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

Datasets: SST-2 and TREC (classification, macro-F1) and CoNLL-03 (NER, seqeval span F1; the
student runs are timed as ``llmkd predict`` runs them: word-level tags, decoded to IOB2).

Cells can be run as separate invocations (``--engines``, ``--teachers``, ``--datasets``): each one
merges its rows into ``docs/results/student_speed.json`` and rewrites the doc from every row kept
there. A row records its own date, command and load average; a dataset's rows are dropped when its
student folder changes (they would describe another student). ``--fresh`` starts the JSON anew.

Every engine runs in its own child process (``--child``) so that its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) is its own; all use ``--threads`` threads. Batch 1: each
example alone, timed one by one (p50/p95 latency; throughput = n / sum). Batch 32: the whole
subsample in batches of 32 (llmkd sorts by length first). Each is repeated ``--reps`` times and
the median pass reported; the first pass over a couple of examples is a warm-up (not timed).

The student is exported with llmkd's own export (``llmkd.export.export(..., onnx=True,
quantize="int8")``, i.e. ``llmkd export RUN --method vanilla --to DIR --onnx --quantize int8``),
whose checks (agreement with torch >= 99.5 %, metric change <= 0.5 points, on the run's test split)
are reported too. The bench's own student runs keep the dataset's whole test file as their test
split (``data.split.test_size=null``: SST-2 1821, TREC 500, CoNLL-03 testb 3453 sentences), so
that the check is not decided by one or two flips; speed is timed on the first ``--n`` of them.

Students: ``--student-run DATASET=RUN_DIR`` (a finished run with a ``vanilla`` student); by default
the run ``runs/bench-student_speed/<dataset>-speed`` trained with ``llmkd run
<--examples>/<dataset>.yaml`` and the small overrides in :data:`TRAIN_SETS` (started here if
missing; its teacher answers come from the shared cache where they are there).

    nice -n 10 python bench/student_speed.py --datasets sst2 trec conll2003 --n 200
    nice -n 10 python bench/student_speed.py --datasets sst2 trec --engines --teachers \
        qwen2.5-coder-1.5b-instruct --teacher-n 100       # adds the 1.5B teacher rows
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

from _common import ROOT, SHORT, machine_line, start, write_keeping_notes

NAME = "student_speed"
DATASETS = ["sst2", "trec", "conll2003"]
# The student runs: a small pool, 3 epochs, and the whole test file as the test split (export's ONNX check
# runs on it). CoNLL-03's pool of 200 is bench/ner.py's (seed 0, k = 50), whose teacher answers are cached.
_SETS = ["methods=[vanilla]", "data.split.test_size=null", "student.epochs=3", "teacher.n_threads=1"]
TRAIN_SETS = {"sst2": ["data.split.pool_size=300", *_SETS], "trec": ["data.split.pool_size=300", *_SETS],
              "conll2003": ["data.split.pool_size=200", *_SETS]}
ENGINES = ["torch", "onnx-fp32", "onnx-int8", "onnx-int8b", "ort-int8"]
ENGINE_NAME = {"torch": "student, torch fp32", "onnx-fp32": "student, ONNX fp32", "onnx-int8": "student, ONNX int8",
               "onnx-int8b": "student, ONNX block-wise int8",
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

        onnx = {"torch": None, "onnx-fp32": "fp32", "onnx-int8": "int8", "onnx-int8b": "int8"}[spec["engine"]]
        student, _ = load_predictor(folder, onnx=onnx, threads=threads)
        student._ensure()
        if hasattr(student, "predict_word_proba"):  # NER: word-level tags, as TaggerStudent.predict decodes them
            from llmkd.formats.conll import to_iob2

            def predict(batch: list[str], bs: int) -> list[list[str]]:
                return [list(to_iob2([student.outputs[int(k)] for k in p.argmax(-1)])) if len(p) else []
                        for p in student.predict_word_proba(batch, batch_size=bs)]
        else:
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
            "preds": [lab.label if lab.label is None or isinstance(lab.label, str) else list(lab.label)
                      for lab in labels], "abstained": sum(lab.abstained for lab in labels),
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
def student_run(dataset: str, given: dict[str, str], runs: Path, examples: Path) -> tuple[Path, str]:
    """(run folder, how it was trained) of ``dataset``'s vanilla student; trains it if needed."""
    if dataset in given:
        return Path(given[dataset]), f"given (`--student-run {dataset}={given[dataset]}`)"
    run_dir = runs / f"{dataset}-speed"
    sets = [f"name={dataset}-speed", f"output_dir={runs}", *TRAIN_SETS[dataset]]
    cmd = [sys.executable, "-m", "llmkd", "run", str(examples / f"{dataset}.yaml"), "-q"]
    for s in sets:
        cmd += ["--set", s]
    if not (run_dir / "vanilla" / "result.json").exists():
        print("training:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return run_dir, (f"`llmkd run examples/{dataset}.yaml " + " ".join(f"--set {s}" for s in sets[1:])
                     + "` (output_dir: this bench's runs folder)")


def export_student(run_dir: Path, to: Path, again: bool, quantize: str = "int8") -> dict:
    from llmkd.export import ExportCheckFailed, export

    if again or not (to / "onnx" / "model_quantized.onnx").exists():
        print(f"exporting {run_dir} -> {to} (--quantize {quantize})", flush=True)
        try:
            export(run_dir, to, method="vanilla", onnx=True, quantize=quantize, force=True)
        except ExportCheckFailed as exc:  # the folder is written; the failed check is reported below
            print(f"export check failed: {exc}", flush=True)
    return json.loads((to / "llmkd.json").read_text())


def sizes(folder: Path, weights_folder: Path) -> dict[str, float]:
    mb = lambda p: p.stat().st_size / 2**20 if p.exists() else float("nan")  # noqa: E731
    return {"torch": mb(folder / "model.safetensors"), "onnx-fp32": mb(folder / "onnx" / "model.onnx"),
            "onnx-int8": mb(folder / "onnx" / "model_quantized.onnx"),
            "onnx-int8b": mb(weights_folder / "onnx" / "model_quantized.onnx"),
            "ort-int8": mb(folder / "onnx" / "model_quantized.onnx")}


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _stamp(r: dict, command: str, load_before: str) -> dict:
    r.update(date=time.strftime("%Y-%m-%dT%H:%M", time.gmtime()) + "Z", command=command, load_before=load_before,
             load_after=_load())
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    ap.add_argument("--teachers", nargs="*", default=["qwen2.5-coder-0.5b-instruct"],
                    help="teacher rows to measure (none: students only)")
    ap.add_argument("--engines", nargs="*", default=ENGINES, choices=ENGINES,
                    help="student rows to measure (none: teachers only); ort-int8 is classification only")
    ap.add_argument("--n", type=int, default=200, help="test examples (the first n of the run's test split)")
    ap.add_argument("--teacher-n", type=int, default=None, help="test examples for the teacher rows (default --n)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="student passes per batch size (median reported)")
    ap.add_argument("--student-run", nargs="*", default=[], metavar="DATASET=RUN_DIR")
    ap.add_argument("--examples", default=str(ROOT / "examples"),
                    help="folder of the example configs the student runs are trained from (their data paths are "
                         "relative to it)")
    ap.add_argument("--reexport", action="store_true", help="export again even where the folder exists")
    ap.add_argument("--fresh", action="store_true", help="forget the rows of earlier invocations")
    ap.add_argument("--runs", default=str(ROOT / "runs" / f"bench-{NAME}"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / f"{NAME}.md"))
    args = ap.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child_teacher(spec) if spec["engine"] == "teacher" else child_student(spec)))
        return
    command, started = start(NAME)
    command = f"nice -n 10 {command}"
    sys.path.insert(0, str(ROOT / "src"))
    from llmkd.export import run_data, score

    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    given = dict(s.split("=", 1) for s in args.student_run)
    store_path = Path(args.out).with_suffix(".json")
    store = {} if args.fresh or not store_path.exists() else json.loads(store_path.read_text())
    if "invocations" not in store:  # a file of the one-invocation format: its rows describe other students
        store = {"invocations": [], "results": {}}
    if args.engines or args.teachers:  # ``--engines --teachers`` measures nothing: it rewrites the doc
        store["invocations"].append(command)
    results: dict[str, dict] = store["results"]
    t_n = args.teacher_n or args.n
    for ds in args.datasets:
        run_dir, how = student_run(ds, given, runs, Path(args.examples))
        folder = runs / f"{ds}-export"
        info = export_student(run_dir, folder, args.reexport)
        w_folder = runs / f"{ds}-export-int8-block"  # the same student, --quantize int8-block
        w_info = (export_student(run_dir, w_folder, args.reexport, "int8-block")
                  if "onnx-int8b" in args.engines or w_folder.exists() else {})
        data = run_data(run_dir)
        old = results.get(ds, {})
        same = old.get("run") == str(run_dir) and old.get("export_onnx") == info.get("onnx", {})
        rows: dict[str, dict] = old.get("rows", {}) if same else {}
        results[ds] = {"run": str(run_dir), "how": how, "folder": str(folder), "test_split": len(data.test),
                       "rows": rows, "export_onnx": info.get("onnx", {}),
                       "export_checks": info.get("checks", {}), "kind": info["kind"],
                       "export_onnx_int8_block": (w_info.get("onnx") or {}).get("int8")}
        for model in args.teachers:
            with tempfile.TemporaryDirectory(prefix="student_speed-") as tmp:
                print(f"{ds}: teacher {model} on {t_n} test prompts (fresh cache)", flush=True)
                load = _load()
                r = run_child({"engine": "teacher", "run": str(run_dir), "model": model, "n": t_n,
                               "threads": args.threads, "cache": str(Path(tmp) / "teacher.sqlite")})
            rows[f"teacher {SHORT.get(model, model)}"] = _stamp(r, command, load)
        size = sizes(folder, w_folder)
        for eng in args.engines:
            if eng == "ort-int8" and info["kind"] != "classifier":
                continue
            print(f"{ds}: {eng}", flush=True)
            texts = [e.text for e in data.test[: args.n]]
            load = _load()
            r = run_child({"engine": eng, "folder": str(w_folder if eng == "onnx-int8b" else folder), "texts": texts,
                           "threads": args.threads,
                           "reps": args.reps})
            r["size_mb"] = size[eng]
            rows[ENGINE_NAME[eng]] = _stamp(r, command, load)
        for r in rows.values():
            r["n"] = len(r["preds"])
            r["metric"], r["score"] = score(data.task, data.test[: r["n"]], r["preds"])
        torch_row = rows.get(ENGINE_NAME["torch"])
        for name, r in rows.items():  # the students' metric on each teacher's subsample, where it is shorter
            if torch_row and name.startswith("teacher") and r["n"] < torch_row["n"]:
                r["students_on_subsample"] = {
                    k: score(data.task, data.test[: r["n"]], v["preds"][: r["n"]])[1]
                    for k, v in rows.items() if not k.startswith("teacher") and v["n"] >= r["n"]}
        print(json.dumps({k: {x: v[x] for x in ("b1_s", "b32_s", "p50_ms", "score", "n")} for k, v in rows.items()}),
              flush=True)
        store_path.write_text(json.dumps(store, indent=1, default=str))  # after each dataset: a crash keeps it
    write_doc(args, command, started, store)


TEACHER_ORDER = ["teacher Qwen-0.5B", "teacher Qwen-1.5B"]


def _times(x: float) -> str:
    return f"{x:.0f}x" if x >= 10 else f"{x:.2g}x"


def _ordered(rows: dict[str, dict]) -> list[tuple[str, dict]]:
    order = TEACHER_ORDER + [ENGINE_NAME[e] for e in ENGINES]
    return sorted(rows.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))


def write_doc(args, command: str, started: float, store: dict) -> None:
    results = store["results"]
    lines = ["# Student vs teacher at inference: speed, memory, size, quality", "",
             machine_line(started, "of the last command"),
             f"{args.threads} threads for every engine (torch, ONNX "
             f"Runtime intra-op, llama.cpp); seeds: the runs' (0).  ",
             "Commands (each adds or replaces its rows; every row says which one measured it, when, and the load "
             "average before/after it, below each table):  ",
             *[f"`{c}`  " for c in store["invocations"]], "",
             "Each row is one child process (its own peak RSS), on the first n examples of the run's test split "
             "(the same n for every student row; the teacher rows may use fewer: see n). "
             "Batch 1: every example alone (p50/p95 latency per call; rate = n / total). Batch 32: the whole "
             "subsample in batches of 32. Students: median of the passes (--reps) each, after a warm-up; the "
             "teacher: one pass through llmkd's labeling path (few-shot prompt, shared-prefix KV reuse, the run's "
             "`teacher.labeling`/`confidence` settings) into a fresh cache file, one prompt at a time (llama.cpp "
             "labels with batch size 1, so its two rates are the same pass). x teacher: the row's batch-32 rate "
             "over the Qwen-0.5B teacher's. Size: the weights file (GGUF, safetensors, .onnx). Load s: process "
             "start to ready (imports, weights; for the teacher also one untimed warm-up prompt, a pool example, "
             "which loads llama.cpp and fills the shared few-shot prefix). Peak RSS: the child's VmHWM. Quality: "
             "the task's metric on the row's n examples (NER: seqeval span F1, strict IOB2). ONNX int8: dynamic "
             "int8 with one weight scale per output channel (`llmkd export --quantize int8`); ONNX block-wise int8: "
             "MatMul weights int8 per block of 32, activations quantized per block inside the kernel (`--quantize int8-block`, exported to its own "
             "folder). See "
             "bench/student_speed.py.", ""]
    head = ("| engine | n | ex/s batch 1 | ex/s batch 32 | x teacher (b32) | p50 ms (b1) | p95 ms (b1) | peak RSS MB "
            "| size MB | load s | {metric} | agreement with torch |")
    for ds in [d for d in DATASETS if d in results]:
        res = results[ds]
        rows = res["rows"]
        if not rows:
            continue
        ref = rows.get("teacher Qwen-0.5B")
        t_rate = ref["n"] / ref["b32_s"] if ref else None
        metric = next(iter(rows.values()))["metric"]
        torch_preds = rows.get(ENGINE_NAME["torch"], {}).get("preds")
        lines += [f"## {ds}", "", f"Student: the `vanilla` (KD) MiniLM student of {res['how']}, exported to "
                  f"`{Path(res['folder']).relative_to(ROOT) if Path(res['folder']).is_relative_to(ROOT) else res['folder']}`"
                  f"; test split {res['test_split']} examples.", "",
                  head.format(metric=metric), "|---|" + "---:|" * 11]
        for name, r in _ordered(rows):
            b1, b32 = r["n"] / r["b1_s"], r["n"] / r["b32_s"]
            agree = "–"
            if torch_preds and not name.startswith("teacher"):
                agree = f"{sum(a == b for a, b in zip(r['preds'], torch_preds)) / min(len(torch_preds), r['n']):.3f}"
            lines.append(f"| {name} | {r['n']} | {b1:.1f} | {b32:.1f} | "
                         f"{_times(b32 / t_rate) if t_rate else '–'} | {r['p50_ms']:.1f} | "
                         f"{r['p95_ms']:.1f} | {r['peak_rss_mb']:.0f} | {r['size_mb']:.1f} | {r['load_s']:.1f} | "
                         f"{r['score']:.3f} | {agree} |")
        lines.append("")
        for name, r in _ordered(rows):
            if name.startswith("teacher"):
                lab = r["labeling"]
                lines.append(f"- {name}: {r['shots']} demonstrations per prompt, labeling `{lab['mode']}`, confidence "
                             f"{lab['confidence']}, max_tokens {lab['max_tokens']}; {r['misses']} teacher calls, "
                             f"{r['hits']} cache hits (fresh cache), {r['abstained']} abstentions (scored as wrong), "
                             f"{r['prompt_tokens']} prompt tokens.")
                if r.get("students_on_subsample"):
                    lines.append(f"  On the same first {r['n']} examples the students score: " + "; ".join(
                        f"{k.removeprefix('student, ')} {v:.3f}" for k, v in r["students_on_subsample"].items()) + ".")
        when: dict[tuple, list[str]] = {}
        for name, r in _ordered(rows):
            when.setdefault((r["command"], r["date"][:13]), []).append(
                f"{name} ({r['date']}, load {r['load_before']} -> {r['load_after']})")
        lines += ["", "Measured by: " + "; ".join(f"`{c}`: " + ", ".join(v) for (c, _), v in when.items()) + ".", ""]
        onnx = res["export_onnx"]
        if onnx:
            lines.append("`llmkd export`'s own ONNX checks (on the run's test split, "
                         f"{res['export_checks'].get('test examples', '?')} examples; limits: agreement >= 99.5 %, "
                         "change <= 0.5 points):")
            weights = res.get("export_onnx_int8_block")
            for k, r in [*onnx.items(), *([("block-wise int8 (`--quantize int8-block`)", weights)] if weights else [])]:
                lines.append(f"- ONNX {k}: agreement {r['agreement']:.4f}, {r['metric']} {r['onnx_score']:.4f} vs "
                             f"torch {r['torch_score']:.4f} ({100 * (r['onnx_score'] - r['torch_score']):+.2f} points): "
                             f"{'passed' if r['passed'] else 'NOT passed'}")
            lines.append("")
        stu = {k: v for k, v in rows.items() if not k.startswith("teacher")}
        int8, lean = rows.get(ENGINE_NAME["onnx-int8"]), rows.get(ENGINE_NAME["ort-int8"])
        parts = []
        if stu:
            for tname, t in [(k, v) for k, v in _ordered(rows) if k.startswith("teacher")]:
                tr = t["n"] / t["b32_s"]
                best = max(v["n"] / v["b32_s"] for v in stu.values())
                slow = min(v["n"] / v["b32_s"] for v in stu.values())
                parts.append(f"student >= 100x the {tname} at batch 32: {slow / tr:.0f}x (slowest student engine) "
                             f"to {best / tr:.0f}x (fastest) ({'met' if best / tr >= 100 else 'NOT met'})")
        if int8:
            p50 = min(int8["p50_ms"], lean["p50_ms"]) if lean else int8["p50_ms"]
            parts.append(f"ONNX int8 p50 <= 10 ms at batch 1: {int8['p50_ms']:.1f} ms through llmkd"
                         + (f", {lean['p50_ms']:.1f} ms onnxruntime-only" if lean else "")
                         + f" ({'met' if p50 <= 10 else 'NOT met'})")
        if parts:
            lines += ["Targets (issue 29): " + "; ".join(parts) + ".", ""]
    write_keeping_notes(args.out, "\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(store, indent=1, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
