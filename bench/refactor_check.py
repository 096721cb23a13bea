"""Refactor check: the same small `llmkd run` cells with the code before and after a refactor, on
this machine, with the same settings and one shared teacher cache; are the test metrics identical?

Writes docs/results/refactor_check.md. Issue 24 (one training loop, run-directory writing in
report.py, methods reduced to their algorithm, one student epoch function, capability protocols)
promises no behaviour change; the benchmark docs were measured on another machine, so this script
compares the code *before* (``--base``, the commit the issue was filed against) with the code
*after* (``--head``) here instead of against those docs.

For each revision it checks out a git worktree beside the repository (``../refcheck-<sha>``, so
that the example configs' ``../../shared/data/...`` paths resolve to the same data) and runs each
cell there as an ordinary `llmkd run` of an example config in a subprocess, with
``PYTHONPATH=<worktree>/src``, the same ``LLMKD_HOME`` (models are not pulled again; the teacher
cache is shared, so the second revision's teacher calls are cache hits, which also shows that its
prompts are unchanged) and a run directory per revision under ``--runs``. Cells run base first,
then head; a finished method is kept (``llmkd run`` resumes), so a killed check resumes too.

    python bench/refactor_check.py                          # every cell, 2312f0f vs HEAD
    python bench/refactor_check.py --head 52739fb           # issue 24 as checked in the doc (its last commit)
    python bench/refactor_check.py --only mckd-sst2 llkd-trec
    python bench/refactor_check.py --head 52739fb --report-only   # rewrite the doc from the finished runs

--head is resolved once, at the start; the worktrees stay in place for the next invocation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT, machine_line, start, write_keeping_notes  # noqa: E402

TEACHER = "qwen2.5-coder-0.5b-instruct"
COMMON = ["progress=false", "seed=0", "student.threads=1"]  # plus name= and output_dir= per cell and revision


def _methods(ms: list[str]) -> str:
    return "methods=" + json.dumps(ms)


# name: (benchmark script it stands for, example config, overrides)
CELLS: dict[str, tuple[str, str, list[str]]] = {
    "classification-sst2": ("bench/classification.py", "examples/sst2.yaml", [
        f"teacher.model={TEACHER}", _methods(["teacher", "supervised", "vanilla"]),
        "data.split.pool_size=100", "data.split.test_size=100"]),
    "ner-conll2003": ("bench/ner.py", "examples/conll2003.yaml", [
        f"teacher.model={TEACHER}", _methods(["teacher", "vanilla"]),
        "data.split.pool_size=60", "data.split.test_size=60"]),
    "mckd-sst2": ("bench/mckd.py", "examples/mckd_sst2.yaml", [f"teacher.model={TEACHER}"]),  # as it is
    "llkd-trec": ("bench/llkd.py", "examples/llkd_trec.yaml", [
        f"teacher.model={TEACHER}", _methods(["llkd"]),
        "data.split.pool_size=100", "data.split.test_size=100"]),
    "llkd-trec-topk": ("bench/llkd.py", "examples/llkd_trec.yaml", [
        f"teacher.model={TEACHER}", _methods(["llkd"]),
        "data.split.pool_size=100", "data.split.test_size=100",
        "method_options.llkd.selection=topk", "method_options.llkd.fraction=0.3"]),
    "evokd-sst2": ("bench/evokd.py", "examples/evokd_sst2.yaml", [
        f"teacher.model={TEACHER}", _methods(["evokd", "synth_nofeedback"]),
        "data.split.test_size=100"]),  # rounds 2, n_hard 3, n_easy 3 as in the config
    "parsing-atis-slots": ("bench/parsing.py", "examples/atis_slots.yaml", [
        f"teacher.model={TEACHER}", _methods(["teacher", "vanilla"]),
        "data.split.dev_n=20", "data.split.pool_size=40", "data.split.test_size=40",
        "student.epochs=10", "student.min_steps=30"]),
    "parsing-ptb": ("bench/parsing.py", "examples/ptb.yaml", [
        f"teacher.model={TEACHER}", _methods(["teacher", "vanilla"]),
        "data.split.dev_n=20", "data.split.pool_size=30", "data.split.test_size=30",
        "student.epochs=10", "student.min_steps=30"]),
}
TIMING_WORDS = ("second", "time", "wall", "per_s", "elapsed", "duration")


# -- git -----------------------------------------------------------------------------------------
def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def resolve(rev: str) -> dict[str, str]:
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    return {"rev": rev, "sha": sha, "short": sha[:7], "subject": git("log", "-1", "--format=%s", sha)}


def worktree(rev: dict[str, str]) -> Path:
    """``../refcheck-<short>`` checked out (detached) at the revision; an existing one is reused
    when it is a worktree of this repository at that commit, else the check stops (nothing of the
    user's is removed or overwritten)."""
    path = ROOT.parent / f"refcheck-{rev['short']}"
    if path.exists():
        registered = [line.split(" ", 1)[1] for line in git("worktree", "list", "--porcelain").splitlines()
                      if line.startswith("worktree ")]
        if str(path) not in registered:
            sys.exit(f"{path} exists but is not a worktree of {ROOT}; move it away or pass other revisions")
        at = git("rev-parse", "HEAD", cwd=path)
        if at != rev["sha"]:
            sys.exit(f"{path} is a worktree at {at[:7]}, not {rev['short']}; remove it (git worktree remove) first")
        return path
    git("worktree", "add", "--detach", str(path), rev["sha"])
    return path


# -- running ---------------------------------------------------------------------------------------
def env_for(tree: Path, home: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(tree / "src"), LLMKD_HOME=home, TRANSFORMERS_VERBOSITY="error",
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    return env


def overrides(cell: str, out_dir: Path) -> list[str]:
    return [f"name={cell}", f"output_dir={out_dir}", *COMMON, *CELLS[cell][2]]


def argv(cell: str, out_dir: Path) -> list[str]:
    args = ["llmkd", "run", CELLS[cell][1]]
    for o in overrides(cell, out_dir):
        args += ["--set", o]
    return args


def python_code(args: list[str]) -> str:
    return f"import sys; sys.argv={args!r}; from llmkd.cli import main; main()"


def check_tree(tree: Path, home: str) -> str:
    """The llmkd that a subprocess in ``tree`` imports (it must be the worktree's)."""
    out = subprocess.run([sys.executable, "-c", "import llmkd; print(llmkd.__file__)"], cwd=tree,
                         env=env_for(tree, home), capture_output=True, text=True, check=True).stdout.strip()
    if not out.startswith(str(tree / "src")):
        sys.exit(f"a subprocess in {tree} imports llmkd from {out}, not from the worktree")
    return out


def validate(cell: str, tree: Path, out_dir: Path, home: str) -> str | None:
    """None when the cell's config and overrides load at this revision, else the error."""
    if not (tree / CELLS[cell][1]).exists():
        return f"{CELLS[cell][1]} does not exist at this revision"
    code = ("import sys; from llmkd.config import load_config; "
            f"load_config({CELLS[cell][1]!r}, {overrides(cell, out_dir)!r})")
    p = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env_for(tree, home), capture_output=True, text=True)
    return None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["?"])[-1]


def run_cell(cell: str, tree: Path, out_dir: Path, home: str) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / f"{cell}.log"
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {python_code(argv(cell, out_dir))}\n")
        f.flush()
        p = subprocess.run([sys.executable, "-c", python_code(argv(cell, out_dir))], cwd=tree,
                           env=env_for(tree, home), stdout=f, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    tail = log.read_text(errors="replace").strip().splitlines()[-15:]
    return {"rc": p.returncode, "wall": wall, "log": str(log), "tail": tail}


# -- comparing -------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def leaf_diffs(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two JSON values differ, timing-like keys left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            if any(w in str(k).lower() for w in TIMING_WORDS):
                continue
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{p} (head only)")
            elif k not in b:
                out.append(f"{p} (base only)")
            else:
                out += leaf_diffs(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path} (length {len(a)} vs {len(b)})"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in leaf_diffs(x, y, f"{path}[{i}]")]
    return [] if same_value(a, b) else [path]


def metric_rows(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """method (and MCKD's per-stage finals) -> test metrics."""
    rows: dict[str, dict[str, Any]] = {}
    for name, r in results.items():
        rows[name] = r.get("metrics") or {}
        for k, final in sorted(((r.get("extra") or {}).get("finals") or {}).items()):
            if isinstance(final, dict) and "test" in final:
                rows[f"{name} (MCKD-{k} final)"] = final["test"]
    return rows


def run_files(run_dir: Path) -> set[str]:
    """A run directory's files, student checkpoints (``best``, ``last``, ``epoch-N`` folders) left out."""
    skip = ("best", "last")
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()
            and not any(part in skip or part.startswith("epoch-") for part in p.relative_to(run_dir).parts[:-1])
            and not p.name.endswith(".tmp")}


def compare(cell: str, dirs: dict[str, Path]) -> dict[str, Any]:
    base_dir, head_dir = dirs["base"] / cell, dirs["head"] / cell
    mb = json.loads((base_dir / "metrics.json").read_text())["results"]
    mh = json.loads((head_dir / "metrics.json").read_text())["results"]
    rb, rh = metric_rows(mb), metric_rows(mh)
    metrics = []
    for method in list(rb) + [m for m in rh if m not in rb]:
        a, b = rb.get(method, {}), rh.get(method, {})
        for key in list(a) + [k for k in b if k not in a]:
            metrics.append({"method": method, "metric": key, "base": a.get(key), "head": b.get(key),
                            "same": key in a and key in b and same_value(a[key], b[key])})
    methods = []
    for method in list(mb) + [m for m in mh if m not in mb]:
        row: dict[str, Any] = {"method": method}
        pb, ph = base_dir / method / "predictions.jsonl", head_dir / method / "predictions.jsonl"
        if pb.exists() and ph.exists():
            xb = {r["id"]: r for r in read_jsonl(pb)}
            xh = {r["id"]: r for r in read_jsonl(ph)}
            row["pred_same"] = sum(i in xh and xh[i]["pred"] == r["pred"] for i, r in xb.items())
            row["pred_n"] = max(len(xb), len(xh))
            row["probs_same"] = sum(i in xh and xh[i].get("probs") == r.get("probs") for i, r in xb.items())
        lb, lh = base_dir / method / "labels.jsonl", head_dir / method / "labels.jsonl"
        if lb.exists() and lh.exists():
            yb = {r["id"]: r for r in read_jsonl(lb)}
            yh = {r["id"]: r for r in read_jsonl(lh)}
            row["label_n"] = max(len(yb), len(yh))
            row["label_same"] = sum(i in yh and yh[i]["label"] == r["label"] and yh[i]["abstained"] == r["abstained"]
                                    for i, r in yb.items())
            row["label_full_same"] = sum(i in yh and yh[i] == r for i, r in yb.items())
        elif lb.exists() or lh.exists():
            row["label_note"] = f"labels.jsonl only at {'base' if lb.exists() else 'head'}"
        tb, th = (mb.get(method) or {}).get("timings") or {}, (mh.get(method) or {}).get("timings") or {}
        for side, t in (("base", tb), ("head", th)):
            if "teacher_calls" in t or "cache_hits" in t:
                row[f"{side}_calls"], row[f"{side}_hits"] = t.get("teacher_calls"), t.get("cache_hits")
        row["extra_diffs"] = leaf_diffs((mb.get(method) or {}).get("extra"), (mh.get(method) or {}).get("extra"))
        row["stop_same"] = (mb.get(method) or {}).get("stop_reason") == (mh.get(method) or {}).get("stop_reason")
        methods.append(row)
    fb, fh = run_files(base_dir), run_files(head_dir)
    return {"metrics": metrics, "methods": methods,
            "files": {"base_only": sorted(fb - fh), "head_only": sorted(fh - fb), "both": len(fb & fh)}}


# -- the doc ---------------------------------------------------------------------------------------
def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def write(args: argparse.Namespace, revs: dict[str, dict[str, str]], trees: dict[str, Path], dirs: dict[str, Path],
          state: dict[str, Any], command: str, machine: str) -> None:
    lines = [
        "# Refactor check: the code before and after issue 24, same cells, same machine",
        "",
        "Issue 24 (one training loop, run-directory writing in report.py, methods reduced to their algorithm, one "
        "student epoch function, capability protocols, ...) promises no behaviour change. The benchmark docs were "
        "measured on another machine, so this check runs one small cell per benchmark with the code *before* the "
        "refactor and *after* it, here, with the same settings and one shared teacher cache, and compares the test "
        "metrics, the test predictions and the teacher labels.",
        "",
        f"Command: `{command}`  ",
        machine,
        f"Python {platform.python_version()}, one virtual environment "
        f"for both revisions ({sys.prefix}).  ",
        f"Base: `{revs['base']['sha']}` ({revs['base']['rev']}) {revs['base']['subject']}  ",
        f"Head: `{revs['head']['sha']}` ({revs['head']['rev']}) {revs['head']['subject']}  ",
        f"Worktrees: base `{trees['base']}`, head `{trees['head']}` (`git worktree add --detach`; each cell runs "
        "there with `PYTHONPATH=<worktree>/src`). Run directories: "
        f"`{dirs['base']}/<cell>` and `{dirs['head']}/<cell>`, each with its `<cell>.log`.  ",
        f"LLMKD_HOME (models and the shared teacher cache): `{args.home}`.  ",
        f"Every cell: `{' '.join(COMMON)}` (seed 0 draws the splits, the demonstrations and the students' "
        f"initialisation; teacher.seed 0), teacher {TEACHER} (llama.cpp), student all-MiniLM-L6-v2; base runs "
        "first, then head.",
        "",
        "Each cell is, in its worktree:",
        "",
        "```",
        f"PYTHONPATH=<worktree>/src LLMKD_HOME={args.home} {Path(sys.executable).name} -c \"import sys; "
        "sys.argv=['llmkd', 'run', CONFIG, '--set', 'name=CELL', '--set', 'output_dir=RUNS/<sha>', "
        f"{', '.join(repr(x) for c in COMMON for x in ('--set', c))}, '--set', OVERRIDE, ...]; "
        "from llmkd.cli import main; main()\"",
        "```",
        "",
        "## Cells",
        "",
        "| cell | stands for | config | overrides | base wall (s) | head wall (s) | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell, st in state.items():
        bench, config, ov = CELLS[cell]
        walls = [f"{st[s]['wall']:.0f}" if st.get(s) and "wall" in st[s] else "–" for s in ("base", "head")]
        lines.append(f"| {cell} | {bench} | {config} | {'<br>'.join(f'`{o}`' for o in ov)} | {walls[0]} | {walls[1]} | "
                     f"{st.get('status', 'pending')} |")
    lines += ["", "## Test metrics", "",
              "Exact comparison of the floats in `<run dir>/metrics.json` (`results -> method -> metrics`; MCKD's "
              "per-stage finals from `extra.finals`), shown to 4 decimals.", "",
              "| cell | method | metric | base | head | same |", "|---|---|---|---|---|---|"]
    for cell, st in state.items():
        for r in (st.get("compare") or {}).get("metrics", []):
            b, h = fmt(r["base"]), fmt(r["head"])
            if not r["same"] and b == h:
                b, h = repr(r["base"]), repr(r["head"])
            lines.append(f"| {cell} | {r['method']} | {r['metric']} | {b} | {h} | {'yes' if r['same'] else '**no**'} |")
    lines += ["", "## Test predictions, teacher labels, teacher cache", "",
              "Predictions: test examples whose predicted label is the same at both revisions, and whose stored "
              "probabilities are identical. Teacher labels: the method's `labels.jsonl`, label and abstention per "
              "id (and the whole record: raw reply, confidence, probabilities). Teacher calls / cache hits: "
              "`result.json` timings of each revision (calls = cache misses sent to llama.cpp). `extra` lists the "
              "fields of the method's `extra` result that differ (timing fields left out).", "",
              "| cell | method | predictions same | probs same | teacher labels same (label / whole record) | "
              "base calls / hits | head calls / hits | extra fields differing |",
              "|---|---|---|---|---|---|---|---|"]
    for cell, st in state.items():
        for r in (st.get("compare") or {}).get("methods", []):
            pred = f"{r['pred_same']}/{r['pred_n']}" if "pred_n" in r else "–"
            probs = f"{r['probs_same']}/{r['pred_n']}" if "pred_n" in r else "–"
            lab = (f"{r['label_same']}/{r['label_n']} / {r['label_full_same']}/{r['label_n']}" if "label_n" in r
                   else r.get("label_note", "–"))
            calls = [f"{r[f'{s}_calls']} / {r[f'{s}_hits']}" if f"{s}_calls" in r else "–" for s in ("base", "head")]
            diffs = r["extra_diffs"]
            extra = "none" if not diffs else f"{len(diffs)}: " + ", ".join(f"`{d}`" for d in diffs[:6]) + (
                ", ..." if len(diffs) > 6 else "")
            if not r["stop_same"]:
                extra += "; stop_reason differs"
            lines.append(f"| {cell} | {r['method']} | {pred} | {probs} | {lab} | {calls[0]} | {calls[1]} | {extra} |")
    lines += ["", "## Run directory files", "",
              "Files written at one revision only (student checkpoint folders left out). The metrics, predictions "
              "and labels above are read from the files both revisions write.", "",
              "| cell | files at both | base only | head only |", "|---|---|---|---|"]
    for cell, st in state.items():
        f = (st.get("compare") or {}).get("files")
        if f:
            lines.append(f"| {cell} | {f['both']} | {', '.join(f'`{x}`' for x in f['base_only']) or '–'} | "
                         f"{', '.join(f'`{x}`' for x in f['head_only']) or '–'} |")
    problems = []
    for cell, st in state.items():
        for s in ("base", "head"):
            if st.get(s, {}).get("error"):
                problems.append(f"- {cell} at {s}: {st[s]['error']}")
        for r in (st.get("compare") or {}).get("metrics", []):
            if not r["same"]:
                problems.append(f"- {cell}, {r['method']}, {r['metric']}: base {r['base']!r}, head {r['head']!r}")
    n_metrics = sum(len((st.get("compare") or {}).get("metrics", [])) for st in state.values())
    n_same = sum(r["same"] for st in state.values() for r in (st.get("compare") or {}).get("metrics", []))
    lines += ["", "## Summary", "",
              f"{n_same} of {n_metrics} test metrics identical over "
              f"{sum(1 for st in state.values() if st.get('compare'))} compared cell(s)."
              + (" Differences and failures:" if problems else ""), ""] + problems + [""]
    write_keeping_notes(args.out, "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="2312f0f", help="the revision before the refactor")
    ap.add_argument("--head", default="HEAD", help="the revision after it")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "refactor-check"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "refactor_check.md"))
    ap.add_argument("--only", nargs="+", choices=sorted(CELLS), help="run these cells only")
    ap.add_argument("--check-only", action="store_true", help="make the worktrees, load every cell's config at both "
                    "revisions, run nothing")
    ap.add_argument("--report-only", action="store_true", help="rewrite the doc from the finished runs of an "
                    "earlier invocation with the same revisions (its command and machine line kept), running nothing")
    ap.add_argument("--home", default=os.environ.get("LLMKD_HOME") or str(Path.home() / ".cache" / "llmkd"),
                    help="LLMKD_HOME for both revisions (default: the user's)")
    args = ap.parse_args()
    command, started = start("refactor_check")
    revs = {"base": resolve(args.base), "head": resolve(args.head)}
    if revs["base"]["sha"] == revs["head"]["sha"]:
        sys.exit(f"--base and --head are the same commit {revs['base']['short']}")
    trees = {side: worktree(rev) for side, rev in revs.items()}
    for side in trees:
        print(f"{side}: {revs[side]['short']} at {trees[side]} (imports {check_tree(trees[side], args.home)})", flush=True)
    runs = Path(args.runs).resolve()
    dirs = {side: runs / revs[side]["short"] for side in revs}
    cells = args.only or list(CELLS)
    if args.check_only:
        for cell in cells:
            for side in ("base", "head"):
                print(f"{cell} {side}: {validate(cell, trees[side], dirs[side], args.home) or 'ok'}", flush=True)
        return
    # cells of an earlier invocation with the same revisions stay in the doc (--only reruns a few)
    state_path = runs / f"state-{revs['base']['short']}-{revs['head']['short']}.json"
    saved = json.loads(state_path.read_text()) if state_path.exists() else {}
    old, meta = saved.get("cells", {}), saved.get("meta", {})
    if args.report_only:
        if not old:
            sys.exit(f"{state_path}: no earlier results of {revs['base']['short']} vs {revs['head']['short']}")
        for cell, st in old.items():
            if st.get("compare"):
                st["compare"] = compare(cell, dirs)  # from the run directories, as this version compares
        write(args, revs, trees, dirs, old, meta["command"], meta["machine"])
        print(f"wrote {args.out} from {state_path}")
        return
    state: dict[str, Any] = {c: ({} if c in cells else old[c]) for c in CELLS if c in cells or c in old}
    for cell in cells:
        st = state[cell]
        for side in ("base", "head"):
            err = validate(cell, trees[side], dirs[side], args.home)
            if err:
                st[side] = {"error": f"config does not load: {err}"}
                print(f"{cell} {side}: {err}", flush=True)
                continue
            res = run_cell(cell, trees[side], dirs[side], args.home)
            st[side] = res
            print(f"{cell} {side}: rc {res['rc']}, {res['wall']:.0f}s", flush=True)
            if res["rc"] != 0:
                st[side]["error"] = f"`llmkd run` exited {res['rc']}: " + " / ".join(
                    line.strip() for line in res["tail"][-3:]).replace("|", "\\|")
        if all(st.get(s) and not st[s].get("error") for s in ("base", "head")):
            st["compare"] = compare(cell, dirs)
            differ = sum(not r["same"] for r in st["compare"]["metrics"])
            st["status"] = "identical" if not differ else f"{differ} metric(s) differ"
        else:
            st["status"] = "failed at " + " and ".join(s for s in ("base", "head") if st.get(s, {}).get("error"))
        print(f"{cell}: {st['status']}", flush=True)
        meta = {"command": command, "machine": machine_line(started)}
        state_path.write_text(json.dumps({"meta": meta, "cells": state}, indent=1, default=str))
        write(args, revs, trees, dirs, state, meta["command"], meta["machine"])
    print(f"wrote {args.out} ({time.time() - started:.0f}s)")


if __name__ == "__main__":
    main()
