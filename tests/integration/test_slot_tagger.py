"""Slot filling with the tagger student end to end: a whole `llmkd run` (teacher, supervised, vanilla,
MCKD-2) on ATIS-format data with a scripted teacher (loopback OpenAI server) answering in the
seq2seq word/tag format, and the real MiniLM tagger. Then `llmkd export` + `llmkd predict` on the
MCKD student. Marked slow: it loads the packaged MiniLM."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.fake_openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow

CITIES = ["boston", "denver", "dallas", "miami", "austin", "seattle", "atlanta", "chicago"]


def _write(folder: Path, pairs: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True)
    words = [f"show flights from {a} to {b}".split() for a, b in pairs]
    tags = [["O", "O", "O", "B-fromloc.city_name", "O", "B-toloc.city_name"] for _ in pairs]
    (folder / "seq.in").write_text("\n".join(" ".join(w) for w in words) + "\n")
    (folder / "seq.out").write_text("\n".join(" ".join(t) for t in tags) + "\n")


def _teacher(prompt: str) -> str:
    """A scripted teacher: right about the origin, and it invents a tag type for the destination
    (trained as O by the tagger) in a third of the replies; one reply in six drops a word (repaired)."""
    words = re.findall(r"Input: (.*)", prompt)[-1].split()
    tags = ["O"] * len(words)
    if "from" in words:
        tags[words.index("from") + 1] = "B-fromloc.city_name"
    if "to" in words:
        k = words.index("to") + 1
        tags[k] = "B-airline" if len(words[k]) % 3 == 0 else "B-toloc.city_name"
    pairs = [f"{w} {t}" for w, t in zip(words, tags)]
    if len(words[-1]) == 6:
        pairs = pairs[1:]
    return " ".join(pairs)


def test_llmkd_run_slots_with_the_tagger_then_export_and_predict(minilm_path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmkd import api
    from llmkd.cli import app
    from llmkd.config import load_config

    pairs = [(a, b) for a in CITIES for b in CITIES if a != b]
    _write(tmp_path / "train", pairs[:40])
    _write(tmp_path / "test", pairs[40:])
    with FakeOpenAIServer(script=_teacher) as server:
        cfg = {
            "name": "tiny_slots", "seed": 0,
            "data": {"train": str(tmp_path / "train"), "test": str(tmp_path / "test"), "format": "slots",
                     "split": {"labeled_per_class": None, "labeled_n": 6, "dev_per_class": None, "dev_n": 4,
                               "pool_size": 16, "test_size": 8}},
            "task": {"kind": "seq2seq", "target": "slots", "shots": 3},
            "teacher": {"backend": "openai", "model": "fake", "max_tokens": 64, "confidence": False,
                        "openai": {"base_url": server.base_url, "api_key_env": None}},
            "student": {"model": minilm_path, "epochs": 2, "min_steps": 4, "batch_size": 8, "max_length": 24,
                        "lr": 3e-4, "threads": 2},
            "methods": ["teacher", "supervised", "vanilla", "mckd"],
            "method_options": {"mckd": {"stages": 2, "parts": 2}},
            "output_dir": str(tmp_path / "runs"), "cache": str(tmp_path / "cache.sqlite"), "progress": False,
        }
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        summary = api.run(load_config(path))
    res = summary.results
    # the scripted teacher on the 8 test sentences: origin right, destination right unless its
    # name has a length divisible by 3 (then an invented B-airline chunk, wrong)
    assert res["teacher"]["metrics"]["abstention_rate"] == 0.0
    for m in ("supervised", "vanilla", "mckd"):
        metrics = res[m]["metrics"]
        assert metrics["abstention_rate"] == 0.0 and 0.0 <= metrics["slot_f1"] <= 1.0  # never abstains
        assert {"slot_f1", "sentence_f1", "exact_match"} <= set(metrics)
    kinds = {json.loads(p.read_text())["kind"] for p in summary.run_dir.rglob("student.json")}
    assert kinds == {"slot_tagger"}
    labels = [json.loads(x) for x in (summary.run_dir / "vanilla" / "labels.jsonl").read_text().splitlines()]
    assert any(lab["meta"]["repairs"] for lab in labels)  # the dropped first word was restored
    report = (summary.run_dir / "report.md").read_text()
    assert "| method | slot F1 | sentence F1 | exact match |" in report
    assert "class mix" not in report  # the class-skew warning is for classification (a target string is no class)

    runner = CliRunner()
    out = runner.invoke(app, ["export", str(summary.run_dir), "--method", "mckd", "--to", str(tmp_path / "exp")])
    assert out.exit_code == 0, out.output
    (tmp_path / "in.txt").write_text("show flights from boston to miami\n")
    out = runner.invoke(app, ["predict", str(tmp_path / "exp"), "--input", str(tmp_path / "in.txt"),
                              "--output", str(tmp_path / "pred.jsonl")])
    assert out.exit_code == 0, out.output
    row = json.loads((tmp_path / "pred.jsonl").read_text().splitlines()[0])
    assert row["label"].split()[0::2] == "show flights from boston to miami".split()
