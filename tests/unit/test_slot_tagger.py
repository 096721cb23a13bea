"""The slot tagger student (slot filling on the token tagger) with a tiny random BERT: targets read
as BIO tags over the input words, outputs that cover exactly the input words and score with the
slot task's scorer, unknown slot types, save / load, per-example weights and the build step.
A whole `llmkd run` with MiniLM: tests/integration/test_slot_tagger.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmkd.build import make_student_factory
from llmkd.config import StudentConfig
from llmkd.errors import ConfigError
from llmkd.formats.slots import parse_target
from llmkd.students.slot_tagger import SlotTaggerStudent, slot_types
from llmkd.tasks.seq2seq import Seq2SeqTask
from llmkd.types import Example

DATA = [Example("s0", "the cat sat on a mat", "the O cat B-animal sat O on O a O mat B-thing"),
        Example("s1", "a dog sat", "a O dog B-animal sat O"),
        Example("s2", "the dog sat on the mat", "the O dog B-animal sat O on O the B-thing mat I-thing")]
TYPES = ("animal", "thing")


def student(path: str, **kw) -> SlotTaggerStudent:
    args = dict(model=path, labels=TYPES, max_length=32, batch_size=4, lr=1e-2, warmup_steps=0, seed=0, threads=1)
    return SlotTaggerStudent(**{**args, **kw})


def test_slot_types_strip_the_bio_prefix() -> None:
    assert slot_types(["O", "B-fromloc.city_name", "I-fromloc.city_name", "B-toloc", "I-depart"]) == (
        "depart", "fromloc.city_name", "toloc")


def test_it_learns_and_every_output_covers_the_input_words(tiny_bert: str) -> None:
    st = student(tiny_bert)
    losses = [st.fit_epoch(DATA) for _ in range(40)]
    assert losses[-1] < losses[0] / 4
    preds = st.predict(DATA + [Example("x", "unbelievably xylophones zigzagged on the cat", None)])
    for ex, p in zip(DATA, preds):
        assert p.label == ex.label  # three sentences, 40 epochs: memorised
    for p, ex in zip(preds, DATA + [Example("x", "unbelievably xylophones zigzagged on the cat", None)]):
        _, words, tags = parse_target(p.label)
        assert words == ex.text.split() and len(tags) == len(words)
        assert list(p.probs) == [p.label] and 0.0 < p.probs[p.label] <= 1.0
    task = Seq2SeqTask(target="slots", labels=["B-animal", "B-thing", "I-thing", "O"])
    scores = task.score([e.label for e in DATA], [p.label for p in preds[:3]])
    assert scores["slot_f1"] == 1.0 and scores["abstention_rate"] == 0.0


def test_an_unknown_slot_type_trains_as_o_and_a_stray_i_as_b(tiny_bert: str) -> None:
    st = student(tiny_bert)
    tags, unknown = st._tags(Example("u", "a dog sat", "a B-colour dog I-animal sat O"))
    assert (tags, unknown) == (["O", "B-animal", "O"], 1)
    st.fit_epoch([Example("u", "a dog sat", "a B-colour dog I-animal sat O")])  # no error


def test_bad_targets_are_refused_with_the_example_id(tiny_bert: str) -> None:
    with pytest.raises(ValueError, match=r"example bad: the target's words \['a', 'cat'\] are not the input"):
        student(tiny_bert).fit_epoch([Example("bad", "a dog", "a O cat B-animal")])
    with pytest.raises(ValueError, match="example odd: .*odd number of tokens"):
        student(tiny_bert).fit_epoch([Example("odd", "a dog", "a O dog")])
    with pytest.raises(ValueError, match="example i: the target carries an intent"):
        student(tiny_bert).fit_epoch([Example("i", "a dog", "atis_flight | a O dog B-animal")])
    with pytest.raises(ValueError, match="text 0 is empty"):
        student(tiny_bert).predict([Example("e", " ", None)])


def test_save_then_load_gives_the_same_predictions(tiny_bert: str, tmp_path: Path) -> None:
    st = student(tiny_bert)
    st.fit_epoch(DATA)
    st.save(tmp_path / "s")
    again = SlotTaggerStudent.load(tmp_path / "s", threads=1)
    assert isinstance(again, SlotTaggerStudent) and again.epochs_done_ == 1
    assert [(p.label, p.probs) for p in again.predict(DATA)] == [(p.label, p.probs) for p in st.predict(DATA)]
    meta = json.loads((tmp_path / "s" / "student.json").read_text())
    assert meta["kind"] == "slot_tagger" and meta["labels"] == list(TYPES)


def test_a_zero_weight_example_counts_as_absent(tiny_bert: str) -> None:
    import torch

    a, b = DATA[0], DATA[1]
    with_b, without_b = student(tiny_bert), student(tiny_bert)
    with_b.fit_epoch([a, b], weights=[1.0, 0.0])
    without_b.fit_epoch([a], weights=[1.0])
    for p, q in zip(with_b.model_.parameters(), without_b.model_.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_slot_tasks_get_the_slot_tagger_by_default() -> None:
    from llmkd.students.seq2seq import Seq2SeqStudent

    slots = Seq2SeqTask(target="slots", labels=["B-fromloc.city_name", "I-fromloc.city_name", "B-toloc", "O"])
    st = make_student_factory(StudentConfig(lr=5e-5), slots.labels, slots)[0](3)
    assert isinstance(st, SlotTaggerStudent)
    assert (st.labels, st.lr, st.seed) == (("fromloc.city_name", "toloc"), 5e-5, 3)
    assert st.outputs == ("O", "B-fromloc.city_name", "I-fromloc.city_name", "B-toloc", "I-toloc")
    assert isinstance(make_student_factory(StudentConfig(slots="seq2seq"), slots.labels, slots)[0](0), Seq2SeqStudent)
    with_intents = Seq2SeqTask(target="slots", labels=["B-toloc", "O", "atis_flight"])
    with pytest.raises(ConfigError, match="targets carry intents .*data.with_intent: false, or student.slots: seq2seq"):
        make_student_factory(StudentConfig(), with_intents.labels, with_intents)


def test_the_report_table_leads_with_the_task_family_metrics() -> None:
    from llmkd.report import table_cells

    slots = {"teacher": {"slot_f1": 0.5, "sentence_f1": 0.4, "exact_match": 0.1, "abstention_rate": 0.2, "n": 9},
             "vanilla": {"slot_f1": 0.6, "sentence_f1": 0.5, "exact_match": 0.2, "abstention_rate": 0.0,
                         "train_seconds": 3.0, "n_train": 40}}
    header, rows = table_cells(slots)
    assert header == ["method", "slot F1", "sentence F1", "exact match", "abstention", "labeling s", "training s",
                      "train size"]
    assert rows[1][:4] == ["vanilla", "0.6000", "0.5000", "0.2000"]
    trees = {"teacher": {"sentence_f1": 0.49, "corpus_f1": 0.45, "exact_match": 0.03, "abstention_rate": 0.0}}
    assert table_cells(trees)[0][:5] == ["method", "sentence F1", "corpus F1", "exact match", "abstention"]
    assert table_cells({"a": {"macro_f1": 0.5, "accuracy": 0.6}})[0][:3] == ["method", "macro-F1", "accuracy"]
    assert table_cells({"a": {"f1": 0.5, "precision": 0.6, "recall": 0.4}})[0][:4] == [
        "method", "span F1", "precision", "recall"]
