"""Scale-out on this machine (issue 31): labeling on a loopback Ray cluster with 1 vs 2 workers,
and a student trained data-parallel by Accelerate on 2 CPU processes (gloo) vs 1.

1. **Ray labeling.** ``llmkd.api.label`` on the SST-2 pool (``--items`` sentences, ``stsa.binary``
   from /work/shared/data/sst2) with the SmolLM2-135M teacher (llama.cpp, ``n_threads=1`` per
   worker, labeling by scoring the label set), each cell with an empty cache of its own: in
   process (``executor="local"``), then on a local Ray cluster (127.0.0.1, 2 CPUs, started once
   before the cells) with 1 and 2 actors. Wall time includes starting the actors and loading the
   teacher in each. Each Ray cell's labels are compared with the local cell's (label and
   confidence, exactly).
2. **Accelerate.** ``llmkd run`` (method vanilla, MiniLM student, gate off) on a pool of the same
   size, labeled by a fake teacher (the loopback OpenAI server of the tests answering each
   sentence's gold SST-2 label: SmolLM2's labels are near chance, and a student trained on them
   predicts one class, which would make any two runs look alike), as 1 process with 1 thread,
   1 process with 2 threads, and ``accelerate launch --cpu --num_processes 2`` with 1 thread each;
   seeds as given (the seed draws the split and the student). The first cell of a seed asks the
   fake teacher (instant), the others read the cache. Wall time is the whole command (Python
   start, model load, training, prediction on dev and test).

3. **MCKD's part students on Ray.** ``llmkd run`` of MCKD-2 (one cross-labeling stage: two
   MiniLM students on the two halves of the pool, then the final student on all of it; one torch
   thread per student) with the same fake gold teacher, serially in one process, and with
   ``--executor ray --address`` a loopback Ray cluster of 2 CPUs (started once by this script;
   one CPU per student task), seeds ``--mckd-seeds``, the serial cell first. Reported: the whole
   command's wall time, the stage's (from its first file, ``partition.json``, to its labels,
   ``labels-stage1.jsonl``: both part students trained, relabeling, their dev/test reports), and
   whether the Ray run's stage labels, test predictions and metrics equal the serial run's.

The simulated N-server curve (an OpenAI-protocol teacher over 1-8 loopback stub servers, the
stub of bench/teacher_speed.py) is the last table; an earlier 1-4 server run is in
docs/results/teacher_speed.md (bench/teacher_speed.py); it is not rerun here.

    python bench/scale_out.py --items 200 --seeds 0 1 2
    python bench/scale_out.py --skip ray accelerate stub --mckd-seeds 0 1   # the MCKD cells alone
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, SHARED, cpu_model, machine_line, md_table, parser, start, write_keeping_notes

NAME = "scale_out"
SST2 = str(SHARED / "data" / "sst2")


def config(runs: Path, items: int, seed: int, cache: Path, name: str) -> dict:
    return {
        "name": name, "seed": seed,
        "data": {"train": f"{SST2}/stsa.binary.train", "dev": f"{SST2}/stsa.binary.dev",
                 "test": f"{SST2}/stsa.binary.test", "format": "label_text", "separator": " ",
                 "label_map": {"0": "negative", "1": "positive"}, "labels": ["negative", "positive"],
                 "split": {"labeled_per_class": 8, "dev_per_class": 8, "pool_size": items, "test_size": 300}},
        "task": {"instruction": "Classify the sentiment of the movie review."},
        "teacher": {"backend": "llamacpp", "model": "smollm2-135m-instruct", "labeling": "score", "n_threads": 1,
                    "gate": "off"},
        "student": {"model": "all-minilm-l6-v2", "epochs": 3, "max_length": 64, "device": "cpu", "threads": 1},
        "methods": ["vanilla"], "output_dir": str(runs), "cache": str(cache), "progress": False,
    }


def ray_cells(args, runs: Path) -> list[dict]:
    import ray

    from llmkd import api
    from llmkd.config import parse_config

    out = []
    local_labels = None
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        for cell in ["local", *[f"ray-{w}" for w in args.workers]]:
            cache = runs / "label-cells" / f"{cell}.sqlite"
            for p in cache.parent.glob(cache.name + "*"):
                p.unlink()
            shutil.rmtree(runs / "label-cells" / f"label-{cell}", ignore_errors=True)  # a fresh run folder too
            cfg = parse_config(config(runs / "label-cells", args.items, 0, cache, f"label-{cell}"))
            t0 = time.perf_counter()
            if cell == "local":
                _, labels = api.label(cfg)
            else:
                _, labels = api.label(cfg, executor="ray", workers=int(cell.split("-")[1]))
            sec = time.perf_counter() - t0
            got = [(lab.label, lab.confidence) for lab in labels]
            if cell == "local":
                local_labels = got
            same = sum(a == b for a, b in zip(got, local_labels))
            out.append({"cell": cell, "seconds": sec, "items": len(labels), "same_as_local": same,
                        "load1": os.getloadavg()[0]})
            print(out[-1], flush=True)
    finally:
        ray.shutdown()
    return out


def gold_labels() -> dict[str, str]:
    """SST-2's gold label of every training sentence: the fake teacher's answers."""
    out = {}
    for line in Path(f"{SST2}/stsa.binary.train").read_text(encoding="utf-8").splitlines():
        label, text = line.split(" ", 1)
        out[text.strip()] = "positive" if label == "1" else "negative"
    return out


def run_cell(cmd: list[str], extra: list[str], folder: Path, name: str, cfg: dict, env: dict,
             what: str) -> tuple[Path, float]:
    """``CMD run folder/name.yaml -q EXTRA`` on ``cfg`` (written there) into a fresh ``folder/name``;
    (that run folder, the command's wall seconds). A failed run stops the benchmark with its stderr."""
    import yaml

    path = folder / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    shutil.rmtree(folder / name, ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run([*cmd, "run", str(path), "-q", *extra], capture_output=True, text=True, env=env)
    sec = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{what} failed:\n{r.stderr[-3000:]}")
    return folder / name, sec


def accelerate_cells(args, runs: Path) -> list[dict]:
    cache = runs / "train-cache.sqlite"
    for p in cache.parent.glob(cache.name + "*"):
        p.unlink()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines",
              "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "llmkd"]
    cells = {"1 process x 1 thread": ([sys.executable, "-m", "llmkd"], 1),
             "1 process x 2 threads": ([sys.executable, "-m", "llmkd"], 2),
             "2 processes (gloo) x 1 thread": (launch, 1)}
    with GoldTeacher() as gold:  # stopped on the way out, a failed cell too
        for seed in args.seeds:
            for cell, (cmd, threads) in cells.items():
                name = f"s{seed}-{cell.split()[0]}p{threads}t"
                cfg = config(runs / "train", args.items, seed, cache, name)
                cfg["teacher"] = gold.teacher
                cfg["student"]["threads"] = threads
                run_dir, sec = run_cell(cmd, [], runs / "train", name, cfg, env, f"{cell} seed {seed}")
                res = json.loads((run_dir / "vanilla" / "result.json").read_text())
                prog = json.loads((run_dir / "vanilla" / "student" / "progress.json").read_text())
                rows.append({"cell": cell, "seed": seed, "seconds": sec, "macro_f1": res["metrics"]["macro_f1"],
                             "accuracy": res["metrics"]["accuracy"], "epochs": prog["epoch"],
                             "teacher_calls": res.get("timings", {}).get("teacher_calls"), "load1": os.getloadavg()[0]})
                print(rows[-1], flush=True)
    return rows


class GoldTeacher:
    """The loopback OpenAI server of the tests answering each SST-2 sentence's gold label (a
    context manager; ``teacher``: the config's teacher section pointing at it)."""

    def __enter__(self) -> "GoldTeacher":
        sys.path.insert(0, str(ROOT))
        from tests.fake_openai_server import FakeOpenAIServer
        from tests.fakes import classify_text

        gold = gold_labels()
        self.server = FakeOpenAIServer(script=lambda prompt: gold.get(classify_text(prompt).strip(), "no idea"))
        self.server.__enter__()
        self.teacher = {"backend": "openai", "model": "fake", "confidence": False, "gate": "off", "chat": False,
                        "openai": {"base_url": self.server.base_url, "api_key_env": None, "max_retries": 0}}
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)


def mckd_cells(args, runs: Path) -> list[dict]:
    """MCKD-2, its part students serially in process vs as tasks on a 2-CPU loopback Ray cluster."""
    import ray

    cache = runs / "mckd-cache.sqlite"
    for p in cache.parent.glob(cache.name + "*"):
        p.unlink()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    address = "127.0.0.1:" + ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]  # the loopback side of it
    # after ray.init: the environment now holds the cluster's auth token, which the run joining it needs
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    rows = []
    try:
        with GoldTeacher() as gold:
            for seed in args.mckd_seeds:
                for cell, extra in (("serial", []), ("ray-2", ["--executor", "ray", "--address", address])):
                    name = f"mckd-s{seed}-{cell}"
                    cfg = config(runs / "mckd", args.items, seed, cache, name)
                    cfg["teacher"] = gold.teacher
                    cfg["methods"] = ["mckd"]
                    cfg["method_options"] = {"mckd": {"stages": 2}}
                    sec = run_cell([sys.executable, "-m", "llmkd"], extra, runs / "mckd", name, cfg, env,
                                   f"mckd {cell} seed {seed}")[1]
                    wd = runs / "mckd" / name / "mckd"
                    res = json.loads((wd / "result.json").read_text())
                    row = {"cell": cell, "seed": seed, "seconds": sec,
                           "stage_seconds": (wd / "labels-stage1.jsonl").stat().st_mtime - (wd / "partition.json").stat().st_mtime,
                           "macro_f1": res["metrics"]["macro_f1"],
                           "part_f1": [s["test"]["macro_f1"] for s in res["extra"]["stages"][0]["students"]],
                           # each part student's training loop (its last evaluation), wherever it ran
                           "part_seconds": [json.loads((wd / f"stage1-part{i}" / "progress.json").read_text())
                                            ["history"][-1]["seconds"] for i in range(2)],
                           "load1": os.getloadavg()[0]}
                    if cell != "serial":
                        ref = runs / "mckd" / f"mckd-s{seed}-serial" / "mckd"
                        row["identical"] = {f: (wd / f).read_text() == (ref / f).read_text()
                                            for f in ("labels-stage1.jsonl", "predictions.jsonl")}
                        row["identical"]["metrics"] = res["metrics"] == json.loads((ref / "result.json").read_text())["metrics"]
                    rows.append(row)
                    print(row, flush=True)
    finally:
        ray.shutdown()
    return rows


def stub_cells(args) -> list[dict]:
    """bench/teacher_speed.py's stub-server scale-out, over --stub-servers servers."""
    from teacher_speed import scale_out

    rows = scale_out([f"prompt {i}" for i in range(args.stub_prompts)], args.stub_servers, args.stub_delay, per_server=2)
    return [{**r, "prompts": args.stub_prompts, "delay": args.stub_delay} for r in rows]


def fmt(vals: list[float], f: str = "{:.3f}") -> str:
    return f.format(vals[0]) if len(vals) == 1 else f"{f.format(statistics.mean(vals))} ± {f.format(statistics.stdev(vals))}"


def main() -> None:
    ap = parser(__doc__, NAME, [], teachers=None)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--mckd-seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--skip", nargs="*", choices=["ray", "accelerate", "mckd", "stub"], default=[],
                    help="parts not run again: their rows are kept from the .json of an earlier run")
    ap.add_argument("--stub-servers", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--stub-prompts", type=int, default=400)
    ap.add_argument("--stub-delay", type=float, default=0.05)
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json beside it")
    args = ap.parse_args()
    command, started = start(NAME)
    store = Path(args.out).with_suffix(".json")
    earlier = json.loads(store.read_text()) if store.exists() else {}
    if args.report_only:
        saved = earlier
        command, lab, acc, stub = saved["command"], saved["labeling"], saved["training"], saved.get("stub", [])
        mckd = saved.get("mckd", [])
        kept = saved.get("kept_from", {})
        args.seeds, args.items = saved["seeds"], saved["items"]
    else:
        runs = Path(args.runs)
        runs.mkdir(parents=True, exist_ok=True)
        lab = earlier.get("labeling", []) if "ray" in args.skip else ray_cells(args, runs)
        acc = earlier.get("training", []) if "accelerate" in args.skip else accelerate_cells(args, runs)
        mckd = earlier.get("mckd", []) if "mckd" in args.skip else mckd_cells(args, runs)
        stub = earlier.get("stub", []) if "stub" in args.skip else stub_cells(args)
        kept = {part: earlier.get("kept_from", {}).get(part, earlier.get("command")) for part in args.skip}
        store.write_text(json.dumps({"command": command, "kept_from": kept, "seeds": args.seeds, "items": args.items, "labeling": lab,
                                     "training": acc, "mckd": mckd, "stub": stub, "machine": machine_line(started),
                                     "cpu": cpu_model()}, indent=1))
    machine, cpu = (saved["machine"], saved["cpu"]) if args.report_only else (machine_line(started), cpu_model())
    lines = ["# Scale-out on this machine (bench/scale_out.py)", "",
             f"Command: `{command}`  ",
             *[f"The {part} rows are kept from an earlier run: `{cmd}`  "
               for part, cmd in (saved if args.report_only else {"kept_from": kept}).get("kept_from", {}).items()],
             machine,
             *([] if cpu in machine else [f"CPU: {cpu}.  "]),  # stores written before the machine line named the CPU
             f"Seeds: {args.seeds} (the MCKD cells: their seed column). Data: SST-2 (`{SST2}`), pool {args.items} sentences, 16 labeled, 16 dev, 300 test.", ""]
    if lab:
        base = next(r for r in lab if r["cell"] == "local")["seconds"]
        lines += ["## Labeling: local vs a loopback Ray cluster", "",
                  "SmolLM2-135M (llama.cpp, n_threads=1 per worker, score mode), an empty cache per cell; the Ray "
                  "cluster has 2 CPUs on 127.0.0.1. Wall time of `llmkd.api.label` (actor start and model load included).",
                  ""]
        lines += md_table(["cell", "seconds", "items/s", "x local", "labels identical to local", "load (1 min) after"],
                          [[r["cell"], f"{r['seconds']:.1f}", f"{r['items'] / r['seconds']:.1f}",
                            f"{base / r['seconds']:.2f}", f"{r['same_as_local']} / {r['items']}",
                            f"{r.get('load1', 0):.1f}"] for r in lab])
    if acc:
        lines += ["## Student: Accelerate, 2 CPU processes vs 1", "",
                  "`llmkd run` with method vanilla (MiniLM, 3 epochs or the min_steps rule, batch 16), the pool labeled "
                  "by a fake teacher that answers the gold label (the loopback OpenAI server). Mean ± std over the "
                  "seeds; wall time of the whole command.",
                  ""]
        cells = {c: [r for r in acc if r["cell"] == c] for c in dict.fromkeys(r["cell"] for r in acc)}
        lines += md_table(["cell", "test macro-F1", "test accuracy", "wall seconds", "teacher calls"],
                          [[c, fmt([r["macro_f1"] for r in rs]), fmt([r["accuracy"] for r in rs]),
                            fmt([r["seconds"] for r in rs], "{:.0f}"), sum(r["teacher_calls"] or 0 for r in rs)]
                           for c, rs in cells.items()])
        lines += ["Per seed:", ""] + md_table(
            ["cell", "seed", "macro-F1", "seconds", "epochs", "load (1 min) after"],
            [[r["cell"], r["seed"], f"{r['macro_f1']:.4f}", f"{r['seconds']:.0f}", r["epochs"], f"{r.get('load1', 0):.1f}"]
             for r in acc])
    if mckd:
        lines += ["## MCKD's part students: serial vs parallel Ray tasks", "",
                  "`llmkd run` of MCKD-2 (method mckd, stages 2: two MiniLM students on the pool's halves, then the "
                  "final student; 1 torch thread each, 3 epochs or the min_steps rule, training-fidelity selection), "
                  "the pool labeled by the fake gold teacher; serially in process vs `--executor ray --address` a "
                  "loopback cluster of 2 CPUs (one per student task). Stage 1 = `partition.json` to "
                  "`labels-stage1.jsonl` (both part students trained, relabeling, their dev/test reports); training "
                  "loops = each part student's `progress.json` seconds at its last evaluation (training and "
                  "training-fidelity evaluations; on Ray the two overlap, and a task's Python start and model load "
                  "are outside them); wall = the whole command. Identical: the Ray run's stage labels, test predictions and metrics equal the "
                  "serial run's (byte for byte).", ""]
        serial = {r["seed"]: r for r in mckd if r["cell"] == "serial"}
        lines += md_table(["cell", "seed", "stage 1 seconds", "x serial (stage 1)", "part students' training loops (s)",
                           "wall seconds", "x serial (wall)", "test macro-F1", "part students' macro-F1",
                           "identical to serial", "load (1 min) after"],
                          [[r["cell"], r["seed"], f"{r['stage_seconds']:.0f}",
                            f"{serial[r['seed']]['stage_seconds'] / r['stage_seconds']:.2f}",
                            " + ".join(f"{x:.0f}" for x in r.get("part_seconds", [])) or "–", f"{r['seconds']:.0f}",
                            f"{serial[r['seed']]['seconds'] / r['seconds']:.2f}", f"{r['macro_f1']:.4f}",
                            " / ".join(f"{x:.4f}" for x in r["part_f1"]),
                            "–" if "identical" not in r else ("yes" if all(r["identical"].values()) else
                                                              "no: " + ", ".join(k for k, v in r["identical"].items() if not v)),
                            f"{r.get('load1', 0):.1f}"] for r in mckd])
    if stub:
        lines += ["## Labeling over N OpenAI-protocol servers (loopback stubs)", "",
                  f"{stub[0]['prompts']} prompts; each stub serves one request at a time and sleeps {stub[0]['delay'] * 1000:.0f} "
                  "ms per request (like a one-slot llama.cpp server); the OpenAI teacher spreads 2 x N concurrent "
                  "requests over the URL pool (least busy first). This measures llmkd's client, not the servers.", ""]
        lines += md_table(["servers", "seconds", "prompts/s", "x 1 server", "efficiency (ratio / N)"],
                          [[r["servers"], f"{r['seconds']:.2f}", f"{r['prompts_s']:.1f}", f"{r['ratio']:.2f}",
                            f"{r['efficiency']:.2f}"] for r in stub])
    write_keeping_notes(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
