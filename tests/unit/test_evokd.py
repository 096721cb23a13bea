"""EvoKD without model loading: parsing of generated samples, hygiene (validation, dedupe, leak
guard), and the loop itself with a scripted teacher and a memorising fake student (budgets,
re-asks, replay, stop reasons, resumption)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from llmkd.config import ConfigError
from llmkd.methods import METHODS, LabelSettings, RunContext, TrainSettings
from llmkd.methods.evokd import EvoKD
from llmkd.synthesis import Generated, HygieneCounts, SampleFilter, ngram_embed, parse_generated, validate_label, validate_text
from llmkd.tasks.classification import ClassificationTask
from llmkd.types import Example, Prediction, Reply
from tests import fakes

LABELS = ["negative", "positive"]
NER_TYPES = ["location", "miscellaneous", "organization", "person"]


# -- parsing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, kinds, expected", [
    ("HARD: The plot was thin but I loved it.\nEASY: A wonderful film.",
     ("hard", "easy"), [("The plot was thin but I loved it.", "hard"), ("A wonderful film.", "easy")]),
    ("Here are the texts:\n1. HARD: Not bad at all.\n2. [easy] Terrible acting.\n3) Easy - \"Great fun.\"",
     ("hard", "easy"), [("Not bad at all.", "hard"), ("Terrible acting.", "easy"), ("Great fun.", "easy")]),
    ("Hard examples:\n- I expected more, yet it works.\n\nEasy examples:\n- Boring.\n- A joy to watch.",
     ("hard", "easy"), [("I expected more, yet it works.", "hard"), ("Boring.", "easy"), ("A joy to watch.", "easy")]),
    ("EASY: A lovely story (positive)\nHARD: Dull, yet oddly moving - Label: positive",
     ("hard", "easy"), [("A lovely story", "easy"), ("Dull, yet oddly moving", "hard")]),
    ("TEXT: What is the capital of Peru?\nTEXT: Who wrote Hamlet?", ("plain",),
     [("What is the capital of Peru?", "plain"), ("Who wrote Hamlet?", "plain")]),
    ("HARD: mixed feelings here", ("plain",), [("mixed feelings here", "plain")]),
    # Qwen-0.5B repeats the tag the prompt asked for
    ("TEXT: TEXT: The plot is thin.\nHARD: Easy: Not bad.", ("hard", "easy"),
     [("The plot is thin.", "plain"), ("Not bad.", "hard")]),
    ("1. A great ride.\n2. Awful.", ("hard", "easy"), [("A great ride.", "plain"), ("Awful.", "plain")]),
    # Qwen-1.5B's shape: a bare "HARD:" header, then untagged lines with the label appended
    ("HARD:\nThe story was unoriginal. (label: negative)\n\nEASY:\nA thrilling ride. (label: positive)",
     ("hard", "easy"), [("The story was unoriginal.", "hard"), ("A thrilling ride.", "easy")]),
    # NER: Qwen-1.5B copies the examples' "(entities: ...)" list onto its sentences, closed or cut off;
    # "entity:" inside a sentence stays
    ("HARD: The Earth's rotation period is 23.9 hours. (entities: location: Earth; miscellaneous: X)\n"
     "EASY: Apple opened a store in Paris (entities: organization: Apple\n"
     "EASY: Sales rose in Oslo. Entities: location: Oslo\nHARD: The entity: Bob said so.",
     ("hard", "easy"), [("The Earth's rotation period is 23.9 hours.", "hard"), ("Apple opened a store in Paris", "easy"),
                        ("Sales rose in Oslo.", "easy"), ("The entity: Bob said so.", "hard")]),
    # ... or the "sentence - type: spans" shape in which its own analysis quoted samples (round 2+);
    # a label word inside the sentence ("organization" below) and hyphenated words stay
    ("HARD: The company is launching new products . - organization: The company; products\n"
     "EASY: The new park opened in downtown . (location: downtown)\n"
     "EASY: A charity organization opened in a non-person: friendly town - person: Bob",
     ("hard", "easy"), [("The company is launching new products .", "hard"),
                        ("The new park opened in downtown .", "easy"),
                        ("A charity organization opened in a non-person: friendly town", "easy")]),
    ("I think the classifier is weak on sarcasm.", ("hard", "easy"), []),
    ("", ("hard", "easy"), []),
])
def test_parse_generated(raw: str, kinds: tuple[str, ...], expected: list[tuple[str, str]]) -> None:
    assert parse_generated(raw, kinds=kinds, labels=LABELS + NER_TYPES) == [Generated(t, k) for t, k in expected]


@pytest.mark.parametrize("text, reason", [
    ("A fine film.", None), ("", "invalid: empty"), ("<text>", "invalid: placeholder"),
    ("Good", "invalid: fewer than 2 words"), ("word " * 61, "invalid: more than 60 words"),
])
def test_validate_text(text: str, reason: str | None) -> None:
    assert validate_text(text, min_words=2, max_words=60) == reason


def test_validate_label_classification_and_ner_spans() -> None:
    assert validate_label("positive", LABELS) is None
    assert validate_label("neutral", LABELS) == "bad_label"
    assert validate_label(None, LABELS) == "abstained"
    text = "Angela Merkel visited Paris ."
    assert validate_label([{"text": "Angela Merkel", "label": "PER"}, ("Paris", "LOC")], ["PER", "LOC"], text) is None
    assert validate_label([{"text": "Berlin", "label": "LOC"}], ["PER", "LOC"], text) == "bad_span"
    assert validate_label([{"text": "Paris", "label": "CITY"}], ["PER", "LOC"], text) == "bad_label"
    assert validate_label([], ["PER", "LOC"], text) is None  # a sentence without entities is valid


# -- dedupe and leak guard ----------------------------------------------------------------------

def test_filter_exact_near_dup_and_leak() -> None:
    filt = SampleFilter(embed=ngram_embed, protected=["The acting in this movie was absolutely superb and moving ."],
                        known=["A gold seed sentence about a film ."], near_dup=0.9, leak=0.95, leak_ngram=5)
    texts = [
        "a gold seed sentence, about a film!",                   # exact dup of the seed (normalised)
        "The acting in this movie was absolutely superb.",       # shares a 5-word run with a test text
        "The acting in this movie was absolutely superb and moving",  # same normalised text as a test text
        "An entirely new review of a bad sequel.",               # kept
        "An entirely new review of a bad sequel!!",              # exact dup of the previous one in the batch
        "An entirely new review of the bad sequel.",             # near-duplicate of it
        "Completely different words here, about cooking pasta.",  # kept
    ]
    assert filt.check_batch(texts) == ["exact_dup", "leak", "leak", None, "exact_dup", "near_dup", None]
    filt.accept([texts[3], texts[6]])
    assert filt.check_batch(["An entirely new review of a bad sequel"]) == ["exact_dup"]


def test_filter_embedding_leak_without_shared_ngrams() -> None:
    def embed(texts: Sequence[str]) -> np.ndarray:  # every text about "cats" points the same way
        return np.array([[1.0, 0.0] if "cat" in t else [0.0, 1.0] for t in texts])

    filt = SampleFilter(embed=embed, protected=["my cat is cute"], near_dup=0.99, leak=0.9, leak_ngram=0)
    assert filt.check_batch(["the cat sleeps", "a dog barks"]) == ["leak", None]


def test_hygiene_counts_dict() -> None:
    c = HygieneCounts(generated=5, kept=2)
    c.dropped.update({"leak": 1, "near_dup": 2})
    d = c.to_dict()
    assert d["dropped"]["leak"] == 1 and d["dropped"]["near_dup"] == 2 and d["dropped_total"] == 3
    assert set(d["dropped"]) == {"unparseable", "invalid", "abstained", "bad_label", "bad_span", "exact_dup",
                                 "near_dup", "leak"}


# -- the loop with scripted parts -----------------------------------------------------------------

class ScriptedTeacher:
    """Analysis prompts get a canned analysis; generation prompts get numbered HARD/EASY lines
    (unique per seed) -- or garbage for the first ``garbage`` generation calls; labeling prompts
    are answered by keyword ("good" -> positive)."""

    name = "scripted"
    fingerprint = "scripted"
    batch_size = 1

    def __init__(self, garbage: int = 0) -> None:
        self.garbage = garbage
        self.prompts: list[tuple[str, str, int]] = []

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0) -> list[Reply]:
        out = []
        for p in prompts:
            if p.startswith("A small text classifier"):
                kind, text = "analysis", "The classifier misses negated praise such as 'not good' and sarcasm."
            elif p.startswith("We are collecting"):
                kind = "generate"
                if self.garbage > 0:
                    self.garbage -= 1
                    text = "Sure! I can help with that."
                else:
                    tag = "TEXT" if "TEXT: " in p else None
                    lines = []
                    for i in range(4):
                        t = tag or ("HARD" if i % 2 == 0 else "EASY")
                        word = "good" if i < 2 else "awful"
                        lines.append(f"{t}: review {seed} number {i} was {word} in its own way")
                    lines.append("EASY: <text>")  # a placeholder, dropped as invalid
                    text = "\n".join(lines)
            else:
                kind = "label"
                last = p.rsplit("Text:", 1)[-1]
                text = "unsure" if "number 3" in last else ("positive" if "good" in last else "negative")
            self.prompts.append((kind, p, seed))
            out.append(Reply(text=text, prompt_tokens=len(p.split()), completion_tokens=len(text.split())))
        return out

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        return [[-1.0] * len(options) for _ in prompts]


class MemoStudent(fakes.MemoStudent):
    """Remembers the labels of the texts it trained on; predicts 'negative' for anything else."""

    labels = tuple(LABELS)

    def fallback(self, text: str) -> str:
        return "negative"


def make_ctx(tmp_path: Path, teacher: Any) -> RunContext:
    labeled = (Example("g1", "a good film overall", "positive"), Example("g2", "an awful film overall", "negative"))
    dev = (Example("d1", "good times at the cinema", "positive"), Example("d2", "dull and slow", "negative"))
    test = (Example("t1", "review 99 number 0 was good in its own way", "positive"),
            Example("t2", "bad", "negative"))
    task = ClassificationTask(labels=LABELS, instruction="Classify the sentiment of the movie review.")
    return RunContext(task=task, teacher=teacher, student_factory=lambda seed: MemoStudent(),
                      student_loader=MemoStudent.load, labeled=labeled, pool=(), dev=dev, test=test, shots=labeled,
                      workdir=tmp_path, seed=0, train=TrainSettings(epochs=1, patience=1, min_steps=1, batch_size=4),
                      labeling=LabelSettings(mode="generate", confidence=False, max_tokens=4), progress=False,
                      embedder=fakes.ngram_embedder)


OPTS = dict(rounds=3, n_hard=2, n_easy=2, gen_calls_per_round=1, embedder="ngram", patience=0, leak_ngram=0, leak=0.99)


def test_loop_runs_rounds_counts_samples_and_records_the_analysis(tmp_path: Path) -> None:
    teacher = ScriptedTeacher()
    ctx = make_ctx(tmp_path, teacher)
    res = EvoKD(**OPTS).run(ctx)
    rounds = res.extra["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert res.stop_reason == "all 3 rounds done"
    for r in rounds:
        c = r["counts"]
        # 4 lines in the asked format (the placeholder line is beyond the 2 + 2 asked for)
        assert c["generated"] == 4
        assert c["dropped"]["abstained"] == 1  # "number 3" is answered "unsure": an abstention, never a label
        assert c["kept"] == 3 and c["kept"] + sum(c["dropped"].values()) == c["generated"]
        assert r["n_new"] == 3
    # round 1 is the plain batch (no analysis); rounds 2-3 analyse the student's errors
    assert [r["plain"] for r in rounds] == [True, False, False] and rounds[0]["analysis"] == ""
    assert all("negated praise" in r["analysis"] for r in rounds[1:])
    assert rounds[0]["n_replay"] == 0 and rounds[1]["n_replay"] == 3 and rounds[2]["n_replay"] == 6
    # the test text "review 99 ..." is never generated here; labels are kept with provenance
    assert {lab.stage for lab in res.labels} == {"evokd-round1", "evokd-round2", "evokd-round3"}
    assert len(res.labels) == 9 and res.extra["n_train"] == 11
    # a separate labeling call per kept sample, and the analysis saw wrong AND right samples
    kinds = [k for k, _, _ in teacher.prompts]
    assert kinds.count("analysis") == 2 and kinds.count("generate") == 3 and kinds.count("label") == 12
    second_analysis = [p for k, p, _ in teacher.prompts if k == "analysis"][1]
    assert "got WRONG" in second_analysis and "got RIGHT" in second_analysis
    assert "Round 2:" in second_analysis  # the earlier analysis is shown (history)
    _, rendered = fakes.write_like_a_run(ctx, res)  # the files a run writes (llmkd.report)
    assert (tmp_path / "synthetic.jsonl").exists() and (tmp_path / "learning_curve.svg").read_text().startswith("<svg")
    logged = [json.loads(x) for x in (tmp_path / "synthetic.jsonl").read_text().splitlines()]
    assert any(x["status"] != "kept" for x in logged) and all(x["round"] in (1, 2, 3) for x in logged)  # dropped too
    md = rendered.sections[0]
    assert "| round | dev | generated | kept |" in md and "negated praise" in md
    # distinct sampling seeds per round, so the cache returns new samples each round
    seeds = [s for k, _, s in teacher.prompts if k == "generate"]
    assert len(set(seeds)) == 3


def test_round_one_plain_batch_feeds_real_mistakes_into_the_first_analysis(tmp_path: Path) -> None:
    """The seed student is judged on a plain batch it never trained on, so the first analysis
    sees its mistakes on new texts; without the plain round it sees only the seeds it fits."""
    teacher = ScriptedTeacher()
    res = EvoKD(**{**OPTS, "rounds": 2}).run(make_ctx(tmp_path / "plain", teacher))
    r1, r2 = res.extra["rounds"]
    gens = [p for k, p, _ in teacher.prompts if k == "generate"]
    assert "TEXT: " in gens[0] and "weaknesses" not in gens[0]   # round 1: the no-feedback prompt
    assert "HARD: " in gens[1] and "negated praise" in gens[1]   # round 2: conditioned on the analysis
    first = [p for k, p, _ in teacher.prompts if k == "analysis"][0]
    # the memorising seed student says "negative" for any new text: round 1's "good" reviews
    # (labeled positive) are its mistakes, shown with its prediction
    wrong = first.split("got WRONG:", 1)[1].split("got RIGHT", 1)[0]
    assert "review 1009 number 0 was good" in wrong and "classifier said: negative" in wrong
    assert r2["feedback"]["wrong"] == 2 and r2["feedback"]["evaluated"] == 2 + 3  # 2 seeds + 3 kept samples
    assert r1["batch_accuracy_before_training"] == {"plain": pytest.approx(1 / 3)}
    assert [s["source"] for s in r2["feedback_shown"]["wrong"]] == ["synthetic", "synthetic"]
    assert all(s["pred"] == "negative" for s in r2["feedback_shown"]["wrong"])

    teacher = ScriptedTeacher()  # plain_first off: the first analysis sees only the seeds, all right
    EvoKD(**{**OPTS, "rounds": 1, "plain_first": False}).run(make_ctx(tmp_path / "seeds", teacher))
    first = [p for k, p, _ in teacher.prompts if k == "analysis"][0]
    assert "got WRONG" not in first and "got every text it was tested on right" in first


def test_plain_round_is_the_nofeedback_round_one(tmp_path: Path) -> None:
    """EvoKD's round 1 sends the very prompts (and seeds) of synth_nofeedback's round 1, so the
    two rows share it (from the cache) and differ only from the first analysis on."""
    a, b = ScriptedTeacher(), ScriptedTeacher()
    EvoKD(**{**OPTS, "rounds": 1}).run(make_ctx(tmp_path / "evo", a))
    METHODS["synth_nofeedback"].build({**OPTS, "rounds": 1}).run(make_ctx(tmp_path / "nofb", b))
    assert a.prompts == b.prompts


def test_per_round_budget_and_preset() -> None:
    from llmkd.methods.evokd import EvoKDOptions

    o = EvoKDOptions(per_round=7)
    assert (o.n_hard, o.n_easy, o.asked_per_round) == (3, 4, 7)
    p = EvoKDOptions(preset="paper")
    assert (p.rounds, p.n_hard + p.n_easy, p.patience) == (11, 30, 0)
    assert (p.rounds - 1) >= 10 and p.rounds * p.asked_per_round >= 300  # 10 feedback rounds, >= 300 samples
    assert EvoKDOptions(preset="paper", rounds=3, per_round=10).rounds * 10 == 30  # given options win
    assert EvoKDOptions(preset="paper", n_hard=2, n_easy=1).asked_per_round == 3
    with pytest.raises(ConfigError, match="per_round or n_hard"):
        METHODS["evokd"].build({"per_round": 10, "n_hard": 3})
    with pytest.raises(ConfigError, match="preset"):
        METHODS["evokd"].build({"preset": "huge"})


def test_per_round_sets_the_samples_asked_each_round(tmp_path: Path) -> None:
    teacher = ScriptedTeacher()
    opts = {k: v for k, v in OPTS.items() if k not in ("n_hard", "n_easy")}
    res = EvoKD(**{**opts, "rounds": 2, "per_round": 3}).run(make_ctx(tmp_path, teacher))
    gens = [p for k, p, _ in teacher.prompts if k == "generate"]
    assert "Write 3 new, realistic" in gens[0] and "Write 1 HARD new texts" in gens[1] and "and 2 EASY" in gens[1]
    assert [r["counts"]["generated"] for r in res.extra["rounds"]] == [3, 3]


def test_feedback_option_turns_evokd_into_the_nofeedback_baseline(tmp_path: Path) -> None:
    teacher = ScriptedTeacher()
    res = METHODS["evokd"].build({**OPTS, "feedback": False}).run(make_ctx(tmp_path, teacher))
    kinds = [k for k, _, _ in teacher.prompts]
    assert "analysis" not in kinds and kinds.count("generate") == 3 and res.extra["feedback"] is False
    assert all(r["plain"] for r in res.extra["rounds"]) and res.extra["hygiene"]["generated"] == 12


def test_grammar_option_constrains_generation_to_the_asked_lines(tmp_path: Path) -> None:
    from llmkd.methods.evokd import lines_grammar

    assert lines_grammar({"hard": 3, "easy": 1}) == 'root ::= ("HARD: " text "\\n"){3} ("EASY: " text "\\n")\ntext ::= [^\\n]+\n'

    class Recording(ScriptedTeacher):
        constraints: list = []

        def generate(self, prompts, *, max_tokens, temperature=0.0, stop=(), seed=0, constraint=None):
            self.constraints.append(constraint)
            return super().generate(prompts, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed)

    teacher = Recording()
    EvoKD(**{**OPTS, "rounds": 2, "grammar": True}).run(make_ctx(tmp_path, teacher))
    gen = [c for (k, _, _), c in zip(teacher.prompts, teacher.constraints) if k == "generate"]
    assert [c.kind for c in gen] == ["grammar", "grammar"]
    assert '"TEXT: "' in gen[0].grammar and "{4}" in gen[0].grammar and '"HARD: "' in gen[1].grammar


def test_nofeedback_baseline_asks_no_analysis_and_plain_texts(tmp_path: Path) -> None:
    teacher = ScriptedTeacher()
    res = METHODS["synth_nofeedback"].build(OPTS).run(make_ctx(tmp_path, teacher))
    kinds = [k for k, _, _ in teacher.prompts]
    assert "analysis" not in kinds and kinds.count("generate") == 3
    gen = [p for k, p, _ in teacher.prompts if k == "generate"][0]
    assert "Write 4 new, realistic" in gen and "weaknesses" not in gen
    assert res.extra["hygiene"]["generated"] == 12 and res.method == "synth_nofeedback"


def test_call_budget_is_respected_and_named(tmp_path: Path) -> None:
    teacher = ScriptedTeacher()
    res = EvoKD(**{**OPTS, "max_teacher_calls": 9}).run(make_ctx(tmp_path, teacher))
    assert len(teacher.prompts) <= 9
    assert res.extra["teacher_calls_used"] <= 9
    assert res.stop_reason.startswith("budget: max_teacher_calls=9")
    # round 1 (plain): generation + 4 labels = 5 calls; round 2: analysis + generation, then labels only 2 of its 4 texts
    assert [r["n_new"] for r in res.extra["rounds"]] == [3, 2]


def test_token_budget_stops_the_loop(tmp_path: Path) -> None:
    res = EvoKD(**{**OPTS, "max_teacher_tokens": 50}).run(make_ctx(tmp_path, ScriptedTeacher()))
    assert res.stop_reason.startswith("budget: max_teacher_tokens=50")
    assert len(res.extra["rounds"]) == 1


def test_unparseable_reply_is_reasked_with_the_error(tmp_path: Path) -> None:
    teacher = ScriptedTeacher(garbage=1)
    res = EvoKD(**{**OPTS, "rounds": 1}).run(make_ctx(tmp_path, teacher))
    gens = [(p, s) for k, p, s in teacher.prompts if k == "generate"]
    assert len(gens) == 2
    assert "had no line in the asked format" in gens[1][0] and gens[0][1] != gens[1][1]
    c = res.extra["rounds"][0]["counts"]
    assert c["dropped"]["unparseable"] == 1 and c["kept"] == 3


def test_reask_is_bounded(tmp_path: Path) -> None:
    teacher = ScriptedTeacher(garbage=100)
    res = EvoKD(**{**OPTS, "rounds": 1, "max_reasks": 2}).run(make_ctx(tmp_path, teacher))
    assert [k for k, _, _ in teacher.prompts].count("generate") == 3
    assert res.extra["rounds"][0]["counts"]["dropped"]["unparseable"] == 3
    assert res.extra["rounds"][0]["n_new"] == 0


def test_dedupe_across_rounds_and_leak_guard(tmp_path: Path) -> None:
    class Repeating(ScriptedTeacher):  # writes the same texts every round, one of them a test text
        def generate(self, prompts, *, max_tokens, temperature=0.0, stop=(), seed=0):
            return super().generate(prompts, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=99)

    res = EvoKD(**{**OPTS, "rounds": 2}).run(make_ctx(tmp_path, Repeating()))
    r1, r2 = (r["counts"] for r in res.extra["rounds"])
    assert r1["dropped"]["leak"] == 1          # "review 99 number 0 ..." is a test text
    assert r2["dropped"]["exact_dup"] == 2     # both texts kept in round 1 come again
    assert r2["dropped"]["abstained"] == 1 and r2["kept"] == 0  # the abstained one was never kept
    assert res.extra["hygiene"]["dropped"]["leak"] == 2


def test_plateau_stops_early(tmp_path: Path) -> None:
    # the dev score cannot move (the memorising student never sees dev texts): stop after `patience` rounds
    res = EvoKD(**{**OPTS, "rounds": 5, "patience": 2}).run(make_ctx(tmp_path, ScriptedTeacher()))
    assert res.stop_reason == "dev plateau: no gain in 2 rounds"
    assert len(res.extra["rounds"]) == 2


def test_resume_continues_after_the_last_finished_round(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, ScriptedTeacher())
    EvoKD(**{**OPTS, "rounds": 1}).run(ctx)
    state = json.loads((tmp_path / "state.json").read_text())
    assert len(state["rounds"]) == 1
    # pretend the run was killed after round 1 of 3: same options, stop reason cleared
    state["options"]["rounds"] = 3
    state["stop_reason"] = None
    (tmp_path / "state.json").write_text(json.dumps(state))
    teacher = ScriptedTeacher()
    res = EvoKD(**OPTS).run(make_ctx(tmp_path, teacher))
    assert [r["round"] for r in res.extra["rounds"]] == [1, 2, 3]
    assert [k for k, _, _ in teacher.prompts].count("generate") == 2  # rounds 2 and 3 only


def test_options_are_validated_with_the_field_path() -> None:
    with pytest.raises(ConfigError, match=r"method_options\.evokd\.rounds"):
        METHODS["evokd"].build({"rounds": 0})
    with pytest.raises(ConfigError, match=r"method_options\.synth_nofeedback\.replay"):
        METHODS["synth_nofeedback"].build({"replay": 1.5})
    with pytest.raises(ConfigError, match="unknown field"):
        METHODS["evokd"].build({"round": 3})


# -- NER ------------------------------------------------------------------------------------------

class ScriptedNerTeacher(ScriptedTeacher):
    """Writes news sentences; labels 'Merkel' as PER, 'Paris' as LOC, and hallucinates 'Berlin'
    (not in the sentence) for sentences about Rome."""

    def generate(self, prompts, *, max_tokens, temperature=0.0, stop=(), seed=0):
        out = []
        for p in prompts:
            if p.startswith("A small named-entity tagger"):
                kind, text = "analysis", "The tagger misses locations after prepositions and long person names."
            elif p.startswith("We are collecting"):
                kind = "generate"
                text = (f"HARD: Angela Merkel met officials in Paris on day {seed}.\n"
                        f"EASY: Crowds gathered in Paris for event {seed}.\n"
                        f"HARD: Talks in Rome ended late on day {seed}.\n"
                        f"EASY: Nothing happened on day {seed} at all.")
            else:
                kind = "label"
                sent = p.rsplit("Sentence:", 1)[-1]
                lines = (["PER: Angela Merkel"] if "Merkel" in sent else []) + (["LOC: Paris"] if "Paris" in sent else [])
                lines += ["LOC: Berlin"] if "Rome" in sent else []
                text = "\n".join(lines) or "none"
            self.prompts.append((kind, p, seed))
            out.append(Reply(text=text, prompt_tokens=len(p.split()), completion_tokens=len(text.split())))
        return out


class MemoTagger(MemoStudent):
    labels = ("PER", "LOC")

    def predict(self, examples):
        return [Prediction(tuple(self.memory.get(e.text, ("O",) * len(e.text.split()))), {}) for e in examples]

    def fit_epoch(self, examples, weights=None):
        self.memory.update({e.text: list(e.label) for e in examples})
        self.epochs += 1
        return 0.1


def test_ner_loop_tokenizes_validates_spans_and_keeps_tags(tmp_path: Path) -> None:
    from llmkd.tasks.ner import NerTask

    task = NerTask(labels=["PER", "LOC"])
    labeled = (Example("g1", "Angela Merkel spoke .", ("B-PER", "I-PER", "O", "O")),
               Example("g2", "Rain fell on Paris .", ("O", "O", "O", "B-LOC", "O")))
    dev = (Example("d1", "Paris is busy .", ("B-LOC", "O", "O", "O")),)
    ctx = RunContext(task=task, teacher=ScriptedNerTeacher(), student_factory=lambda seed: MemoTagger(),
                     student_loader=MemoTagger.load, labeled=labeled, pool=(), dev=dev, test=dev, shots=labeled,
                     workdir=tmp_path, seed=0, train=TrainSettings(epochs=1, patience=1, min_steps=1, batch_size=4),
                     labeling=LabelSettings(mode="generate", confidence=False, max_tokens=32), progress=False,
                     embedder=fakes.ngram_embedder)
    res = EvoKD(**{**OPTS, "rounds": 2}).run(ctx)
    c = res.extra["rounds"][0]["counts"]
    assert c["generated"] == 4 and c["dropped"]["bad_span"] == 1 and c["kept"] == 3  # "Berlin" is not in the text
    rows = res.records["synthetic"]
    kept = {r["text"]: r["label"] for r in rows if r["status"] == "kept" and r["round"] == 1}
    first = next(t for t in kept if "Merkel" in t)
    assert first.endswith(" .") and first.split()[-2] == "1009"  # CoNLL-style tokens: "... day 1009 ."
    assert list(kept[first][:2]) == ["B-PER", "I-PER"] and kept[first][first.split().index("Paris")] == "B-LOC"
    assert all(len(lab) == len(t.split()) for t, lab in kept.items())
    analysis = [p for k, p, _ in ctx.teacher.prompts if k == "analysis"][0]  # round 2's, on round 1's batch
    assert "PER: Angela Merkel; LOC: Paris" in analysis  # NER labels shown as "type: text" lists


def test_only_synthesizing_tasks_and_an_embedder_are_accepted(tmp_path: Path) -> None:
    from llmkd.tasks.base import Synthesizes
    from llmkd.tasks.seq2seq import Seq2SeqTask

    task = Seq2SeqTask(target="tree")
    assert not isinstance(task, Synthesizes)
    with pytest.raises(ValueError, match="classification and NER tasks.*Seq2SeqTask"):
        EvoKD(**OPTS).run(dataclasses.replace(make_ctx(tmp_path / "s2s", ScriptedTeacher()), task=task))
    teacher = ScriptedTeacher()
    with pytest.raises(ValueError, match="RunContext.embedder"):
        EvoKD(**OPTS).run(dataclasses.replace(make_ctx(tmp_path / "none", teacher), embedder=None))
    assert not teacher.prompts  # refused before asking the teacher anything


def test_a_line_cut_at_max_tokens_is_dropped(tmp_path: Path) -> None:
    class Cut(ScriptedTeacher):
        def generate(self, prompts, *, max_tokens, temperature=0.0, stop=(), seed=0):
            out = super().generate(prompts, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed)
            if self.prompts[-1][0] == "generate":  # the reply ran out of tokens in the middle of its last line
                out = [Reply(text="\n".join(out[0].text.splitlines()[:3]) + "\nEASY: A thrilling ride from start (lab",
                             finish_reason="length")]
            return out

    res = EvoKD(**{**OPTS, "rounds": 1}).run(make_ctx(tmp_path, Cut()))
    rows = res.records["synthetic"]
    assert res.extra["rounds"][0]["counts"]["generated"] == 3  # the cut 4th line is not a sample
    assert not any("thrilling" in r["text"] for r in rows)


def test_cap_shares_a_call_out_over_the_kinds() -> None:
    from llmkd.methods.evokd import _cap

    assert _cap({"hard": 25, "easy": 25}, 10) == {"hard": 5, "easy": 5}
    assert _cap({"hard": 1, "easy": 25}, 10) == {"hard": 1, "easy": 9}
    assert _cap({"hard": 3, "easy": 2}, 10) == {"hard": 3, "easy": 2}
    assert _cap({"plain": 30}, None) == {"plain": 30}


def test_max_per_call_splits_a_round_into_several_calls(tmp_path: Path) -> None:
    # 6 samples wanted, at most 2 a call: up to 3 calls (gen_calls_per_round=1 per chunk), each asking for 2
    teacher = ScriptedTeacher()
    res = EvoKD(**{**OPTS, "rounds": 1, "n_hard": 3, "n_easy": 3, "max_per_call": 2,
                            "plain_first": False}).run(make_ctx(tmp_path, teacher))
    gens = [p for k, p, _ in teacher.prompts if k == "generate"]
    assert len(gens) == 3
    assert all("Write 1 HARD new texts" in p and "and 1 EASY new texts" in p for p in gens)
    c = res.extra["rounds"][0]["counts"]
    assert c["generated"] == 6  # the scripted teacher writes 4 lines a call; 2 are taken
    assert len({s for k, _, s in teacher.prompts if k == "generate"}) == 3  # a fresh sample per call


def test_a_small_round_trains_at_least_min_steps(tmp_path: Path) -> None:
    """A round's training set of a few samples gets more epochs, so that the run's min_steps (or
    min_steps_per_round) optimizer steps happen: a tagger trained 3 epochs of 2 steps still tags
    everything O (docs/methods/evokd.md)."""
    ctx = dataclasses.replace(make_ctx(tmp_path / "a", ScriptedTeacher()),
                              train=TrainSettings(epochs=1, patience=1, min_steps=12, batch_size=4))
    rounds = EvoKD(**{**OPTS, "rounds": 2}).run(ctx).extra["rounds"]
    # round 1: 3 kept + 2 gold seeds = 5 examples = 2 steps an epoch -> 6 epochs; round 2: +3 replayed = 8 -> 6
    assert [(r["n_train_round"], r["epochs"]) for r in rounds] == [(5, 6), (8, 6)]
    ctx = dataclasses.replace(ctx, workdir=tmp_path / "b")
    rounds = EvoKD(**{**OPTS, "rounds": 2, "min_steps_per_round": 0}).run(ctx).extra["rounds"]
    assert [r["epochs"] for r in rounds] == [3, 3]  # epochs_per_round alone
