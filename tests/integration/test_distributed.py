"""``accelerate launch --num_processes 2 -m llmkd run CONFIG`` on the CPU (gloo): a tiny randomly
initialised BERT student (no dropout) and the loopback OpenAI server as the teacher. The run
(teacher gate, supervised, vanilla) finishes, writes one run folder, asks the teacher each prompt
once, trains what one process trains (data-parallel gradients summed over the processes: the same
steps), and a rerun loads the finished run on both processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fake_openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow  # three runs in subprocesses (2 of them on 2 processes): a minute or two

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["good", "bad", "film", "number", "fine", "awful", "plot", "a"]


def tiny_bert(folder: Path) -> str:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"0123456789", *[f"##{c}" for c in "0123456789"]]
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)).save_pretrained(folder)
    return str(folder)


def script(prompt: str) -> str:
    return "positive" if prompt.rstrip().rsplit("Text:", 1)[-1].count("good") else "negative"


def write_config(tmp_path: Path, base_url: str, student: str, name: str) -> Path:
    rows = [{"text": f"a {'good' if i % 2 else 'bad'} film number {i}", "label": "positive" if i % 2 else "negative"}
            for i in range(60)]
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:40 if split == "train" else 60]))
    cfg = {
        "name": name, "seed": 0,
        "data": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl"),
                 "split": {"labeled_per_class": 2, "dev_per_class": 2, "pool_size": 21}},
        "teacher": {"backend": "openai", "model": "fake", "confidence": False,
                    "openai": {"base_url": base_url, "api_key_env": None, "max_retries": 0}},
        "student": {"model": student, "epochs": 2, "min_steps": 4, "batch_size": 5, "max_length": 16,
                    "device": "cpu", "threads": 1, "lr": 1e-3},
        "methods": ["supervised", "vanilla"], "output_dir": str(tmp_path / "runs"), "cache": str(tmp_path / "cache.sqlite"),
        "progress": False,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_processes_train_what_one_trains_and_write_one_run_folder(tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    student = tiny_bert(tmp_path / "tiny_bert")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "TMPDIR": str(scratch),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with FakeOpenAIServer(script=script) as server:
        two = write_config(tmp_path, server.base_url, student, "two")
        r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                            "-m", "llmkd", "run", str(two), "-q"],
                           capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-4000:]
        asked_by_two = [q for q in server.requests if q["path"].endswith("/completions")]
        again = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                                "-m", "llmkd", "run", str(two), "-q"],
                               capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-4000:]  # a finished run loads its methods on every process
        assert again.stdout.count("# llmkd run `two`") == 1  # one report printed (the main process)
        assert len([q for q in server.requests if q["path"].endswith("/completions")]) == len(asked_by_two)
        one = write_config(tmp_path, server.base_url, student, "one")
        n_before = len(server.requests)
        r1 = subprocess.run([sys.executable, "-m", "llmkd", "run", str(one), "-q"], capture_output=True, text=True,
                            env=env, timeout=600, cwd=tmp_path)
        assert r1.returncode == 0, r1.stderr[-4000:]
        assert not [q for q in server.requests[n_before:] if q["path"].endswith("/completions")]  # all cached
    # one report on stdout, one run folder, nothing left of the other process's scratch copy
    assert r.stdout.count("# llmkd run `") == 1
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert [n for n in names if not n.startswith(".")] == ["one", "two"]
    assert [n for n in names if n.startswith(".")] == [".one.lock", ".two.lock"]  # llmkd.io.run_lock's files
    assert not list(scratch.iterdir())
    run_dir = tmp_path / "runs" / "two"
    assert (run_dir / "vanilla" / "result.json").exists() and (run_dir / "report.md").exists()
    # the teacher was asked once per prompt (the teacher gate's 4 dev sentences, the pool), not once per process
    prompts = [json.dumps(q["body"], sort_keys=True) for q in asked_by_two]
    assert len(prompts) == len(set(prompts)) == 4 + 21
    assert "Teacher gate" in (run_dir / "report.md").read_text()
    # data-parallel steps are the single process's steps: the same training curve and predictions
    p2 = json.loads((run_dir / "vanilla" / "student" / "progress.json").read_text())
    p1 = json.loads((tmp_path / "runs" / "one" / "vanilla" / "student" / "progress.json").read_text())
    assert [h["epoch"] for h in p2["history"]] == [h["epoch"] for h in p1["history"]]
    assert [h["loss"] for h in p2["history"]] == pytest.approx([h["loss"] for h in p1["history"]], rel=1e-4)
    pred2 = [json.loads(x) for x in (run_dir / "vanilla" / "predictions.jsonl").read_text().splitlines()]
    pred1 = [json.loads(x) for x in (tmp_path / "runs" / "one" / "vanilla" / "predictions.jsonl").read_text().splitlines()]
    assert [p["pred"] for p in pred2] == [p["pred"] for p in pred1]
