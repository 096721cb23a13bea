"""`llmkd run` with the llkd method on real small models (SmolLM2 teacher, MiniLM student): the
per-epoch record of thresholds and selected counts, the provenance file, the plot and its link in
the report, and a baseline strategy through the same loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def llmkd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmkd.cli", *args], capture_output=True, text=True, timeout=900)


def test_llkd_run_records_thresholds_selection_and_plot(tiny_config, minilm_path) -> None:
    cfg_path = tiny_config(methods=["vanilla", "llkd"], student__epochs=2,
                           method_options={"llkd": {"momentum": 0.5}})
    cfg = yaml.safe_load(cfg_path.read_text())
    done = llmkd("run", str(cfg_path), "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = Path(cfg["output_dir"]) / "tiny"
    res = json.loads((run_dir / "llkd" / "result.json").read_text())
    extra = res["extra"]
    assert extra["pool_answered"] == 12 and 1 <= extra["n_train"] <= 12
    assert extra["data_fraction"] == pytest.approx(extra["n_train"] / 12)
    assert [e["epoch"] for e in extra["epochs"]] == list(range(1, len(extra["epochs"]) + 1))
    for e in extra["epochs"]:
        assert set(e["teacher_thresholds"]) == {"negative", "positive"}
        assert all(0 <= v <= e["tau_teacher"] + 1e-9 for v in e["teacher_thresholds"].values())
        assert sum(e["selected_per_class"].values()) == e["selected"]
    assert 0.0 <= res["metrics"]["macro_f1"] <= 1.0
    assert (run_dir / "llkd" / "selection.png").stat().st_size > 1000
    assert "![llkd selection](llkd/selection.png)" in (run_dir / "report.md").read_text()
    rows = [json.loads(x) for x in (run_dir / "llkd" / "selection.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and sum(r["times_selected"] > 0 for r in rows) == extra["n_train"]
    state = json.loads((run_dir / "llkd" / "llkd" / "progress.json").read_text())
    assert state["done"] and state["trainer"]["selector"]["updates"] >= 2  # 12 examples / batch 8 = 2 steps per epoch


def test_topk_strategy_through_the_same_loop(tiny_config, minilm_path) -> None:
    cfg_path = tiny_config(methods=["llkd"], method_options={"llkd": {"selection": "topk", "fraction": 0.5}})
    done = llmkd("run", str(cfg_path), "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = yaml.safe_load(cfg_path.read_text())
    res = json.loads((Path(cfg["output_dir"]) / "tiny" / "llkd" / "result.json").read_text())
    assert res["extra"]["n_train"] == 6 and res["extra"]["options"]["selection"] == "topk"
    assert "teacher_thresholds" not in res["extra"]["epochs"][0]
