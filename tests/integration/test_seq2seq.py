"""Seq2seq end to end: a tiny real bert2bert student (MiniLM) trains, predicts, saves and loads;
and a whole `llmkd run` of a parsing config with a scripted teacher (loopback OpenAI server) and
the real student. Marked slow: they load the packaged MiniLM."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from llmkd.build import build_task
from llmkd.config import TaskConfig
from llmkd.students.seq2seq import Seq2SeqStudent
from llmkd.types import Example
from tests.fake_openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow

SLOTS = [Example(str(i), f"fly from {a} to {b}", f"fly O from O {a} B-from to O {b} B-to")
         for i, (a, b) in enumerate([("boston", "denver"), ("dallas", "miami"), ("austin", "seattle"),
                                     ("denver", "boston"), ("miami", "austin"), ("seattle", "dallas")])]


def test_bert2bert_student_trains_predicts_saves_and_loads(minilm_path, tmp_path: Path) -> None:
    task = build_task(TaskConfig(kind="seq2seq", target="slots"), ("B-from", "B-to", "O"))
    st = Seq2SeqStudent(model=minilm_path, labels=task.labels, extra_tokens=task.vocabulary(), max_length=16,
                        max_target_length=24, batch_size=6, lr=5e-4, warmup_steps=0, seed=0, threads=2,
                        postprocess=task.postprocess)
    losses = [st.fit_epoch(SLOTS) for _ in range(4)]
    assert losses[-1] < losses[0]
    # the tags are single, case-kept tokens of the student's vocabulary
    assert st.tokenizer_.tokenize("boston B-from")[-1] == "B-from"
    raw = st.generate([SLOTS[0].text])
    assert isinstance(raw[0][0], str) and 0.0 <= raw[0][1] <= 1.0
    preds = st.predict(SLOTS[:3])
    for ex, p in zip(SLOTS, preds):
        assert p.label is None or p.label.split()[0::2] == ex.text.split()  # repaired onto the input words
        assert (p.probs == {}) if p.label is None else (list(p.probs) == [p.label])
    st.save(tmp_path / "s")
    assert (tmp_path / "s" / "model.safetensors").exists() and not list((tmp_path / "s").glob("*.bin"))
    again = Seq2SeqStudent.load(tmp_path / "s", threads=2, postprocess=task.postprocess)
    (text, conf), = again.generate([SLOTS[0].text])
    assert again.epochs_done_ == 4 and text == raw[0][0] and conf == pytest.approx(raw[0][1], rel=1e-4)
    assert json.loads((tmp_path / "s" / "student.json").read_text())["kind"] == "seq2seq"


def _right_branching(prompt: str) -> str:
    """A scripted 'teacher': parse the query sentence as a right-branching tree."""
    words = re.findall(r"Input: (.*)", prompt)[-1].split()
    tree = words[-1]
    for w in reversed(words[:-1]):
        tree = f"( {w} {tree} )"
    return tree


@pytest.mark.parametrize("parser", ["span", "seq2seq"])
def test_llmkd_run_parsing_end_to_end(parser: str, minilm_path, tmp_path: Path) -> None:
    from llmkd import api
    from llmkd.config import load_config

    trees = "\n".join(f"( (S (NP (DT The) (NN cat{i})) (VP (VBD sat) (PP (IN on) (NP (DT a) (NN mat)))) (. .)) )"
                      for i in range(24))
    (tmp_path / "wsj_01.mrg").write_text(trees)
    (tmp_path / "wsj_02.mrg").write_text(trees.replace("cat", "dog"))
    with FakeOpenAIServer(script=_right_branching) as server:
        cfg = {
            "name": "tiny_parse", "seed": 0,
            "data": {"train": str(tmp_path), "test": str(tmp_path), "format": "brackets",
                     "members": {"train": ["wsj_01*"], "test": ["wsj_02*"]},
                     "split": {"labeled_per_class": None, "labeled_n": 4, "dev_per_class": None, "dev_n": 2,
                               "pool_size": 6, "test_size": 4}},
            "task": {"kind": "seq2seq", "target": "tree", "shots": 2},
            "teacher": {"backend": "openai", "model": "fake", "max_tokens": 64, "confidence": False,
                        "openai": {"base_url": server.base_url, "api_key_env": None}},
            "student": {"model": minilm_path, "epochs": 1, "min_steps": 2, "batch_size": 4, "max_length": 24,
                        "max_target_length": 32, "threads": 2, "parser": parser},
            "methods": ["teacher", "supervised", "vanilla"],
            "output_dir": str(tmp_path / "runs"), "cache": str(tmp_path / "cache.sqlite"), "progress": False,
        }
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        summary = api.run(load_config(path))
    res = summary.results
    # the scripted teacher's right-branching trees score exactly what the scorer says for them:
    # gold ( ( The dogN ) ( sat ( on ( a mat ) ) ) ) vs ( The ( dogN ( sat ( on ( a mat ) ) ) ) )
    # share the spans (0,6) (2,6) (3,6) (4,6): 4 of 5 gold / 5 predicted -> F1 0.8
    assert res["teacher"]["metrics"]["sentence_f1"] == pytest.approx(0.8)
    assert res["teacher"]["metrics"]["abstention_rate"] == 0.0
    for m in ("supervised", "vanilla"):
        assert 0.0 <= res[m]["metrics"]["sentence_f1"] <= 1.0
    labels = [json.loads(x) for x in (summary.run_dir / "vanilla" / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 6 and all(lab["meta"] == {"repairs": {}} for lab in labels)
    assert (summary.run_dir / "report.md").exists()
    kind = json.loads(next((summary.run_dir / "vanilla").rglob("student.json")).read_text())["kind"]
    assert kind == {"span": "span_parser", "seq2seq": "seq2seq"}[parser]
    if parser == "span":  # a tree over the input words for every test sentence, never an abstention
        assert res["vanilla"]["metrics"]["abstention_rate"] == 0.0
