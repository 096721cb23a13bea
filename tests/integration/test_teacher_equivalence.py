"""Naive and optimized teacher paths must agree: a change to an optimization (prefix KV reuse,
option scoring from one state, length-sorted batching) can never silently change labels.

On a fixed set of few-shot prompts with SmolLM2-135M, for llama.cpp (and hf where transformers
is installed): the same greedy replies, token by token, and the same option log-likelihoods and
token logprobs within 1e-4. Also the constrained-decoding contract: a choice constraint only
ever yields one of the choices, and its logprobs are the unconstrained model's. The model-free
checks are tests/unit/test_teacher_equivalence.py.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from llmkd.tasks.classification import ClassificationTask
from llmkd.teachers.base import Constraint, common_prefix, continuation
from llmkd.types import Example

pytestmark = pytest.mark.slow  # loads SmolLM2 (real packaged model)


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



# ---- llama.cpp ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_pair(smollm2_path: str):
    pytest.importorskip("llama_cpp")
    from llmkd.teachers.llamacpp import LlamaCppTeacher

    opt = LlamaCppTeacher(model_path=smollm2_path, weights_sha256="test", n_ctx=1024, n_threads=1)
    naive = LlamaCppTeacher(model_path=smollm2_path, weights_sha256="test", n_ctx=1024, n_threads=1, prefix_reuse=False)
    return naive, opt


@pytest.fixture(scope="module")
def walk_pair(smollm2_path: str):
    """As ``llama_pair``, with the options walked one token at a time (``batch_options=False``)."""
    pytest.importorskip("llama_cpp")
    from llmkd.teachers.llamacpp import LlamaCppTeacher

    opt = LlamaCppTeacher(model_path=smollm2_path, weights_sha256="test", n_ctx=1024, n_threads=1, batch_options=False)
    naive = LlamaCppTeacher(model_path=smollm2_path, weights_sha256="test", n_ctx=1024, n_threads=1, prefix_reuse=False,
                            batch_options=False)
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
def test_llamacpp_plain_and_hinted_prompts_mixed_agree(llama_pair) -> None:
    """The same texts as plain strings (no shared-part hint: 32-token chunks throughout) and as
    Prompts, interleaved: each evaluation is the one a fresh context would give for that prompt."""
    naive, opt = llama_pair
    mixed = [PROMPTS[0], str(PROMPTS[1]), PROMPTS[1], ODD, str(PROMPTS[2]), PROMPTS[3], str(ODD), PROMPTS[4]]
    assert_same(naive.generate(mixed, max_tokens=4), opt.generate(mixed, max_tokens=4))
    options = list(TASK.options())
    for x, y in zip(naive.score_options(mixed, options), opt.score_options(mixed, options)):
        assert x == pytest.approx(y, abs=TOL)


@pytest.mark.slow  # loads SmolLM2 (real packaged model)
def test_llamacpp_reuse_evaluates_exactly_the_example(llama_pair) -> None:
    """After one prompt, the next one with the same shots costs only its own tokens: the shared
    part's state is kept up to its last token, however long the example (no 32-token rounding)."""
    _, opt = llama_pair
    opt.generate([PROMPTS[0]], max_tokens=1)
    for p in PROMPTS[1:]:
        toks = opt._tokenize(opt.format(p))
        shared = opt._shared_tokens(p, opt.format(p), toks)
        assert 0 < shared < len(toks) and shared >= len(opt._tokenize(opt.format(p)[: p.shared])) - 2
        before = opt.evaluated_tokens
        opt.generate([p], max_tokens=1)
        assert opt.evaluated_tokens - before == len(toks) - shared


@pytest.mark.slow  # loads SmolLM2 (real packaged model)
def test_llamacpp_scoring_right_after_generating_reuses_the_prompt(llama_pair) -> None:
    """Labeling with a confidence generates a reply and then scores the label set on the same
    prompt: the scoring starts from the prompt's state and last logits, kept from the generation
    (no example token is evaluated again), and gives the naive path's numbers."""
    naive, opt = llama_pair
    options = list(TASK.options())
    for p in PROMPTS[:3]:
        opt.generate([p], max_tokens=6)
        before = opt.evaluated_tokens
        got = opt.score_options([p], options)[0]
        assert got == pytest.approx(naive.score_options([p], options)[0], abs=TOL)
        # only the option tokens after each option's first one are evaluated (each option is
        # tokenized as score_options does, and none merges with the prompt's last token here)
        assert opt.evaluated_tokens - before == option_steps(opt, p, options)


def option_steps(opt, prompt, options) -> int:
    """The tokens scoring ``options`` must evaluate once the prompt is in the context: each
    distinct proper prefix of the options' tokens after the prompt, once."""
    ctx_text = opt.format(prompt)
    ctx = opt._tokenize(ctx_text)
    fulls = [opt._tokenize(ctx_text + continuation(ctx_text, o, bool(opt._template))) for o in options]
    assert all(common_prefix(ctx, full) == len(ctx) for full in fulls)
    return len({tuple(full[len(ctx) : len(ctx) + j]) for full in fulls for j in range(1, len(full) - len(ctx))})


LABELS = ["card arrival", "cash withdrawal", "card linking", "card not working", "card", "cash"]


@pytest.mark.slow  # loads SmolLM2 (real packaged model)
@pytest.mark.parametrize("pair", ["llama_pair", "walk_pair"])
def test_llamacpp_options_sharing_their_first_tokens_share_the_steps(pair, request) -> None:
    """Many-class label sets (BANKING77's "card_arrival", "card_linking", ...) share first tokens:
    each shared step is evaluated once (batched: one batch entry; walked: one step), in any
    option order, with the naive path's numbers."""
    naive, opt = request.getfixturevalue(pair)
    options = LABELS
    ctx_tokens = len(opt._tokenize(opt.format(PROMPTS[0])))
    total = sum(len(opt._tokenize(opt.format(PROMPTS[0]) + o)) - ctx_tokens - 1 for o in options)
    steps = option_steps(opt, PROMPTS[0], options)
    assert steps < total  # the label set does share first tokens in this tokenizer
    opt.generate([PROMPTS[0]], max_tokens=2)
    for order in (options, options[::-1]):
        before = opt.evaluated_tokens
        got = opt.score_options([PROMPTS[0]], order)[0]
        assert got == pytest.approx(naive.score_options([PROMPTS[0]], order)[0], abs=TOL)
        assert opt.evaluated_tokens - before == steps



@pytest.mark.slow  # loads SmolLM2 (real packaged model)
def test_llamacpp_batched_option_scores_are_the_walks_within_kernel_rounding(llama_pair, walk_pair) -> None:
    """The options as parallel sequences in one batch against one token at a time: llama.cpp
    rounds differently for another batch shape (measured up to 0.23 nats here), so the
    log-likelihoods agree within 0.5 and the label distribution within 0.02, with the same
    best option. A position or a sequence mixed up would be off by far more."""
    _, batched = llama_pair
    _, walked = walk_pair
    options = LABELS + ["a wonderful film", "dull and lifeless"]
    for p in ORDERED:
        a, b = (np.array(t.score_options([p], options)[0]) for t in (batched, walked))
        assert np.abs(a - b).max() < 0.5 and a.argmax() == b.argmax()
        assert np.abs(np.exp(a) / np.exp(a).sum() - np.exp(b) / np.exp(b).sum()).max() < 0.02


@pytest.mark.slow  # loads SmolLM2 (real packaged model)
def test_llamacpp_a_small_context_batches_what_fits_and_walks_the_rest(smollm2_path: str, walk_pair) -> None:
    """A context of the prompt + 16 tokens: llama.cpp would abort (GGML_ASSERT) on more sequences
    than a batch has outputs, so the teacher asks for fewer; the labels' 20+ prefixes do not fit
    beside the prompt, so they are walked, with the walk's numbers bit for bit."""
    from llmkd.teachers.llamacpp import LlamaCppTeacher

    _, walked = walk_pair
    n = len(walked._tokenize(walked.format(PROMPTS[0])))
    small = LlamaCppTeacher(model_path=smollm2_path, weights_sha256="test", n_ctx=n + 16, n_threads=1)
    options = ["card not working", "top up failed", "lost or stolen card", "pin is blocked", "exchange rate fee",
               "the best movie", "an odd one", "dull and boring film"]
    assert option_steps(walked, PROMPTS[0], options) > 16
    assert small.score_options([PROMPTS[0]], options) == walked.score_options([PROMPTS[0]], options)
    assert 1 < small._n_seqs <= n + 16


@pytest.mark.slow  # loads SmolLM2 (real packaged model)
def test_llamacpp_an_empty_option_scores_zero_on_both_paths(llama_pair, walk_pair) -> None:
    for _, teacher in (llama_pair, walk_pair):
        (row,) = teacher.score_options([PROMPTS[0]], ["", "card arrival", "positive"])
        assert row[0] == 0.0 and all(math.isfinite(v) and v < 0 for v in row[1:])


@pytest.mark.slow  # loads SmolLM2 (real packaged model)
def test_llamacpp_batched_option_scores_do_not_see_the_other_options(llama_pair) -> None:
    """Each option's sequence attends to the prompt and its own tokens only: with companions of
    the same token shape, placed after it in the batch, an option's score is the same bit for
    bit whatever the companions' tokens; and the options' order never matters."""
    _, opt = llama_pair
    prompt = PROMPTS[1]
    ctx_text = opt.format(prompt)
    ctx = opt._tokenize(ctx_text)

    def rest(o: str) -> list[int]:
        return opt._tokenize(ctx_text + continuation(ctx_text, o, True))[len(ctx):]

    x = "a wonderful film"
    candidates = ["card not working", "top up failed", "lost or stolen", "pin is blocked", "exchange rate fee",
                  "the best movie", "an odd one", "dull and boring"]
    same_shape = [c for c in candidates if len(rest(c)) == len(rest(x)) and rest(c)[0] > rest(x)[0]]
    assert len(same_shape) >= 2, [(c, rest(c)) for c in candidates]
    y, z = same_shape[:2]
    (with_y,) = opt.score_options([prompt], [x, y])
    (with_z,) = opt.score_options([prompt], [x, z])
    (swapped,) = opt.score_options([prompt], [y, x])
    assert with_y[0] == with_z[0] and swapped == with_y[::-1]
    assert with_y[1] != with_z[1]


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


def _ner_and_seq2seq_cases():
    from llmkd.tasks.ner import NerTask
    from llmkd.tasks.seq2seq import Seq2SeqTask

    ner = NerTask(labels=["PER", "LOC"])
    ner_shots = [Example("a", "John Smith visited Berlin .", ("B-PER", "I-PER", "O", "B-LOC", "O")),
                 Example("b", "It rained .", ("O", "O", "O"))]
    tree = Seq2SeqTask(target="tree")
    labeled = Seq2SeqTask(target="tree", labels=["S", "NP", "VP"])
    slots = Seq2SeqTask(target="slots", labels=["O", "B-fromloc", "B-toloc", "atis_flight"])
    return [
        (ner, ner.render("Mary flew to Rome with Peter .", ner_shots), re.compile(r"(none|(PER|LOC): [^\n]+)")),
        (ner, ner.render("Nothing here .", ner_shots), re.compile(r"(none|(PER|LOC): [^\n]+)")),
        (tree, tree.render("a big dog ran", [Example("a", "the cat sat", "( ( the cat ) ( sat ) )")]), None),
        (labeled, labeled.render("a big dog ran", [Example("a", "the cat sat", "(S (NP the cat ) (VP sat ) )")]), None),
        (slots, slots.render("flights from boston to denver",
                             [Example("a", "show flights from dallas", "atis_flight | show O flights O from O dallas B-fromloc")]),
         re.compile(r"atis_flight \| [^ |]+ (O|B-fromloc|B-toloc)( [^ |]+ (O|B-fromloc|B-toloc))*")),
    ]


@pytest.mark.slow  # loads SmolLM2 (real packaged model)
def test_llamacpp_ner_and_seq2seq_grammars_give_readable_replies(llama_pair) -> None:
    """SmolLM2-135M, unconstrained, answers these prompts in prose; under each task's grammar
    every reply is in the task's format (and trees are balanced), so it parses."""
    from llmkd.formats.trees import tree_words

    _, opt = llama_pair
    for task, prompt, shape in _ner_and_seq2seq_cases():
        (r,) = opt.generate([prompt], max_tokens=40, stop=task.stop, constraint=task.constraint())
        assert r.finish_reason == "stop", r
        body = r.text.strip()
        if task.kind == "ner":
            assert all(shape.fullmatch(line) for line in body.split("\n")), r.text
            continue
        if shape is not None:
            assert shape.fullmatch(body), r.text
        else:
            depth = 0
            for ch in body:
                depth += {"(": 1, ")": -1}.get(ch, 0)
                assert depth >= 0, r.text
            assert depth == 0 and body.startswith("(") and tree_words(body), r.text
        words = body.split("|")[-1].split()[::2] if task.target == "slots" else tree_words(body)
        task.parse(r.text, " ".join(words))  # repairs into a target, no ParseError


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
