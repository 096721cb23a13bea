"""Seq2seq tasks: slot repair and scores, the task contract, prompt rendering, data splits."""

from __future__ import annotations

import pytest

from llmkd.build import build_task
from llmkd.config import DataConfig, SplitConfig, TaskConfig
from llmkd.data import make_splits
from llmkd.errors import ConfigError, ParseError
from llmkd.formats.slots import repair_slots, slot_scores
from llmkd.tasks import Task
from llmkd.types import Example, Reply

W = "show flights from new york".split()


@pytest.mark.parametrize("raw, target, actions", [
    ("show O flights O from O new B-city york I-city", "show O flights O from O new B-city york I-city", {}),
    ("Output: SHOW O flights o from O new b-city york i-city", "show O flights O from O new B-city york I-city", {}),
    ("show flights O from O new B-city york I-city", "show O flights O from O new B-city york I-city", {"tag_added": 1}),
    ("O show O flights O from O new B-city york I-city", "show O flights O from O new B-city york I-city", {"tag_dropped": 1}),
    ("show O flights O from O newyork B-city", "show O flights O from O new B-city york I-city", {"resplit": 1}),
    ("show O flights O from O new B-city", "show O flights O from O new B-city york O", {"restored": 1}),
    ("show O me O flights O from O new B-city york I-city", "show O flights O from O new B-city york I-city", {"dropped": 1}),
])
def test_repair_slots_table(raw, target, actions):
    assert repair_slots(raw, W) == (target, actions)


def test_repair_slots_failures():
    with pytest.raises(ParseError, match="differ"):
        repair_slots("list O all O airlines O", W)
    with pytest.raises(ParseError, match="word tag pairs"):
        repair_slots("", W)
    with pytest.raises(ParseError, match="intent"):
        repair_slots("show O flights O from O new B-city york I-city", W, with_intent=True)
    assert repair_slots("atis_flight | show O flights O from O new B-city york I-city", W, with_intent=True)[0] \
        == "atis_flight | show O flights O from O new B-city york I-city"


def test_slot_scores_hand_computed():
    gold = ["a | x B-t y I-t z O", "b | u B-s v O"]
    pred = ["a | x B-t y O z O", None]
    s = slot_scores(gold, pred)
    # chunks: gold {t(0,1)} + {s(0)}; pred {t(0)}: 0 matches of 1 predicted, 2 gold
    assert s["slot_f1"] == 0.0 and s["slot_recall"] == 0.0
    assert s["sentence_f1"] == 0.0 and s["abstention_rate"] == 0.5 and s["intent_accuracy"] == 0.5
    s2 = slot_scores(["x B-t y I-t z B-u", "q O"], ["x B-t y I-t z O", "q O"])
    # corpus: 1 match, 1 predicted, 2 gold -> F1 2/3; sentences: 2/3 and 1 (no chunks either side)
    assert s2["slot_f1"] == pytest.approx(2 / 3)
    assert s2["sentence_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert s2["exact_match"] == 0.5


def test_task_contract_and_render():
    for target in ("tree", "slots"):
        task = build_task(TaskConfig(kind="seq2seq", target=target), ("B-city", "I-city", "O") if target == "slots" else ())
        assert isinstance(task, Task) and task.kind == "seq2seq"
    task = build_task(TaskConfig(kind="seq2seq", target="tree"), ())
    prompt = task.render("The cat sat", [Example("1", "A dog ran", "( ( A dog ) ( ran ) )")])
    assert prompt.endswith("Input: A dog ran\nOutput: ( ( A dog ) ( ran ) )\nInput: The cat sat\nOutput:")
    label, meta = task.parse_detailed("( ( the cat ) ( sat )", "The cat sat")
    assert label == "( ( The cat ) ( sat ) )" and meta == {"repairs": {"closed_added": 1}}
    assert task.postprocess("The cat sat", "no tree here") == (None, {"error": "a bracketed tree such as ( ( The cat ) ( sat ) )"})
    assert task.label_logprob(Reply("x", token_logprobs=(-1.0, -3.0))) == -2.0
    # score repairs stale outputs against the gold words, or counts them as abstentions
    s = task.score(["( ( The cat ) ( sat ) )"] * 2, ["( ( the cat ) ( sat ) )", "nothing"])
    assert s["sentence_f1"] == 0.5 and s["abstention_rate"] == 0.5


def test_task_needs_target():
    with pytest.raises(ConfigError, match="task.target"):
        build_task(TaskConfig(kind="seq2seq"), ())


def test_bracket_and_slot_splits(tmp_path):
    trees = "\n".join(f"( (S (NP (DT The) (NN cat{i})) (VP (VBD sat)) (. .)) )" for i in range(30))
    (tmp_path / "a.mrg").write_text(trees)
    (tmp_path / "b.mrg").write_text(trees.replace("cat", "dog"))
    cfg = DataConfig(train=str(tmp_path), test=str(tmp_path), format="brackets",
                     members={"train": ["a.*"], "test": ["b.*"]},
                     split=SplitConfig(labeled_per_class=None, labeled_n=5, dev_n=3, pool_size=10, test_size=4))
    sp, vault = make_splits(cfg, 0)
    assert (len(sp.labeled), len(sp.dev), len(sp.pool), len(sp.test)) == (5, 3, 10, 4)
    assert sp.labeled[0].label.startswith("( ( The cat") and "." not in sp.labeled[0].text
    assert all("dog" in e.text for e in sp.test) and sp.labels == ()
    assert len(vault) == 10 and not hasattr(sp.pool[0], "label")
    slots = tmp_path / "slots"
    slots.mkdir()
    (slots / "seq.in").write_text("".join(f"fly to boston {i}\n" for i in range(20)))
    (slots / "seq.out").write_text("O O B-city O\n" * 20)
    (slots / "label").write_text("flight\n" * 20)
    cfg = DataConfig(train=str(slots), test=str(slots), format="slots", with_intent=True,
                     split=SplitConfig(labeled_per_class=None, labeled_n=4, dev_n=2, pool_size=5))
    sp, _ = make_splits(cfg, 0)
    assert sp.labeled[0].label.startswith("flight | fly O to O boston B-city")
    assert sp.labels == ("B-city", "O", "flight")
