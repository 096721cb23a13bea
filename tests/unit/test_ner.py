"""NER task family without models: readers, IOB1->IOB2, the mention parser and aligner (table
driven, exact expected tags), confidence from logprobs, seqeval scores, splits and config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llmkd.build import build_task
from llmkd.config import parse_config
from llmkd.formats.conll import read_conll, read_seq_in_out, spans_from_tags, tags_from_spans, to_iob2
from llmkd.data import make_splits
from llmkd.errors import ConfigError, DataError, ParseError
from llmkd.labeling import label_examples
from llmkd.metrics import span_scores
from llmkd.tasks.ner import NerTask
from llmkd.types import Example, Reply, Span, TeacherLabel, Unlabeled
from tests.fakes import ScriptedTeacher, ner_text

TYPES = ["person", "location", "organization", "misc"]


@pytest.fixture
def task() -> NerTask:
    return NerTask(labels=TYPES, aliases={"org": "organization"})


# -- IOB -------------------------------------------------------------------------------------
@pytest.mark.parametrize("tags, expected", [
    (["I-PER", "I-PER", "O", "I-LOC"], ("B-PER", "I-PER", "O", "B-LOC")),       # IOB1 chunk starts
    (["I-PER", "B-PER", "O"], ("B-PER", "B-PER", "O")),                          # IOB1 touching entities
    (["B-PER", "I-PER", "I-LOC"], ("B-PER", "I-PER", "B-LOC")),                  # type change
    (["B-ORG", "I-ORG", "O", "B-ORG"], ("B-ORG", "I-ORG", "O", "B-ORG")),        # valid IOB2 unchanged
    (["O", "O"], ("O", "O")),
])
def test_to_iob2(tags, expected) -> None:
    assert to_iob2(tags) == expected


def test_iobes_is_rejected() -> None:
    with pytest.raises(ValueError, match="IOBES/BILOU are not supported"):
        to_iob2(["S-PER"])


def test_spans_and_tags_round_trip() -> None:
    tags = ("B-PER", "I-PER", "O", "B-LOC", "B-LOC")
    spans = spans_from_tags(tags, ["John", "Smith", "in", "Paris", "Texas"])
    assert spans == [Span(0, 2, "PER", "John Smith"), Span(3, 4, "LOC", "Paris"), Span(4, 5, "LOC", "Texas")]
    assert tags_from_spans(5, spans) == tags


# -- readers ---------------------------------------------------------------------------------
CONLL = """EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O

-DOCSTART- -X- O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
Smith NNP I-NP B-PER
"""


def test_read_conll_iob1_docstart_and_label_map(tmp_path: Path) -> None:
    path = tmp_path / "eng.train"
    path.write_text(CONLL)
    exs = read_conll(path, label_map={"PER": "person", "MISC": "O"}, prefix="train:")
    assert exs == [
        Example("train:1", "EU rejects German call", ("B-ORG", "O", "O", "O")),
        Example("train:8", "Peter Blackburn Smith", ("B-person", "I-person", "B-person")),
    ]


def test_read_conll_tab_separated_unicode(tmp_path: Path) -> None:
    path = tmp_path / "w.conll"
    path.write_text("Zoë\tB-person\nin\tO\nSão\tB-location\nPaulo\tI-location\n\n")
    assert read_conll(path) == [Example("1", "Zoë in São Paulo", ("B-person", "O", "B-location", "I-location"))]


def test_read_conll_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.conll"
    path.write_text("EU I-ORG\nrejects\n")
    with pytest.raises(DataError, match=r"bad.conll:2: expected a token and a tag"):
        read_conll(path)


def test_read_seq_in_out_and_star_map(tmp_path: Path) -> None:
    (tmp_path / "seq.in").write_text("fly from boston to denver\n")
    (tmp_path / "seq.out").write_text("O O B-fromloc.city_name O B-toloc.city_name \n")
    exs = read_seq_in_out(tmp_path, label_map={"*": "O"}, keep=["toloc.city_name"])
    assert exs == [Example("1", "fly from boston to denver", ("O", "O", "O", "O", "B-toloc.city_name"))]
    (tmp_path / "seq.out").write_text("O O B-x\n")
    with pytest.raises(DataError, match=r"seq.in:1: 5 tokens but seq.out line 1 has 3 tags"):
        read_seq_in_out(tmp_path)


# -- parsing and alignment -------------------------------------------------------------------
S = "Paris Hilton visited Paris and paris , Smith 's dog ."


@pytest.mark.parametrize("reply, expected, counts", [
    # exact; longest first: "Paris Hilton" wins, "Paris" takes the next free occurrence
    ("location: Paris\nperson: Paris Hilton",
     ("B-person", "I-person", "O", "B-location", "O", "O", "O", "O", "O", "O", "O"), {"kept": 2}),
    # repeated word named twice: both occurrences, in order; a third time: duplicate
    ("person: Paris Hilton\nlocation: Paris\nlocation: Paris\nlocation: Paris",
     ("B-person", "I-person", "O", "B-location", "O", "B-location", "O", "O", "O", "O", "O"),
     {"kept": 3, "duplicate": 1}),
    # case-insensitive match, type via alias and case
    ("ORG: SMITH", ("O",) * 7 + ("B-organization",) + ("O",) * 3, {"kept": 1, "case_matches": 1}),
    # loose: "Smith's" matches the tokens "Smith 's"; punctuation around the mention is stripped
    ("person: Smith's\n", ("O",) * 7 + ("B-person", "I-person", "O", "O"), {"kept": 1, "loose_matches": 1}),
    ('- **person**: "Paris Hilton".', ("B-person", "I-person") + ("O",) * 9, {"kept": 1, "loose_matches": 1}),
    # hallucinated mention and unknown type: dropped and counted
    ("person: Barack Obama\nanimal: dog\nperson: Smith",
     ("O",) * 7 + ("B-person",) + ("O",) * 3, {"kept": 1, "not_in_sentence": 1, "unknown_type": 1}),
    # overlap: the shorter mention has no free occurrence of its own
    ("person: Paris Hilton\norganization: Hilton", ("B-person", "I-person") + ("O",) * 9, {"kept": 1, "overlap": 1}),
    # several mentions on one line
    ("location: Paris, paris", ("B-location", "O", "O", "O", "O", "B-location") + ("O",) * 5, {"kept": 2}),
    # none
    ("none", ("O",) * 11, {"kept": 0, "mentions": 0}),
    ("None.", ("O",) * 11, {"kept": 0}),
    # JSON replies
    ('[{"text": "Smith", "type": "person"}]', ("O",) * 7 + ("B-person",) + ("O",) * 3, {"kept": 1}),
    ("[]", ("O",) * 11, {"kept": 0}),
    # every mention hallucinated: understood reply, all O (not an abstention)
    ("person: Nobody", ("O",) * 11, {"kept": 0, "not_in_sentence": 1}),
], ids=["longest-first", "repeated-word", "case+alias", "loose", "markdown", "hallucinated", "overlap",
        "comma-list", "none", "none-dot", "json", "json-empty", "all-dropped"])
def test_parse_reply_alignment(task: NerTask, reply: str, expected: tuple, counts: dict) -> None:
    tags, conf, meta = task.parse_reply(Reply(text=reply), S)
    assert tags == expected
    assert conf is None  # no logprobs
    for key, value in counts.items():
        assert meta[key] == value, key
    assert task.parse(reply, S) == expected


@pytest.mark.parametrize("reply", ["", "I am not sure.", "Entities:", "The sentence mentions Paris"])
def test_unparseable_reply_is_an_abstention(task: NerTask, reply: str) -> None:
    with pytest.raises(ParseError, match="one 'type: text' line per entity"):
        task.parse_reply(Reply(text=reply), S)


def test_truncated_last_line_is_dropped(task: NerTask) -> None:
    reply = Reply(text="person: Paris Hilton\nlocation: Par", finish_reason="length")
    tags, _, meta = task.parse_reply(reply, S)
    assert tags == ("B-person", "I-person") + ("O",) * 9
    assert (meta["truncated"], meta["mentions"]) == (1, 2)


def test_unicode_alignment(task: NerTask) -> None:
    text = "Zoë met the ＵＮ in São Paulo ’s centre"
    tags = task.parse("person: Zoë\norganization: UN\nlocation: São Paulo's", text)
    assert tags == ("B-person", "O", "O", "B-organization", "O", "B-location", "I-location", "I-location", "O")


def test_confidence_is_min_over_mentions(task: NerTask) -> None:
    reply = Reply(text="person: Paris Hilton\nlocation: Paris",
                  tokens=("person", ":", " Paris", " Hilton", "\n", "location", ":", " Paris"),
                  token_logprobs=(-0.1, 0.0, -0.2, 0.0, -1.0, -0.5, 0.0, -0.3))
    tags, conf, meta = task.parse_reply(reply, S)
    assert meta["spans"] == [[0, 2, "person", pytest.approx(math.exp(-0.3))],
                             [3, 4, "location", pytest.approx(math.exp(-0.8))]]
    assert conf == pytest.approx(math.exp(-0.8))
    none = Reply(text="none", tokens=("none",), token_logprobs=(-0.05,))
    assert task.parse_reply(none, S)[1] == pytest.approx(math.exp(-0.05))


def test_parse_needs_the_sentence(task: NerTask) -> None:
    with pytest.raises(TypeError, match=r"call parse\(raw, text\)"):
        task.parse("person: Smith")


def test_render_shows_types_descriptions_and_demonstrations() -> None:
    t = NerTask(labels=["person", "fromloc.city_name"], label_descriptions={"person": "names of people"})
    shots = [Example("a", "John flew from Boston", ("B-person", "O", "O", "B-fromloc.city_name")),
             Example("b", "hello there", ("O", "O"))]
    prompt = t.render("Mary left Denver", shots)
    assert "- person: names of people\n- fromloc.city_name: fromloc city name\n" in prompt
    assert "Sentence: John flew from Boston\nEntities:\nperson: John\nfromloc.city_name: Boston\n" in prompt
    assert "Sentence: hello there\nEntities:\nnone\n" in prompt
    assert prompt.endswith("Sentence: Mary left Denver\nEntities:")
    assert t.parse("fromloc city name: Denver", "Mary left Denver") == ("O", "O", "B-fromloc.city_name")


def test_bad_task_config() -> None:
    with pytest.raises(ConfigError, match=r"task.label_descriptions: types \['PER'\] are not entity types"):
        NerTask(labels=["person"], label_descriptions={"PER": "people"})
    with pytest.raises(ConfigError, match=r"task.aliases: target types \['people'\]"):
        NerTask(labels=["person"], aliases={"p": "people"})


# -- labeling with a scripted teacher ----------------------------------------------------------
def test_label_examples_keeps_meta_and_abstains(task: NerTask) -> None:
    teacher = ScriptedTeacher({"John lives in Rome": Reply(text="person: John\nlocation: Rome\nanimal: cat",
                                                           tokens=("person", ": John", "\n", "location", ": Rome",
                                                                   "\n", "animal: cat"),
                                                           token_logprobs=(-0.1, -0.1, 0.0, -0.2, -0.2, 0.0, -1.0)),
                               "ok then": Reply(text="Sorry, I can't.")}, text_of=ner_text)
    labels = label_examples(task, teacher, [Unlabeled("1", "John lives in Rome"), Unlabeled("2", "ok then")], [],
                            confidence=True, progress=False)
    assert labels[0].label == ("B-person", "O", "O", "B-location")
    assert labels[0].confidence == pytest.approx(math.exp(-0.4))
    assert (labels[0].meta["unknown_type"], labels[0].meta["kept"]) == (1, 2)
    assert labels[1].abstained and labels[1].label is None
    assert teacher.stops[0] == task.stop and teacher.score_calls == []  # NER has no options to score
    assert TeacherLabel.from_dict(labels[0].to_dict()) == labels[0]
    stats = task.label_stats(labels)
    assert stats["dropped-mention rate"] == pytest.approx(1 / 3)
    assert (stats["teacher mentions written"], stats["teacher mentions kept"], stats["teacher mentions unknown type"]) == (3, 2, 1)


# -- metrics ---------------------------------------------------------------------------------
def test_span_scores_strict_with_abstention() -> None:
    gold = [("B-PER", "I-PER", "O", "B-LOC"), ("B-ORG", "O")]
    pred = [("B-PER", "I-PER", "O", "B-ORG"), None]
    s = span_scores(gold, pred, ["PER", "LOC", "ORG"])
    assert list(s)[0] == "f1"  # fit_student early-stops on the first key
    assert (s["precision"], s["recall"], s["abstention_rate"]) == (0.5, pytest.approx(1 / 3), 0.5)
    assert (s["f1[PER]"], s["f1[LOC]"], s["support[ORG]"]) == (1.0, 0.0, 1)
    # strict mode: a boundary error is a miss
    assert span_scores([("B-PER", "I-PER")], [("B-PER", "O")])["f1"] == 0.0


# -- config and splits -----------------------------------------------------------------------
def _cfg(tmp_path: Path, **split) -> dict:
    train = tmp_path / "train.conll"
    train.write_text("".join(f"w{i}\tB-person\nx\tO\n\n" for i in range(30)))
    test = tmp_path / "test.conll"
    test.write_text("a\tB-person\nb\tO\n\n")
    return {"data": {"train": str(train), "test": str(test), "format": "conll", "split": split},
            "task": {"kind": "ner"}}


def test_ner_config_defaults(tmp_path: Path) -> None:
    cfg = parse_config(_cfg(tmp_path, labeled_n=5, dev_n=4, pool_size=10))
    assert (cfg.task.template, cfg.teacher.max_tokens) == ("ner.v1", 64)
    assert (cfg.data.split.labeled_per_class, cfg.data.split.dev_per_class) == (None, None)
    splits, vault = make_splits(cfg.data, seed=0)
    assert splits.labels == ("person",)
    assert (len(splits.labeled), len(splits.dev), len(splits.pool)) == (5, 4, 10)
    assert isinstance(vault.label_of(splits.pool[0].id), tuple)
    assert isinstance(build_task(cfg.task, splits.labels), NerTask)


def test_ner_splits_need_counts(tmp_path: Path) -> None:
    cfg = parse_config(_cfg(tmp_path))
    with pytest.raises(DataError, match=r"set data.split.labeled_n and data.split.dev_n instead"):
        make_splits(cfg.data, seed=0)


def test_score_labeling_is_rejected_for_ner(tmp_path: Path) -> None:
    raw = _cfg(tmp_path, labeled_n=5)
    raw["teacher"] = {"labeling": "score"}
    with pytest.raises(ConfigError, match=r"'score' ranks a fixed label set.*use teacher.labeling: generate"):
        parse_config(raw)
