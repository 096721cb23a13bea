"""label_examples with a scripted fake teacher: parsed labels, abstentions (never a default
class), confidences from score_options, score mode, order, prompt ids; plus the run's shot choice
and the pool-quality report."""

from __future__ import annotations

import hashlib
import math
from typing import Any, Sequence

import pytest

from llmkd.api import choose_shots, pool_quality
from llmkd.config import parse_config
from llmkd.data import GoldVault
from llmkd.labeling import abstention_rate, label_examples, prompt_id
from llmkd.tasks.classification import ClassificationTask
from llmkd.types import Example, Reply, TeacherLabel, Unlabeled
from tests import fakes
from tests.fakes import classify_text as text_of

LABELS = ["negative", "positive", "neutral"]
SHOTS = (Example("s1", "loved it", "positive"), Example("s2", "hated it", "negative"))


class ScriptedTeacher(fakes.ScriptedTeacher):
    """The shared scripted teacher, checking that classification replies stop at the line end."""

    def generate(self, prompts: Sequence[str], **kw: Any) -> list[Reply]:
        assert tuple(kw.get("stop", ())) == ("\n",)
        return super().generate(prompts, **kw)


@pytest.fixture(scope="module")
def task() -> ClassificationTask:
    return ClassificationTask(labels=LABELS)


def items(*texts: str) -> list[Unlabeled]:
    return [Unlabeled(id=f"u{i}", text=t) for i, t in enumerate(texts)]


def run(task: ClassificationTask, teacher: ScriptedTeacher, pool: list[Unlabeled], **kw) -> list[TeacherLabel]:
    return label_examples(task, teacher, pool, SHOTS, progress=False, **kw)


def test_replies_are_parsed_into_labels(task: ClassificationTask) -> None:
    teacher = ScriptedTeacher({"a": "Positive.", "b": "Label: negative", "c": "neutral"})
    labels = run(task, teacher, items("a", "b", "c"), confidence=False)
    assert [(lab.example_id, lab.label, lab.abstained) for lab in labels] == [
        ("u0", "positive", False), ("u1", "negative", False), ("u2", "neutral", False)]
    assert [lab.raw for lab in labels] == ["Positive.", "Label: negative", "neutral"]  # raw replies are kept
    assert {(lab.source, lab.stage, lab.error) for lab in labels} == {("teacher", "teacher", "")}
    assert teacher.score_calls == []  # confidence=False: the label set is not scored


def test_unparseable_reply_is_an_abstention_never_a_default_class(task: ClassificationTask) -> None:
    teacher = ScriptedTeacher({"a": "positive", "b": "I cannot tell", "c": "", "d": "positive or negative"},
                              scores={"a": [0.0, 0.0, 0.0], "b": [-0.1, -5.0, -5.0], "c": [0.0, -1.0, -2.0],
                                      "d": [0.0, 0.0, -9.0]})
    labels = run(task, teacher, items("a", "b", "c", "d"), stage="round1")
    assert [(lab.label, lab.abstained, lab.confidence) for lab in labels[1:]] == [(None, True, None)] * 3
    b = labels[1]
    assert (b.raw, b.stage, b.error) == ("I cannot tell", "round1", "one of ['negative', 'positive', 'neutral']")
    assert b.probs is not None and max(b.probs, key=b.probs.__getitem__) == "negative"  # scores kept, not used
    assert labels[3].error == "exactly one of ['negative', 'positive', 'neutral'], got ['negative', 'positive']"
    assert abstention_rate(labels) == 0.75


def test_abstention_rate() -> None:
    def lab(abstained: bool) -> TeacherLabel:
        return TeacherLabel("x", None if abstained else "positive", None, abstained)

    assert abstention_rate([]) == 0.0
    assert abstention_rate([lab(False), lab(True), lab(False), lab(False)]) == 0.25
    assert abstention_rate([lab(True)]) == 1.0


def test_confidence_is_the_normalised_probability_of_the_parsed_label(task: ClassificationTask) -> None:
    logliks = [math.log(0.1), math.log(0.6), math.log(0.3)]
    teacher = ScriptedTeacher({"a": "positive", "b": "neutral"},
                              scores={"a": logliks, "b": [x - 7.0 for x in logliks]})  # scale-free
    a, b = run(task, teacher, items("a", "b"))
    assert a.probs == pytest.approx({"negative": 0.1, "positive": 0.6, "neutral": 0.3})
    assert a.confidence == pytest.approx(0.6)
    assert b.confidence == pytest.approx(0.3)  # the parsed label's probability, not the argmax's
    assert b.probs == pytest.approx(a.probs)
    assert teacher.score_calls[0][1] == LABELS


def test_without_scoring_confidence_comes_from_the_reply_logprobs(task: ClassificationTask) -> None:
    teacher = ScriptedTeacher({"a": "positive", "b": "negative"}, logprobs={"a": (math.log(0.5), math.log(0.8))})
    a, b = run(task, teacher, items("a", "b"), confidence=False)
    assert a.confidence == pytest.approx(0.4)
    assert b.confidence is None and b.probs is None  # no logprobs: no confidence, still a label
    assert b.label == "negative"


def test_score_mode_takes_the_argmax_and_never_generates(task: ClassificationTask) -> None:
    teacher = ScriptedTeacher({}, scores={"a": [-3.0, -1.0, -2.0], "b": [-0.5, -4.0, -0.7], "c": [-1.0, -1.0, -1.0]})
    labels = run(task, teacher, items("a", "b", "c"), mode="score")
    assert [lab.label for lab in labels] == ["positive", "negative", "negative"]  # a tie goes to the first label
    assert labels[0].confidence == pytest.approx(math.exp(-1) / (math.exp(-3) + math.exp(-1) + math.exp(-2)))
    assert labels[2].confidence == pytest.approx(1 / 3)
    assert {(lab.abstained, lab.raw) for lab in labels} == {(False, "")}
    assert teacher.generate_calls == []


def test_unknown_mode_is_an_error(task: ClassificationTask) -> None:
    with pytest.raises(ValueError) as exc:
        run(task, ScriptedTeacher({}), items("a"), mode="vote")
    assert str(exc.value) == "mode must be 'generate' or 'score' (got 'vote')"


def test_order_is_preserved_across_batches(task: ClassificationTask) -> None:
    texts = [f"t{i}" for i in range(7)]
    replies = {t: LABELS[i % 3] for i, t in enumerate(texts)}
    teacher = ScriptedTeacher(replies, scores={t: [0.0, 0.0, 0.0] for t in texts}, batch_size=3)
    labels = run(task, teacher, items(*texts))
    assert [lab.example_id for lab in labels] == [f"u{i}" for i in range(7)]
    assert [lab.label for lab in labels] == [LABELS[i % 3] for i in range(7)]
    assert [[text_of(p) for p in call] for call in teacher.generate_calls] == [texts[0:3], texts[3:6], texts[6:]]
    assert [[text_of(p) for p in call] for call, _ in teacher.score_calls] == [texts[0:3], texts[3:6], texts[6:]]


def test_no_items(task: ClassificationTask) -> None:
    teacher = ScriptedTeacher({})
    assert run(task, teacher, []) == []
    assert teacher.generate_calls == []


def test_prompt_id_is_the_hash_of_the_prompt_and_stable(task: ClassificationTask) -> None:
    teacher = ScriptedTeacher({"a": "positive", "b": "positive"}, scores={"a": [0.0] * 3, "b": [0.0] * 3})
    first = run(task, teacher, items("a", "b"))
    again = run(task, teacher, items("a", "b"))
    assert [lab.prompt_id for lab in first] == [lab.prompt_id for lab in again]
    prompt = task.render("a", SHOTS)
    assert first[0].prompt_id == prompt_id(prompt) == hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]
    assert first[0].prompt_id != first[1].prompt_id
    other_shots = label_examples(task, teacher, items("a"), SHOTS[::-1], progress=False)
    assert other_shots[0].prompt_id != first[0].prompt_id


def test_label_round_trips_through_a_dict(task: ClassificationTask) -> None:
    teacher = ScriptedTeacher({"a": "positive", "b": "??"}, scores={"a": [0.0, 1.0, 0.0], "b": [0.0] * 3})
    for lab in run(task, teacher, items("a", "b")):
        assert TeacherLabel.from_dict(lab.to_dict()) == lab


# ---- the run's shots and the pool-quality report ------------------------------------------------


def labeled_set(n: int) -> tuple[Example, ...]:
    return tuple(Example(f"l{i}", f"text {i}", LABELS[i % 2]) for i in range(n))


def run_cfg(**task: object):
    return parse_config({"data": {"train": "/t", "test": "/s"}, "task": task, "seed": 3})


@pytest.mark.parametrize("n_labeled, task_cfg, n_shots", [(10, {}, 10), (10, {"max_shots": 4}, 4),
                                                          (10, {"shots": 3}, 3), (10, {"shots": 0}, 0),
                                                          (2, {"shots": 5}, 2)],
                         ids=["all", "capped", "shots", "zero", "more-than-labeled"])
def test_choose_shots(n_labeled: int, task_cfg: dict, n_shots: int) -> None:
    labeled = labeled_set(n_labeled)
    shots = choose_shots(labeled, run_cfg(**task_cfg))
    assert len(shots) == n_shots and set(shots) <= set(labeled)
    assert choose_shots(labeled, run_cfg(**task_cfg)) == shots  # fixed for the run


def test_pool_quality_counts_abstentions_as_wrong() -> None:
    vault = GoldVault({"a": "positive", "b": "negative", "c": "positive", "d": "neutral"})
    labels = [TeacherLabel("a", "positive", 0.9, False), TeacherLabel("b", "positive", 0.6, False),
              TeacherLabel("c", None, None, True), TeacherLabel("d", "neutral", 0.5, False)]
    assert pool_quality(labels, vault) == {
        "pool size": 4,
        "abstentions": 1,
        "pseudo-label accuracy (answered)": 2 / 3,
        "pseudo-label accuracy (all, abstention = wrong)": 0.5,
    }
    assert pool_quality([TeacherLabel("a", None, None, True)], vault)["pseudo-label accuracy (answered)"] == 0.0
    assert pool_quality([], vault) == {}


class SmallContext(fakes.ScriptedTeacher):
    """A teacher with a context of ``limit`` tokens (a token a word), as llama.cpp checks it."""

    def __init__(self, limit: int, **kw: Any) -> None:
        super().__init__(lambda text: "positive" if "good" in text else "negative", **kw)
        self.limit = limit

    @property
    def context_tokens(self) -> int:
        return self.limit

    def generate(self, prompts: Sequence[str], *, max_tokens: int, **kw: Any) -> list[Reply]:
        from llmkd.errors import PromptTooLong

        for p in prompts:
            if self.count_tokens(p) + max_tokens > self.limit:
                raise PromptTooLong(self.count_tokens(p), max_tokens, self.limit)
        return super().generate(prompts, max_tokens=max_tokens, **kw)


def test_an_over_long_input_abstains_with_its_reason_and_labeling_goes_on(task: ClassificationTask,
                                                                            tmp_path: Any) -> None:
    from llmkd.teachers.cache import CachedTeacher, TeacherCache

    teacher = CachedTeacher(SmallContext(60, batch_size=4), TeacherCache(tmp_path / "c.sqlite"))
    items = [Unlabeled("a", "a good film"), Unlabeled("b", "word " * 80), Unlabeled("c", "a bad film"),
             Unlabeled("d", "good")]
    labels = label_examples(task, teacher, items, (), mode="generate", confidence=False, progress=False)
    assert [lab.label for lab in labels] == ["positive", None, "negative", "positive"]
    assert labels[1].abstained and labels[1].error.startswith("too_long: ") and "teacher.n_ctx=60" in labels[1].error
    again = label_examples(task, teacher, items, (), mode="generate", confidence=False, progress=False)
    assert [lab.label for lab in again] == [lab.label for lab in labels]
    assert len(teacher.teacher.generate_calls) == 3  # the 3 answers were cached; a rerun asks for none


def test_demonstrations_are_fitted_to_the_context_evenly_with_a_warning(task: ClassificationTask, caplog: Any) -> None:
    from llmkd.labeling import fit_shots

    shots = tuple(Example(f"s{i}", ("good " if i % 3 else "bad ") + "long words here " * 10, "pos" if i % 3 else "neg")
                  for i in range(12))
    teacher = SmallContext(400)
    kept = fit_shots(task, teacher, shots, max_tokens=8, texts=["a short review"] * 10)
    assert 0 < len(kept) < len(shots)
    assert teacher.count_tokens(task.render("", kept)) <= 400 - 8 - 5
    assert [e.id for e in kept] == [e.id for e in shots if e in kept]  # order kept
    assert {e.label for e in shots if e not in kept} == {"pos"}  # the larger class (8 of 12) gave way first
    assert f"holds {len(kept)} of the 12 demonstrations" in caplog.text
    assert fit_shots(task, SmallContext(100_000), shots, max_tokens=8, texts=["x"]) == shots  # all fit: no change
    assert fit_shots(task, fakes.ScriptedTeacher({}), shots, max_tokens=8, texts=["x"]) == shots  # context unknown


def test_demonstrations_per_query_are_fitted_by_the_longest_draw(task: ClassificationTask, caplog: Any) -> None:
    from llmkd.labeling import Demonstrations, fit_demonstrations

    labeled = tuple(Example(f"s{i}", "good " + "word " * (2 + 3 * i), "pos") for i in range(12))
    teacher = SmallContext(200)
    fitted = fit_demonstrations(task, teacher, Demonstrations(labeled, k=8, seed=5), max_tokens=8, texts=["a review"])
    assert fitted.examples == labeled and fitted.seed == 5 and 0 < fitted.k < 8
    longest = sorted(labeled, key=lambda e: len(e.text), reverse=True)
    assert teacher.count_tokens(task.render("", longest[:fitted.k])) <= 200 - 8 - 3  # the longest draw fits
    assert teacher.count_tokens(task.render("", longest[:fitted.k + 1])) > 200 - 8 - 3  # and no more
    assert f"holds {fitted.k} of the 8 demonstrations per query" in caplog.text
    roomy = Demonstrations(labeled, k=8)
    assert fit_demonstrations(task, SmallContext(100_000), roomy, max_tokens=8, texts=["x"]) == roomy
    fixed = fit_demonstrations(task, teacher, Demonstrations(labeled), max_tokens=8, texts=["a review"])
    assert fixed == Demonstrations(fit_shots_of(task, teacher, labeled))  # fixed: fit_shots, as before


def fit_shots_of(task: ClassificationTask, teacher: Any, shots: tuple[Example, ...]) -> tuple[Example, ...]:
    from llmkd.labeling import fit_shots

    return fit_shots(task, teacher, shots, max_tokens=8, texts=["a review"])


def test_all_labels_at_minus_inf_is_an_abstention_never_the_first_label(task: ClassificationTask) -> None:
    inf = float("-inf")
    teacher = ScriptedTeacher({"x": "positive", "y": "positive"}, scores={"x": [inf, inf, inf], "y": [-2.0, -0.1, -3.0]})
    labels = run(task, teacher, items("x", "y"), mode="score")
    assert labels[0].abstained and labels[0].label is None and labels[0].error.startswith("no_score")
    assert labels[1].label == "positive"
    gen = run(task, teacher, items("x"), mode="generate", confidence=True)
    assert gen[0].label == "positive" and gen[0].probs is None  # the parsed reply stands; no made-up probabilities
