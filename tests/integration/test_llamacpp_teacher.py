"""The llama.cpp teacher on the real packaged SmolLM2-135M."""

from __future__ import annotations

import math

import pytest

from llmkd.tasks.classification import ClassificationTask
from llmkd.teachers.llamacpp import LlamaCppTeacher
from llmkd.types import Example

pytestmark = pytest.mark.slow

TASK = ClassificationTask(labels=["negative", "positive"], instruction="Classify the sentiment of the movie review.")
SHOTS = [Example("a", "a wonderful , moving film .", "positive"), Example("b", "dull and lifeless .", "negative")]


@pytest.fixture(scope="module")
def teacher(smollm2_path: str) -> LlamaCppTeacher:
    return LlamaCppTeacher(model_path=smollm2_path, weights_sha256="test", n_ctx=2048)


def test_generate_returns_text_and_one_logprob_per_token(teacher: LlamaCppTeacher) -> None:
    prompt = TASK.render("the best movie of the year .", SHOTS)
    (reply,) = teacher.generate([prompt], max_tokens=6)
    assert reply.completion_tokens == len(reply.tokens) == len(reply.token_logprobs) > 0
    assert all(lp <= 0 for lp in reply.token_logprobs)
    assert reply.prompt_tokens > 50
    assert reply.finish_reason in ("stop", "length")


def test_greedy_generation_is_deterministic_and_independent_of_order(teacher: LlamaCppTeacher) -> None:
    p1 = TASK.render("the best movie of the year .", SHOTS)
    p2 = TASK.render("a boring , predictable mess .", SHOTS)
    a = teacher.generate([p1, p2], max_tokens=5)
    b = teacher.generate([p2, p1], max_tokens=5)
    assert [r.text for r in a] == [r.text for r in b][::-1]
    for x, y in zip(a, b[::-1]):
        assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-3)


def test_score_options_matches_the_greedy_token_logprob(teacher: LlamaCppTeacher) -> None:
    prompt = TASK.render("i loved every minute of it .", SHOTS)
    (reply,) = teacher.generate([prompt], max_tokens=1)
    first = reply.tokens[0]
    (scores,) = teacher.score_options([prompt], [first, "positive", "negative"])
    assert scores[0] == pytest.approx(reply.token_logprobs[0], abs=1e-3)
    assert all(math.isfinite(s) and s < 0 for s in scores)
    # scoring is a pure function of (prompt, option): same numbers in another order
    (again,) = teacher.score_options([prompt], ["negative", "positive"])
    assert again == pytest.approx(scores[:0:-1], abs=1e-3)


def test_stop_strings_cut_the_reply(teacher: LlamaCppTeacher) -> None:
    prompt = TASK.render("the best movie of the year .", SHOTS)
    (full,) = teacher.generate([prompt], max_tokens=8)
    if " " not in full.text.strip():
        pytest.skip("reply has no space to stop at")
    (cut,) = teacher.generate([prompt], max_tokens=8, stop=[" "])
    assert " " not in cut.text and full.text.startswith(cut.text)


def test_prompt_longer_than_context_is_a_clear_error(smollm2_path: str) -> None:
    """PromptTooLong (a TeacherError): labeling makes that example an abstention and goes on."""
    from llmkd.errors import PromptTooLong

    small = LlamaCppTeacher(model_path=smollm2_path, weights_sha256="test", n_ctx=256)
    assert small.context_tokens == 256
    with pytest.raises(PromptTooLong, match=r"does not fit teacher.n_ctx=256; raise teacher.n_ctx") as exc:
        small.generate(["word " * 400], max_tokens=4)
    assert exc.value.limit == 256 and exc.value.extra == 4 and exc.value.reason.startswith("too_long: ")
    with pytest.raises(PromptTooLong):
        small.score_options(["word " * 400], ["a", "b"])


def test_chat_mode_and_chat_turns(smollm2_path: str) -> None:
    from llmkd.teachers.base import ChatTurn

    plain = LlamaCppTeacher(model_path=smollm2_path, weights_sha256="test", n_ctx=512, chat=False)
    chat = LlamaCppTeacher(model_path=smollm2_path, weights_sha256="test", n_ctx=512, chat=True)
    assert plain.format("Label:") == "Label:"  # few-shot prompts continue as plain text
    wrapped = chat.format("Label:")
    assert wrapped != "Label:" and "Label:" in wrapped and wrapped.index("Label:") > 0
    assert plain.format(ChatTurn("Label:")) == wrapped  # an instruction turn is wrapped in any mode
    assert plain.fingerprint != chat.fingerprint
