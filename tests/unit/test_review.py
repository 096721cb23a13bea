"""Human review (issue 30 item 3): ``llmkd review export`` picks the pool items most worth a look,
a person corrects them in the tool's format, ``llmkd review import`` brings them back, and a rerun
with ``data.human_labels`` trains on them, counts them as gold and shows them in provenance, with
the teacher cache untouched. A scripted teacher and a fake student; no model is loaded."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from llmkd import api, build
from llmkd.cli import app
from llmkd.config import load_config
from llmkd.errors import ConfigError, DataError
from llmkd.review import (_char_spans, _labelstudio_task, _to_label, Answer, ReviewItem, export_review,
                          import_review, select_for_review, with_human_labels)
from llmkd.tasks import NerTask
from llmkd.types import Prediction, TagPrediction, TeacherLabel
from tests.fakes import JsonStudent, ScriptedTeacher


def gold(text: str) -> str:
    return "positive" if " good" in text else "negative"


WRONG = {"review 4 was bad", "review 7 was good", "review 12 was bad", "review 21 was good"}  # teacher errs here
LOW = {"review 9 was good", "review 14 was bad", "review 30 was bad"}  # teacher right, but unsure


def teacher_answer(text: str) -> str:
    g = gold(text)
    return ("negative" if g == "positive" else "positive") if text in WRONG else g


class KeywordStudent(JsonStudent):
    """Predicts the gold class with probability 0.9; remembers every label it trained on."""

    def __init__(self, seen: dict[str, Any] | None = None) -> None:
        self.seen = dict(seen or {})

    def fit_epoch(self, examples: Any, weights: Any = None) -> float:
        self.seen.update({e.text: e.label for e in examples})
        return 0.1

    def predict(self, examples: Any) -> list[Prediction]:
        out = []
        for e in examples:
            g = gold(e.text)
            out.append(Prediction(g, {g: 0.9, ("negative" if g == "positive" else "positive"): 0.1}))
        return out

    def state(self) -> dict[str, Any]:
        return {"seen": self.seen}


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"teachers": []}
    texts = [f"review {i} was {'good' if i % 2 else 'bad'}" for i in range(40)]
    # the teacher's confidence: 0.9 for its answer, 0.6 on the items of LOW

    def scores(text: str) -> list[float]:
        import math

        c = 0.6 if text in LOW else 0.9
        ans = teacher_answer(text)
        return [math.log(c if lab == ans else 1 - c) for lab in ("negative", "positive")]

    def build_teacher(cfg: Any) -> ScriptedTeacher:
        t = ScriptedTeacher(teacher_answer, scores={t: scores(t) for t in texts})
        state["teachers"].append(t)
        return t

    def make_student_factory(cfg: Any, labels: Any, task: Any = None) -> Any:
        return (lambda seed: KeywordStudent()), KeywordStudent.load

    monkeypatch.setattr(build, "build_teacher", build_teacher)
    monkeypatch.setattr(build, "make_student_factory", make_student_factory)
    return state


def write_config(tmp_path: Path) -> Path:
    rows = [{"text": f"review {i} was {'good' if i % 2 else 'bad'}", "label": "positive" if i % 2 else "negative"}
            for i in range(40)]
    for name in ("train", "test"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        "name": "tiny", "seed": 0,
        "data": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl"),
                 "labels": ["negative", "positive"],
                 "split": {"labeled_per_class": 2, "dev_per_class": 2, "pool_size": 30, "test_size": 8}},
        "teacher": {"backend": "llamacpp", "model": "fake", "confidence": True, "gate": "off"},
        "student": {"epochs": 1, "min_steps": 0},
        "methods": ["vanilla"],
        "output_dir": str(tmp_path / "runs"), "cache": str(tmp_path / "cache.sqlite"), "progress": False,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cache_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT key, value FROM entries").fetchall())


def annotate_labelstudio(tasks: list[dict[str, Any]], *, cancel: str | None = None) -> list[dict[str, Any]]:
    """What Label Studio's JSON export gives after a person answered every task with the gold class
    (the task ``cancel`` skipped)."""
    out = []
    for i, t in enumerate(tasks):
        cancelled = t["data"]["llmkd_id"] == cancel
        result = [] if cancelled else [{"id": "a", "from_name": "label", "to_name": "text", "type": "choices",
                                        "value": {"choices": [gold(t["data"]["text"])]}}]
        out.append({"id": i + 1, "data": t["data"], "predictions": t.get("predictions", []),
                    "annotations": [{"id": 100 + i, "completed_by": 7, "result": result, "was_cancelled": cancelled}]})
    return out


def test_review_round_trip_labelstudio(tmp_path: Path, fakes: dict[str, Any]) -> None:
    path = write_config(tmp_path)
    first = api.run(load_config(path))
    run_dir = first.run_dir
    rows = [json.loads(line) for line in (run_dir / "labels.jsonl").read_text().splitlines()]
    wrong_ids = {r["id"] for r in rows if r["source"] == "teacher" and r["text"] in WRONG}
    low_ids = {r["id"] for r in rows if r["source"] == "teacher" and r["text"] in LOW}
    assert wrong_ids and low_ids  # the pool holds some of each
    before_cache = cache_rows(tmp_path / "cache.sqlite")

    # 1. export: the teacher's errors (the student disagrees) come first, with the teacher's label pre-annotated
    out = tmp_path / "review.json"
    rep = export_review(run_dir, out, fmt="labelstudio", n=len(wrong_ids) + len(low_ids))
    tasks = json.loads(out.read_text())
    assert {t["data"]["llmkd_id"] for t in tasks[: len(wrong_ids)]} == wrong_ids
    assert all("disagree" in t["data"]["reasons"] for t in tasks[: len(wrong_ids)])
    assert {t["data"]["llmkd_id"] for t in tasks[len(wrong_ids):]} == low_ids  # then the least confident
    assert {t["data"]["reasons"] for t in tasks[len(wrong_ids):]} == {"low_confidence"}
    pred = tasks[0]["predictions"][0]
    assert pred["result"][0]["value"]["choices"] == [tasks[0]["data"]["teacher_label"]]
    assert pred["result"][0]["from_name"] == "label" and pred["result"][0]["to_name"] == "text"
    assert 0 < pred["score"] <= 1 and rep.student == "vanilla"
    xml = (tmp_path / "review.config.xml").read_text()
    assert '<Choices name="label" toName="text"' in xml and '<Choice value="positive"/>' in xml

    # 2. a person corrects them (one task cancelled), 3. import
    cancelled = tasks[-1]["data"]["llmkd_id"]
    (tmp_path / "export.json").write_text(json.dumps(annotate_labelstudio(tasks, cancel=cancelled)))
    imp = import_review(tmp_path / "export.json", run_dir)
    assert imp.format == "labelstudio" and imp.skipped == {"not annotated": 1}
    assert (imp.added, imp.changed, imp.confirmed) == (len(tasks) - 1, len(wrong_ids), len(low_ids) - 1)
    human = [json.loads(line) for line in imp.human_file.read_text().splitlines()]
    assert {h["id"] for h in human if h["changed"]} == wrong_ids and all(h["annotator"] == "7" for h in human)

    # a second export leaves the items a person labeled out
    again = export_review(run_dir, tmp_path / "again.jsonl", fmt="jsonl", n=100)
    assert not {it.id for it in again.items} & {h["id"] for h in human} and again.excluded == len(human)

    # 4. the rerun trains on the human labels, counts them and shows them in provenance
    fakes["teachers"].clear()
    cfg = load_config(path, [f"data.human_labels={imp.human_file}", "name=tiny-reviewed"])
    second = api.run(cfg)
    labels = {r["id"]: r for r in map(json.loads, (second.run_dir / "vanilla" / "labels.jsonl").read_text().splitlines())}
    for h in human:
        lab = labels[h["id"]]
        assert (lab["source"], lab["stage"], lab["label"], lab["confidence"]) == ("human", "human-review", h["label"], 1.0)
        assert lab["meta"]["teacher"]["label"] == h["teacher_label"] and lab["raw"].strip() == h["teacher_label"]
    assert all(lab["source"] == "teacher" for i, lab in labels.items() if i not in {h["id"] for h in human})
    student = KeywordStudent.load(second.run_dir / "vanilla" / "student" / "best")
    texts = {r["id"]: r["text"] for r in map(json.loads, (second.run_dir / "labels.jsonl").read_text().splitlines())}
    assert all(student.seen[texts[i]] == gold(texts[i]) for i in wrong_ids)  # trained on the corrections
    pool = json.loads((second.run_dir / "metrics.json").read_text())["pool"]
    assert pool["human labels (llmkd review)"] == len(human)
    assert pool["human labels that differ from the teacher's"] == len(wrong_ids)
    assert pool["gold labels used (labeled + dev + human)"] == f"4 + 4 + {len(human)} = {8 + len(human)}"
    assert f"human labels (llmkd review): {len(human)}" in second.report
    manifest = json.loads((second.run_dir / "manifest.json").read_text())
    assert len(manifest["models"]["human_labels"]) == 64
    # the teacher answered from the cache: not one call, the cache unchanged
    assert all(not t.generate_calls and not t.score_calls for t in fakes["teachers"])
    assert cache_rows(tmp_path / "cache.sqlite") == before_cache
    assert "human labels" not in json.dumps(json.loads((run_dir / "metrics.json").read_text())["pool"])

    # a second round from the reviewed run: its human-labeled items stay out, and its import keeps them
    round2 = export_review(second.run_dir, tmp_path / "round2.jsonl", fmt="jsonl", n=1)
    assert round2.items[0].id not in {h["id"] for h in human}
    imp2 = import_review(tmp_path / "round2.jsonl", second.run_dir)
    assert (imp2.added, imp2.total) == (1, len(human) + 1)


def test_argilla_and_jsonl_round_trip(tmp_path: Path, fakes: dict[str, Any]) -> None:
    path = write_config(tmp_path)
    run_dir = api.run(load_config(path)).run_dir
    export_review(run_dir, tmp_path / "records.json", fmt="argilla", n=3)
    records = json.loads((tmp_path / "records.json").read_text())
    first = records[0]
    assert set(first) == {"id", "fields", "metadata", "suggestions", "responses", "vectors", "_server_id"}
    assert first["suggestions"]["label"]["value"] == first["metadata"]["teacher_label"]
    assert "rg.LabelQuestion(name='label', labels=['negative', 'positive'])" in \
        (tmp_path / "records.argilla.py").read_text()
    # what dataset.records.to_json gives after two people answered: they agree on two, differ on one
    for i, rec in enumerate(records):
        g = gold(rec["fields"]["text"])
        other = "negative" if g == "positive" else "positive"
        rec["responses"] = {"label": [{"value": g, "user_id": "u1", "status": "submitted"},
                                      {"value": g if i < 2 else other, "user_id": "u2", "status": "submitted"}]}
    (tmp_path / "answered.json").write_text(json.dumps(records))
    imp = import_review(tmp_path / "answered.json", run_dir)
    assert imp.format == "argilla" and imp.added == 2 and imp.skipped == {"annotators disagree": 1}

    # JSONL: the label field pre-filled with the teacher's; a row left with null is skipped
    export_review(run_dir, tmp_path / "rows.jsonl", fmt="jsonl", n=3)
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert all(r["label"] == r["teacher_label"] for r in rows)
    rows[0]["label"] = gold(rows[0]["text"])
    rows[1]["label"] = None
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    imp = import_review(tmp_path / "rows.jsonl", run_dir)
    assert imp.added == 2 and imp.total == 4 and imp.skipped == {"no label": 1}


def test_a_collapsed_student_is_flagged_as_no_signal(tmp_path: Path, fakes: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """A student that predicts one class agrees with the teacher's majority: export says to use the
    teacher's confidence instead (the ordering itself is unchanged)."""
    from llmkd import review
    from llmkd.types import Prediction

    run_dir = api.run(load_config(write_config(tmp_path))).run_dir
    real = review.student_predictions
    export_review(run_dir, tmp_path / "a.jsonl", fmt="jsonl", n=3)
    assert "predicts one class" not in caplog.text
    monkeypatch.setattr(review, "student_predictions",
                        lambda view, method: {k: Prediction("positive", {}) for k in real(view, method)})
    export_review(run_dir, tmp_path / "b.jsonl", fmt="jsonl", n=3)
    assert "predicts one class" in caplog.text and "Use --strategy confidence" in caplog.text
    caplog.clear()
    export_review(run_dir, tmp_path / "c.jsonl", fmt="jsonl", n=3, strategy="confidence")
    assert "predicts one class" not in caplog.text


def test_import_refuses_what_does_not_fit_the_run(tmp_path: Path, fakes: dict[str, Any]) -> None:
    path = write_config(tmp_path)
    run_dir = api.run(load_config(path)).run_dir
    pool_id = build.Session(load_config(path)).splits.pool[0].id
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "test:3", "label": "positive"}) + "\n")
    with pytest.raises(DataError, match=r"item 'test:3' is not in the pool of .*import a file exported from this run"):
        import_review(bad, run_dir)
    bad.write_text(json.dumps({"id": pool_id, "label": "neutral"}) + "\n")
    with pytest.raises(DataError, match=r"label 'neutral' is not one of the run's labels \['negative', 'positive'\]"):
        import_review(bad, run_dir)
    assert not (run_dir / "review" / "human_labels.jsonl").exists()  # nothing written on failure
    with pytest.raises(ConfigError, match="review --format must be one of labelstudio, argilla, jsonl. Got 'csv'."):
        export_review(run_dir, tmp_path / "x.csv", fmt="csv")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"data": {"llmkd_id": "x"}')
    with pytest.raises(DataError, match=r"broken.json:1: not valid JSON .*give the tool's JSON export"):
        import_review(broken, run_dir)
    stray = tmp_path / "stray.jsonl"
    stray.write_text(json.dumps({"id": "train:999", "label": "positive"}) + "\n")
    with pytest.raises(DataError, match=r"stray.jsonl:1: id 'train:999' is not in this run's pool"):
        api.run(load_config(path, [f"data.human_labels={stray}", "name=other"]))


def test_cli_export_and_import(tmp_path: Path, fakes: dict[str, Any]) -> None:
    path = write_config(tmp_path)
    run_dir = api.run(load_config(path)).run_dir
    runner = CliRunner()
    res = runner.invoke(app, ["review", "export", str(run_dir), "--n", "2", "--format", "jsonl"])
    assert res.exit_code == 0, res.output
    file = run_dir / "review" / "to_review.jsonl"
    assert "2 pool items (disagree 2" in res.output and str(file) in res.output
    res = runner.invoke(app, ["review", "import", str(file), str(run_dir)])
    assert res.exit_code == 0, res.output
    assert "2 human labels read (jsonl): 0 differ from the teacher, 2 agree" in res.output
    assert f"data.human_labels={run_dir.resolve() / 'review' / 'human_labels.jsonl'}" in res.output


def lab(i: str, label: Any, conf: float | None, abstained: bool = False) -> TeacherLabel:
    return TeacherLabel(i, None if abstained else label, conf, abstained)


def test_selection_order_and_random() -> None:
    labels = [lab("a", "x", 0.95), lab("b", "x", 0.55), lab("c", None, None, abstained=True), lab("d", "y", 0.9),
              lab("e", "y", 0.7)]
    texts = {k: k for k in "abcde"}
    preds = {"a": Prediction("x", {"x": 0.9, "y": 0.1}), "b": Prediction("x", {"x": 0.8, "y": 0.2}),
             "c": Prediction("x", {"x": 0.5, "y": 0.5}), "d": Prediction("x", {"x": 0.6, "y": 0.4}),
             "e": Prediction("y", {"x": 0.3, "y": 0.7})}
    got = select_for_review(labels, texts, preds, n=5)
    assert [it.id for it in got] == ["c", "d", "b", "e", "a"]  # abstained, disagreement, then agreement 0.44, 0.49, 0.855
    assert got[0].reasons == ("abstained",) and got[1].reasons == ("disagree",)
    assert got[2].reasons == ("low_confidence",) and got[2].agreement == pytest.approx(0.55 * 0.8)
    # strategy confidence ignores the student: abstained, then the teacher's confidence
    assert [it.id for it in select_for_review(labels, texts, preds, n=5, strategy="confidence")] == list("cbeda")
    # without a student: abstained, then the teacher's confidence alone
    assert [it.id for it in select_for_review(labels, texts, None, n=3)] == ["c", "b", "e"]
    assert [it.id for it in select_for_review(labels, texts, preds, n=5, exclude={"c", "d"})] == ["b", "e", "a"]
    rand = [it.id for it in select_for_review(labels, texts, preds, n=3, strategy="random", seed=1)]
    assert len(set(rand)) == 3 and rand == [it.id for it in select_for_review(labels, texts, preds, n=3,
                                                                              strategy="random", seed=1)]
    with pytest.raises(ConfigError, match="review --n must be an int >= 1. Got 0."):
        select_for_review(labels, texts, preds, n=0)


@pytest.mark.parametrize("text,tags,spans", [
    ("John lives in New York", ("B-PER", "O", "O", "B-LOC", "I-LOC"),
     [(0, 4, "PER", "John"), (14, 22, "LOC", "New York")]),
    ("no entities here", ("O", "O", "O"), []),
    ("Acme Corp", ("B-ORG", "I-ORG"), [(0, 9, "ORG", "Acme Corp")]),
])
def test_ner_spans_both_ways(text: str, tags: tuple[str, ...], spans: list[tuple]) -> None:
    task = NerTask(labels=["PER", "LOC", "ORG"])
    got = _char_spans(text, tags)
    assert [(s["start"], s["end"], s["label"], s["text"]) for s in got] == spans
    back = _to_label(Answer("x", [{"start": s[0], "end": s[1], "label": s[2]} for s in spans], kind="spans"),
                     text, task, "f")
    assert back == tags
    assert _to_label(Answer("x", list(tags)), text, task, "f") == tags


def test_ner_partial_word_span_takes_the_word_and_bad_types_fail() -> None:
    task = NerTask(labels=["PER", "LOC"])
    assert _to_label(Answer("x", [{"start": 15, "end": 18, "label": "LOC"}], kind="spans"),
                     "John lives in New York", task, "f") == ("O", "O", "O", "B-LOC", "O")
    with pytest.raises(DataError, match=r"f: entity type 'ORG' is not one of the run's types \['PER', 'LOC'\]"):
        _to_label(Answer("x", [{"start": 0, "end": 4, "label": "ORG"}], kind="spans"), "John lives", task, "f")
    with pytest.raises(DataError, match="f: 'label' must be a list of 2 IOB2 tags"):
        _to_label(Answer("x", ["O"]), "John lives", task, "f")


def test_ner_labelstudio_task_and_human_override() -> None:
    it = ReviewItem("s1", "John lives in Paris", ("B-PER", "O", "O", "B-LOC"), 0.4, ("B-PER", "O", "O", "O"), 0.1,
                    ("disagree",))
    task = _labelstudio_task(it, True, "m")
    result = task["predictions"][0]["result"]
    assert [(r["type"], r["value"]["start"], r["value"]["end"], r["value"]["labels"]) for r in result] == [
        ("labels", 0, 4, ["PER"]), ("labels", 14, 19, ["LOC"])]
    teacher = [TeacherLabel("s1", ("O", "O", "O", "O"), 0.3, False, raw="[]"), TeacherLabel("s2", None, None, True)]
    out = with_human_labels(teacher, {"s1": ("B-PER", "O", "O", "B-LOC")})
    assert out[0].source == "human" and out[0].label == ("B-PER", "O", "O", "B-LOC") and out[0].raw == "[]"
    assert out[0].meta == {"teacher": {"label": ["O", "O", "O", "O"], "confidence": 0.3, "abstained": False,
                                       "stage": "", "error": ""}}
    assert out[1] is teacher[1]


def test_student_support_for_taggers() -> None:
    labels = [lab("s", ("B-PER", "O"), 0.8)]
    pred = TagPrediction(("B-PER", "O"), token_probs=({"B-PER": 0.5, "O": 0.5}, {"O": 0.9, "B-PER": 0.1}))
    got = select_for_review(labels, {"s": "John x"}, {"s": pred}, n=1)
    assert got[0].agreement == pytest.approx(0.8 * 0.5) and got[0].reasons == ()


# ---- NER end to end -----------------------------------------------------------------------------

NAMES = ["Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy"]
CITIES = ["Paris", "Rome", "Oslo", "Lima", "Cairo"]


def ner_sentence(i: int) -> tuple[str, tuple[str, ...]]:
    name, city = NAMES[i % len(NAMES)] + str(i), CITIES[i % len(CITIES)]
    return f"{name} lives in {city}", ("B-person", "O", "O", "B-location")


def ner_teacher_reply(text: str) -> str:
    name, _, _, city = text.split()
    return f"person: {name}" if name.endswith("3") else f"person: {name}\nlocation: {city}"  # misses *3's city


class TagStudent(JsonStudent):
    """Tags the first word a person and the last a location, sure of all but the location."""

    def fit_epoch(self, examples: Any, weights: Any = None) -> float:
        return 0.1

    def predict(self, examples: Any) -> list[TagPrediction]:
        tags = ("B-person", "O", "O", "B-location")
        probs = ({"B-person": 0.9}, {"O": 0.9}, {"O": 0.9}, {"B-location": 0.6, "O": 0.4})
        return [TagPrediction(tags, token_probs=probs) for _ in examples]


def test_ner_review_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes import ner_text

    lines = []
    for i in range(30):
        text, tags = ner_sentence(i)
        lines += [f"{w} {t}" for w, t in zip(text.split(), tags)] + [""]
    for name in ("train", "test"):
        (tmp_path / f"{name}.conll").write_text("\n".join(lines))
    monkeypatch.setattr(build, "build_teacher", lambda cfg: ScriptedTeacher(ner_teacher_reply, text_of=ner_text))
    monkeypatch.setattr(build, "make_student_factory", lambda cfg, labels, task=None: (lambda s: TagStudent(), TagStudent.load))
    cfg = {"name": "ner", "seed": 0,
           "data": {"train": str(tmp_path / "train.conll"), "test": str(tmp_path / "test.conll"), "format": "conll",
                    "labels": ["person", "location"],
                    "split": {"labeled_n": 4, "dev_n": 4, "pool_size": 20, "test_size": 5}},
           "task": {"kind": "ner", "shots": 2},
           "teacher": {"backend": "llamacpp", "model": "fake", "max_tokens": 32, "gate": "off"},
           "student": {"epochs": 1, "min_steps": 0}, "methods": ["vanilla"],
           "output_dir": str(tmp_path / "runs"), "cache": str(tmp_path / "cache.sqlite"), "progress": False}
    path = tmp_path / "ner.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_dir = api.run(load_config(path)).run_dir
    rows = [json.loads(line) for line in (run_dir / "labels.jsonl").read_text().splitlines()]
    missed = {r["id"] for r in rows if r["source"] == "teacher" and r["text"].split()[0].endswith("3")}
    assert missed

    export_review(run_dir, tmp_path / "ner.json", fmt="labelstudio", n=len(missed))
    tasks = json.loads((tmp_path / "ner.json").read_text())
    assert {t["data"]["llmkd_id"] for t in tasks} == missed  # the student disagrees there
    assert '<Labels name="label" toName="text">' in (tmp_path / "ner.config.xml").read_text()
    for t in tasks:  # the person adds the location the teacher missed, keeping its person span
        text = t["data"]["text"]
        (person,) = t["predictions"][0]["result"]
        assert person["value"]["labels"] == ["person"] and person["value"]["start"] == 0
        city = {"id": "c", "from_name": "label", "to_name": "text", "type": "labels",
                "value": {"start": text.rindex(" ") + 1, "end": len(text), "labels": ["location"]}}
        t["annotations"] = [{"result": [person, city], "was_cancelled": False, "completed_by": 1}]
    (tmp_path / "ner-export.json").write_text(json.dumps(tasks))
    imp = import_review(tmp_path / "ner-export.json", run_dir)
    assert (imp.added, imp.changed) == (len(missed), len(missed))

    second = api.run(load_config(path, [f"data.human_labels={imp.human_file}", "name=ner-reviewed"]))
    labels = {r["id"]: r for r in map(json.loads, (second.run_dir / "vanilla" / "labels.jsonl").read_text().splitlines())}
    for i in missed:
        assert labels[i]["source"] == "human"
        assert labels[i]["label"] == ["B-person", "O", "O", "B-location"]
        assert labels[i]["meta"]["teacher"]["label"] == ["B-person", "O", "O", "O"]
