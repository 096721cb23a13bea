"""``llmkd run CONFIG --executor ray`` end to end with MCKD-2 (SmolLM2 teacher, MiniLM student, one
torch thread): the command starts a local Ray cluster on 127.0.0.1 and stops it; the part
students train as Ray tasks and land in the one run folder, which holds what a local run's holds,
with the same stage labels, predictions and metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # starts a Ray cluster in a subprocess and trains MiniLM students
pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]


def test_mckd_students_on_ray_give_the_local_run(tiny_config, minilm_path: str) -> None:
    path = tiny_config(methods=["mckd"], method_options={"mckd": {"stages": 2}},
                       student={"model": minilm_path, "epochs": 1, "min_steps": 2, "batch_size": 8, "max_length": 48,
                                "threads": 1})
    runs = Path(yaml.safe_load(path.read_text())["output_dir"])
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    env.pop("RAY_ADDRESS", None)

    def llmkd(*args: str) -> None:
        r = subprocess.run([sys.executable, "-m", "llmkd", "run", str(path), "-q", *args], capture_output=True,
                           text=True, env=env, timeout=900, cwd=path.parent)
        assert r.returncode == 0, r.stderr[-4000:]

    llmkd("--set", "name=local")
    llmkd("--set", "name=ray", "--executor", "ray")

    def read(name: str, file: str) -> list[dict]:
        return [json.loads(x) for x in (runs / name / "mckd" / file).read_text().splitlines()]

    for file in ("labels-stage1.jsonl", "predictions.jsonl", "labels.jsonl"):
        assert read("ray", file) == read("local", file), file
    res = {n: json.loads((runs / n / "mckd" / "result.json").read_text()) for n in ("local", "ray")}
    assert res["ray"]["metrics"] == res["local"]["metrics"]
    assert res["ray"]["extra"]["stages"] == res["local"]["extra"]["stages"]  # the part students' dev/test scores

    def tree(name: str) -> set[str]:
        return {str(f.relative_to(runs / name)) for f in (runs / name).rglob("*") if f.is_file()}

    assert tree("ray") == tree("local")  # the same run folder: the part students are in it, nothing else
