"""Selection strategies (llmkd.selection) and the LLKD loop (methods/llkd.py) with a scripted fake
student and fake teacher labels: threshold updates on hand-made distributions, selection
invariants, the per-epoch record, and resumption after a crash."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from llmkd.build import build_task
from llmkd.config import TaskConfig
from llmkd.errors import ConfigError
from llmkd.methods import METHODS, RunContext, TrainSettings
from llmkd.methods.llkd import LLKD
from llmkd.selection import (FixedThreshold, KeepAll, LLKDSelector, RandomSubset, SelectionInput, TopConfidence,
                             build_selector, entropy, loss_weights, normalized_entropy)
from llmkd.types import Example, TeacherLabel, Unlabeled
from tests.fakes import JsonStudent

AB = ("a", "b")


def probs_with_entropy(h: float) -> list[float]:
    """A 2-class distribution whose normalised entropy is ``h`` (bisection on p)."""
    lo, hi = 0.5, 1.0
    for _ in range(60):
        p = (lo + hi) / 2
        val = -(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2) if p < 1 else 0.0
        lo, hi = (p, hi) if val > h else (lo, p)
    return [p, 1 - p]


def inp(labels, conf, needs) -> SelectionInput:
    return SelectionInput(list(labels), np.array(conf, dtype=float), AB,
                          np.array([probs_with_entropy(h) for h in needs]))


# -- entropy --------------------------------------------------------------------------------------
def test_normalized_entropy_is_zero_for_one_hot_and_one_for_uniform() -> None:
    p = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    assert normalized_entropy(p) == pytest.approx([0.0, 1.0, math.log(2) / math.log(3)], abs=1e-9)
    assert entropy(p)[1] == pytest.approx(math.log(3))


# -- LLKD threshold updates on hand-made distributions ----------------------------------------------
def test_one_update_matches_the_documented_formulas() -> None:
    sel = LLKDSelector(classes=AB, momentum=0.5)
    assert sel.tau_teacher_ == 0.5 and sel.tau_student_ == 0.5  # τ^T_0 = 1/C, τ^S_0 = 0.5
    out = sel.select(inp("aabb", [0.9, 0.9, 0.5, 0.5], [0.2, 0.2, 0.8, 0.8]))
    # τ_t = λ τ_{t-1} + (1-λ) mean s ; m_t(y) = λ m_{t-1}(y) + (1-λ) mean_{ŷ=y} s ; τ_t(y) = m_t(y)/max m_t · τ_t
    assert sel.tau_teacher_ == pytest.approx(0.5 * 0.5 + 0.5 * 0.7)
    assert sel.m_teacher_ == pytest.approx([0.7, 0.5])
    assert out.record["teacher_thresholds"] == pytest.approx({"a": 0.6, "b": 0.5 / 0.7 * 0.6})
    assert sel.tau_student_ == pytest.approx(0.5)
    assert sel.m_student_ == pytest.approx([0.35, 0.65])
    assert out.record["student_thresholds"] == pytest.approx({"a": 0.35 / 0.65 * 0.5, "b": 0.5})
    # keep ⇔ c ≥ τ^T(ŷ) and u ≥ τ^S(ŷ): a: 0.9 ≥ 0.6 and 0.2 ≥ 0.269 -> no; b: 0.5 ≥ 0.43 and 0.8 ≥ 0.5 -> yes
    assert out.keep.tolist() == [False, False, True, True]
    assert out.weights == pytest.approx([0, 0, 0.5 * 0.8, 0.5 * 0.8], abs=1e-6)  # w = c · u


def test_thresholds_converge_to_the_signal_means_geometrically() -> None:
    sel = LLKDSelector(classes=AB, momentum=0.9, class_norm="none")
    for _ in range(200):
        sel.select(inp("ab", [0.8, 0.8], [0.3, 0.3]))
    assert sel.tau_teacher_ == pytest.approx(0.8, abs=1e-6)
    assert sel.tau_student_ == pytest.approx(0.3, abs=1e-6)
    tt, ts = sel.thresholds()
    assert tt == pytest.approx([0.8, 0.8]) and ts == pytest.approx([0.3, 0.3])  # no class adjustment


def test_per_class_thresholds_move_in_the_documented_direction() -> None:
    """A class whose signal mean rises gets a higher bar; the class with the highest mean sits at
    the global level τ_t and every other class below it, in proportion to its mean (MaxNorm)."""
    sel = LLKDSelector(classes=AB, momentum=0.8)
    before_t, before_s = sel.thresholds()
    for _ in range(30):  # the teacher is surer of a, the student less sure of b
        sel.select(inp("aabb", [0.95, 0.95, 0.55, 0.55], [0.1, 0.1, 0.9, 0.9]))
    tt, ts = sel.thresholds()
    assert tt[0] > before_t[0] and tt[0] > tt[1]
    assert tt[0] == pytest.approx(sel.tau_teacher_)
    assert tt[1] / tt[0] == pytest.approx(sel.m_teacher_[1] / sel.m_teacher_[0])
    assert ts[1] == pytest.approx(sel.tau_student_) and ts[0] < ts[1] and ts[0] < before_s[0]
    # now the student grows unsure of a too: a's student threshold rises towards b's
    for _ in range(30):
        sel.select(inp("aabb", [0.95, 0.95, 0.55, 0.55], [0.9, 0.9, 0.9, 0.9]))
    assert sel.thresholds()[1][0] == pytest.approx(sel.thresholds()[1][1], rel=0.01)


def test_a_class_absent_from_the_batch_keeps_its_level() -> None:
    sel = LLKDSelector(classes=AB, momentum=0.5)
    sel.select(inp("aa", [0.9, 0.9], [0.5, 0.5]))
    assert sel.m_teacher_[1] == pytest.approx(0.5) and sel.m_teacher_[0] == pytest.approx(0.7)


def test_raw_and_normalised_entropy_differ_only_by_the_initial_student_threshold() -> None:
    rng = np.random.default_rng(0)
    a = LLKDSelector(classes=AB, momentum=0.9)
    b = LLKDSelector(classes=AB, momentum=0.9, entropy="raw", student_init=0.5 * math.log(2))
    c = LLKDSelector(classes=AB, momentum=0.9, entropy="raw")  # τ^S_0 = 0.5 nats: a different start
    differs = False
    for _ in range(20):
        x = SelectionInput(list(rng.choice(AB, 16)), rng.uniform(0.3, 1, 16), AB, rng.dirichlet([1, 1], 16))
        sa, sb, sc = a.select(x), b.select(x), c.select(x)
        assert sa.keep.tolist() == sb.keep.tolist()
        assert sa.weights == pytest.approx(sb.weights)
        differs |= sa.keep.tolist() != sc.keep.tolist()
    assert differs


@pytest.mark.parametrize("seed", range(5))
def test_selection_invariants_hold_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes = ("x", "y", "z")
    sel = LLKDSelector(classes=classes, momentum=0.7)
    for _ in range(10):
        n = int(rng.integers(1, 20))
        x = SelectionInput(list(rng.choice(classes, n)), rng.uniform(0, 1, n), classes, rng.dirichlet([0.5] * 3, n))
        out = sel.select(x)
        assert out.weights.min() >= 0 and out.weights.max() <= 1
        assert (out.weights[~out.keep] == 0).all()
        tt, ts = sel.thresholds()
        u = normalized_entropy(x.student_probs)
        y = x.class_index
        assert out.keep.tolist() == ((x.confidence >= tt[y]) & (u >= ts[y])).tolist()
        assert (tt <= sel.tau_teacher_ + 1e-12).all() and (ts <= sel.tau_student_ + 1e-12).all()
        assert sum(out.kept_per_class(x).values()) == out.n_kept
        w = loss_weights(out)
        assert len(w) == out.n_kept and (not w or sum(w) == pytest.approx(len(w)))


def test_state_round_trips_through_json() -> None:
    sel = LLKDSelector(classes=AB, momentum=0.6)
    for _ in range(3):
        sel.select(inp("ab", [0.9, 0.6], [0.3, 0.7]))
    again = LLKDSelector(classes=AB, momentum=0.6)
    again.load_state_dict(json.loads(json.dumps(sel.state_dict())))
    x = inp("abab", [0.9, 0.6, 0.4, 0.99], [0.3, 0.7, 0.9, 0.1])
    assert sel.select(x).keep.tolist() == again.select(x).keep.tolist()
    assert sel.state_dict() == again.state_dict()
    with pytest.raises(ValueError, match="classes"):
        LLKDSelector(classes=("a", "c")).load_state_dict(sel.state_dict())


# -- the static strategies ----------------------------------------------------------------------
def test_static_strategies() -> None:
    x = SelectionInput(list("abababab"), np.array([0.1, 0.9, 0.5, 0.95, 0.3, 0.8, 0.2, 0.7]), AB)
    assert KeepAll().select(x).keep.all()
    assert FixedThreshold(teacher=0.75).select(x).keep.tolist() == [False, True, False, True, False, True, False, False]
    top = TopConfidence(fraction=0.25).select(x)
    assert np.flatnonzero(top.keep).tolist() == [1, 3] and top.record["confidence_cut"] == 0.9
    assert TopConfidence(size=3).select(x).n_kept == 3
    r1, r2, r3 = (RandomSubset(fraction=0.5, seed=s).select(x) for s in (0, 0, 1))
    assert r1.n_kept == 4 and r1.keep.tolist() == r2.keep.tolist()
    assert r1.keep.tolist() != r3.keep.tolist()
    for s in (KeepAll(), TopConfidence(size=2), RandomSubset(size=2)):
        w = s.select(x).weights
        assert set(w.tolist()) <= {0.0, 1.0}


def test_errors_name_the_parameter_and_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"unknown selection strategy 'best'; allowed values are \['keep_all'"):
        build_selector("best", classes=AB)
    with pytest.raises(ValueError, match=r"'topk' takes \['fraction', 'size'\]; got also \['momentum'\]"):
        build_selector("topk", classes=AB, fraction=0.5, momentum=0.9)
    with pytest.raises(ValueError, match=r"The 'fraction' parameter of TopConfidence must lie in \(0, 1\]. Got 2"):
        TopConfidence(fraction=2)
    with pytest.raises(ValueError, match="exactly one of 'fraction' or 'size'"):
        RandomSubset()
    with pytest.raises(ValueError, match=r"The 'momentum' parameter of LLKDSelector must lie in \[0, 1\). Got 1"):
        LLKDSelector(classes=AB, momentum=1.0)
    with pytest.raises(ValueError, match="confidence must lie in"):
        SelectionInput(["a"], np.array([1.5]), AB)
    with pytest.raises(ValueError, match=r"labels \['c'\] are not in the classes"):
        SelectionInput(["c"], np.array([0.5]), AB)


def test_method_options_are_validated_at_config_time() -> None:
    with pytest.raises(ConfigError, match="method_options.llkd.*selection=topk needs fraction"):
        METHODS["llkd"].build({"selection": "topk"})
    with pytest.raises(ConfigError, match="method_options.llkd.granularity"):
        METHODS["llkd"].build({"granularity": "batch"})
    with pytest.raises(ConfigError, match="fraction applies to selection=topk or random"):
        METHODS["llkd"].build({"fraction": 0.2})
    assert METHODS["llkd"].build({"selection": "random", "fraction": 0.2}).options.fraction == 0.2
    with pytest.raises(ConfigError) as exc:  # an unknown option lists the method's own options
        METHODS["llkd"].build({"bogus": 1})
    assert "method_options.llkd.bogus: unknown field" in str(exc.value)
    assert "'teacher_threshold'" in str(exc.value) and "'output_dir'" not in str(exc.value)
    with pytest.raises(ConfigError) as exc:  # a whole-model check names the method, not "(top level)"
        METHODS["llkd"].build({"fraction": 0.2})
    assert "method_options.llkd: " in str(exc.value) and "top level" not in str(exc.value)


# -- the LLKD loop with a scripted student ------------------------------------------------------------
class FakeStudent(JsonStudent):
    """Predicts each text's stored distribution, sharpened towards the last label it was trained on.
    Records every fit call; a restored student has the label memory and the number of calls."""

    labels = AB

    def __init__(self, seed: int = 0, fail_at_call: int | None = None, seen: dict[str, str] | None = None,
                 n_calls: int = 0) -> None:
        self.seen: dict[str, str] = dict(seen or {})
        self.calls: list[tuple[list[str], list[float] | None]] = [([], None)] * n_calls
        self.fail_at_call = fail_at_call

    def fit_epoch(self, examples, weights=None) -> float:
        if self.fail_at_call is not None and len(self.calls) >= self.fail_at_call:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append(([e.id for e in examples], None if weights is None else list(weights)))
        for e in examples:
            self.seen[e.text] = e.label
        return 1.0 / (1 + len(self.calls))

    def predict_proba(self, texts):
        return np.array([[0.9, 0.1] if self.seen.get(t) == "a" else [0.1, 0.9] if self.seen.get(t) == "b"
                         else [0.5 + 0.01 * (len(t) % 7), 0.5 - 0.01 * (len(t) % 7)] for t in texts])

    def predict(self, examples):
        from llmkd.types import Prediction

        return [Prediction(AB[int(np.argmax(p))], dict(zip(AB, p))) for p in self.predict_proba([e.text for e in examples])]

    def state(self) -> dict:
        return {"seen": self.seen, "n_calls": len(self.calls)}


def make_ctx(tmp_path: Path, factory, *, epochs: int = 3, n: int = 40) -> RunContext:
    rng = np.random.default_rng(0)
    pool = tuple(Unlabeled(f"p{i}", f"text number {i} " + "x" * int(rng.integers(0, 9))) for i in range(n))
    labels = [TeacherLabel(u.id, AB[i % 2], float(rng.uniform(0.5, 1.0)), False, probs=None)
              for i, u in enumerate(pool)]
    labels[3] = TeacherLabel("p3", None, None, True)  # an abstention is never trained on
    dev = tuple(Example(f"d{i}", f"dev {i}", AB[i % 2]) for i in range(4))
    ctx = RunContext(task=build_task(TaskConfig(), AB), teacher=None, student_factory=factory,
                     student_loader=FakeStudent.load, labeled=(), pool=pool, dev=dev, test=dev, shots=(),
                     workdir=tmp_path, seed=0, train=TrainSettings(epochs=epochs, patience=10, min_steps=0, batch_size=8),
                     progress=False)
    ctx.label = lambda items, **kw: labels  # type: ignore[method-assign]  # scripted teacher
    return ctx


def test_llkd_loop_records_thresholds_and_counts_per_epoch(tmp_path: Path) -> None:
    students: list[FakeStudent] = []
    ctx = make_ctx(tmp_path, lambda seed: students.append(FakeStudent(seed)) or students[-1])
    res = LLKD(momentum=0.5, plot=False, loss_norm="kept").run(ctx)
    epochs = res.extra["epochs"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    for r in epochs:
        assert set(r["teacher_thresholds"]) == set(AB) and set(r["student_thresholds"]) == set(AB)
        assert sum(r["selected_per_class"].values()) == r["selected"] <= 39
    assert res.extra["n_train"] == epochs[-1]["ever_selected"] and res.extra["pool_answered"] == 39
    assert 0 < res.extra["data_fraction"] <= 1
    trained_ids = {i for ids, _ in students[0].calls for i in ids}
    assert "p3" not in trained_ids and len(trained_ids) == res.extra["n_train"]
    for ids, w in students[0].calls:  # one call per mini-batch with a kept example, weights of mean 1 (loss_norm: kept)
        assert 0 < len(ids) <= 8 and sum(w) == pytest.approx(len(ids))
    rows = res.records["selection"]  # report.py writes it as llkd/selection.jsonl
    assert sum(r["first_selected_epoch"] is not None for r in rows) == res.extra["n_train"]
    assert "macro_f1" in res.metrics


def test_topk_baseline_keeps_the_same_subset_every_epoch(tmp_path: Path) -> None:
    student = FakeStudent()
    res = LLKD(selection="topk", fraction=0.25, plot=False).run(make_ctx(tmp_path, lambda seed: student))
    assert len(student.calls) == 3 and all(ids == student.calls[0][0] for ids, _ in student.calls)
    assert res.extra["n_train"] == round(0.25 * 39) and "teacher_thresholds" not in res.extra["epochs"][0]


def test_epoch_granularity_updates_once_per_epoch(tmp_path: Path) -> None:
    student = FakeStudent()
    res = LLKD(granularity="epoch", plot=False).run(make_ctx(tmp_path, lambda seed: student))
    assert len(student.calls) <= 3
    state = json.loads((tmp_path / "llkd" / "progress.json").read_text())
    assert state["trainer"]["selector"]["updates"] == 3 and len(res.extra["epochs"]) == 3


def test_a_killed_run_resumes_from_the_last_finished_epoch(tmp_path: Path) -> None:
    ref = LLKD(momentum=0.5, plot=False).run(make_ctx(tmp_path / "ref", lambda seed: FakeStudent(seed)))
    first = FakeStudent(fail_at_call=6)  # dies inside epoch 2 (about 5 mini-batches per epoch)
    with pytest.raises(KeyboardInterrupt):
        LLKD(momentum=0.5, plot=False).run(make_ctx(tmp_path / "run", lambda seed: first))
    state = json.loads((tmp_path / "run" / "llkd" / "progress.json").read_text())
    assert state["epoch"] == 1 and not state["done"]
    res = LLKD(momentum=0.5, plot=False).run(make_ctx(tmp_path / "run", lambda seed: FakeStudent(seed)))
    assert res.extra["epochs"] == ref.extra["epochs"]
    assert res.metrics == ref.metrics


def test_drop_optimizer_state_frees_only_the_optimizer_files(tmp_path: Path) -> None:
    from llmkd.students.checkpoint import drop_optimizer_state

    for sub in ("student/best", "student/last", "slot-a"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "model.safetensors").write_bytes(b"w" * 10)
        (tmp_path / sub / "optimizer.safetensors").write_bytes(b"o" * 20)
    assert drop_optimizer_state(tmp_path) == 60
    assert not list(tmp_path.rglob("optimizer.safetensors"))
    assert len(list(tmp_path.rglob("model.safetensors"))) == 3
    assert drop_optimizer_state(tmp_path) == 0


# -- step budget, the two data fractions, loss normalisation, warm start (issue 28) ----------------
def budget_ctx(tmp_path: Path, factory, max_steps: int, **kw) -> RunContext:
    import dataclasses

    ctx = make_ctx(tmp_path, factory, **kw)  # 39 answered pool examples, batch 8: 5 steps per pass
    budgeted = dataclasses.replace(ctx, train=dataclasses.replace(ctx.train, max_steps=max_steps))
    budgeted.label = ctx.label  # type: ignore[method-assign]  # the scripted teacher
    return budgeted


def test_step_budget_stops_llkd_inside_the_second_epoch(tmp_path: Path) -> None:
    student = FakeStudent()
    res = LLKD(momentum=0.5, plot=False).run(budget_ctx(tmp_path, lambda seed: student, 7, epochs=8))
    assert res.extra["steps"] == 7 and res.extra["max_steps"] == 7
    assert [r["steps"] for r in res.extra["epochs"]] == [5, 2]  # 5 drawn batches, then 2 of the next pass
    assert len(res.extra["trace"]["step"]) == 7 and res.extra["trace"]["step"] == list(range(1, 8))
    assert res.extra["optimizer_steps"] == len(student.calls) <= 7  # a batch that keeps nothing takes no step
    training = res.extra["training"]
    assert training["steps"] == 7 and "step budget (7 steps) spent" in training["stop_reason"]
    assert [h["epoch"] for h in training["history"]] == [1, 2]  # the cut last epoch is evaluated


def test_the_method_option_sets_the_shared_budget(tmp_path: Path) -> None:
    a = LLKD(momentum=0.5, plot=False, max_steps=7).run(make_ctx(tmp_path / "a", lambda seed: FakeStudent()))
    b = LLKD(momentum=0.5, plot=False).run(budget_ctx(tmp_path / "b", lambda seed: FakeStudent(), 7))
    assert a.extra["steps"] == b.extra["steps"] == 7
    assert json.dumps(a.extra["epochs"]) == json.dumps(b.extra["epochs"])  # NaN loss: an epoch that kept nothing


def test_both_data_fractions_are_counted_from_what_was_drawn_and_kept(tmp_path: Path) -> None:
    student = FakeStudent()
    res = LLKD(momentum=0.5, plot=False).run(budget_ctx(tmp_path, lambda seed: student, 7))
    trained = [i for ids, _ in student.calls for i in ids]
    assert res.extra["data_fraction"] == pytest.approx(len(set(trained)) / 39)  # ever kept / answered pool
    drawn = [8, 8, 8, 8, 7, 8, 8]  # 39 = 4 x 8 + 7, then two batches of the second pass
    kept = [round(f * d) for f, d in zip(res.extra["trace"]["kept_fraction"], drawn)]
    assert sum(kept) == len(trained)  # the trace's kept counts are the examples trained on
    assert res.extra["batch_kept_fraction"] == pytest.approx(np.mean([k / d for k, d in zip(kept, drawn)]))
    assert res.extra["epochs"][1]["batch_kept_fraction"] == pytest.approx(np.mean([k / 8 for k in kept[5:]]))


def test_vanilla_gets_the_same_budget_through_the_shared_loop(tmp_path: Path) -> None:
    from llmkd.methods.training import fit_student

    student = FakeStudent()
    ctx = budget_ctx(tmp_path, lambda seed: student, 7)
    examples = [Example(f"p{i}", f"text {i}", AB[i % 2]) for i in range(39)]
    _, record = fit_student(ctx, examples, tag="student")
    assert [len(ids) for ids, _ in student.calls] == [39, 16]  # a full pass, then 2 batches of 8
    assert len(set(student.calls[1][0])) == 16 and record["steps"] == 7
    assert [h["epoch"] for h in record["history"]] == [1, 2]


def test_static_baseline_counts_batches_of_its_subset(tmp_path: Path) -> None:
    student = FakeStudent()
    res = LLKD(selection="topk", fraction=0.5, plot=False).run(budget_ctx(tmp_path, lambda seed: student, 7))
    assert [len(ids) for ids, _ in student.calls] == [20, 20, 8]  # 3 steps, 3 steps, 1 step of 8
    assert set(student.calls[2][0]) <= set(student.calls[0][0]) and res.extra["steps"] == 7
    assert res.extra["batch_kept_fraction"] == pytest.approx(20 / 39) and res.extra["data_fraction"] == pytest.approx(20 / 39)


def test_under_a_budget_epochs_counts_evaluations_at_the_same_points_for_every_row(tmp_path: Path) -> None:
    """A subset's pass is shorter (3 steps) than the pool's (5): with epochs = 1 each row is
    evaluated once, at the end of the 7 steps; with epochs = 2, after the epoch that reaches
    step 3.5, and at the end."""
    from llmkd.methods.training import fit_student

    examples = [Example(f"p{i}", f"text {i}", AB[i % 2]) for i in range(39)]
    for epochs, subset_at, pool_at in ((1, [7], [7]), (2, [6, 7], [5, 7])):
        res = LLKD(selection="topk", fraction=0.5, plot=False).run(
            budget_ctx(tmp_path / f"topk{epochs}", lambda seed: FakeStudent(), 7, epochs=epochs))
        assert [h["steps"] for h in res.extra["training"]["history"]] == subset_at
        _, record = fit_student(budget_ctx(tmp_path / f"plain{epochs}", lambda seed: FakeStudent(), 7, epochs=epochs),
                                examples, tag="student")
        assert [h["steps"] for h in record["history"]] == pool_at


def test_a_killed_budgeted_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    ref = LLKD(momentum=0.5, plot=False, max_steps=12).run(make_ctx(tmp_path / "ref", lambda seed: FakeStudent(seed)))
    first = FakeStudent(fail_at_call=7)
    with pytest.raises(KeyboardInterrupt):
        LLKD(momentum=0.5, plot=False, max_steps=12).run(make_ctx(tmp_path / "run", lambda seed: first))
    res = LLKD(momentum=0.5, plot=False, max_steps=12).run(make_ctx(tmp_path / "run", lambda seed: FakeStudent(seed)))
    assert res.extra["steps"] == ref.extra["steps"] == 12
    assert json.dumps(res.extra["epochs"]) == json.dumps(ref.extra["epochs"]) and res.extra["trace"] == ref.extra["trace"]


def test_loss_norm_kept_rescales_to_mean_one_and_batch_divides_by_the_drawn_batch() -> None:
    from llmkd.selection import Selection

    sel = Selection(np.array([True, True, False, False]), np.array([0.5, 0.25, 0.0, 0.0]))
    assert loss_weights(sel) == pytest.approx([4 / 3, 2 / 3])  # Σ w' CE / 2 = Σ w CE / Σ w
    assert loss_weights(sel, "batch", 4) == pytest.approx([0.25, 0.125])  # Σ w' CE / 2 = Σ w CE / 4
    assert loss_weights(sel, "batch") == pytest.approx([0.5, 0.25])  # no batch: the raw weights
    with pytest.raises(ValueError, match=r"must be one of \['kept', 'batch'\]. Got 'mean'"):
        loss_weights(sel, "mean")


def test_batch_loss_norm_in_the_loop_shrinks_steps_that_keep_few(tmp_path: Path) -> None:
    kept_s, batch_s = FakeStudent(), FakeStudent()
    LLKD(momentum=0.5, plot=False, loss_norm="kept").run(make_ctx(tmp_path / "k", lambda seed: kept_s, epochs=1))
    LLKD(momentum=0.5, plot=False, loss_norm="batch").run(make_ctx(tmp_path / "b", lambda seed: batch_s, epochs=1))
    assert [ids for ids, _ in kept_s.calls] == [ids for ids, _ in batch_s.calls]  # same selection
    for (ids, wk), (_, wb) in zip(kept_s.calls, batch_s.calls):
        assert sum(wk) == pytest.approx(len(ids))
        # batch: w' = c·u · n_kept / drawn, with c·u the kept weights before rescaling
        assert np.array(wb) / np.array(wk) == pytest.approx(np.full(len(ids), wb[0] / wk[0]))
        assert sum(wb) <= len(ids) * len(ids) / 7 + 1e-9  # every c·u <= 1, drawn >= 7


def test_warm_start_from_data_starts_at_the_first_batch_means() -> None:
    sel = LLKDSelector(classes=("a", "b", "c"), momentum=0.9, warm_start="data")
    x = SelectionInput(list("aab"), np.array([0.9, 0.7, 0.5]), ("a", "b", "c"),
                       np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3]]))
    sel.select(x)
    u = normalized_entropy(x.student_probs)
    assert sel.tau_teacher_ == pytest.approx(0.7) and sel.tau_student_ == pytest.approx(u.mean())
    assert sel.m_teacher_ == pytest.approx([0.8, 0.5, 0.7])  # c is absent from the batch: the global mean
    assert sel.m_student_ == pytest.approx([u[:2].mean(), u[2], u.mean()])
    sel.select(x)  # later updates are the usual EMA
    assert sel.tau_teacher_ == pytest.approx(0.7)
    with pytest.raises(ValueError, match="teacher_init / student_init set the fixed start"):
        LLKDSelector(classes=AB, warm_start="data", teacher_init=0.4)
    with pytest.raises(ConfigError, match="warm_start=data applies to selection=llkd"):
        METHODS["llkd"].build({"selection": "random", "fraction": 0.2, "warm_start": "data"})
    with pytest.raises(ConfigError, match="method_options.llkd.loss_norm"):
        METHODS["llkd"].build({"loss_norm": "mean"})


def test_a_finished_run_under_another_budget_is_not_reused(tmp_path: Path) -> None:
    from llmkd.methods.training import fit_student

    examples = [Example(f"p{i}", f"text {i}", AB[i % 2]) for i in range(39)]
    _, first = fit_student(budget_ctx(tmp_path, lambda seed: FakeStudent(), 7), examples, tag="student")
    _, again = fit_student(budget_ctx(tmp_path, lambda seed: FakeStudent(), 12), examples, tag="student")
    assert first["steps"] == 7 and again["steps"] == 12
