"""MCKD bookkeeping with a scripted teacher and a fake, logging student (no model loading):
the partition, cross-labeling (no item is ever relabeled by a student that trained on it), the
final student's data (every item once), abstention fill-in, n-part voting, provenance, per-stage
statistics, resumption after a crash, the KD + self-distillation baseline and option errors."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import pytest

from llmkd.errors import ConfigError, TeacherError
from llmkd.methods import METHODS, LabelSettings, RunContext, TrainSettings
from llmkd.methods.mckd import MCKD, SelfDistill, combine_votes, label_key, partition, stage_stats
from llmkd.tasks.classification import ClassificationTask
from llmkd.types import Example, Prediction, TeacherLabel, Unlabeled
from tests.fakes import MemoStudent, ScriptedTeacher, write_like_a_run

LABELS = ("neg", "pos")


def reply(text: str) -> str:
    """The teacher's reply to an item: pos/neg by the word 'good', wrong on texts containing
    'tricky', unparseable on texts containing 'mumble' (an abstention)."""
    right = "pos" if "good" in text else "neg"
    wrong = "neg" if right == "pos" else "pos"
    return "???" if "mumble" in text else wrong if "tricky" in text else right


class Log:
    fits: list[tuple[int, tuple[str, ...]]] = []  # (student uid, ids of one fit_epoch)
    predicts: list[tuple[int, frozenset[str], list[str], bool]] = []  # (uid, trained ids, ids, pool items?)
    crash_after: int | None = None  # raise in fit_epoch after this many epochs in total (a kill)
    uid = 0


class FakeStudent(MemoStudent):
    """Memorises its training labels (so relabeling its own data would just copy them) and labels
    unseen texts by the word 'good', with confidence 0.9 (0.6 for texts containing 'tricky').
    Logs its fits and predictions; a restored student remembers the ids it trained on."""

    labels = LABELS

    def __init__(self, seed: int = 0, memory: dict[str, str] | None = None, epochs: int = 0,
                 ids: Sequence[str] = ()) -> None:
        super().__init__(memory, epochs)
        self.seed = seed
        self.restored: set[str] = set(ids)
        Log.uid += 1
        self.uid = Log.uid

    def fallback(self, text: str) -> str:
        return "pos" if "good" in text else "neg"

    def fit_epoch(self, examples: Sequence[Example], weights: Sequence[float] | None = None) -> float:
        if Log.crash_after is not None and len(Log.fits) >= Log.crash_after:
            raise KeyboardInterrupt("simulated kill")
        Log.fits.append((self.uid, tuple(e.id for e in examples)))
        return super().fit_epoch(examples, weights)

    def predict(self, examples: Sequence) -> list[Prediction]:
        Log.predicts.append((self.uid, frozenset(self._ids), [e.id for e in examples],
                             all(isinstance(e, Unlabeled) for e in examples)))
        out = []
        for e, p in zip(examples, super().predict(examples)):
            conf = 0.6 if "tricky" in e.text else 0.9
            out.append(Prediction(p.label, {p.label: conf, ("neg" if p.label == "pos" else "pos"): 1 - conf}))
        return out

    @property
    def _ids(self) -> set[str]:
        return self.restored | {i for uid, ids in Log.fits if uid == self.uid for i in ids}

    def state(self) -> dict[str, Any]:
        return {**super().state(), "seed": self.seed, "ids": sorted(self._ids)}


@pytest.fixture(autouse=True)
def fresh_log():
    Log.fits, Log.predicts, Log.crash_after, Log.uid = [], [], None, 0
    yield


def pool_items(n: int = 24) -> list[Unlabeled]:
    kinds = ["good {}", "bad {}", "good tricky {}", "bad mumble {}", "good {}", "bad tricky {}"]
    return [Unlabeled(f"u{i:02d}", kinds[i % len(kinds)].format(i)) for i in range(n)]


def make_ctx(tmp_path: Path, pool: list[Unlabeled] | None = None, epochs: int = 2) -> RunContext:
    gold = [Example(f"g{i}", f"{'good' if i % 2 else 'bad'} gold {i}", "pos" if i % 2 else "neg") for i in range(4)]
    return RunContext(
        task=ClassificationTask(labels=LABELS), teacher=ScriptedTeacher(reply, batch_size=4, fingerprint="fake-teacher"),
        student_factory=lambda seed: FakeStudent(seed),
        student_loader=FakeStudent.load, labeled=tuple(gold), pool=tuple(pool or pool_items()),
        dev=tuple(gold[:2]), test=(Example("t0", "good test", "pos"), Example("t1", "bad test", "neg")),
        shots=tuple(gold[:2]), workdir=tmp_path, seed=0,
        train=TrainSettings(epochs=epochs, patience=1, min_steps=0, batch_size=4),
        labeling=LabelSettings(confidence=False), progress=False)


def test_partition_is_disjoint_balanced_and_seeded() -> None:
    ids = [f"x{i}" for i in range(11)]
    parts = partition(ids, 2, seed=3)
    assert sorted(parts[0] + parts[1]) == sorted(ids) and not set(parts[0]) & set(parts[1])
    assert sorted(len(p) for p in parts) == [5, 6]
    assert partition(ids, 2, seed=3) == parts and partition(ids, 2, seed=4) != parts
    assert [len(p) for p in partition(ids, 3, seed=0)] == [4, 4, 3]
    with pytest.raises(ValueError, match=r"The 'parts' parameter of MCKD must be an int >= 2. Got 1."):
        partition(ids, 1, seed=0)
    with pytest.raises(ValueError, match=r"the pool has 1 examples for parts=2"):
        partition(["a"], 2, seed=0)


def test_partition_spreads_the_answered_items_evenly() -> None:
    """A teacher that answers 2 of 8 items: each half gets one of them to train on, whatever the
    seed (a plain shuffle leaves both in one half in 3 of 7 draws, and the other half cannot train)."""
    ids = [f"x{i}" for i in range(8)]
    abstained = set(ids[2:])
    for seed in range(20):
        parts = partition(ids, 2, seed=seed, abstained=abstained)
        assert sorted(parts[0] + parts[1]) == sorted(ids) and [len(p) for p in parts] == [4, 4]
        assert sorted(len(set(p) - abstained) for p in parts) == [1, 1]
    order = list(ids)
    random.Random(3).shuffle(order)
    assert partition(ids, 2, seed=3) == [order[0::2], order[1::2]]  # no abstentions: the plain shuffle, as before


@pytest.mark.parametrize("parts", [2, 3])
def test_no_item_is_relabeled_by_a_student_that_trained_on_it(tmp_path: Path, parts: int) -> None:
    ctx = make_ctx(tmp_path)
    method = MCKD(stages=3, parts=parts)
    res = method.run(ctx)
    relabels = [(uid, trained, ids) for uid, trained, ids, is_pool in Log.predicts if is_pool]
    assert len(relabels) == 2 * parts  # one relabeling per part student and stage
    for _, trained, ids in relabels:
        assert trained and not trained & set(ids)
    # provenance agrees: every student label names students of the *other* parts
    for row in method.provenance_:
        assert [lab["stage"] for lab in row["labels"]] == [0, 1, 2]
        for lab in row["labels"][1:]:
            assert lab["source"] == "student"
            voters = lab["by"].split("student-of-part")[1].split("+")
            assert str(row["part"]) not in voters
    assert res.method == "mckd" and set(res.metrics) >= {"accuracy", "macro_f1"}


def test_final_student_sees_every_item_once_and_abstentions_are_filled(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    method = MCKD(stages=2)
    res = method.run(ctx)
    final_uid = max(uid for uid, _ in Log.fits)  # the last student trained
    first_epoch = next(ids for uid, ids in Log.fits if uid == final_uid)
    assert Counter(first_epoch) == Counter(u.id for u in ctx.pool)  # every item, once
    stage = method.stages_[0]
    n_abstained = sum("mumble" in u.text for u in ctx.pool)
    assert stage["teacher_abstentions"] == n_abstained == stage["abstentions_filled"] == 4
    assert stage["abstained"] == 0
    # the students fix the teacher's 'tricky' errors: every stage-1 label follows the word 'good'
    labels = {lab.example_id: lab for lab in res.labels}
    assert all(labels[u.id].label == ("pos" if "good" in u.text else "neg") for u in ctx.pool)
    assert stage["changed"] == 8 and stage["churn"] == pytest.approx(8 / 20)
    assert stage["agreement_with_teacher"] == pytest.approx(12 / 20)
    assert {lab.source for lab in res.labels} == {"student"}
    # per-stage files and the report (written by llmkd.report, as a run does)
    _, rendered = write_like_a_run(ctx, res)
    assert (tmp_path / "labels-stage1.jsonl").exists() and (tmp_path / "provenance.jsonl").exists()
    saved = json.loads((tmp_path / "stages.json").read_text())
    assert [s["part"] for s in saved["stages"][0]["students"]] == [0, 1]
    assert set(saved["stages"][0]["students"][0]) >= {"dev", "test", "n_train", "stop_reason"}
    md = rendered.sections[0]
    assert "| 1 | part 0 |" in md and "| final (2-stage MCKD) | all parts | 24 |" in md and "| 1 | 40.0% | 60.0% | 4 | 4 | 0 |" in md


def test_one_stage_is_vanilla_kd_without_abstentions(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    MCKD(stages=1).run(ctx)
    assert not any(is_pool for *_, is_pool in Log.predicts)  # no relabeling at all
    first = Log.fits[0][1]
    assert len(first) == 20 and not any("mumble" in u.text for u in ctx.pool if u.id in first)


def test_final_every_stage_reports_every_k(tmp_path: Path) -> None:
    res = MCKD(stages=3, final_every_stage=True).run(make_ctx(tmp_path))
    assert sorted(res.extra["finals"]) == ["1", "2", "3"]
    assert res.extra["finals"]["1"]["n_train"] == 20 and res.extra["finals"]["3"]["n_train"] == 24


def test_resumes_after_a_kill_without_redoing_finished_students(tmp_path: Path) -> None:
    MCKD(stages=3).run(make_ctx(tmp_path / "ref"))
    total = len(Log.fits)
    Log.fits, Log.predicts = [], []
    Log.crash_after = total - 1  # killed during the final student's last epoch
    with pytest.raises(KeyboardInterrupt):
        MCKD(stages=3).run(make_ctx(tmp_path / "run"))
    assert (tmp_path / "run" / "labels-stage2.jsonl").exists()
    done_before = len(Log.fits)
    Log.crash_after = None
    res = MCKD(stages=3).run(make_ctx(tmp_path / "run"))
    assert len(Log.fits) - done_before == 1  # only the one missing epoch is trained again
    assert res.metrics["accuracy"] == 1.0


def test_combine_votes_majority_then_confidence_then_part() -> None:
    p = lambda lab, c: Prediction(lab, {lab: c})  # noqa: E731
    assert combine_votes([(0, p("a", 0.5)), (1, p("b", 0.9)), (2, p("a", 0.5))]) == (p("a", 0.5), [0, 2])
    assert combine_votes([(0, p("a", 0.5)), (1, p("b", 0.9))]) == (p("b", 0.9), [1])
    assert combine_votes([(0, p("a", 0.7)), (1, p("b", 0.7))]) == (p("a", 0.7), [0])
    assert combine_votes([(0, Prediction(None))]) == (Prediction(None, {}), [])
    # sequence labels (tag lists) vote by value; lists and tuples are the same label
    tags = combine_votes([(0, Prediction(["B", "O"])), (1, Prediction(("B", "O"))), (2, Prediction(["O", "O"]))])
    assert tags[1] == [0, 1] and label_key(["B", "O"]) == label_key(("B", "O"))


def test_stage_stats_counts_churn_agreement_and_fill_in() -> None:
    t = [TeacherLabel("a", "x", None, False), TeacherLabel("b", "y", None, False), TeacherLabel("c", None, None, True)]
    before = {lab.example_id: lab for lab in t}
    after = {"a": TeacherLabel("a", "x", None, False, "student"), "b": TeacherLabel("b", "x", None, False, "student"),
             "c": TeacherLabel("c", "y", None, False, "student")}
    s = stage_stats(t, before, after)
    assert (s["changed"], s["churn"], s["agreement_with_teacher"], s["abstentions_filled"]) == (1, 0.5, 0.5, 1)


def test_self_distill_keeps_the_most_confident_half(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    res = SelfDistill().run(ctx)
    kept = {lab.example_id for lab in res.labels if lab.stage == "self-distill:kept"}
    assert len(kept) == 12 == res.extra["n_train"]
    assert not any("tricky" in u.text for u in ctx.pool if u.id in kept)  # 0.6-confidence items are dropped
    assert Counter(Log.fits[-1][1]) == Counter(kept)


def test_all_abstentions_is_a_clear_error(tmp_path: Path) -> None:
    pool = [Unlabeled(f"u{i}", f"mumble {i}") for i in range(4)]
    with pytest.raises(TeacherError, match="abstained on all 4 pool examples"):
        MCKD().run(make_ctx(tmp_path, pool))


def test_option_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"method_options\.mckd\.stages: Input should be greater than or equal to 1 \(got 0\)"):
        METHODS["mckd"].build({"stages": 0})
    with pytest.raises(ConfigError, match=r"method_options\.mckd\.stage_epochs: needs one entry per stage \(stages=2"):
        METHODS["mckd"].build({"stages": 2, "stage_epochs": [3]})
    with pytest.raises(ConfigError, match=r"method_options\.self_distill\.keep_fraction"):
        METHODS["self_distill"].build({"keep_fraction": 0})
    with pytest.raises(ValueError, match=r"The 'stages' parameter of MCKD must be an int >= 1. Got 0."):
        MCKD(stages=0).run(None)  # type: ignore[arg-type]
