"""Naive and optimized teacher paths must agree: a change to an optimization (prefix KV reuse,
option scoring from one state, length-sorted batching) can never silently change labels.

Here, the model-free half: the choice trie, constraints and their cache keys, the llama.cpp
chunk layout and the task grammars. The half that runs SmolLM2 (naive vs optimized replies and
scores agree; constrained decoding) is tests/integration/test_teacher_equivalence.py.
"""

from __future__ import annotations

import json

import pytest

from llmkd.tasks.classification import ClassificationTask
from llmkd.teachers.base import ChoiceTrie, Constraint
from llmkd.types import Example


TASK = ClassificationTask(labels=["negative", "positive", "neutral"], instruction="Classify the sentiment of the movie review.")
SHOTS = [Example("a", "a wonderful , moving film .", "positive"), Example("b", "dull and lifeless .", "negative"),
         Example("c", "it is a film about a man .", "neutral")]


# ---- pure helpers ---------------------------------------------------------------------------


def test_choice_trie_allows_only_paths_to_a_choice() -> None:
    trie = ChoiceTrie([[1, 2], [1, 3, 4], [5], [1, 2]])
    assert trie.allowed([], eos=0) == [1, 5]
    assert trie.allowed([1], eos=0) == [2, 3]
    assert trie.allowed([1, 3], eos=0) == [4]
    assert trie.done([1, 2]) and trie.done([5]) and not trie.done([1, 3])
    assert trie.allowed([7], eos=0) == []
    # a complete choice that another extends: EOS ends it
    nested = ChoiceTrie([[1], [1, 2]])
    assert nested.allowed([1], eos=0) == [2, 0] and not nested.done([1])


def test_constraint_validation_and_cache_key() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Constraint.choice([])
    with pytest.raises(ValueError, match="root"):
        Constraint.gbnf('x ::= "a"')
    a = Constraint.json_schema({"type": "object", "b": 1, "a": 2})
    b = Constraint.json_schema({"a": 2, "b": 1, "type": "object"})
    assert a == b and json.dumps(a.key()) == json.dumps(b.key())


def test_cached_teacher_keys_constraint_but_keeps_old_keys(tmp_path) -> None:
    from llmkd.teachers.cache import CachedTeacher, TeacherCache
    from llmkd.types import Reply

    class Echo:
        name, fingerprint, calls = "echo", "fp", 0

        def generate(self, prompts, *, max_tokens, temperature=0.0, stop=(), seed=0, constraint=None):
            Echo.calls += 1
            return [Reply(text=constraint.choices[0] if constraint else "free") for _ in prompts]

        def count_tokens(self, text):
            return 1

    t = CachedTeacher(Echo(), TeacherCache(tmp_path / "c.sqlite"))
    assert t.generate(["p"], max_tokens=2)[0].text == "free"
    assert t.generate(["p"], max_tokens=2, constraint=Constraint.choice(["x", "y"]))[0].text == "x"
    assert t.generate(["p"], max_tokens=2, constraint=Constraint.choice(["y"]))[0].text == "y"
    assert t.generate(["p"], max_tokens=2)[0].text == "free" and Echo.calls == 3


def test_a_constraint_the_backend_does_not_apply_is_no_part_of_the_cache_key(tmp_path) -> None:
    from llmkd.teachers.cache import CachedTeacher, TeacherCache
    from llmkd.types import Reply

    seen = []

    class ChoiceOnly:  # like the hf backend: tries for choices, nothing for grammars
        name, fingerprint = "choice-only", "fp"

        def applies(self, constraint):
            return constraint.kind == "choice"

        def generate(self, prompts, *, max_tokens, temperature=0.0, stop=(), seed=0, constraint=None):
            seen.append(constraint)
            return [Reply(text=constraint.choices[0] if constraint else "free") for _ in prompts]

    t = CachedTeacher(ChoiceOnly(), TeacherCache(tmp_path / "c.sqlite"))
    grammar = Constraint.gbnf('root ::= "(" ")"')
    assert t.generate(["p"], max_tokens=2, constraint=grammar)[0].text == "free"
    assert seen == [None]  # not passed on: the backend would ignore it
    assert t.generate(["p"], max_tokens=2)[0].text == "free" and t.hits == 1  # the same key
    assert t.generate(["p"], max_tokens=2, constraint=Constraint.choice(["x"]))[0].text == "x" and t.misses == 2


def test_label_examples_passes_the_label_set_only_when_constrained() -> None:
    from llmkd.labeling import label_examples
    from llmkd.types import Reply, Unlabeled

    seen = []

    class Fake:
        name, fingerprint = "fake", "fp"

        def generate(self, prompts, *, max_tokens, temperature=0.0, stop=(), seed=0, **kw):
            seen.append(kw.get("constraint"))
            return [Reply(text="positive") for _ in prompts]

    items = [Unlabeled("u1", "great fun .")]
    label_examples(TASK, Fake(), items, SHOTS, confidence=False, progress=False)
    label_examples(TASK, Fake(), items, SHOTS, confidence=False, progress=False, constrained=True)
    assert seen == [None, Constraint.choice(TASK.labels)]


def test_llamacpp_layout_is_a_function_of_the_prompt_alone() -> None:
    from llmkd.teachers.llamacpp import LlamaCppTeacher

    t = LlamaCppTeacher(model_path="unused.gguf", weights_sha256="x", n_batch=64)
    assert t._layout(70) == [0, 32, 64, 70]
    assert t._layout(200, shared=40) == [0, 32, 40, 104, 168, 200]  # the example from 40, n_batch chunks
    assert t._layout(40, shared=40) == t._layout(40) == [0, 32, 40]  # nothing after the shared part
    assert t._layout(0) == [0]

def test_ner_and_seq2seq_grammars() -> None:
    from llmkd.tasks.ner import NerTask
    from llmkd.tasks.seq2seq import Seq2SeqTask

    g = NerTask(labels=["PER", "B-\"x"]).constraint()
    assert g.kind == "grammar" and 'type ::= "B-\\"x" | "PER"' in g.grammar  # quotes escaped, longest first
    assert "label" not in Seq2SeqTask(target="tree").constraint().grammar
    assert 'label ::= "NP" | "S"' in Seq2SeqTask(target="tree", labels=["S", "NP"]).constraint().grammar
    free = Seq2SeqTask(target="slots").constraint().grammar  # no known tags: any B-/I- tag, no intent
    assert '"O" | [BI] "-"' in free and "intent" not in free
