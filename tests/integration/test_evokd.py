"""EvoKD end to end on real models (SmolLM2-135M teacher, MiniLM student and embedder): a small
real loop through `llmkd run`, its per-round report, and a rerun that asks the teacher nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmkd.teachers.cache import TeacherCache

pytestmark = pytest.mark.slow


def llmkd(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmkd.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_evokd_small_real_loop(tiny_config, minilm_path) -> None:
    opts = {"rounds": 2, "n_hard": 2, "n_easy": 2, "tokens_per_sample": 24, "analysis_max_tokens": 40,
            "max_reasks": 1, "patience": 0}
    # one thread each: spin-waiting thread pools crawl on a busy shared CPU
    cfg_path = tiny_config(methods=["evokd"], method_options={"evokd": opts}, teacher__n_threads=1, student__threads=1)
    cfg = yaml.safe_load(cfg_path.read_text())
    first = llmkd("run", str(cfg_path), "-q")
    assert first.returncode == 0, first.stderr[-3000:]
    wd = Path(cfg["output_dir"]) / "tiny" / "evokd"
    result = json.loads((wd / "result.json").read_text())
    extra = result["extra"]
    assert result["stop_reason"] == "all 2 rounds done"
    assert [r["round"] for r in extra["rounds"]] == [1, 2]
    for rec in extra["rounds"]:
        c = rec["counts"]
        assert c["generated"] <= 4  # never more than asked for per call (1 call per round by default: 2)
        samples_dropped = sum(v for k, v in c["dropped"].items() if k != "unparseable")
        assert c["kept"] + samples_dropped == c["generated"]
    plain, fed = extra["rounds"]
    assert plain["plain"] and plain["analysis"] == ""  # round 1: a plain batch, no analysis
    assert not fed["plain"] and len(fed["analysis"].split()) >= 5  # round 2: the weakness analysis is recorded
    assert fed["feedback"]["evaluated"] == 4 + plain["counts"]["kept"]  # the 2 x 2 seeds + round 1's batch
    assert extra["hygiene"]["kept"] == sum(r["counts"]["kept"] for r in extra["rounds"])
    assert extra["n_train"] == extra["hygiene"]["kept"] + 4  # + the 2 x 2 gold seeds
    assert (wd / "learning_curve.svg").exists() and (wd / "synthetic.jsonl").exists()
    report = (Path(cfg["output_dir"]) / "tiny" / "report.md").read_text()
    assert "| evokd |" in report and "## evokd: rounds" in report
    state = json.loads((wd / "state.json").read_text())
    assert (wd / state["best_slot"] / "student.json").exists()

    calls = TeacherCache(cfg["cache"]).stats()["teacher_calls"]
    # a rerun after deleting the result reruns the finished loop from its checkpoint: no teacher calls
    (wd / "result.json").unlink()
    second = llmkd("run", str(cfg_path), "-q")
    assert second.returncode == 0, second.stderr[-3000:]
    assert TeacherCache(cfg["cache"]).stats()["teacher_calls"] == calls
    assert json.loads((wd / "result.json").read_text())["metrics"] == result["metrics"]
