"""Naive and optimized teacher paths must agree: a change to an optimization (prefix KV reuse,
option scoring from one state, length-sorted batching) can never silently change labels.

On a fixed set of few-shot prompts with SmolLM2-135M, for llama.cpp (and hf where transformers
is installed): the same greedy replies, token by token, and the same option log-likelihoods and
token logprobs within 1e-4. Also the constrained-decoding contract: a choice constraint only
ever yields one of the choices, and its logprobs are the unconstrained model's.
"""

from __future__ import annotations

import json
import math

import pytest

from llmkd.tasks.classification import ClassificationTask
from llmkd.teachers.base import ChoiceTrie, Constraint
from llmkd.types import Example

TOL = 1e-4
TASK = ClassificationTask(labels=["negative", "positive", "neutral"], instruction="Classify the sentiment of the movie review.")
SHOTS = [Example("a", "a wonderful , moving film .", "positive"), Example("b", "dull and lifeless .", "negative"),
         Example("c", "it is a film about a man .", "neutral")]
TEXTS = ["the best movie of the year .", "a boring , predictable mess .", "i loved every minute of it .",
         "the plot goes nowhere and the jokes fall flat .", "an honest , heartfelt story , well acted ."]
# the same prompts, unshuffled, then interleaved with a prompt with other shots (breaks the shared prefix)
PROMPTS = [TASK.render(t, SHOTS) for t in TEXTS]
ODD = TASK.render("an odd one .", SHOTS[::-1])
ORDERED = [PROMPTS[0], PROMPTS[1], ODD, PROMPTS[2], PROMPTS[3], PROMPTS[4]]


def assert_same(a, b) -> None:
    assert [r.text for r in a] == [r.text for r in b]
    for x, y in zip(a, b):
        assert x.tokens == y.tokens and x.finish_reason == y.finish_reason
        assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=TOL)


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


# ---- llama.cpp ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_pair(smollm2_path: str):
    pytest.importorskip("llama_cpp")
    from llmkd.teachers.llamacpp import LlamaCppTeacher

    opt = LlamaCppTeacher(model_path=smollm2_path, weights_sha256="test", n_ctx=1024, n_threads=1)
    naive = LlamaCppTeacher(model_path=smollm2_path, weights_sha256="test", n_ctx=1024, n_threads=1, prefix_reuse=False)
    return naive, opt


@pytest.mark.slow  # loads SmolLM2 (real packaged model)
def test_llamacpp_naive_and_prefix_reuse_agree(llama_pair) -> None:
    naive, opt = llama_pair
    assert naive.fingerprint == opt.fingerprint  # prefix reuse cannot change replies
    a = naive.generate(ORDERED, max_tokens=6)
    b = opt.generate(ORDERED, max_tokens=6)
    assert_same(a, b)
    options = list(TASK.options())
    sa = naive.score_options(ORDERED, options)
    sb = opt.score_options(ORDERED, options)
    for x, y in zip(sa, sb):
        assert x == pytest.approx(y, abs=TOL)
        assert all(math.isfinite(v) and v < 0 for v in x)
    # the optimized path evaluates far fewer tokens for the same answers
    assert opt.evaluated_tokens < naive.evaluated_tokens / 2


@pytest.mark.slow  # loads SmolLM2 (real packaged model)
def test_llamacpp_choice_constraint_gives_a_label_with_unconstrained_logprobs(llama_pair) -> None:
    naive, opt = llama_pair
    c = Constraint.choice(TASK.options())
    replies = opt.generate(PROMPTS, max_tokens=8, constraint=c, stop=TASK.stop)
    assert [r.text for r in replies] == [r.text for r in naive.generate(PROMPTS, max_tokens=8, constraint=c, stop=TASK.stop)]
    scores = opt.score_options(PROMPTS, list(TASK.options()))
    for r, row in zip(replies, scores):
        assert r.text in TASK.labels and r.finish_reason == "stop"
        assert TASK.parse(r.text) == r.text
        # greedy over a trie picks the first token greedily; the sum of its token logprobs is
        # the option's log-likelihood, unconstrained
        assert sum(r.token_logprobs) == pytest.approx(row[TASK.labels.index(r.text)], abs=1e-3)


@pytest.mark.slow  # loads SmolLM2 (real packaged model)
def test_llamacpp_grammar_and_json_constraints(llama_pair) -> None:
    _, opt = llama_pair
    (r,) = opt.generate([PROMPTS[0]], max_tokens=12, constraint=Constraint.gbnf('root ::= "(" [a-z]+ ")"'))
    assert r.text.startswith("(") and r.text[1:].rstrip(")").isalpha()
    schema = {"type": "object", "properties": {"label": {"enum": ["negative", "positive"]}}, "required": ["label"]}
    (j,) = opt.generate([PROMPTS[1]], max_tokens=24, constraint=Constraint.json_schema(schema))
    assert json.loads(j.text)["label"] in ("negative", "positive")


# ---- hf (transformers, SmolLM2 GGUF dequantized) -----------------------------------------------


@pytest.fixture(scope="module")
def hf_pair(smollm2_path: str):
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from llmkd.teachers.hf import HFTeacher

    opt = HFTeacher(model=smollm2_path, weights_sha256="test", device="cpu", batch_size=4)
    naive = HFTeacher(model=smollm2_path, weights_sha256="test", device="cpu", prefix_reuse=False)
    opt._load()
    naive._model, naive._tok, naive._dev = opt._model, opt._tok, opt._dev  # one copy of the weights
    return naive, opt


@pytest.mark.slow  # torch on CPU: minutes on a loaded 2-core machine
def test_hf_naive_and_batched_prefix_reuse_agree(hf_pair) -> None:
    naive, opt = hf_pair
    assert naive.fingerprint == opt.fingerprint
    few = ORDERED[:4]  # includes the prompt with other shots, so a batch has real padding
    a = naive.generate(few, max_tokens=3)
    b = opt.generate(few, max_tokens=3)
    assert_same(a, b)
    assert opt.evaluated_tokens < naive.evaluated_tokens
    # a later call with a longer shared prefix extends the kept KV state instead of redoing it
    assert_same(naive.generate(PROMPTS[:2], max_tokens=3), opt.generate(PROMPTS[:2], max_tokens=3))
    sa = naive.score_options(few[:3], list(TASK.options()))
    sb = opt.score_options(few[:3], list(TASK.options()))
    for x, y in zip(sa, sb):
        assert x == pytest.approx(y, abs=TOL)
    c = Constraint.choice(TASK.options())
    assert all(r.text in TASK.labels for r in opt.generate(PROMPTS[:2], max_tokens=6, constraint=c))
