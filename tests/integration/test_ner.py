"""NER on the real packaged models: SmolLM2-135M as the teacher (a handful of CoNLL-2003
sentences), the MiniLM token tagger (Student contract), and `llmkd run` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmkd.formats.conll import read_conll, words
from llmkd.labeling import label_examples
from llmkd.students.tagger import TaggerStudent
from llmkd.tasks.ner import NerTask
from llmkd.teachers.llamacpp import LlamaCppTeacher
from llmkd.types import TagPrediction, Unlabeled

pytestmark = pytest.mark.slow

CONLL = Path(__file__).resolve().parents[3] / "shared" / "data" / "conll2003"
TYPES = ["person", "organization", "location", "miscellaneous"]
MAP = {"PER": "person", "ORG": "organization", "LOC": "location", "MISC": "miscellaneous"}


@pytest.fixture(scope="module")
def sentences() -> list:
    if not CONLL.exists():
        pytest.skip(f"{CONLL} not found")
    return read_conll(CONLL / "eng.train", label_map=MAP)[:40]


def test_smollm2_teacher_labels_a_handful_of_sentences(smollm2_path: str, sentences: list) -> None:
    task = NerTask(labels=TYPES)
    teacher = LlamaCppTeacher(model_path=smollm2_path, weights_sha256="test", chat=False, n_ctx=2048)
    items = [Unlabeled(e.id, e.text) for e in sentences[10:13]]
    labels = label_examples(task, teacher, items, sentences[:3], max_tokens=24, progress=False)
    assert [lab.example_id for lab in labels] == [x.id for x in items]
    for lab, x in zip(labels, items):
        assert lab.raw is not None and lab.prompt_id
        if lab.abstained:
            assert lab.label is None and lab.error
            continue
        assert len(lab.label) == len(words(x.text)) and set(lab.label) <= {"O"} | {f"{p}-{t}" for t in TYPES for p in "BI"}
        assert 0.0 < lab.confidence <= 1.0  # llama.cpp returns token logprobs
        assert lab.meta["mentions"] == lab.meta["kept"] + sum(
            lab.meta[r] for r in ("not_in_sentence", "unknown_type", "overlap", "duplicate", "truncated"))
    assert any(not lab.abstained for lab in labels), [lab.raw for lab in labels]


def test_tagger_student_contract(minilm_path: str, sentences: list, tmp_path: Path) -> None:
    st = TaggerStudent(model=minilm_path, labels=TYPES, max_length=16, batch_size=4, lr=5e-4, warmup_steps=0)
    train = sentences[:8]
    first = st.fit_epoch(train)
    second = st.fit_epoch(train, weights=[1.0] * len(train))
    assert second < first
    preds = st.predict(train[:3] + [Unlabeled("u", "Peter")])
    for p, e in zip(preds, train[:3] + [Unlabeled("u", "Peter")]):
        assert isinstance(p, TagPrediction)
        assert len(p.label) == len(p.token_probs) == len(words(e.text))
        assert all(abs(sum(row.values()) - 1.0) < 1e-4 for row in p.token_probs)
        assert all(s.end <= len(p.label) for s in p.spans)
    (cut,) = st.predict([Unlabeled("long", " ".join(["Germany"] * 30))])  # words past max_length: O, p = 1
    assert cut.label[-5:] == ("O",) * 5 and cut.token_probs[-1]["O"] == 1.0 and len(cut.label) == 30
    st.save(tmp_path / "s")
    again = TaggerStudent.load(tmp_path / "s")
    assert [p.label for p in again.predict(train[:3])] == [p.label for p in preds[:3]]
    assert json.loads((tmp_path / "s" / "student.json").read_text())["kind"] == "tagger"
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        st.fit_epoch([type(train[0])("x", "two words", ("O",))])


def test_llmkd_run_on_conll(tmp_path: Path, sentences: list, minilm_path: str, smollm2_path: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    raw = (CONLL / "eng.train").read_text().split("\n\n")
    (data / "train.conll").write_text("\n\n".join(raw[:40]) + "\n")
    (data / "test.conll").write_text("\n\n".join(raw[100:106]) + "\n")
    cfg = {
        "name": "ner-tiny", "seed": 0,
        "data": {"train": str(data / "train.conll"), "test": str(data / "test.conll"), "format": "conll",
                 "label_map": {"PER": "person", "ORG": "organization", "LOC": "location", "MISC": "miscellaneous"},
                 "labels": TYPES, "split": {"labeled_n": 4, "dev_n": 3, "pool_size": 4}},
        "task": {"kind": "ner", "shots": 3},
        "teacher": {"model": "smollm2-135m-instruct", "chat": False, "max_tokens": 24},
        "student": {"epochs": 1, "min_steps": 2, "batch_size": 4, "max_length": 48},
        "methods": ["teacher", "supervised", "vanilla"],
        "output_dir": str(tmp_path / "runs"), "cache": str(tmp_path / "cache.sqlite"), "progress": False,
    }
    path = tmp_path / "ner.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "llmkd.cli", "run", str(path), "-q"], capture_output=True, text=True,
                         timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ner-tiny"
    assert "| method | span F1 | precision | recall | abstention |" in out.stdout
    report = (run_dir / "report.md").read_text()
    assert "## Span F1 per entity type" in report and "dropped-mention rate" in report
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for m in cfg["methods"]:
        assert 0.0 <= metrics["results"][m]["metrics"]["f1"] <= 1.0
    assert "pseudo-label span f1" in metrics["pool"]
    preds = [json.loads(x) for x in (run_dir / "supervised" / "predictions.jsonl").read_text().splitlines()]
    n_test = len(read_conll(data / "test.conll"))  # the slice holds a -DOCSTART- line, skipped
    assert len(preds) == n_test and all(len(p["pred"]) == len(p["gold"]) for p in preds)
    rows = [json.loads(x) for x in (run_dir / "vanilla" / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("meta" in r for r in rows if not r["abstained"])
