"""Soft-target distillation (issue 26 item 1): the loss against a hand-computed KL, temperature
and mix weights, the classifier's use of ``Example.soft`` (on a toy model, no real encoder), the
config checks, and every method that trains on teacher labels passing the teacher's label
distribution through (scripted teacher with option scores, fake students recording their data)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import pytest
import torch
import torch.nn.functional as F

from llmkd.config import parse_config
from llmkd.errors import ConfigError
from llmkd.methods import LabelSettings, RunContext, TrainSettings
from llmkd.methods.llkd import LLKD
from llmkd.methods.mckd import MCKD
from llmkd.methods.self_distill import SelfDistill
from llmkd.methods.training import teacher_examples
from llmkd.methods.vanilla import VanillaKD
from llmkd.students.classifier import ClassifierStudent
from llmkd.students.losses import distill_loss, hard_weight, soft_matrix
from llmkd.tasks.classification import ClassificationTask
from llmkd.teachers.base import normalize_options
from llmkd.types import Example, Prediction, TeacherLabel, Unlabeled
from tests.fakes import MemoStudent, ScriptedTeacher

LABELS = ("neg", "pos")


# ---- the loss ---------------------------------------------------------------------------------

def toy() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]])
    hard = torch.tensor([0, 2])
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    return logits, hard, soft


def kl_by_hand(p: list[float], z: list[float], t: float) -> float:
    """T^2 * sum_k p_T,k log(p_T,k / q_k) with p_T = p^(1/T) renormalised, q = softmax(z / T)."""
    pt = [x ** (1 / t) for x in p]
    pt = [x / sum(pt) for x in pt]
    ez = [math.exp(v / t) for v in z]
    q = [e / sum(ez) for e in ez]
    return t * t * sum(a * math.log(a / b) for a, b in zip(pt, q) if a > 0)


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_soft_loss_is_the_hand_computed_kl(t: float) -> None:
    logits, hard, soft = toy()
    got = distill_loss(logits, hard, soft, temperature=t, alpha=0.0)
    want = [kl_by_hand(soft[i].tolist(), logits[i].tolist(), t) for i in range(2)]
    assert got.tolist() == pytest.approx(want, rel=1e-5)


def test_alpha_one_is_cross_entropy_and_alpha_zero_ignores_the_hard_label() -> None:
    logits, hard, soft = toy()
    ce = F.cross_entropy(logits, hard, reduction="none")
    assert torch.equal(distill_loss(logits, hard, soft, temperature=1.0, alpha=1.0), ce)
    assert torch.equal(distill_loss(logits, hard, temperature=3.0, alpha=0.0), ce)  # no soft targets: CE
    a = distill_loss(logits, hard, soft, temperature=2.0, alpha=0.0)
    b = distill_loss(logits, torch.tensor([1, 0]), soft, temperature=2.0, alpha=0.0)
    assert torch.equal(a, b)  # another hard label changes nothing at alpha 0


def test_mix_is_the_weighted_sum() -> None:
    logits, hard, soft = toy()
    ce = F.cross_entropy(logits, hard, reduction="none")
    kl = distill_loss(logits, hard, soft, temperature=2.0, alpha=0.0)
    mixed = distill_loss(logits, hard, soft, temperature=2.0, alpha=0.3)
    assert mixed.tolist() == pytest.approx((0.3 * ce + 0.7 * kl).tolist(), rel=1e-6)
    assert hard_weight("hard", 0.9) == 1.0 and hard_weight("soft", 0.9) == 0.0 and hard_weight("mix", 0.25) == 0.75
    with pytest.raises(ValueError, match="targets"):
        hard_weight("kl", 0.5)


def test_a_higher_temperature_flattens_the_teacher_distribution() -> None:
    # the soft target the student is pulled towards is p^(1/T): its entropy rises with T; at the
    # optimum (student = teacher at T) the loss is 0 whatever T
    p = torch.tensor([[0.8, 0.15, 0.05]])
    ents = []
    for t in (1.0, 2.0, 5.0):
        logits = torch.log(p) * 1.0  # a student equal to the teacher at T = 1
        loss = distill_loss(logits, torch.tensor([0]), p, temperature=t, alpha=0.0)
        assert loss.item() == pytest.approx(0.0, abs=1e-6)  # softmax(log p / T) = p^(1/T) renormalised
        pt = torch.softmax(torch.log(p) / t, -1)
        ents.append(float(-(pt * pt.log()).sum()))
    assert ents[0] < ents[1] < ents[2] < math.log(3)


def test_rows_without_soft_targets_get_cross_entropy_and_zeros_stay_finite() -> None:
    logits, hard, soft = toy()
    soft = soft.clone()
    soft[0] = torch.tensor([1.0, 0.0, 0.0])  # a zero probability: log 0, no NaN
    has = torch.tensor([True, False])
    logits.requires_grad_(True)
    out = distill_loss(logits, hard, soft, has, temperature=2.0, alpha=0.0)
    ce = F.cross_entropy(logits, hard, reduction="none")
    assert out[1].item() == pytest.approx(ce[1].item())
    assert out[0].item() == pytest.approx(kl_by_hand([1.0, 0.0, 0.0], logits[0].tolist(), 2.0), rel=1e-5)
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_soft_matrix_orders_renormalises_and_rejects_unknown_labels() -> None:
    m, mask = soft_matrix([{"pos": 0.6, "neg": 0.2}, None], LABELS)
    assert m.flatten().tolist() == pytest.approx([0.25, 0.75, 0.0, 0.0]) and mask.tolist() == [True, False]
    with pytest.raises(ValueError, match="not the student's labels"):
        soft_matrix([{"maybe": 1.0}], LABELS)
    with pytest.raises(ValueError, match="not a probability"):
        soft_matrix([{"pos": 0.0, "neg": 0.0}], LABELS)


# ---- the classifier on a toy model (no encoder is loaded) -------------------------------------

class ToyTokenizer:
    """One feature per text: +1 for 'good', -1 otherwise (the classifier's _encode interface)."""

    def __call__(self, texts: list[str], **_: Any) -> Any:
        x = torch.tensor([[1.0 if "good" in t else -1.0] for t in texts])
        return SimpleNamespace(to=lambda device: {"x": x})


class ToyModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> Any:
        return SimpleNamespace(logits=self.lin(x))


def toy_student(**kw: Any) -> ClassifierStudent:
    st = ClassifierStudent(model="toy", labels=LABELS, batch_size=4, lr=0.05, warmup_steps=0, seed=0, **kw)
    torch.manual_seed(0)
    st.tokenizer_, st.model_, st.device_ = ToyTokenizer(), ToyModel(), "cpu"
    st.optimizer_ = torch.optim.AdamW(st.model_.parameters(), lr=st.lr, weight_decay=0.0)
    st._built = True
    return st


def data(soft: dict[str, float] | None) -> list[Example]:
    return [Example(f"e{i}", f"{'good' if i % 2 else 'bad'} {i}", "pos" if i % 2 else "neg", soft=soft)
            for i in range(8)]


def test_classifier_hard_targets_ignore_soft_and_equal_plain_training() -> None:
    a, b = toy_student(), toy_student()
    la = [a.fit_epoch(data(None)) for _ in range(3)]
    lb = [b.fit_epoch(data({"neg": 0.5, "pos": 0.5})) for _ in range(3)]
    assert la == lb
    assert all(torch.equal(p, q) for p, q in zip(a.model_.parameters(), b.model_.parameters()))
    # soft / mix with no example carrying a distribution (gold data) train exactly like hard
    c = toy_student(targets="mix", temperature=2.0)
    assert [c.fit_epoch(data(None)) for _ in range(3)] == la


def test_classifier_soft_targets_learn_the_teacher_distribution() -> None:
    # the teacher says 0.7 / 0.3 for every text; the hard label is the argmax of the text's class.
    # Soft training ends near the teacher's 0.7, hard training goes past it towards 1.
    teacher = {"neg": 0.3, "pos": 0.7}
    ex = [Example(f"e{i}", f"good {i}", "pos", soft=teacher) for i in range(4)]  # one step an epoch
    soft, hard = toy_student(targets="soft"), toy_student()
    for _ in range(150):
        soft.fit_epoch(ex)
        hard.fit_epoch(ex)
    p_soft = soft.predict_proba(["good x"])[0, 1]
    p_hard = hard.predict_proba(["good x"])[0, 1]
    assert p_soft == pytest.approx(0.7, abs=0.03) and p_hard > 0.95
    mix = toy_student(targets="mix", soft_weight=0.5)
    for _ in range(150):
        mix.fit_epoch(ex)
    assert 0.75 < mix.predict_proba(["good x"])[0, 1] < p_hard  # between the two


def test_classifier_checks_its_settings() -> None:
    with pytest.raises(ValueError, match="targets"):
        ClassifierStudent(model="toy", labels=LABELS, targets="kl")
    with pytest.raises(ValueError, match="temperature"):
        ClassifierStudent(model="toy", labels=LABELS, targets="soft", temperature=0.0)
    from llmkd.students.tagger import TaggerStudent

    with pytest.raises(ValueError, match="hard labels only"):
        TaggerStudent(model="toy", labels=["PER"], targets="soft")


# ---- config and build -------------------------------------------------------------------------

def cfg(**sections: Any) -> Any:
    return parse_config({"data": {"train": "x.jsonl", "test": "y.jsonl"}, **sections})


def test_config_soft_needs_a_teacher_distribution_and_a_classification_task() -> None:
    assert cfg().student.targets == "hard"
    c = cfg(student={"targets": "mix", "temperature": 2.0, "soft_weight": 0.3})
    assert (c.student.targets, c.student.temperature, c.student.soft_weight) == ("mix", 2.0, 0.3)
    assert cfg(student={"targets": "soft"}, teacher={"confidence": False, "labeling": "score"}).student.targets == "soft"
    with pytest.raises(ConfigError, match=r"teacher.confidence: true"):
        cfg(student={"targets": "soft"}, teacher={"confidence": False})
    with pytest.raises(ConfigError, match=r"student.targets: mix .* ner student .*student.targets: hard"):
        cfg(student={"targets": "mix"}, task={"kind": "ner"})
    with pytest.raises(ConfigError, match=r"seq2seq"):
        cfg(student={"targets": "soft"}, task={"kind": "seq2seq", "target": "tree"})
    with pytest.raises(ConfigError, match=r"student.targets: allowed values"):
        cfg(student={"targets": "kl"})
    with pytest.raises(ConfigError, match=r"student.soft_weight"):
        cfg(student={"targets": "mix", "soft_weight": 1.5})
    with pytest.raises(ConfigError, match=r"student.temperature"):
        cfg(student={"targets": "mix", "temperature": 0})


def test_student_factory_passes_the_settings_and_refuses_token_students() -> None:
    from llmkd.build import make_student_factory
    from llmkd.config import StudentConfig
    from llmkd.tasks.ner import NerTask

    factory, _ = make_student_factory(StudentConfig(targets="mix", temperature=3.0, soft_weight=0.2), list(LABELS),
                                      ClassificationTask(labels=list(LABELS)))
    st = factory(0)
    assert (st.targets, st.temperature, st.soft_weight) == ("mix", 3.0, 0.2)
    with pytest.raises(ConfigError, match="ner student trains on hard labels"):
        make_student_factory(StudentConfig(targets="soft"), ["PER"], NerTask(labels=["PER"]))


# ---- methods pass the teacher's distribution through ------------------------------------------

SCORES = {}  # text -> option log-likelihoods, filled by pool()


def pool(n: int = 12) -> list[Unlabeled]:
    items = []
    for i in range(n):
        text = f"{'good' if i % 2 else 'bad'} item {i}"
        items.append(Unlabeled(f"u{i:02d}", text))
        SCORES[text] = [-1.0 - 0.1 * i, -0.5 - 0.2 * (i % 3)] if i % 2 else [-0.2, -1.5 - 0.05 * i]
    return items


def reply(text: str) -> str:
    return "pos" if "good" in text else "neg"


class Recorder:
    examples: list[list[Example]] = []


class RecordingStudent(MemoStudent):
    """Memorises its labels and records every fit_epoch's examples; predicts with probabilities."""

    labels = LABELS

    def __init__(self, memory: dict[str, Any] | None = None, epochs: int = 0) -> None:
        super().__init__(memory, epochs)

    def fallback(self, text: str) -> str:
        return "pos" if "good" in text else "neg"

    def fit_epoch(self, examples: Sequence[Example], weights: Sequence[float] | None = None) -> float:
        Recorder.examples.append(list(examples))
        return super().fit_epoch(examples, weights)

    def predict(self, examples: Sequence[Any]) -> list[Prediction]:
        out = []
        for e, p in zip(examples, super().predict(examples)):
            label = p.label or self.fallback(e.text)
            out.append(Prediction(label, {label: 0.8, ("neg" if label == "pos" else "pos"): 0.2}))
        return out

    def predict_proba(self, texts: Sequence[str]) -> Any:
        import numpy as np

        return np.array([[p.probs["neg"], p.probs["pos"]] for p in self.predict([Unlabeled("", t) for t in texts])])


@pytest.fixture(autouse=True)
def fresh_recorder():
    Recorder.examples = []
    yield


def make_ctx(tmp_path: Path, targets: str = "soft", confidence: bool = True) -> RunContext:
    gold = tuple(Example(f"g{i}", f"{'good' if i % 2 else 'bad'} gold {i}", "pos" if i % 2 else "neg")
                 for i in range(4))
    items = pool()
    return RunContext(
        task=ClassificationTask(labels=list(LABELS)), teacher=ScriptedTeacher(reply, scores=SCORES, batch_size=4),
        student_factory=lambda seed: RecordingStudent(), student_loader=RecordingStudent.load, labeled=gold,
        pool=tuple(items), dev=gold[:2], test=gold[2:], shots=gold[:2], workdir=tmp_path, seed=0,
        train=TrainSettings(epochs=1, patience=1, min_steps=0, batch_size=4, targets=targets),
        labeling=LabelSettings(confidence=confidence), progress=False)


def expected(items: Sequence[Unlabeled]) -> dict[str, dict[str, float]]:
    """The teacher's distribution of each pool text: the softmax of its option scores."""
    return {u.id: dict(zip(LABELS, normalize_options(SCORES[u.text]))) for u in items}


def soft_of(examples: Sequence[Example]) -> dict[str, Any]:
    return {e.id: e.soft for e in examples}


def test_teacher_examples_carry_probs_only_for_soft_targets() -> None:
    labs = [TeacherLabel("a", "pos", 0.7, False, probs={"neg": 0.3, "pos": 0.7}),
            TeacherLabel("b", None, None, True),
            TeacherLabel("c", "neg", 0.8, False, source="student", probs={"neg": 0.8, "pos": 0.2})]
    texts = {"a": "A", "b": "B", "c": "C"}
    assert teacher_examples(labs, texts) == [Example("a", "A", "pos"), Example("c", "C", "neg")]
    soft = teacher_examples(labs, texts, "mix")
    assert soft_of(soft) == {"a": {"neg": 0.3, "pos": 0.7}, "c": None}  # a student's label trains hard
    hash(soft[0])  # still hashable with a dict inside
    with pytest.raises(ConfigError, match="teacher.confidence: true"):
        teacher_examples([TeacherLabel("a", "pos", None, False)], texts, "soft")
    # one label without a distribution among others (its label set scored -inf): it trains hard
    some = teacher_examples([labs[0], TeacherLabel("b", "neg", None, False)], texts, "soft")
    assert soft_of(some) == {"a": {"neg": 0.3, "pos": 0.7}, "b": None}


@pytest.mark.parametrize("targets", ["hard", "soft", "mix"])
def test_vanilla_passes_the_teacher_distribution(tmp_path: Path, targets: str) -> None:
    ctx = make_ctx(tmp_path, targets)
    VanillaKD(mix_gold=True).run(ctx)
    seen = Recorder.examples[0]
    want = expected(ctx.pool) if targets != "hard" else {u.id: None for u in ctx.pool}
    assert soft_of(seen) == {**want, **{g.id: None for g in ctx.labeled}}  # gold trains on its label
    assert len(ctx.teacher.score_calls) == 3  # one scoring call per chunk of 4, as for hard targets


def test_vanilla_soft_without_teacher_probs_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="teacher.confidence: true"):
        VanillaKD().run(make_ctx(tmp_path, "soft", confidence=False))


def test_soft_targets_make_no_new_teacher_calls(tmp_path: Path) -> None:
    """The distribution comes with the cached label: a soft run asks exactly what a hard run asks."""
    hard, soft = make_ctx(tmp_path / "h", "hard"), make_ctx(tmp_path / "s", "soft")
    VanillaKD().run(hard)
    VanillaKD().run(soft)
    assert soft.teacher.score_calls == hard.teacher.score_calls
    assert soft.teacher.generate_calls == hard.teacher.generate_calls


def test_mckd_uses_teacher_probs_and_trains_student_relabels_hard(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "soft")
    MCKD(stages=2, parts=2, selection="dev").run(ctx)
    want = expected(ctx.pool)
    first = [ex for ex in Recorder.examples if ex]  # stage 1: each part on the teacher's labels
    stage1 = {e.id: e.soft for exs in first[:2] for e in exs}
    assert stage1 == want
    final = Recorder.examples[-1]  # the final student: every item relabeled by a student
    assert {e.id for e in final} == set(want) and all(e.soft is None for e in final)


def test_self_distill_kd_student_gets_teacher_probs(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "mix")
    SelfDistill(keep_fraction=0.5, selection="dev").run(ctx)
    kd, sd = Recorder.examples[0], Recorder.examples[-1]
    assert soft_of(kd) == expected(ctx.pool)
    assert len(sd) == 6 and all(e.soft is None for e in sd)  # the KD student's labels


def test_llkd_selection_epochs_train_on_teacher_probs(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "soft")
    LLKD(selection="keep_all").run(ctx)
    want = expected(ctx.pool)
    seen = {e.id: e.soft for exs in Recorder.examples for e in exs}
    assert seen == want


def test_evokd_synthetic_samples_carry_the_labeling_distribution(tmp_path: Path) -> None:
    from tests.unit import test_evokd as ev
    from llmkd.methods.evokd import EvoKD

    class ScoringTeacher(ev.ScriptedTeacher):
        def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
            return [[-0.3, -1.2] if "good" in p.rsplit("Text:", 1)[-1] else [-1.0, -0.4] for p in prompts]

    base = ev.make_ctx(tmp_path / "run", ScoringTeacher())  # EvoKD shares seed students in workdir.parent
    ctx = dataclasses.replace(base, labeling=dataclasses.replace(base.labeling, confidence=True),
                              train=dataclasses.replace(base.train, targets="soft"),
                              student_factory=lambda seed: RecordingEvo(), student_loader=RecordingEvo.load)
    EvoKD(**{**ev.OPTS, "rounds": 1}).run(ctx)
    seed_fit, round_fit = Recorder.examples[0], Recorder.examples[-1]
    assert all(e.soft is None for e in seed_fit)
    synthetic = [e for e in round_fit if e.id.startswith("evokd-")]
    gold = [e for e in round_fit if not e.id.startswith("evokd-")]
    assert synthetic and all(e.soft is None for e in gold)
    good = dict(zip(ev.LABELS, normalize_options([-0.3, -1.2])))
    bad = dict(zip(ev.LABELS, normalize_options([-1.0, -0.4])))
    for e in synthetic:
        assert e.soft == pytest.approx(good if "good" in e.text else bad)
    # labeled without scores (teacher.confidence: false): the error names the fix
    plain = dataclasses.replace(ctx, workdir=tmp_path / "plain", labeling=base.labeling)
    with pytest.raises(ConfigError, match="teacher.confidence: true"):
        EvoKD(**{**ev.OPTS, "rounds": 1}).run(plain)


class RecordingEvo(RecordingStudent):
    labels = ("negative", "positive")

    def fallback(self, text: str) -> str:
        return "negative"

    def predict(self, examples: Sequence[Any]) -> list[Prediction]:
        return MemoStudent.predict(self, examples)
