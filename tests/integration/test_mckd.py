"""`llmkd run` with mckd and self_distill on real small models (SmolLM2 teacher, MiniLM student):
the run directory holds every stage's labels and provenance, and a rerun after losing the final
student continues from the saved stage labels without retraining the part students."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def llmkd(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmkd.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_mckd_run_directory_provenance_and_resume(tiny_config, minilm_path) -> None:
    cfg_path = tiny_config(methods=["mckd", "self_distill"], method_options={"mckd": {"stages": 2}})
    cfg = yaml.safe_load(cfg_path.read_text())
    first = llmkd("run", str(cfg_path), "-q")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "| mckd |" in first.stdout and "| self_distill |" in first.stdout
    wd = Path(cfg["output_dir"]) / "tiny" / "mckd"
    for name in ("partition.json", "labels-stage1.jsonl", "stage1.json", "stages.json", "provenance.jsonl",
                 "labels.jsonl", "result.json"):
        assert (wd / name).exists(), name
    parts = json.loads((wd / "partition.json").read_text())["parts"]
    assert sorted(len(p) for p in parts) == [6, 6]  # pool of 12, two equal halves
    rows = [json.loads(x) for x in (wd / "provenance.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    for r in rows:
        teacher, stage1 = r["labels"]
        assert teacher["source"] == "teacher" and stage1["source"] == "student"
        assert stage1["by"] == f"stage1:student-of-part{1 - r['part']}"  # labeled by the *other* half's student
    result = json.loads((wd / "result.json").read_text())
    stage = result["extra"]["stages"][0]
    assert set(stage) >= {"churn", "agreement_with_teacher", "abstentions_filled", "students"}
    assert all("test" in s and "dev" in s for s in stage["students"])

    # lose the final student and the result: the rerun retrains only the final student
    part_ckpt = wd / "stage1-part0" / "progress.json"
    before = part_ckpt.stat().st_mtime_ns
    shutil.rmtree(wd / "final-after-stage1")
    (wd / "result.json").unlink()
    second = llmkd("run", str(cfg_path), "-q")
    assert second.returncode == 0, second.stderr[-3000:]
    assert part_ckpt.stat().st_mtime_ns == before
    assert (wd / "final-after-stage1" / "best").exists()
