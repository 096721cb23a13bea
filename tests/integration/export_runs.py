"""Tiny finished runs for the export / predict tests: a classification run whose teacher is the
loopback OpenAI server (scripted replies, no model), and an NER run of gold-trained students
(no teacher). Both train real MiniLM students for a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmkd import api
from llmkd.config import parse_config
from tests.fake_openai_server import FakeOpenAIServer

CONLL = Path(__file__).resolve().parents[3] / "shared" / "data" / "conll2003"
NER_MAP = {"PER": "person", "ORG": "organization", "LOC": "location", "MISC": "miscellaneous"}


def _sentiment(prompt: str) -> str:
    return "positive" if prompt.rstrip().rsplit("Text:", 1)[-1].count("good") else "negative"


def classification_run(tmp: Path) -> Path:
    """Methods teacher, supervised, vanilla on 40 'good / bad film' sentences; returns RUN_DIR."""
    rows = [{"text": f"{'a good' if i % 2 else 'a bad'} film, number {i}", "label": "positive" if i % 2 else "negative"}
            for i in range(40)]
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test"):
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FakeOpenAIServer(script=_sentiment) as server:
        cfg = parse_config({
            "name": "cls", "seed": 0,
            "data": {"train": str(tmp / "train.jsonl"), "test": str(tmp / "test.jsonl"),
                     "split": {"labeled_per_class": 2, "dev_per_class": 2, "pool_size": 16}},
            "teacher": {"backend": "openai", "model": "fake", "confidence": False,
                        "openai": {"base_url": server.base_url, "api_key_env": None, "max_retries": 0}},
            "student": {"epochs": 1, "min_steps": 6, "batch_size": 8, "max_length": 32, "lr": 3e-4},
            "methods": ["teacher", "supervised", "vanilla"], "output_dir": str(tmp / "runs"),
            "cache": str(tmp / "cache.sqlite"), "progress": False})
        return api.run(cfg).run_dir


def ner_run(tmp: Path) -> Path:
    """Method supervised_full (gold only, no teacher) on 16 CoNLL-03 sentences."""
    if not CONLL.exists():
        pytest.skip(f"{CONLL} not found")
    raw = (CONLL / "eng.train").read_text().split("\n\n")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "train.conll").write_text("\n\n".join(raw[1:17]) + "\n")
    (tmp / "test.conll").write_text("\n\n".join(raw[100:112]) + "\n")
    cfg = parse_config({
        "name": "ner", "seed": 0,
        "data": {"train": str(tmp / "train.conll"), "test": str(tmp / "test.conll"), "format": "conll",
                 "label_map": NER_MAP, "labels": list(NER_MAP.values()),
                 "split": {"labeled_n": 4, "dev_n": 4, "pool_size": 4}},
        "task": {"kind": "ner"},
        "student": {"epochs": 1, "min_steps": 8, "batch_size": 8, "max_length": 64, "lr": 5e-4, "warmup_steps": 0},
        "methods": ["supervised_full"], "output_dir": str(tmp / "runs"),
        "cache": str(tmp / "cache.sqlite"), "progress": False})
    return api.run(cfg).run_dir
