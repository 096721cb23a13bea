"""Contract tests over everything registered or pluggable (scikit-learn's check_estimator idea):
every method in ``METHODS``, every task family, every teacher backend and every student class
keeps the contract the rest of the library relies on. Cheap, no model is loaded: methods run on
the shared fakes (tests/fakes.py), teachers and students are checked by their class attributes
and signatures. Parametrized over the registries, so a newly registered method is picked up.

Skipped, with the reason in ``CANNOT_RUN_ON_FAKES``: methods that need a capability the fakes do
not offer. Their own unit tests run them on fakes of their own.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, Sequence

import pytest
from pydantic import BaseModel

from llmkd.errors import ParseError
from llmkd.methods import METHODS, LabelSettings, RunContext, TrainSettings
from llmkd.tasks.classification import ClassificationTask
from llmkd.tasks.ner import NerTask
from llmkd.tasks.seq2seq import Seq2SeqTask
from llmkd.teachers.cache import CachedTeacher, TeacherCache
from llmkd.types import Example, Prediction, Reply, RunResult, TeacherLabel, Unlabeled
from tests.fakes import MemoStudent, ScriptedTeacher

LABELS = ("neg", "pos")
EXAMPLE_METHOD = Path(__file__).resolve().parents[2] / "docs" / "examples" / "confident_kd.py"


def _example_methods() -> dict[str, Any]:
    """What docs/examples/confident_kd.py registers (one file plus one ``register`` line),
    registered into a copy of the registry so that no other test sees it."""
    import runpy
    from unittest import mock

    with mock.patch.dict(METHODS):
        runpy.run_path(str(EXAMPLE_METHOD))
        return {k: v for k, v in METHODS.items() if k not in BUILTIN}


BUILTIN = dict(METHODS)
ALL_METHODS = {**BUILTIN, **_example_methods()}

# method name -> why it cannot run on the shared fakes (it still gets the static checks)
CANNOT_RUN_ON_FAKES = {
    "evokd": "asks the teacher to analyse the student's errors and write new inputs (free-text prompts "
             "ScriptedTeacher cannot answer); run on its own fake teacher in tests/unit/test_evokd.py",
    "synth_nofeedback": "asks the teacher to write new inputs, like evokd; tests/unit/test_evokd.py",
}


# ---- methods --------------------------------------------------------------------------------


def teacher_reply(text: str) -> Reply:
    label = "pos" if "good" in text else "neg"
    return Reply(label, tokens=(label,), token_logprobs=(-0.05,), prompt_tokens=10, completion_tokens=1)


class ContractStudent(MemoStudent):
    """Memorises its training labels; other texts get pos/neg by the word 'good'; 0.9 confident."""

    labels = LABELS

    def __init__(self, seed: int = 0, memory: dict[str, str] | None = None, epochs: int = 0) -> None:
        super().__init__(memory, epochs)
        self.seed = seed

    def fallback(self, text: str) -> str:
        return "pos" if "good" in text else "neg"

    def predict(self, examples: Sequence[Any]) -> list[Prediction]:
        out = []
        for p in super().predict(examples):
            other = "neg" if p.label == "pos" else "pos"
            out.append(Prediction(p.label, {p.label: 0.9, other: 0.1}))
        return out

    def state(self) -> dict[str, Any]:
        return {**super().state(), "seed": self.seed}


class OptionScores(dict):
    """The teacher's option scores for any text: 'pos' likelier on texts with the word 'good'."""

    def __missing__(self, text: str) -> list[float]:
        return [-2.0, -0.1] if "good" in text else [-0.1, -2.0]


def make_ctx(tmp_path: Path) -> RunContext:
    def gold(prefix: str, n: int) -> list[Example]:
        return [Example(f"{prefix}{i}", f"{'good' if i % 2 else 'bad'} {prefix} text {i}", "pos" if i % 2 else "neg")
                for i in range(n)]

    labeled = gold("g", 4)
    pool = [Unlabeled(f"u{i}", f"{'good' if i % 2 else 'bad'} pool text {i}") for i in range(12)]
    return RunContext(
        task=ClassificationTask(labels=LABELS), teacher=ScriptedTeacher(teacher_reply, scores=OptionScores(), batch_size=4),
        student_factory=lambda seed: ContractStudent(seed), student_loader=ContractStudent.load,
        labeled=tuple(labeled), pool=tuple(pool), dev=tuple(gold("d", 4)), test=tuple(gold("t", 6)),
        shots=tuple(labeled[:2]), workdir=tmp_path, seed=0,
        train=TrainSettings(epochs=2, patience=1, min_steps=0, batch_size=4),
        labeling=LabelSettings(confidence=True), progress=False)


def test_the_skip_list_names_registered_methods() -> None:
    assert set(CANNOT_RUN_ON_FAKES) <= set(METHODS)


def test_the_documented_example_method_is_picked_up() -> None:
    assert set(ALL_METHODS) - set(METHODS) == {"confident_kd"}
    code = EXAMPLE_METHOD.read_text()
    assert len([line for line in code.splitlines() if line.strip()]) <= 30
    assert "docs/examples/confident_kd.py" in (EXAMPLE_METHOD.parents[1] / "architecture.md").read_text()


@pytest.mark.parametrize("name", sorted(ALL_METHODS))
def test_method_is_described_and_builds(name: str) -> None:
    spec = ALL_METHODS[name]
    assert spec.name == name and re.fullmatch(r"[a-z][a-z0-9_]*", name)
    assert spec.summary.strip(), f"{name}: a one-line summary (llmkd methods lists it)"
    assert isinstance(spec.uses_teacher, bool)
    if spec.options is not None:
        assert issubclass(spec.options, BaseModel)
        for field, info in spec.options.model_fields.items():
            assert (info.description or "").strip(), f"method_options.{name}.{field} has no description"
        spec.options()  # every option has a default
    method = spec.build(None)
    assert callable(getattr(method, "run", None))
    assert isinstance(getattr(method, "name", None), str)
    assert spec.build({}).__class__ is method.__class__


@pytest.mark.parametrize("name", sorted(ALL_METHODS))
def test_method_run_keeps_the_run_result_contract(name: str, tmp_path: Path) -> None:
    if name in CANNOT_RUN_ON_FAKES:
        pytest.skip(CANNOT_RUN_ON_FAKES[name])
    spec = ALL_METHODS[name]
    ctx = make_ctx(tmp_path)
    result = spec.build(None).run(ctx)
    assert isinstance(result, RunResult)
    assert isinstance(result.method, str) and result.method
    assert isinstance(result.metrics, dict) and ctx.task.primary_metric in result.metrics
    assert all(isinstance(v, (int, float)) for v in result.metrics.values())
    assert len(result.predictions) == len(ctx.test)
    assert all(p is None or isinstance(p, Prediction) for p in result.predictions)
    assert all(p is None or p.label is None or p.label in LABELS for p in result.predictions)
    known = {x.id for x in (*ctx.labeled, *ctx.pool, *ctx.dev, *ctx.test)}
    for label in result.labels:
        assert isinstance(label, TeacherLabel)
        assert label.source in ("gold", "teacher", "student")
        assert label.abstained == (label.label is None)
        assert label.label is None or label.label in LABELS
    if spec.uses_teacher:
        teacher = ctx.teacher
        assert teacher.generate_calls or teacher.score_calls, f"{name} says it uses the teacher"
        # the pseudo-labels it trained on (or answered with) come back, each with its provenance:
        # who labeled it (teacher, or a student relabeling teacher labels, as in mckd), at which
        # stage, and for the teacher's own labels which prompt and what it said
        assert result.labels, f"{name}: the labels it used come back with their provenance"
        for label in result.labels:
            assert label.example_id in known and label.stage, label
            if label.source == "teacher":
                assert label.prompt_id and label.raw, label
    else:
        assert not ctx.teacher.generate_calls and not ctx.teacher.score_calls


# ---- tasks ----------------------------------------------------------------------------------

SENT = "John Smith visited Berlin ."
TASKS = {
    "classification": (ClassificationTask(labels=LABELS),
                       Example("a", "a good film .", "pos"), "the best movie of the year ."),
    "ner": (NerTask(labels=["PER", "LOC"]),
            Example("a", SENT, ("B-PER", "I-PER", "O", "B-LOC", "O")), "Mary flew to Rome ."),
    "seq2seq_tree": (Seq2SeqTask(target="tree"),
                     Example("a", "the cat sat", "( ( the cat ) ( sat ) )"), "a big dog ran"),
    "seq2seq_labeled_tree": (Seq2SeqTask(target="tree", labels=["S", "NP", "VP"]),
                             Example("a", "the cat sat", "(S (NP the cat ) (VP sat ) )"), "a big dog ran"),
    "seq2seq_slots": (Seq2SeqTask(target="slots", labels=["O", "B-fromloc", "atis_flight"]),
                      Example("a", "show flights from dallas", "atis_flight | show O flights O from O dallas B-fromloc"),
                      "flights from boston"),
}


def gold_reply(task: Any, example: Example) -> str:
    """The task's own formatting of a gold label: what a demonstration shows as the answer."""
    answer = getattr(task, "answer", None)
    return answer(example) if answer is not None else str(example.label)


def parse(task: Any, raw: str, text: str) -> Any:
    if "text" in inspect.signature(task.parse).parameters:
        return task.parse(raw, text)
    return task.parse(raw)


def test_every_task_family_is_covered() -> None:
    from llmkd import tasks

    families = {getattr(obj, "kind", None) for obj in vars(tasks).values() if inspect.isclass(obj)}
    assert {t.kind for t, _, _ in TASKS.values()} >= families - {None}


@pytest.mark.parametrize("case", sorted(TASKS))
def test_task_contract(case: str) -> None:
    task, shot, text = TASKS[case]
    prompt = task.render(text, [shot])
    assert isinstance(prompt, str) and text in prompt and shot.text in prompt
    reply = gold_reply(task, shot)
    assert reply in prompt  # the demonstration shows the gold label in the task's own format
    assert parse(task, reply, shot.text) == shot.label  # ... and the parser reads it back
    with pytest.raises(ParseError):
        parse(task, "???", shot.text)
    golds = list(task.labels) if task.kind == "classification" else [shot.label]  # macro F1: every class
    scores = task.score(golds, golds)
    assert task.primary_metric in scores
    assert scores[task.primary_metric] == pytest.approx(1.0)
    assert task.score(golds, [None] * len(golds))[task.primary_metric] == pytest.approx(0.0)
    assert isinstance(task.labels, tuple) and task.kind in ("classification", "ner", "seq2seq")


def test_tasks_built_from_config_are_the_tested_classes() -> None:
    from llmkd.build import build_task
    from llmkd.config import TaskConfig

    assert type(build_task(TaskConfig(), LABELS)) is ClassificationTask
    assert type(build_task(TaskConfig(kind="ner"), ["PER"])) is NerTask
    assert type(build_task(TaskConfig(kind="seq2seq", target="tree"), [])) is Seq2SeqTask
    assert type(build_task(TaskConfig(kind="seq2seq", target="slots"), [])) is Seq2SeqTask


# task class -> the optional capability protocols of llmkd.tasks.base it offers (exactly these)
CAPABILITIES = {
    ClassificationTask: {"ScoresOptions", "Constrained", "StopsAt", "Synthesizes"},
    NerTask: {"Constrained", "ParsesReply", "StopsAt", "Synthesizes"},
    Seq2SeqTask: {"Constrained", "ParsesDetailed", "StopsAt"},
}


def capability_protocols() -> dict[str, type]:
    from llmkd.tasks import base

    return {name: getattr(base, name) for name in ("ScoresOptions", "Constrained", "ParsesReply", "ParsesDetailed",
                                                   "StopsAt", "Synthesizes")}


@pytest.mark.parametrize("case", sorted(TASKS))
def test_task_offers_exactly_its_capabilities(case: str) -> None:
    from llmkd.tasks.base import Task

    task = TASKS[case][0]
    assert isinstance(task, Task)
    have = {name for name, proto in capability_protocols().items() if isinstance(task, proto)}
    assert have == CAPABILITIES[type(task)]


def test_capabilities_are_checked_with_isinstance_not_hasattr() -> None:
    """Callers ask a task for an optional capability with ``isinstance(task, ScoresOptions)`` etc.
    (tasks/base.py), never by probing attributes nor by branching on the task's kind."""
    src = Path(__file__).resolve().parents[2] / "src" / "llmkd"
    files = sorted((src / "methods").glob("*.py")) + [src / "labeling.py"]
    probes = ("hasattr(ctx.task", "hasattr(task", "hasattr(student", "getattr(task, \"stop\"",
              "getattr(task, \"options\"", "getattr(task, \"constraint\"", "getattr(task, \"kind\"",
              "getattr(ctx.task, \"kind\"", "task.kind ==", "task.kind !=", "task.kind in ",
              "getattr(task, \"label_descriptions\"")
    offenders = [f"{p.name}: {n}" for p in files for n in probes if n in p.read_text(encoding="utf-8")]
    assert not offenders, offenders


def test_llkd_needs_student_probabilities() -> None:
    from llmkd.methods.llkd import student_probs
    from llmkd.students.base import ProbaStudent

    student = ContractStudent()
    assert not isinstance(student, ProbaStudent)
    assert student_probs(student, ["a good film"]).shape == (1, 2)  # falls back to predict()'s probs
    with pytest.raises(TypeError, match="predict_proba"):
        student_probs(MemoStudent(), ["a good film"])  # no predict_proba, no probs


# ---- teachers -------------------------------------------------------------------------------


def teacher_classes() -> list[type]:
    from llmkd.teachers.hf import HFTeacher
    from llmkd.teachers.llamacpp import LlamaCppTeacher
    from llmkd.teachers.openai import OpenAITeacher
    from llmkd.teachers.vllm_ray import VllmRayTeacher

    return [LlamaCppTeacher, HFTeacher, OpenAITeacher, VllmRayTeacher]


def _has_generate_signature(fn: Any) -> None:
    params = inspect.signature(fn).parameters
    assert list(params)[:2] == ["self", "prompts"]
    for kw in ("max_tokens", "temperature", "stop", "seed", "constraint"):
        assert kw in params and params[kw].kind is inspect.Parameter.KEYWORD_ONLY, kw


@pytest.mark.parametrize("cls", teacher_classes(), ids=lambda c: c.__name__)
def test_teacher_backend_contract(cls: type) -> None:
    assert isinstance(cls.name, str) and cls.name
    assert isinstance(inspect.getattr_static(cls, "fingerprint"), property)
    _has_generate_signature(cls.generate)
    assert list(inspect.signature(cls.score_options).parameters) == ["self", "prompts", "options"]
    assert list(inspect.signature(cls.applies).parameters) == ["self", "constraint"]
    assert list(inspect.signature(cls.count_tokens).parameters) == ["self", "text"]


def test_the_teacher_backends_are_the_configurable_ones() -> None:
    from llmkd.config import TeacherConfig

    backends = set(re.findall(r"'(\w+)'", str(TeacherConfig.model_fields["backend"].annotation)))
    assert backends == {c.name for c in teacher_classes()}


def test_cached_teacher_keeps_the_teacher_contract(tmp_path: Path) -> None:
    from llmkd.teachers.base import Constraint, Teacher

    _has_generate_signature(CachedTeacher.generate)
    inner = ScriptedTeacher(teacher_reply, scores={"good one": [-2.0, -0.1], "bad one": [-0.1, -2.0]},
                            text_of=lambda p: p)
    inner.generate = _accepting_constraint(inner.generate)  # type: ignore[method-assign]
    teacher = CachedTeacher(inner, TeacherCache(tmp_path / "cache.sqlite"))
    assert isinstance(teacher, Teacher)
    assert teacher.name == inner.name and teacher.fingerprint == inner.fingerprint
    assert teacher.count_tokens("a b c") == inner.count_tokens("a b c")
    for _ in range(2):  # the second round comes from the cache, the same
        replies = teacher.generate(["good one", "bad one"], max_tokens=4, stop=["\n"])
        assert [r.text for r in replies] == ["pos", "neg"]
        assert all(isinstance(r, Reply) and r.token_logprobs == (-0.05,) for r in replies)
        assert teacher.score_options(["good one", "bad one"], list(LABELS)) == [[-2.0, -0.1], [-0.1, -2.0]]
    assert len(inner.generate_calls) == 1 and len(inner.score_calls) == 1
    assert teacher.hits > 0
    constrained = teacher.generate(["good one"], max_tokens=4, constraint=Constraint.choice(LABELS))
    assert [r.text for r in constrained] == ["pos"]


def _accepting_constraint(generate: Any) -> Any:
    def wrapped(prompts: Sequence[str], *, constraint: Any = None, **kw: Any) -> list[Reply]:
        return generate(prompts, **kw)

    return wrapped


# ---- students -------------------------------------------------------------------------------


def student_classes() -> list[type]:
    from llmkd.students.classifier import ClassifierStudent
    from llmkd.students.seq2seq import Seq2SeqStudent
    from llmkd.students.span_parser import SpanParserStudent
    from llmkd.students.tagger import TaggerStudent

    return [ClassifierStudent, TaggerStudent, Seq2SeqStudent, SpanParserStudent]


@pytest.mark.parametrize("cls", student_classes(), ids=lambda c: c.__name__)
def test_student_class_contract(cls: type) -> None:
    from llmkd.students.base import Student

    fit = inspect.signature(cls.fit_epoch).parameters
    assert list(fit)[:3] == ["self", "examples", "weights"] and fit["weights"].default is None
    assert list(inspect.signature(cls.predict).parameters)[:2] == ["self", "examples"]
    assert list(inspect.signature(cls.save).parameters)[:2] == ["self", "path"]
    load = inspect.getattr_static(cls, "load", None)
    if load is None:  # inherited: look it up on the class
        load = next(vars(base)["load"] for base in cls.__mro__ if "load" in vars(base))
    assert isinstance(load, classmethod), f"{cls.__name__}.load restores a saved student"
    assert list(inspect.signature(cls.load).parameters)[0] == "path"
    for member in ("fit_epoch", "predict", "save"):
        assert member in dir(Student) and callable(getattr(cls, member))
    # ProbaStudent (LLKD's fast path): the sentence classifiers; the tree / sequence students have no class matrix
    assert callable(getattr(cls, "predict_proba", None)) == (cls.__name__ not in ("Seq2SeqStudent", "SpanParserStudent"))


def test_every_student_family_has_a_loader() -> None:
    """make_student_factory gives (factory, loader) for every task family, without loading a model."""
    from llmkd.build import make_student_factory
    from llmkd.config import StudentConfig

    for task in (ClassificationTask(labels=LABELS), NerTask(labels=["PER"]), Seq2SeqTask(target="tree")):
        factory, loader = make_student_factory(StudentConfig(), list(task.labels), task)
        assert callable(factory) and list(inspect.signature(loader).parameters) == ["directory"]


# ---- slow tests live in tests/integration ---------------------------------------------------


def test_no_unit_test_loads_a_real_model() -> None:
    """A test that loads a packaged model (SmolLM2, MiniLM) is slow: it belongs in
    tests/integration, marked ``pytest.mark.slow``."""
    here = Path(__file__).resolve().parent
    needles = ("smollm2" + "_path", "minilm" + "_path", "zoo" + ".pull(")
    offenders = [f"{p.name}: {n}" for p in sorted(here.glob("*.py")) for n in needles if n in p.read_text()]
    assert not offenders, offenders


def test_integration_tests_that_load_a_model_are_marked_slow() -> None:
    folder = Path(__file__).resolve().parents[1] / "integration"
    needles = ("smollm2" + "_path", "minilm" + "_path", "zoo" + ".pull(")
    for path in sorted(folder.glob("test_*.py")):
        source = path.read_text()
        if any(n in source for n in needles):
            assert "pytestmark = pytest.mark.slow" in source, f"{path.name} loads a model but is not marked slow"
