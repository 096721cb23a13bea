"""`llmkd run` end to end on real models (SmolLM2 teacher, MiniLM student), resumption after
kill -9, and the cache guarantee: a rerun makes zero teacher calls."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llmkd.teachers.cache import TeacherCache

pytestmark = pytest.mark.slow


def llmkd(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmkd.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_run_writes_a_complete_run_directory_and_rerun_makes_no_teacher_calls(tiny_config, minilm_path) -> None:
    cfg_path = tiny_config()
    cfg = yaml.safe_load(cfg_path.read_text())
    first = llmkd("run", str(cfg_path), "-q")
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = Path(cfg["output_dir"]) / "tiny"
    for name in ("config.yaml", "manifest.json", "labels.jsonl", "metrics.json", "report.md"):
        assert (run_dir / name).exists(), name
    for method in cfg["methods"]:
        assert (run_dir / method / "result.json").exists()
        assert (run_dir / method / "predictions.jsonl").exists()
    assert (run_dir / "vanilla" / "student" / "best" / "model.safetensors").exists()
    # a finished method keeps its students' weights, not the optimizer state (2x the weights)
    assert not list(run_dir.rglob("optimizer.safetensors"))
    report = (run_dir / "report.md").read_text()
    for method in cfg["methods"]:
        assert f"| {method} |" in report
    assert "| method | macro-F1 | accuracy | abstention |" in first.stdout

    labels = [json.loads(x) for x in (run_dir / "labels.jsonl").read_text().splitlines()]
    assert {r["source"] for r in labels} == {"gold", "teacher"}
    teacher_rows = [r for r in labels if r["source"] == "teacher"]
    assert len(teacher_rows) == 12
    for r in teacher_rows:
        assert set(r) >= {"id", "text", "label", "confidence", "abstained", "prompt_id", "raw", "stage"}
        assert (r["label"] is None) == r["abstained"]
        assert r["abstained"] or 0.0 <= r["confidence"] <= 1.0

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["packages"]["torch"].startswith("2.13.0")
    assert manifest["models"]["teacher"]

    cache = TeacherCache(cfg["cache"])
    before = cache.stats()
    assert before["repeated_calls"] == 0 and before["entries"] > 0
    cache.close()
    # a rerun with the same config loads every finished method and asks the teacher nothing
    second = llmkd("run", str(cfg_path), "-q")
    assert second.returncode == 0, second.stderr[-3000:]
    after = TeacherCache(cfg["cache"]).stats()
    assert after["teacher_calls"] == before["teacher_calls"] and after["repeated_calls"] == 0

    # eval re-scores the saved predictions and prints the same table
    ev = llmkd("eval", str(run_dir))
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert "| vanilla |" in ev.stdout


def test_deleting_results_reruns_methods_from_cache_only(tiny_config, minilm_path) -> None:
    cfg_path = tiny_config(methods=["vanilla"])
    cfg = yaml.safe_load(cfg_path.read_text())
    assert llmkd("run", str(cfg_path), "-q").returncode == 0
    run_dir = Path(cfg["output_dir"]) / "tiny"
    calls = TeacherCache(cfg["cache"]).stats()["teacher_calls"]
    import shutil

    shutil.rmtree(run_dir)  # a parser or report fix: recompute everything, teacher from cache
    again = llmkd("run", str(cfg_path), "-q")
    assert again.returncode == 0, again.stderr[-2000:]
    assert TeacherCache(cfg["cache"]).stats()["teacher_calls"] == calls


def test_kill_9_during_labeling_then_rerun_continues_without_repeating_calls(tiny_config, minilm_path) -> None:
    cfg_path = tiny_config(methods=["vanilla"], data__split__pool_size=52)  # all that is left of 60 rows
    cfg = yaml.safe_load(cfg_path.read_text())
    proc = subprocess.Popen([sys.executable, "-m", "llmkd.cli", "run", str(cfg_path), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache_file = Path(cfg["cache"])
    deadline = time.time() + 300
    killed_at = 0
    while time.time() < deadline and proc.poll() is None:
        if cache_file.exists():
            try:
                n = TeacherCache(cache_file).stats()["entries"]
            except Exception:  # the file may be mid-creation
                n = 0
            if n >= 10:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                killed_at = n
                break
        time.sleep(0.2)
    assert killed_at >= 10, "the run finished or stalled before it could be killed mid-labeling"
    assert killed_at < 52
    rerun = llmkd("run", str(cfg_path), "-q")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    stats = TeacherCache(cache_file).stats()
    assert stats["repeated_calls"] == 0  # nothing asked twice
    # and everything asked once (score mode: one request per example)
    pool = [json.loads(x) for x in (Path(cfg["output_dir"]) / "tiny" / "labels.jsonl").read_text().splitlines()
            if json.loads(x)["source"] == "teacher"]
    assert len(pool) == 52
    assert stats["entries"] == len(pool) + 4  # and the teacher gate's dev labeling (2 per class), once
    run_dir = Path(cfg["output_dir"]) / "tiny"
    assert len((run_dir / "vanilla" / "labels.jsonl").read_text().splitlines()) == 52


def test_all_abstentions_stop_with_a_clear_message(tiny_config, minilm_path) -> None:
    cfg_path = tiny_config(methods=["vanilla"], teacher__labeling="generate", teacher__chat=True)
    r = llmkd("run", str(cfg_path), "-q")
    assert r.returncode == 2
    assert "the teacher abstained on all 12 pool examples" in r.stderr
    assert "teacher.labeling=score" in r.stderr


def test_bad_inputs_give_clear_messages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata:\n  train: a.jsonl\n   test: b.jsonl\n")
    r = llmkd("run", str(bad))
    assert r.returncode == 2
    assert "invalid YAML" in r.stderr and f"{bad}:4" in r.stderr

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"data": {"train": "a.jsonl", "test": "b.jsonl"}, "teacher": {"model": "gpt-9"}}))
    (tmp_path / "a.jsonl").write_text('{"text": "good", "label": "pos"}\n' * 30 + '{"text": "bad", "label": "neg"}\n' * 30)
    (tmp_path / "b.jsonl").write_text('{"text": "ok", "label": "pos"}\n')
    r = llmkd("run", str(unknown), "--set", "data.split.pool_size=10", "--set", f"output_dir={tmp_path}/runs")
    assert r.returncode == 2
    assert "unknown model name 'gpt-9'" in r.stderr and "llmkd models list" in r.stderr
