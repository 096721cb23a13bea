"""llmkd export: a run's student as a Hugging Face folder that transformers.pipeline loads and that
predicts what llmkd predicts; the model card; the method choice (issue 29 item 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmkd.export import choose_method, export, load_student, find_student
from llmkd.formats.conll import words
from llmkd.types import Unlabeled
from tests.integration.export_runs import classification_run, ner_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    return classification_run(tmp_path_factory.mktemp("cls"))


def test_export_picks_the_best_method_names_it_and_round_trips_through_pipeline(cls_run: Path, tmp_path: Path) -> None:
    from transformers import pipeline

    metrics = json.loads((cls_run / "metrics.json").read_text())["results"]
    best = max(("supervised", "vanilla"), key=lambda m: metrics[m]["metrics"]["macro_f1"])
    assert choose_method(cls_run)[0] == best  # never the teacher, which scores 1.0 here
    out = subprocess.run([sys.executable, "-m", "llmkd.cli", "export", str(cls_run), "--to", str(tmp_path / "m")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"method {best}: best test macro_f1 of the run" in out.stdout
    folder = tmp_path / "m"
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["label2id"]["positive"] == 1
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()

    student = load_student(find_student(cls_run, best))
    texts = ["a good film, number 7", "a bad film", "good", "an utterly bad, bad film, number 12345 " * 5]
    ours = student.predict([Unlabeled(str(i), t) for i, t in enumerate(texts)])
    pipe = pipeline("text-classification", model=str(folder), device="cpu")
    theirs = pipe(texts, truncation=True, top_k=None)
    assert [p.label for p in ours] == [max(r, key=lambda d: d["score"])["label"] for r in theirs]
    for p, r in zip(ours, theirs):
        assert {d["label"]: d["score"] for d in r} == pytest.approx(p.probs, abs=1e-4)
    info = json.loads((folder / "llmkd.json").read_text())
    assert info["checks"]["reproduces the run's test predictions"] == 1.0
    assert info["checks"]["pipeline agreement on the test set"] == 1.0

    card = (folder / "README.md").read_text()
    for needle in ("pipeline_tag: text-classification", "| task | text classification |", "`negative`, `positive`",
                   "`fake` (openai)", f"| method | `{best}`", "teacher-labeled pool: 16", "synthetic (LLM-written) examples: 0",
                   "| teacher (few-shot LLM) | 1.0000", "config sha256 `", "## Licences", "MIT / Apache-2.0"):
        assert needle in card, needle


def test_export_refuses_the_teacher_and_a_full_folder(cls_run: Path, tmp_path: Path) -> None:
    from llmkd.errors import ConfigError

    with pytest.raises(ConfigError, match="the teacher is the LLM itself"):
        export(cls_run, tmp_path / "t", method="teacher")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not empty.*--force"):
        export(cls_run, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"


def test_ner_export_round_trips_through_the_token_classification_pipeline(tmp_path_factory: pytest.TempPathFactory,
                                                                          minilm_path: str, tmp_path: Path) -> None:
    from transformers import pipeline

    run = ner_run(tmp_path_factory.mktemp("ner"))
    from llmkd.errors import StateError

    with pytest.raises(StateError, match="supervised_full is never picked unasked"):
        choose_method(run)  # its only student trained on every gold label: export it by name only
    report = export(run, tmp_path / "ner", method="supervised_full")
    assert report.method == "supervised_full" and report.kind == "tagger"
    folder = tmp_path / "ner"
    assert json.loads((folder / "config.json").read_text())["id2label"]["1"] == "B-person"
    student = load_student(find_student(run, "supervised_full"))
    texts = ["Peter Blackburn visited the European Commission in Brussels on Monday",
             "German officials met EU farm ministers", "Nothing to see here"]
    ours = student.predict([Unlabeled(str(i), t) for i, t in enumerate(texts)])
    pipe = pipeline("token-classification", model=str(folder), aggregation_strategy="first", device="cpu")
    for text, pred, ents in zip(texts, ours, pipe(texts)):
        starts = [text.index(w) for w in words(text)]  # these texts have single spaces and unique words
        want = sorted((starts[s.start], starts[s.end - 1] + len(words(text)[s.end - 1]), s.type) for s in pred.spans)
        assert sorted((e["start"], e["end"], e["entity_group"]) for e in ents) == want
    assert any(p.spans for p in ours)  # the comparison is not all-empty
    card = (folder / "README.md").read_text()
    assert "named-entity recognition" in card and "aggregation_strategy=\"first\"" in card
    assert report.checks["reproduces the run's test predictions"] == 1.0
