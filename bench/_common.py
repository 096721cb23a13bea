"""What every benchmark script shares: the repository root on sys.path, teacher short names, the
common arguments (datasets, teachers, seeds, run and output folders), the header line about the
machine, mean ± std formatting, interleaved timing of speed rows, and :func:`run_cells` (independent cells one after another, or
as parallel Ray tasks with ``--executor ray``). Scripts run as ``python bench/NAME.py``, so this module is
importable as ``_common``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT.parent / "shared"  # the datasets and method notes beside the clone (never copied into it)

SHORT = {"qwen2.5-coder-0.5b-instruct": "Qwen-0.5B", "qwen2.5-coder-1.5b-instruct": "Qwen-1.5B",
         "smollm2-135m-instruct": "SmolLM2-135M"}
QWENS = ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]


def parser(doc: str | None, name: str, datasets: list[str], *, teachers: list[str] | None = QWENS,
           dataset_choices: list[str] | None = None, dataset_help: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with --datasets, --teachers (unless ``teachers`` is None), --seeds,
    --runs (runs/bench-NAME) and --out (docs/results/NAME.md)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=datasets, choices=dataset_choices, help=dataset_help)
    if teachers is not None:
        ap.add_argument("--teachers", nargs="+", default=teachers)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--runs", default=str(ROOT / "runs" / f"bench-{name}"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / f"{name}.md"))
    ap.add_argument("--fresh", action="store_true",
                    help="start a new table although the store beside --out holds results made with other "
                         "settings (the old store is kept as NAME.old.json); without it such a run stops")
    return ap


def start(name: str) -> tuple[str, float]:
    """Quiet logging; returns the exact command line (for the doc) and the start time."""
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers  # its weight loading / shard writing bars would fill the benchmark's log

    transformers.logging.disable_progress_bar()
    return f"python bench/{name}.py " + " ".join(sys.argv[1:]), time.time()


def cpu_model() -> str:
    """The CPU's model name with its family / model numbers, for the machine line of a results doc
    ("AMD EPYC (family/model 26/2)": a virtual machine's name hides the generation, which decides
    the llama.cpp kernels and so can change a teacher's answers)."""
    from llmkd.teachers.native import cpu_info

    info = cpu_info()
    return (info["model"] or "unknown CPU") + (f" (family/model {info['family']})" if info.get("family") else "")


def machine_line(started: float, wall_of: str = "") -> str:
    """Date, machine (with its CPU model), load average (other jobs on the machine slow every timing)
    and wall time.

    ``wall_of`` says what the wall time covers where a doc gathers the cells of several commands.
    """
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"Date: {dt.datetime.now().isoformat(timespec='minutes')}; machine: {platform.machine()}, "
            f"{cpu_model()}, {os.cpu_count()} CPU cores, {platform.platform()}; load average (1/5/15 min) at writing {load}; "
            f"wall time {time.time() - started:.0f} s" + (f" ({wall_of})" if wall_of else "") + ".  ")


def mean_std(vals: list[float], fmt: str = "{:.3f}", scale: float = 1.0) -> str:
    """``m ± s`` over seeds (sample std), the value alone for one seed, ``–`` for none."""
    vals = [v * scale for v in vals if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return f"{fmt.format(statistics.mean(vals))} ± {fmt.replace('+', '').format(statistics.stdev(vals))}"  # no +std


NOTES = "<!-- notes: text below this line is kept when the benchmark rewrites the file -->"


def write_keeping_notes(out: str | Path, text: str, marker: str = NOTES) -> None:
    """Write ``text`` + ``marker`` to ``out``, keeping whatever followed ``marker`` in the file
    already (hand-written notes survive a rerun of the benchmark)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.read_text() if out.exists() else ""
    notes = old.split(marker, 1)[1] if marker in old else ""
    out.write_text(text + marker + (notes or "\n"))


def rows_in_order(by_label: dict[str, list], prefixes: list[str]) -> list[tuple[str, list]]:
    """``(label, results)`` of a table, grouped by the first of ``prefixes`` each label starts
    with (e.g. all "teacher few-shot (...)" rows first), in insertion order within a group."""
    return [(label, results) for prefix in prefixes for label, results in by_label.items() if label.startswith(prefix)]


def result_store(out: str | Path, settings: dict, command: str, *, fresh: bool = False,
                 report_only: bool = False) -> tuple[dict, Path]:
    """The JSON store beside ``out`` (``NAME.json``) in which a benchmark accumulates its cells
    over invocations: ``{"settings", "commands", "runs"}``. ``command`` is appended, unless
    ``report_only`` (a ``--report-only`` invocation measures nothing); the caller writes the store
    back.

    A store made with other ``settings`` is never overwritten silently: with results in it the
    run stops (``SystemExit``) naming the settings that differ, unless ``fresh`` (``--fresh``),
    which moves it to ``NAME.old.json`` and starts a new table. Write it back with
    :func:`save_store` (two processes may add to one store)."""
    path = Path(out).with_suffix(".json")
    store = json.loads(path.read_text()) if path.exists() else {}
    if store.get("settings") != settings:
        old = store.get("settings") or {}
        if store.get("runs") and not fresh:
            differ = ", ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} here"
                               for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k))
            raise SystemExit(f"{path} holds {len(store['runs'])} results made with other settings ({differ}). "
                             "Rerun with its settings to add to that table, pass --out for another file, or "
                             f"--fresh to start a new table (the old one is kept as {path.with_suffix('.old.json')})")
        if store:
            print(f"{path}: other settings than {settings} ({old}); starting a new table")
            if store.get("runs"):
                path.replace(path.with_suffix(".old.json"))
        store = {"settings": settings, "commands": [], "runs": {}}
    if not report_only:
        store["commands"].append(command)
    return store, path


def doc_machine_line(args: argparse.Namespace, started: float) -> str:
    """The machine line of a doc that gathers the cells of several invocations: this one's, or,
    with ``--report-only`` (which measures nothing), the line of the last invocation that did,
    read back from the doc ``args.out``."""
    if getattr(args, "report_only", False) and Path(args.out).exists():
        for line in Path(args.out).read_text().splitlines():
            if line.startswith("Date: "):
                return line.rstrip() + "  "
    return machine_line(started, "of the last command")


def save_store(store: dict, path: Path) -> None:
    """Write ``store`` (from :func:`result_store`) back to ``path``, safe beside another process of
    the same benchmark writing the same store: under a lock, results on disk that this process
    does not hold are kept (a union of ``runs``, this process's entries winning; its commands after
    those on disk) and ``store`` takes them too, so the doc it draws next shows both. A store on
    disk with other settings (a ``--fresh`` since) is replaced, as before."""
    import hashlib
    import tempfile

    from filelock import FileLock

    from llmkd.io import write_json

    lock = Path(tempfile.gettempdir()) / f"llmkd-bench-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]}.lock"
    with FileLock(str(lock)):
        disk = json.loads(path.read_text()) if path.exists() else {}
        if disk.get("settings") == store["settings"]:
            store["runs"] = {**disk.get("runs", {}), **store["runs"]}
            done = disk.get("commands", [])
            store["commands"] = done + [c for c in store["commands"] if c not in done]
        write_json(path, store)  # atomic: a killed process leaves the old store, not half of one


def interleaved(items: Sequence[Any], block: int, jobs: dict[str, Callable[[list], Any]], *,
                desc: str | None = None) -> dict[str, float]:
    """Run every job over ``items`` in blocks of ``block``, the jobs' order rotating by one from
    block to block, so the load of a shared machine hits every job alike (the speed benchmarks'
    rows). Returns each job's seconds; ``desc`` shows a progress bar over the blocks."""
    from tqdm import tqdm

    names, seconds = list(jobs), dict.fromkeys(jobs, 0.0)
    blocks = [list(items[i : i + block]) for i in range(0, len(items), block)]
    for b, chunk in enumerate(tqdm(blocks, desc=desc, unit="block", disable=desc is None)):
        r = b % len(names)
        for name in names[r:] + names[:r]:
            t0 = time.perf_counter()
            jobs[name](chunk)
            seconds[name] += time.perf_counter() - t0
    return seconds


def md_table(headers: list[str], rows: list[list]) -> list[str]:
    """A markdown table's lines: the first column left-aligned, the others right-aligned (numbers),
    then a blank line."""
    return (["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""])


def add_set_arg(ap: argparse.ArgumentParser, example: str) -> None:
    """--set: config overrides for every run, several after one --set or --set repeated (as
    ``llmkd`` takes them); ``example`` shows one in the help."""
    ap.add_argument("--set", nargs="+", action="extend", default=[],
                    help=f"config overrides for every run, e.g. {example} (several after one --set, or --set "
                         "repeated as llmkd takes them)")


def add_executor_args(ap: argparse.ArgumentParser) -> None:
    """--executor / --address / --cpus-per-cell for a benchmark whose cells run through :func:`run_cells`."""
    ap.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: the cells one after another in this process; ray: as parallel Ray tasks "
                         "(pip install 'llmkd[ray]')")
    ap.add_argument("--address", default=None,
                    help="--executor ray: the Ray cluster (HOST:PORT; default: RAY_ADDRESS, else a local one on "
                         "127.0.0.1 with this machine's CPUs)")
    ap.add_argument("--cpus-per-cell", type=float, default=1.0,
                    help="--executor ray: CPUs one cell asks for (its teacher and student threads should match)")


def run_cells(fn: Callable[[Any], Any], cells: Sequence[Any], *, executor: str = "local", address: str | None = None,
              cpus: float = 1.0, on_result: Callable[[Any, Any], None] | None = None) -> list[Any]:
    """``[fn(cell) for cell in cells]``, in the order of ``cells``; ``on_result(cell, result)`` is
    called here as each finishes (e.g. to rewrite the doc), in the order they finish.

    ``executor="ray"``: each cell is a Ray task asking for ``cpus`` CPUs, on the cluster
    ``address`` (None: ``RAY_ADDRESS``, else a local one on 127.0.0.1, shut down at the end). A
    cell is a whole ``llmkd run`` of its own config and run folder, so cells never write the same
    files; they share the teacher cache file, which is safe between processes of one machine (a
    prompt is asked once: see llmkd.teachers.cache). Across nodes give each node a cache of its
    own (``cache:`` on a local disk) or label the pools first with ``llmkd label``; ``output_dir``
    must then be on a file system every node sees."""
    if executor == "local":
        out = []
        for cell in cells:
            out.append(fn(cell))
            if on_result:
                on_result(cell, out[-1])
        return out
    from llmkd.api import check_executor
    from llmkd.ray_labeling import cluster

    check_executor(executor)
    with cluster(address, what="benchmark cells as Ray tasks (--executor ray)", data=False) as ray:
        paths = os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench"), str(ROOT)])
        task = ray.remote(fn).options(num_cpus=cpus, max_retries=0, runtime_env={"env_vars": {
            "PYTHONPATH": paths, "OMP_NUM_THREADS": str(max(1, int(cpus))), "TOKENIZERS_PARALLELISM": "false"}})
        pending = {task.remote(cell): i for i, cell in enumerate(cells)}
        results: dict[int, Any] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            results[i] = ray.get(ready[0])
            if on_result:
                on_result(cells[i], results[i])
        return [results[i] for i in range(len(cells))]
