"""``llmkd label CONFIG --executor ray`` end to end (a local Ray cluster on 127.0.0.1 that the
command starts and stops; the loopback OpenAI server as the teacher, asked from the Ray actors):
the pool labels equal a local ``llmkd label``'s, and a later ``llmkd run`` asks the teacher nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fake_openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow  # starts a Ray cluster in a subprocess
pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]


def script(prompt: str) -> str:
    text = prompt.rstrip().rsplit("Text:", 1)[-1]
    return "positive" if "good" in text else ("negative" if "bad" in text else "no idea")


def test_label_on_ray_then_run_finds_every_answer_cached(tmp_path: Path, minilm_path: str) -> None:
    rows = [{"text": f"a {['good', 'bad', 'odd'][i % 3]} film number {i}", "label": "positive" if i % 2 else "negative"}
            for i in range(80)]
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    env.pop("RAY_ADDRESS", None)

    def cfg(name: str, cache: str, url: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "name": name, "seed": 0,
            "data": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl"),
                     "split": {"labeled_per_class": 2, "dev_per_class": 2, "pool_size": 50, "test_size": 10}},
            "teacher": {"backend": "openai", "model": "fake", "confidence": False, "gate": "off",
                        "openai": {"base_url": url, "api_key_env": None, "max_retries": 0}},
            "student": {"model": minilm_path, "epochs": 1, "min_steps": 2, "batch_size": 8, "max_length": 32,
                        "threads": 1},
            "methods": ["vanilla"], "output_dir": str(tmp_path / "runs"), "cache": str(tmp_path / cache),
            "progress": False}))
        return path

    def llmkd(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "llmkd", *args], capture_output=True, text=True, env=env,
                              timeout=900, cwd=tmp_path)

    with FakeOpenAIServer(script=script) as server:
        on_ray = cfg("ray", "ray.sqlite", server.base_url)
        r = llmkd("label", str(on_ray), "-q", "--executor", "ray")
        assert r.returncode == 0, r.stderr[-4000:]
        asked = len([q for q in server.requests if q["path"].endswith("/completions")])
        assert asked == 50  # each pool prompt once, from the actors
        local = llmkd("label", str(cfg("local", "local.sqlite", server.base_url)), "-q")
        assert local.returncode == 0, local.stderr[-4000:]
        before = len([q for q in server.requests if q["path"].endswith("/completions")])
        run = llmkd("run", str(on_ray), "-q")
        assert run.returncode == 0, run.stderr[-4000:]
        assert len([q for q in server.requests if q["path"].endswith("/completions")]) == before  # all cached

    def labels(name: str) -> list[dict]:
        rows = [json.loads(x) for x in (tmp_path / "runs" / name / "vanilla" / "labels.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "stage"} for r in rows]

    assert labels("ray") == labels("local")
    assert any(r["abstained"] for r in labels("ray"))
