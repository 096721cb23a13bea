"""The span-parser student without a real model: CKY against brute force, trees <-> span sets, and
a tiny randomly initialised BERT (written to a temporary folder: 2 layers, 32 hidden, a
letter-level vocabulary, tests/conftest.py) for coverage of the input words, save / load, per-example weights and
the build step. Learning on real PTB trees with MiniLM: tests/integration/test_span_parser.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from llmkd.build import make_student_factory
from llmkd.config import StudentConfig
from llmkd.formats.trees import bracket_scores, from_linearized, linearize, tree_words
from llmkd.errors import ConfigError
from llmkd.students.span_parser import SpanParserStudent, cky, crossing, tree_from_spans, tree_spans
from llmkd.tasks.seq2seq import Seq2SeqTask
from llmkd.types import Example

# ---- CKY -------------------------------------------------------------------------------------


def binary_trees(i: int, j: int) -> list[list[tuple[int, int]]]:
    """Every binary tree over words i..j-1, as its spans of two or more words."""
    if j - i < 2:
        return [[]]
    out = []
    for k in range(i + 1, j):
        for left in binary_trees(i, k):
            for right in binary_trees(k, j):
                out.append([(i, j)] + left + right)
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_cky_finds_the_best_binary_tree(n: int) -> None:
    rng = np.random.default_rng(n)
    trees = binary_trees(0, n)
    for _ in range(20):
        scores = rng.normal(size=(n + 1, n + 1))
        got = cky(scores)
        assert got[:1] == [(0, n)] or n == 1
        assert sorted(got) in [sorted(t) for t in trees] or (n == 1 and got == [(0, 1)])
        best = max(sum(scores[s] for s in t) for t in trees)
        assert sum(scores[s] for s in got if s[1] - s[0] >= 2) == pytest.approx(best)


def test_cky_on_a_long_sentence_is_a_binary_tree() -> None:
    n = 60
    got = cky(np.random.default_rng(0).normal(size=(n + 1, n + 1)))
    assert len(got) == n - 1 and len(set(got)) == n - 1
    tree = tree_from_spans([f"w{i}" for i in range(n)], {s: "" for s in got})  # raises on crossing spans
    assert tree.leaves() == [f"w{i}" for i in range(n)]


# ---- trees as span sets ----------------------------------------------------------------------


@pytest.mark.parametrize("target, labeled, back", [
    ("( ( The ( big cat ) ) ( sat ) )", False, "( ( The ( big cat ) ) ( sat ) )"),
    ("( a )", False, "( a )"),
    ("(S (NP The ( big cat ) ) (VP sat ) )", True, "(S (NP The ( big cat ) ) (VP sat ) )"),
    # a unary chain keeps its outermost label (one label per span)
    ("(S (VP (VB go ) (ADVP now ) ) )", True, "(S (VB go ) (ADVP now ) )"),
])
def test_spans_round_trip(target: str, labeled: bool, back: str) -> None:
    labels = ["S", "NP", "VP", "VB", "ADVP"] if labeled else []
    tree = from_linearized(target, labels=labels)
    assert linearize(tree_from_spans(tree.leaves(), tree_spans(tree)), labeled=labeled) == back


def test_crossing_spans_are_refused() -> None:
    with pytest.raises(ValueError, match="crosses"):
        tree_from_spans(list("abcd"), {(0, 4): "", (0, 2): "", (1, 3): ""})


# ---- a tiny random BERT ----------------------------------------------------------------------


TREES = [Example("t0", "the cat sat on a mat", "( ( the cat ) ( sat ( on ( a mat ) ) ) )"),
         Example("t1", "a dog sat", "( ( a dog ) sat )"),
         Example("t2", "the dog sat on the cat", "( ( the dog ) ( sat ( on ( the cat ) ) ) )"),
         Example("t3", "cat", "( cat )")]


def student(path: str, **kw) -> SpanParserStudent:
    args = dict(model=path, max_length=8, batch_size=4, lr=1e-3, warmup_steps=0, seed=0, hidden=16, dropout=0.0,
                threads=1)
    return SpanParserStudent(**{**args, **kw})


def test_every_output_is_a_tree_over_exactly_the_input_words(tiny_bert: str) -> None:
    st = student(tiny_bert)
    st.fit_epoch(TREES)
    long = " ".join(random.Random(0).choice(["the", "cat", "sat", "on", "a", "mat", "dog"]) for _ in range(40))
    texts = [
        "unbelievably xylophones zigzagged",  # words of many subwords each; with max_length 8 they need windows
        "the cat , sat . on - a ' mat",  # punctuation as words
        "the \u200b cat",  # a word the tokenizer maps to no subword at all
        "supercalifragilisticexpialidocious",  # one word longer than a window
        long,  # far longer than max_length (8 subwords)
        "cat", "a dog",
    ]
    preds = st.predict([Example(str(i), t, None) for i, t in enumerate(texts)])
    for text, p in zip(texts, preds):
        assert tree_words(p.label) == text.split()
        assert from_linearized(p.label).leaves() == text.split()
        assert list(p.probs) == [p.label] and 0.5 <= p.probs[p.label] <= 1.0
    # scored against a gold tree over the same words without repair or abstention
    gold = ["( " + " ".join(t.split()) + " )" for t in texts]
    assert bracket_scores(gold, [p.label for p in preds])["abstention_rate"] == 0.0


def test_labeled_outputs_use_the_task_labels(tiny_bert: str) -> None:
    labels = ["NP", "PP", "S", "VP"]
    data = [Example("l0", "the cat sat on a mat", "(S (NP the cat ) (VP sat (PP on (NP a mat ) ) ) )"),
            Example("l1", "a dog sat", "(S (NP a dog ) (VP sat ) )")]
    st = student(tiny_bert, labels=labels)
    for _ in range(30):
        st.fit_epoch(data)
    preds = st.predict(data)
    for ex, p in zip(data, preds):
        assert from_linearized(p.label, labels=labels).leaves() == ex.text.split()
    scores = bracket_scores([e.label for e in data], [p.label for p in preds], labels=labels)
    assert scores["labeled_f1"] == 1.0 and scores["exact_match"] == 1.0  # two trees, 30 epochs: memorised


def test_save_then_load_gives_the_same_predictions(tiny_bert: str, tmp_path: Path) -> None:
    st = student(tiny_bert)
    st.fit_epoch(TREES)
    st.save(tmp_path / "s")
    again = SpanParserStudent.load(tmp_path / "s", threads=1)
    assert again.epochs_done_ == 1 and again.steps_done_ == st.steps_done_
    assert [(p.label, p.probs) for p in again.predict(TREES)] == [(p.label, p.probs) for p in st.predict(TREES)]
    meta = json.loads((tmp_path / "s" / "student.json").read_text())
    assert meta["kind"] == "span_parser" and meta["labels"] == []
    assert {"model.safetensors", "span_scorer.safetensors", "optimizer.safetensors"} <= \
        {f.name for f in (tmp_path / "s").iterdir()}


def test_a_zero_weight_example_counts_as_absent(tiny_bert: str) -> None:
    import torch

    a, b = TREES[0], TREES[2]
    with_b, without_b, both = student(tiny_bert), student(tiny_bert), student(tiny_bert)
    loss_0 = with_b.fit_epoch([a, b], weights=[1.0, 0.0])
    loss_1 = without_b.fit_epoch([a], weights=[1.0])
    loss_2 = both.fit_epoch([a, b], weights=[1.0, 1.0])
    assert loss_0 == pytest.approx(loss_1 / 2)  # the batch's weighted sum over its size (weighted_epoch)
    assert loss_2 != pytest.approx(loss_0)
    # the update is the one without b (AdamW's first step does not depend on the gradient's scale, up to eps)
    for p, q in zip(with_b.model_.parameters(), without_b.model_.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert any(not torch.allclose(p, q, atol=1e-6) for p, q in zip(both.model_.parameters(), without_b.model_.parameters()))


def test_a_target_over_other_words_is_refused(tiny_bert: str) -> None:
    with pytest.raises(ValueError, match=r"example bad: the target's words \['the', 'dog'\] are not the input"):
        student(tiny_bert).fit_epoch([Example("bad", "the cat", "( the dog )")])
    with pytest.raises(ValueError, match="example bad2: the target is not a tree"):
        student(tiny_bert).fit_epoch([Example("bad2", "the cat", "( the cat")])


def test_crossing_matches_the_definition() -> None:
    import torch

    n = 7
    i, j = torch.triu_indices(n + 1, n + 1, offset=2)
    spans = [(0, 3), (3, 7), (4, 6)]
    want = [any(a < c < b < d or c < a < d < b for c, d in spans) for a, b in zip(i.tolist(), j.tolist())]
    assert crossing(i, j, spans).tolist() == want and sum(want) > 0
    assert not crossing(i, j, []).any()


def test_partial_tree_loss_trains_only_the_targets_spans_and_those_that_cross_them(tiny_bert: str) -> None:
    import torch
    import torch.nn.functional as F

    full, partial = student(tiny_bert, tree_loss="full"), student(tiny_bert)  # partial: the default
    full._ensure()
    partial._ensure()
    n = 5
    logits = torch.randn(n + 1, n + 1, 1, generator=torch.Generator().manual_seed(0))
    target = {(0, 5): "", (0, 2): "", (2, 5): ""}  # ( ( w0 w1 ) ( w2 w3 w4 ) ): (2, 4) and (3, 5) left open
    # full: every span of >= 2 words but the whole sentence; partial: (0, 2), (2, 5) and the spans crossing them
    trained = {"full": [(a, b) for a in range(n) for b in range(a + 2, n + 1) if (a, b) != (0, n)],
               "partial": [(0, 2), (2, 5), (1, 3), (1, 4), (1, 5), (0, 3), (0, 4)]}
    for st, name in ((full, "full"), (partial, "partial")):
        spans = trained[name]
        y = torch.tensor([float(s in target) for s in spans])
        want = F.binary_cross_entropy_with_logits(torch.stack([logits[a, b, 0] for a, b in spans]), y,
                                                  reduction="sum") / n
        assert st._sentence_loss(logits, n, target).item() == pytest.approx(want.item())
    with pytest.raises(ValueError, match="tree_loss must be 'full' or 'partial'"):
        student(tiny_bert, tree_loss="half")


def test_partial_tree_loss_round_trips_and_is_refused_off_the_span_parser(tiny_bert: str, tmp_path: Path) -> None:
    st = student(tiny_bert, tree_loss="partial")
    st.fit_epoch(TREES)
    st.save(tmp_path / "s")
    assert SpanParserStudent.load(tmp_path / "s", threads=1).tree_loss == "partial"
    tree = Seq2SeqTask(target="tree")
    assert make_student_factory(StudentConfig(tree_loss="partial"), (), tree)[0](0).tree_loss == "partial"
    for cfg, task in ((StudentConfig(tree_loss="partial", parser="seq2seq"), tree),
                      (StudentConfig(tree_loss="partial"), Seq2SeqTask(target="slots", labels=["B-a", "O"]))):
        with pytest.raises(ConfigError, match="student.tree_loss: partial is a loss of the span parser"):
            make_student_factory(cfg, task.labels or (), task)


# ---- the build step --------------------------------------------------------------------------


def test_tree_tasks_get_the_span_parser_by_default() -> None:
    from llmkd.students.seq2seq import Seq2SeqStudent

    tree, slots = Seq2SeqTask(target="tree"), Seq2SeqTask(target="slots", labels=["B-a", "O"])
    assert isinstance(make_student_factory(StudentConfig(), (), tree)[0](0), SpanParserStudent)
    assert isinstance(make_student_factory(StudentConfig(parser="seq2seq"), (), tree)[0](0), Seq2SeqStudent)
    assert isinstance(make_student_factory(StudentConfig(slots="seq2seq"), slots.labels, slots)[0](0), Seq2SeqStudent)
    labeled = Seq2SeqTask(target="tree", labels=["NP", "S"])
    st = make_student_factory(StudentConfig(lr=5e-5, max_length=64), labeled.labels, labeled)[0](3)
    assert (st.labels, st.lr, st.max_length, st.seed) == (("NP", "S"), 5e-5, 64, 3)


def test_the_brute_force_enumerates_every_binary_tree() -> None:
    catalan = [1, 1, 2, 5, 14, 42]  # binary trees over 1..6 words
    assert [len({tuple(sorted(t)) for t in binary_trees(0, n)}) for n in range(1, 7)] == catalan
