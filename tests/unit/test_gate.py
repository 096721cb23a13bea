"""The teacher gate (issue 26 item 4), through ``llmkd.api.run`` and the CLI with a scripted teacher
and a fake student (no model is loaded): a teacher near chance and below the supervised-k student
gets a warning in the report and the run goes on (teacher.gate: warn), or stops before the pool
is labeled with exit code 2 (stop); a good teacher passes; the gate is skipped where it cannot
score or nothing uses the teacher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmkd import api, build
from llmkd.config import parse_config
from llmkd.errors import TeacherError
from llmkd.gate import MARGIN, TeacherGateError, chance_level
from llmkd.tasks import ClassificationTask
from llmkd.types import Example, Prediction
from tests.fakes import JsonStudent, ScriptedTeacher


def keyword(text: str) -> str:
    return "positive" if " good" in text else "negative"


class KeywordStudent(JsonStudent):
    """A student that gets every review right (it reads the word 'good'); counts its epochs."""

    created = 0

    def __init__(self, epochs: int = 0) -> None:
        self.epochs = epochs

    def fit_epoch(self, examples: Any, weights: Any = None) -> float:
        self.epochs += 1
        return 0.1

    def predict(self, examples: Any) -> list[Prediction]:
        return [Prediction(keyword(e.text), {}) for e in examples]

    def state(self) -> dict[str, Any]:
        return {"epochs": self.epochs}


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """build_teacher gives a ScriptedTeacher answering ``state['answer'](text)``; the student factory
    a KeywordStudent (counted)."""
    state: dict[str, Any] = {"answer": lambda text: "positive", "teachers": [], "students": 0}

    def build_teacher(cfg: Any) -> ScriptedTeacher:
        t = ScriptedTeacher(lambda text: state["answer"](text))
        state["teachers"].append(t)
        return t

    def make_student_factory(cfg: Any, labels: Any, task: Any = None) -> Any:
        def factory(seed: int) -> KeywordStudent:
            state["students"] += 1
            return KeywordStudent()

        return factory, KeywordStudent.load

    monkeypatch.setattr(build, "build_teacher", build_teacher)
    monkeypatch.setattr(api, "build_teacher", build_teacher)  # dry_run's
    monkeypatch.setattr(build, "make_student_factory", make_student_factory)
    return state


def write_config(tmp_path: Path, **over: Any) -> Path:
    rows = [{"text": f"review {i} was {'good' if i % 2 else 'bad'}", "label": "positive" if i % 2 else "negative"}
            for i in range(40)]
    for name in ("train", "test"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg: dict[str, Any] = {
        "name": "gated", "seed": 0,
        "data": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl"),
                 "split": {"labeled_per_class": 2, "dev_per_class": 4, "pool_size": 10, "test_size": 8}},
        "teacher": {"backend": "llamacpp", "model": "fake", "confidence": False},
        "student": {"epochs": 1, "min_steps": 0},
        "methods": ["supervised", "vanilla"],
        "output_dir": str(tmp_path / "runs"), "cache": str(tmp_path / "cache.sqlite"), "progress": False,
    }
    for key, value in over.items():
        node = cfg
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def load(path: Path, *sets: str):
    from llmkd.config import load_config

    return load_config(path, list(sets))


def asked_texts(fakes: dict[str, Any]) -> set[str]:
    return {teacher.text_of(p) for teacher in fakes["teachers"] for call in teacher.generate_calls for p in call}


def test_chance_level_and_margin() -> None:
    task = ClassificationTask(labels=["negative", "positive", "neutral"])
    dev = [Example(str(i), "x", lab) for i, lab in enumerate(["negative"] * 4 + ["positive"] * 3 + ["neutral"])]
    chance, parts = chance_level(task, dev, "macro_f1")
    # always 'negative': F1 of negative = 2 * 0.5 / 1.5 = 0.667, the other two 0 -> 0.222; 1/K = 0.333
    assert parts == {"uniform 1/K": pytest.approx(1 / 3), "majority class 'negative'": pytest.approx(2 / 9)}
    assert chance == pytest.approx(1 / 3)
    assert MARGIN == 0.05


def test_a_teacher_near_chance_warns_and_the_run_goes_on(tmp_path: Path, fakes: dict[str, Any]) -> None:
    cfg = load(write_config(tmp_path))
    summary = api.run(cfg)
    metrics = json.loads((summary.run_dir / "metrics.json").read_text())
    gate = metrics["gate"]
    # 8 dev examples, 4 per class; the teacher says 'positive' to all: macro-F1 (0.667 + 0) / 2
    assert gate["status"] == "failed" and gate["mode"] == "warn"
    assert gate["teacher"] == pytest.approx(1 / 3) and gate["student"] == 1.0
    assert gate["chance"] == 0.5 and gate["margin"] == 0.125  # one dev example: 1/8 > 0.05
    assert gate["problems"] == ["near chance (macro_f1 0.333 <= chance 0.500 + margin 0.125)",
                                "below the supervised-k student (0.333 < 1.000 - margin 0.125)"]
    assert gate["prompts_to_label"] == 10 and gate["student_checkpoint"] == "supervised/student"
    warning = metrics["warnings"][0]
    assert warning.startswith("teacher gate: the teacher is near chance (macro_f1 0.333 <= chance 0.500 + margin "
                              "0.125) and below the supervised-k student (0.333 < 1.000 - margin 0.125) on the 8 "
                              "dev examples, so distillation from it is unlikely to help")
    for tip in ("a larger teacher", "fewer or shorter demonstrations (task.shots, now 4)", "teacher.labeling: score"):
        assert tip in warning
    report = (summary.run_dir / "report.md").read_text()
    assert f"- {warning}" in report and "## Teacher gate (dev set, before the pool was labeled)" in report
    assert "| teacher (few-shot; abstention rate 0.000) | 0.3333 |" in report
    assert "- verdict: **failed** (near chance" in report
    # the run went on: the pool was labeled and both methods finished
    assert set(summary.results) == {"supervised", "vanilla"}
    assert (summary.run_dir / "vanilla" / "labels.jsonl").exists()
    # the gate's student is the supervised method's: trained once, reused by the method
    assert fakes["students"] == 2  # the gate's (= supervised's) and vanilla's
    assert not (summary.run_dir / "gate" / "gate-supervised").exists()


def test_stop_is_an_error_before_anything_is_labeled(tmp_path: Path, fakes: dict[str, Any]) -> None:
    cfg = load(write_config(tmp_path, methods=["vanilla"]), "teacher.gate=stop")
    with pytest.raises(TeacherGateError) as exc:
        api.run(cfg)
    assert isinstance(exc.value, TeacherError)
    msg = str(exc.value)
    assert "near chance (macro_f1 0.333 <= chance 0.500 + margin 0.125)" in msg
    assert "Try a larger teacher" in msg and msg.endswith("Stopped before labeling the pool (teacher.gate: stop; "
                                                          "teacher.gate: warn goes on anyway).")
    run_dir = tmp_path / "runs" / "gated"
    assert not (run_dir / "vanilla" / "labels.jsonl").exists() and not (run_dir / "vanilla" / "result.json").exists()
    dev = {json.loads(x)["text"] for x in (tmp_path / "train.jsonl").read_text().splitlines()}
    assert asked_texts(fakes) and asked_texts(fakes) <= dev
    assert len(asked_texts(fakes)) == 8  # the dev set only
    assert (run_dir / "gate" / "gate-supervised" / "best").exists()  # no supervised method: its own folder

    # the same run with teacher.gate: warn goes on in that folder (the gate does not change what a run computes)
    summary = api.run(load(write_config(tmp_path, methods=["vanilla"]), "teacher.gate=warn"))
    assert "vanilla" in summary.results and len(asked_texts(fakes)) == 18  # + the pool of 10


def test_stop_through_the_cli_exits_2(tmp_path: Path, fakes: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from llmkd.cli import app

    res = CliRunner().invoke(app, ["run", str(write_config(tmp_path, methods=["vanilla"])), "-q",
                                   "--set", "teacher.gate=stop"])
    assert res.exit_code == 2, res.output
    assert "error: teacher gate: the teacher is near chance" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "runs" / "gated" / "vanilla" / "labels.jsonl").exists()


def test_a_good_teacher_passes_and_a_rerun_asks_nothing(tmp_path: Path, fakes: dict[str, Any]) -> None:
    fakes["answer"] = keyword
    path = write_config(tmp_path)
    summary = api.run(load(path, "teacher.gate=stop"))
    metrics = json.loads((summary.run_dir / "metrics.json").read_text())
    assert metrics["gate"]["status"] == "passed" and metrics["gate"]["problems"] == []
    assert metrics["warnings"] == [] and "- verdict: **passed**\n" in summary.report
    n_teachers = len(fakes["teachers"])
    again = api.run(load(path, "teacher.gate=stop"))  # finished: the gate's record is kept, no teacher is built
    assert len(fakes["teachers"]) == n_teachers
    assert json.loads((again.run_dir / "metrics.json").read_text())["gate"] == metrics["gate"]
    assert api.evaluate(summary.run_dir).report == again.report


@pytest.mark.parametrize("sets, reason", [
    (("teacher.gate=off",), "teacher.gate: off"),
    (("methods=[supervised]",), "no method uses the teacher"),
])
def test_skipped_gate(tmp_path: Path, fakes: dict[str, Any], sets: tuple[str, ...], reason: str) -> None:
    summary = api.run(load(write_config(tmp_path), *sets))
    assert json.loads((summary.run_dir / "metrics.json").read_text())["gate"] == {"status": "skipped", "reason": reason}
    assert f"Skipped: {reason}." in summary.report
    dev_asked = asked_texts(fakes) - {u.text for u in build.Session(summary_cfg(summary)).splits.pool}
    assert dev_asked == set()  # the teacher saw no dev example
    if reason == "no method uses the teacher":
        assert fakes["teachers"] == []


def summary_cfg(summary: Any):
    return load(summary.run_dir.parent.parent / "config.yaml")


def test_dry_run_counts_the_gate_prompts(tmp_path: Path, fakes: dict[str, Any]) -> None:
    path = write_config(tmp_path)
    assert api.dry_run(load(path), calibrate=False)["gate_dev_prompts"] == 8
    assert api.dry_run(load(path, "teacher.gate=off"), calibrate=False)["gate_dev_prompts"] == 0


def test_gate_max_dev_labels_the_same_number_of_each_class(tmp_path: Path, fakes: dict[str, Any]) -> None:
    from llmkd.gate import gate_dev

    path = write_config(tmp_path, methods=["vanilla"])
    cfg = load(path, "teacher.gate_max_dev=5")  # 2 classes: 5 // 2 = 2 of each
    sess = build.Session(cfg)
    picked = gate_dev(cfg, sess)
    per_class = {lab: [e for e in sess.splits.dev if e.label == lab][:2] for lab in ("negative", "positive")}
    assert [e.id for e in picked] == [e.id for e in sess.splits.dev if e in per_class[e.label]]  # dev order kept
    assert len(gate_dev(load(path, "teacher.gate_max_dev=1"), sess)) == 2  # at least one of each class
    assert gate_dev(load(path, "teacher.gate_max_dev=null"), sess) == list(sess.splits.dev)
    assert api.dry_run(cfg, calibrate=False)["gate_dev_prompts"] == 4

    summary = api.run(cfg)
    gate = json.loads((summary.run_dir / "metrics.json").read_text())["gate"]
    assert gate["n_dev"] == 4 and gate["n_dev_total"] == 8 and gate["margin"] == 0.25  # one of 4 dev examples
    assert "| on the 4 of 8 dev examples |" in summary.report
    pool = {u.text for u in sess.splits.pool}
    assert asked_texts(fakes) - pool == {e.text for e in picked}  # the gate asked only those
    # the cap is not part of what the methods compute: the same run folder takes another one
    api.run(load(path, "teacher.gate_max_dev=null"))


class NameTagger(KeywordStudent):
    """An NER student that tags every word starting 'Name' as a person (right on this data)."""

    def predict(self, examples: Any) -> list[Prediction]:
        return [Prediction(tuple("B-person" if w.startswith("Name") else "O" for w in e.text.split()), {})
                for e in examples]


def test_ner_teacher_that_finds_nothing_is_near_chance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes import ner_text

    teacher = ScriptedTeacher(lambda text: "none", text_of=ner_text)
    monkeypatch.setattr(build, "build_teacher", lambda cfg: teacher)
    monkeypatch.setattr(build, "make_student_factory", lambda cfg, labels, task=None: (lambda seed: NameTagger(),
                                                                                       NameTagger.load))
    conll = "".join(f"Name{i}\tB-person\nsleeps\tO\n\n" for i in range(30))
    for name in ("train", "test"):
        (tmp_path / f"{name}.conll").write_text(conll)
    cfg = parse_config({
        "name": "ner-gate", "data": {"train": str(tmp_path / "train.conll"), "test": str(tmp_path / "test.conll"),
                                     "format": "conll", "split": {"labeled_n": 4, "dev_n": 10, "pool_size": 6}},
        "task": {"kind": "ner"}, "teacher": {"model": "fake", "confidence": False, "gate": "stop"},
        "student": {"epochs": 1, "min_steps": 0}, "methods": ["vanilla"],
        "output_dir": str(tmp_path / "runs"), "cache": str(tmp_path / "cache.sqlite"), "progress": False,
    })
    with pytest.raises(TeacherGateError) as exc:
        api.run(cfg)
    msg = str(exc.value)
    assert msg.startswith("teacher gate: the teacher is near chance (f1 0.000 <= chance 0.000 + margin 0.100) and "
                          "below the supervised-k student (0.000 < 1.000 - margin 0.100) on the 10 dev examples")
    assert "teacher.labeling: score" not in msg  # NER has no label set to score
    assert sum(len(c) for c in teacher.generate_calls) == 10


def test_the_suggested_larger_teacher_is_larger_than_the_one_in_use() -> None:
    from llmkd import zoo
    from llmkd.gate import ZOO_TEACHERS_BY_SIZE, _larger_teacher

    assert all(zoo.get(name).kind == "teacher" for name in ZOO_TEACHERS_BY_SIZE)
    assert _larger_teacher("qwen2.5-coder-0.5b-instruct").endswith("e.g. qwen2.5-coder-1.5b-instruct)")
    assert _larger_teacher("smollm2-135m-instruct").endswith("e.g. qwen2.5-coder-0.5b-instruct)")
    assert _larger_teacher("my/own-model").endswith("e.g. qwen2.5-coder-1.5b-instruct)")
    # past the zoo's largest, it does not suggest the model in use again
    top = _larger_teacher("qwen2.5-coder-1.5b-instruct")
    assert "the zoo's largest" in top and "e.g. qwen2.5-coder-1.5b-instruct" not in top
