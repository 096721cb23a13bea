"""OpenAITeacher against the loopback fake server: replies, concurrency, retries, auth, scoring."""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import time
from typing import Any

import pytest

from llmkd.errors import ConfigError, TeacherError
from llmkd.teachers.base import Teacher
from llmkd.teachers.openai import OpenAITeacher
from tests.fake_openai_server import FakeOpenAIServer, _error, _json

SECRET = "sk-test-SECRET-0123456789"


def make(base_url: str | list[str], **kw: Any) -> OpenAITeacher:
    args: dict[str, Any] = dict(model="fake-model", base_url=base_url, api_key_env=None, timeout=0.5,
                                backoff=0.01, max_retries=3)
    args.update(kw)
    return OpenAITeacher(**args)


def lp(token: str) -> float:
    return -0.1 * len(token.strip())


# ---- generate ------------------------------------------------------------------------------


@pytest.mark.parametrize("chat", [True, False])
def test_generate_returns_replies_in_order_with_logprobs(chat: bool) -> None:
    with FakeOpenAIServer(script=lambda p: f"label for {p}") as server:
        teacher = make(server.base_url, chat=chat)
        replies = teacher.generate(["aa", "b", "cccc dd"], max_tokens=8, stop=["\n"], seed=7)

    assert [r.text for r in replies] == ["label for aa", "label for b", "label for cccc dd"]
    assert replies[2].tokens == ("label", " for", " cccc", " dd")
    assert replies[2].token_logprobs == pytest.approx((-0.5, -0.3, -0.4, -0.2))
    assert (replies[2].prompt_tokens, replies[2].completion_tokens, replies[2].finish_reason) == (2, 4, "stop")
    path = "/v1/chat/completions" if chat else "/v1/completions"
    assert {r["path"] for r in server.requests} == {path}
    body = next(r["body"] for r in server.requests if "aa" in str(r["body"]))
    assert body["model"] == "fake-model" and body["max_tokens"] == 8 and body["stop"] == ["\n"]
    assert body["seed"] == 7 and body["temperature"] == 0.0
    if chat:
        assert body["messages"] == [{"role": "user", "content": "aa"}] and body["logprobs"] is True
    else:
        assert body["prompt"] == "aa" and body["logprobs"] == 1


def test_generate_reports_truncation_and_missing_logprobs() -> None:
    with FakeOpenAIServer(script=lambda p: "one two three") as server:
        (reply,) = make(server.base_url).generate(["x"], max_tokens=2)
    assert reply.text == "one two" and reply.finish_reason == "length"

    # a server that ignores the logprobs request: token_logprobs is None, not an empty tuple
    class NoLogprobs(FakeOpenAIServer):
        def _chat(self, body: dict[str, Any]) -> Any:
            return super()._chat({k: v for k, v in body.items() if k != "logprobs"})

    with NoLogprobs() as server:
        (reply,) = make(server.base_url).generate(["x"], max_tokens=2)
    assert reply.text == "positive" and reply.token_logprobs is None and reply.tokens == ()


def test_generate_nothing_sends_nothing() -> None:
    with FakeOpenAIServer() as server:
        assert make(server.base_url).generate([], max_tokens=4) == []
    assert server.requests == []


def test_concurrency_limit_is_respected() -> None:
    with FakeOpenAIServer(delay=0.1) as server:
        replies = make(server.base_url, concurrency=2).generate([f"p{i}" for i in range(8)], max_tokens=4)
    assert len(replies) == 8
    assert server.max_in_flight == 2


def test_generate_works_inside_a_running_event_loop() -> None:
    async def main(teacher: OpenAITeacher) -> list[str]:
        return [r.text for r in teacher.generate(["x"], max_tokens=4)]

    with FakeOpenAIServer() as server:
        assert asyncio.run(main(make(server.base_url))) == ["positive"]


def test_teacher_protocol() -> None:
    teacher = make("http://127.0.0.1:1/v1")
    assert isinstance(teacher, Teacher)
    assert teacher.name == "openai"


@pytest.mark.parametrize("chat", [True, False])
def test_count_tokens_asks_the_servers_tokenizer(chat: bool) -> None:
    """Issue 31: the count was len(text) // 4."""
    with FakeOpenAIServer() as server:
        teacher = make(server.base_url, chat=chat)
        assert teacher.count_tokens("one two three four five") == 5  # 23 characters: not 23 // 4
        assert teacher.count_tokens("one two three four five") == 5  # remembered: not asked again
        assert make(server.base_url, chat=chat).count_tokens("a b") == 2
    assert teacher.token_count_source == "server" and server.requests == []
    first = server.tokenize_requests[0]
    if chat:  # vLLM applies the chat template to messages
        assert first["messages"] == [{"role": "user", "content": "one two three four five"}]
        assert first["add_generation_prompt"] is True
    else:
        assert first["prompt"] == "one two three four five"
    assert "content" not in first  # the llama.cpp server's field: asked only where vLLM's shape fails
    assert len(server.tokenize_requests) == 2


def test_count_tokens_speaks_the_llama_cpp_servers_tokenize() -> None:
    class LlamaCppTokenize(FakeOpenAIServer):
        def handle_tokenize(self, body: Any) -> Any:
            if "content" not in body:  # the llama.cpp server reads `content` only
                return _error(500, "[json.exception.out_of_range.403] key 'content' not found")
            self.tokenize_requests.append(body)
            return _json(200, {"tokens": [1] * len(body["content"].split())})

    with LlamaCppTokenize() as server:
        teacher = make(server.base_url)
        assert (teacher.count_tokens("a b c"), teacher.count_tokens("d e")) == (3, 2)
    assert server.tokenize_requests == [{"content": "a b c", "add_special": True},
                                        {"content": "d e", "add_special": True}]


def test_count_tokens_without_a_tokenizer_comes_from_usage() -> None:
    with FakeOpenAIServer(tokenize=False) as server:
        teacher = make(server.base_url)
        assert teacher.count_tokens("w " * 30) == 30  # one max_tokens=1 request: usage.prompt_tokens
        assert [r["body"]["max_tokens"] for r in server.requests] == [1]
        assert teacher.count_tokens("w " * 10) == 10  # then tokens per character, measured
        assert len(server.requests) == 1 and teacher.token_count_source == "usage"
        teacher.generate(["a b c d"], max_tokens=2)
        assert teacher.usage == {"requests": 2, "prompt_tokens": 34, "completion_tokens": 1 + 1}
    assert len(server.tokenize_requests) == 2  # both /tokenize shapes, once: then known to have none


def test_fingerprint_ignores_base_urls() -> None:
    # issue 25: the fingerprint also holds what the server says it serves (GET /models), so the
    # URLs are compared with servers that serve the same weights; identify=False: the name alone
    with FakeOpenAIServer() as s1, FakeOpenAIServer() as s2, FakeOpenAIServer() as s3:
        a = make(s1.base_url)
        b = make([s2.base_url, s3.base_url], concurrency=9)
        assert a.fingerprint == b.fingerprint
    a = make("http://127.0.0.1:1/v1", identify=False)
    b = make(["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"], concurrency=9, identify=False)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != make("http://127.0.0.1:1/v1", chat=False, identify=False).fingerprint
    assert a.fingerprint != make("http://127.0.0.1:1/v1", model="other", identify=False).fingerprint
    # decides what a constraint does
    assert a.fingerprint != make("http://127.0.0.1:1/v1", guided="none", identify=False).fingerprint


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"concurrency": 0}, "concurrency (teacher.openai.concurrency) must be an int >= 1; got 0"),
        ({"max_retries": -1}, "max_retries (teacher.openai.max_retries) must be an int >= 0; got -1"),
        ({"timeout": 0}, "timeout (teacher.openai.timeout) must be > 0 seconds; got 0"),
        ({"base_url": []}, "base_url (teacher.openai.base_url) must be a URL or a non-empty list"),
    ],
)
def test_bad_arguments_name_the_field(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make(**{"base_url": "http://127.0.0.1:1/v1", **kw})


# ---- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["429", "500", "timeout", "garbage", "no_choices"])
def test_transient_fault_is_retried(fault: str) -> None:
    with FakeOpenAIServer(faults=[fault], hang=1.0) as server:
        (reply,) = make(server.base_url).generate(["x"], max_tokens=4)
    assert reply.text == "positive"
    assert len(server.requests) == 2


def test_retry_after_header_is_honoured() -> None:
    with FakeOpenAIServer(faults=["429"], retry_after="0.3") as server:
        start = time.monotonic()
        make(server.base_url, backoff=0.0).generate(["x"], max_tokens=4)
        assert time.monotonic() - start >= 0.3
    assert len(server.requests) == 2


def test_gives_up_after_max_retries_with_a_helpful_message() -> None:
    with FakeOpenAIServer(faults=["500"] * 10) as server:
        with pytest.raises(TeacherError) as info:
            make(server.base_url, max_retries=2).generate(["x"], max_tokens=4)
        url = server.base_url + "/chat/completions"
    message = str(info.value)
    assert f"POST {url} failed after 3 attempts" in message
    assert "HTTP 500: internal error (scripted fault)" in message
    assert "teacher.openai.max_retries (now 2)" in message and "teacher.openai.timeout (now 0.5s)" in message
    assert len(server.requests) == 3


def test_connection_error_is_retried_then_reported() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TeacherError, match=r"failed after 2 attempts; last error: connection error"):
        make(f"http://127.0.0.1:{port}/v1", max_retries=1).generate(["x"], max_tokens=4)


def test_client_error_is_not_retried() -> None:
    with FakeOpenAIServer(faults=["400"]) as server:
        with pytest.raises(TeacherError, match=r"refused with HTTP 400: bad request \(scripted fault\)"):
            make(server.base_url).generate(["x"], max_tokens=4)
    assert len(server.requests) == 1


# ---- API key -------------------------------------------------------------------------------


def test_api_key_is_sent_from_the_named_env_var_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMKD_TEST_KEY", SECRET)
    with FakeOpenAIServer(faults=["500", "500", "400"]) as server:
        teacher = make(server.base_url, api_key_env="LLMKD_TEST_KEY", max_retries=0)
        with pytest.raises(TeacherError) as retried:
            teacher.generate(["x"], max_tokens=4)
        with pytest.raises(TeacherError) as again:
            teacher.generate(["x"], max_tokens=4)
        with pytest.raises(TeacherError) as refused:
            teacher.generate(["x"], max_tokens=4)
        teacher.generate(["x"], max_tokens=4)
    assert {r["headers"].get("authorization") for r in server.requests} == {f"Bearer {SECRET}"}
    for shown in (teacher.fingerprint, repr(teacher), str(retried.value), str(again.value), str(refused.value)):
        assert SECRET not in shown


def test_no_auth_header_when_the_env_var_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMKD_TEST_KEY", raising=False)
    with FakeOpenAIServer() as server:
        make(server.base_url, api_key_env="LLMKD_TEST_KEY").generate(["x"], max_tokens=4)
    assert "authorization" not in server.requests[0]["headers"]


def test_key_echoed_by_a_server_is_scrubbed_from_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMKD_TEST_KEY", SECRET)

    class Leaky(FakeOpenAIServer):
        def handle(self, path: str, body: Any) -> Any:
            auth = self.requests[-1]["headers"].get("authorization", "")
            return 401, f'{{"error": {{"message": "bad key {auth}"}}}}'.encode(), {}

    with Leaky() as server:
        with pytest.raises(TeacherError) as info:
            make(server.base_url, api_key_env="LLMKD_TEST_KEY").generate(["x"], max_tokens=4)
    assert SECRET not in str(info.value)
    assert "HTTP 401: bad key Bearer ***" in str(info.value) and "'LLMKD_TEST_KEY'" in str(info.value)


def test_repr_hides_url_credentials() -> None:
    teacher = make("http://user:pw@127.0.0.1:1/v1")
    assert "pw" not in repr(teacher) and "127.0.0.1:1/v1" in repr(teacher)


# ---- score_options -------------------------------------------------------------------------


def echo_requests(server: FakeOpenAIServer) -> list[dict[str, Any]]:
    return [r["body"] for r in server.requests if r["body"].get("echo")]


def test_score_options_by_echo() -> None:
    prompts = ["Review: fine. Label:", "Label: "]  # the second prompt's last token straddles the option
    options = [" good", " terrible"]
    with FakeOpenAIServer() as server:
        teacher = make(server.base_url, chat=False)
        scores = teacher.score_options(prompts, options)
        assert teacher.score_options(prompts[1:], ["good"]) == [[pytest.approx(lp("good"))]]
    assert scores == [[pytest.approx(lp(" good")), pytest.approx(lp(" terrible"))],
                      [pytest.approx(lp(" good")), pytest.approx(lp(" terrible"))]]
    bodies = echo_requests(server)
    # the echo probe, the list probe, then one request per prompt with its options as a list of
    # prompts (issue 31: one per (prompt, option) pair before), and one for the single option
    assert len(bodies) == 1 + 1 + 2 + 1
    assert {(b["max_tokens"], b["logprobs"]) for b in bodies} == {(1, 0)}
    assert sorted(tuple(b["prompt"]) for b in bodies[2:4]) == sorted(tuple(p + o for o in options) for p in prompts)
    assert bodies[4]["prompt"] == "Label: good"


def test_score_options_one_request_per_option_where_lists_are_refused() -> None:
    prompts, options = ["Review: fine. Label:", "Label: "], [" good", " terrible"]
    with FakeOpenAIServer(list_prompts=False) as server:
        scores = make(server.base_url, chat=False).score_options(prompts, options)
    assert scores == [[pytest.approx(lp(" good")), pytest.approx(lp(" terrible"))]] * 2
    bodies = echo_requests(server)
    assert len(bodies) == 1 + 1 + 4 and isinstance(bodies[1]["prompt"], list)  # the refused list probe: not retried
    assert {b["prompt"] for b in bodies[2:]} == {p + o for p in prompts for o in options}


def test_score_options_multi_token_option_sums_its_tokens() -> None:
    with FakeOpenAIServer() as server:
        (scores,) = make(server.base_url, chat=False).score_options(["Q:"], [" very good", ""])
    assert scores == [pytest.approx(lp(" very") + lp(" good")), 0.0]


def test_score_options_asks_max_tokens_1() -> None:
    """Not 0: llama-cpp-python's server reads max_tokens 0 as "generate until the context is full"
    (measured in bench/llamacpp_server.py), and others refuse it; the generated token is not counted."""
    with FakeOpenAIServer(zero_max_tokens=False) as server:
        teacher = make(server.base_url, chat=False)
        first = teacher.score_options(["Label:"], [" good", " bad"])
        second = teacher.score_options(["Label:"], [" good", " bad"])
    assert first == second == [[pytest.approx(lp(" good")), pytest.approx(lp(" bad"))]]
    # the echo probe, the list probe, then one request per scoring (both options in it)
    assert [b["max_tokens"] for b in echo_requests(server)] == [1, 1, 1, 1]


@pytest.mark.parametrize("chat", [True, False])
def test_score_options_falls_back_to_first_token_top_logprobs(chat: bool) -> None:
    top = {" Positive": -0.2, " negative": -1.9, "neg": -2.5, "NEUTRAL": -3.0}
    with FakeOpenAIServer(script=lambda p: " Positive", supports_echo=False, top_logprobs=top) as server:
        teacher = make(server.base_url, chat=chat)
        scores = teacher.score_options(["a", "b"], ["positive", " negative", "neutral", "mixed"])
        again = teacher.score_options(["c"], ["positive"])
    assert scores == [[-0.2, -1.9, -3.0, -math.inf]] * 2
    assert again == [[-0.2]]
    # echo is tried once (chat=False only) and then remembered; chat=True never tries it
    assert len(echo_requests(server)) == (0 if chat else 1)
    fallback = [r["body"] for r in server.requests if not r["body"].get("echo")]
    assert len(fallback) == 3 and all(b["max_tokens"] == 1 for b in fallback)
    if chat:
        assert all(b["logprobs"] is True and b["top_logprobs"] == 20 for b in fallback)
    else:
        assert all(b["logprobs"] == 20 for b in fallback)


def test_fallback_sums_tokens_that_match_after_normalising() -> None:
    top = {" Yes": -1.0, "yes": -1.0, " no": -2.0}
    with FakeOpenAIServer(script=lambda p: "maybe", top_logprobs=top) as server:
        (scores,) = make(server.base_url).score_options(["q"], ["yes", "no"])
    assert scores == [pytest.approx(math.log(2 * math.exp(-1.0))), -2.0]


# ---- pools ---------------------------------------------------------------------------------


def test_pool_of_servers_shares_the_requests() -> None:
    with FakeOpenAIServer(delay=0.05) as a, FakeOpenAIServer(delay=0.05) as b:
        replies = make([a.base_url, b.base_url], concurrency=4).generate([f"p{i}" for i in range(8)], max_tokens=4)
    assert len(replies) == 8
    assert len(a.requests) > 0 and len(b.requests) > 0
    assert len(a.requests) + len(b.requests) == 8


def test_pool_sends_more_to_the_less_busy_server() -> None:
    with FakeOpenAIServer(delay=1.5) as slow, FakeOpenAIServer() as fast:
        make([slow.base_url, fast.base_url], concurrency=2, timeout=10.0).generate([f"p{i}" for i in range(6)], max_tokens=4)
    assert len(slow.requests) == 1 and len(fast.requests) == 5


# ---- constrained decoding ------------------------------------------------------------------


def test_choice_constraint_is_sent_in_the_vllm_dialect_by_default() -> None:
    from llmkd.teachers.base import Constraint

    with FakeOpenAIServer(script=lambda p: "maybe") as s:  # vLLM >= 0.12
        replies = make(s.base_url).generate(["a", "b"], max_tokens=4, constraint=Constraint.choice(["negative", "positive"]))
        make(s.base_url).generate(["c"], max_tokens=4)
    assert [r["body"].get("structured_outputs") for r in s.requests] == [{"choice": ["negative", "positive"]}] * 2 + [None]
    assert not any(k.startswith("guided_") for r in s.requests for k in r["body"])
    assert [r.text for r in replies] == ["negative"] * 2 and s.applied == ["choice", "choice", None]


def test_constraint_dialects() -> None:
    from llmkd.teachers.base import Constraint

    schema = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}}
    with FakeOpenAIServer() as s:
        make(s.base_url, guided="llamacpp").generate(["p"], max_tokens=4, constraint=Constraint.choice(['say "hi"', "b"]))
        make(s.base_url, guided="llamacpp").generate(["p"], max_tokens=4, constraint=Constraint.json_schema(schema))
        make(s.base_url, guided="openai").generate(["p"], max_tokens=4, constraint=Constraint.json_schema(schema))
        make(s.base_url, guided="openai").generate(["p"], max_tokens=4, constraint=Constraint.choice(["a"]))
        make(s.base_url, guided="none").generate(["p"], max_tokens=4, constraint=Constraint.choice(["a"]))
    bodies = [r["body"] for r in s.requests]
    assert bodies[0]["grammar"] == 'root ::= "say \\"hi\\"" | "b"'
    assert bodies[1]["json_schema"] == schema  # the llama.cpp server; llama-cpp-python's reads response_format
    assert bodies[1]["response_format"] == {"type": "json_object", "schema": schema}
    assert bodies[2]["response_format"]["json_schema"]["schema"] == schema
    guided_keys = {"guided_choice", "guided_json", "guided_grammar", "grammar", "json_schema", "response_format"}
    assert not guided_keys & set(bodies[3]) and not guided_keys & set(bodies[4])
    with pytest.raises(ConfigError, match="guided"):
        make("http://x/v1", guided="sglang")


def test_a_server_that_refuses_guided_decoding_gets_plain_requests() -> None:
    from llmkd.teachers.base import Constraint

    with FakeOpenAIServer(script=lambda p: "positive", faults=["400"]) as s:
        t = make(s.base_url)
        replies = t.generate(["a", "b", "c"], max_tokens=4, constraint=Constraint.choice(["negative", "positive"]))
        t.generate(["d"], max_tokens=4, constraint=Constraint.choice(["negative", "positive"]))
    assert [r.text for r in replies] == ["positive"] * 3
    assert "structured_outputs" in s.requests[0]["body"]  # the refused probe
    assert all("structured_outputs" not in r["body"] for r in s.requests[1:]) and len(s.requests) == 5


def test_replies_of_a_refused_guided_request_are_cached_as_unconstrained(tmp_path) -> None:
    """The server refuses guided decoding: the free replies it then gives are filed under the
    unconstrained key, so they are never served to a later run as constrained ones, and a later
    unconstrained request for the same prompts is a cache hit."""
    from llmkd.teachers.base import Constraint
    from llmkd.teachers.cache import CachedTeacher, TeacherCache

    choice = Constraint.choice(["negative", "positive"])
    with FakeOpenAIServer(script=lambda p: "positive", faults=["400"]) as s:
        raw = make(s.base_url)
        assert raw.applies(choice) is None  # not known before the server answered
        t = CachedTeacher(raw, TeacherCache(tmp_path / "c.sqlite"))
        t.generate(["a", "b"], max_tokens=4, constraint=choice)
        assert raw.applies(choice) is False and t.misses == 2
        t.generate(["a", "b"], max_tokens=4)  # unconstrained: the same free replies, cached
        t.generate(["a", "b"], max_tokens=4, constraint=choice)  # still refused: the free key
        assert t.hits == 4 and len(s.requests) == 3  # the refused probe + 2 plain requests
    with FakeOpenAIServer(script=lambda p: "negative") as s2:  # a server that takes guided requests
        guided = make(s2.base_url)
        guided.generate(["a"], max_tokens=4, constraint=choice)
        assert guided.applies(choice) is True
    assert make("http://x/v1", guided="openai").applies(choice) is False  # the dialect cannot carry it


def test_a_chat_turn_goes_to_chat_completions_in_plain_mode() -> None:
    from llmkd.teachers.base import ChatTurn

    with FakeOpenAIServer(script=lambda p: f"re {p}") as server:
        replies = make(server.base_url, chat=False).generate(["plain", ChatTurn("turn")], max_tokens=8)
    assert [r.text for r in replies] == ["re plain", "re turn"]
    by_path = {r["path"]: r["body"] for r in server.requests}
    assert by_path["/v1/completions"]["prompt"] == "plain"
    assert by_path["/v1/chat/completions"]["messages"] == [{"role": "user", "content": "turn"}]


# ---- issue 25 ------------------------------------------------------------------------------


class NoLogprobsServer(FakeOpenAIServer):
    """A server that answers but never returns logprobs (nor echo): like a proxy that drops them."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(supports_echo=False, **kw)

    def _chat(self, body: dict[str, Any]) -> Any:
        return super()._chat({k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")})

    def _completions(self, body: dict[str, Any]) -> Any:
        return super()._completions({k: v for k, v in body.items() if k != "logprobs"})


@pytest.mark.parametrize("chat", [True, False])
def test_scoring_against_a_server_without_logprobs_fails_clearly_and_caches_nothing(tmp_path, chat: bool) -> None:
    """Issue 25 item 1: every item got the first label at 0.5 and the -inf scores were cached."""
    from llmkd.labeling import label_examples
    from llmkd.tasks.classification import ClassificationTask
    from llmkd.teachers.cache import CachedTeacher, TeacherCache
    from llmkd.types import Unlabeled

    task = ClassificationTask(labels=["negative", "positive"])
    items = [Unlabeled(f"u{i}", f"text {i}") for i in range(3)]
    cache = TeacherCache(tmp_path / "c.sqlite")
    with NoLogprobsServer() as server:
        teacher = CachedTeacher(make(server.base_url, chat=chat), cache)
        with pytest.raises(TeacherError) as info:
            label_examples(task, teacher, items, (), mode="score", progress=False)
    message = str(info.value)
    assert "needs token logprobs" in message and "returned none in 3 of 3 replies" in message
    assert "teacher.labeling: generate" in message and "teacher.confidence: false" in message
    assert "nothing was cached" in message and server.base_url in message
    assert cache.stats()["entries"] == 0
    top = {"negative": -2.0, "positive": -0.1}
    with FakeOpenAIServer(script=lambda p: "positive", supports_echo=False, top_logprobs=top) as fixed:
        labels = label_examples(task, CachedTeacher(make(fixed.base_url, chat=chat), cache), items, (),
                                mode="score", progress=False)
    assert len(fixed.requests) >= 3  # the rerun asks the fixed server
    assert [lab.label for lab in labels] == ["positive"] * 3 and labels[0].confidence > 0.8


def test_scoring_without_top_alternatives_fails_too() -> None:
    """A server that returns the generated token's logprob but no top_logprobs would score every
    other option -inf: the label would be whatever the model wrote, at confidence 1.0."""

    class NoTop(FakeOpenAIServer):
        def _chat(self, body: dict[str, Any]) -> Any:
            return super()._chat({k: v for k, v in body.items() if k != "top_logprobs"})

    with NoTop() as server:
        with pytest.raises(TeacherError, match="needs token logprobs"):
            make(server.base_url).score_options(["q"], ["positive", "negative"])


class IntContent(FakeOpenAIServer):
    """Replies whose content is an int (the first ``bad`` of them), then good ones."""

    def __init__(self, bad: int, value: Any = 5, **kw: Any) -> None:
        super().__init__(**kw)
        self.bad = bad
        self.value = value

    def _chat(self, body: dict[str, Any]) -> Any:
        status, payload, headers = super()._chat(body)
        with self._lock:
            self.bad -= 1
            broken = self.bad >= 0
        if broken:
            import json

            data = json.loads(payload)
            data["choices"][0]["message"]["content"] = self.value
            payload = json.dumps(data).encode()
        return status, payload, headers


@pytest.mark.parametrize("value", [5, ["a", "list"]])
def test_a_reply_whose_content_is_not_a_string_is_retried(value: Any) -> None:
    with IntContent(bad=1, value=value) as server:
        (reply,) = make(server.base_url).generate(["x"], max_tokens=4)
    assert reply.text == "positive" and len(server.requests) == 2


def test_a_server_that_keeps_sending_malformed_replies_fails_and_nothing_is_cached(tmp_path) -> None:
    from llmkd.teachers.cache import CachedTeacher, TeacherCache

    cache = TeacherCache(tmp_path / "c.sqlite")
    with IntContent(bad=100, value=[1, 2]) as server:
        with pytest.raises(TeacherError) as info:
            CachedTeacher(make(server.base_url, max_retries=2), cache).generate(["x"], max_tokens=4)
    assert "failed after 3 attempts" in str(info.value)
    assert "malformed reply: choices[0].message.content is not a string (got list [1, 2])" in str(info.value)
    assert cache.stats()["entries"] == 0


def test_retry_backoff_is_capped() -> None:
    """Issue 25 item 2: the delay doubled without bound (backoff * 2**attempt)."""
    teacher = make("http://127.0.0.1:1/v1", backoff=0.5, max_backoff=30.0)
    delays = [teacher._retry_delay(a) for a in range(200)]
    assert all(0 <= d <= 30.0 for d in delays)
    assert delays[0] <= 0.5 and delays[0] >= 0.45
    assert min(delays[10:]) >= 27.0  # at the cap, minus at most 10% jitter
    assert len({round(d, 6) for d in delays[10:]}) > 1  # jittered, not in lockstep
    assert teacher._retry_delay(5000) <= 30.0  # no OverflowError on 2**5000
    assert teacher._retry_delay(0, retry_after=45.0) == 45.0  # the server's Retry-After still wins
    with FakeOpenAIServer(faults=["500"] * 3) as server:
        start = time.monotonic()
        (reply,) = make(server.base_url, backoff=60.0, max_backoff=0.05).generate(["x"], max_tokens=4)
        assert time.monotonic() - start < 5.0
    assert reply.text == "positive" and len(server.requests) == 4
    with pytest.raises(ConfigError, match=re.escape("max_backoff (teacher.openai.max_backoff) must be > 0")):
        make("http://127.0.0.1:1/v1", max_backoff=0)


def test_url_credentials_are_never_shown() -> None:
    """Issue 25 item 3: user:password@ in base_url."""
    from llmkd.teachers.base import redact_url

    assert redact_url("https://alice:s3cret@host:8000/v1") == "https://alice:***@host:8000/v1"
    assert redact_url("https://tok3n@host/v1") == "https://***@host/v1"
    assert redact_url("https://host/v1?api_key=s3cret&x=1") == "https://host/v1?api_key=***&x=1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    with FakeOpenAIServer(faults=["500"] * 5) as server:
        url = server.base_url.replace("http://", "http://alice:s3cret@")
        teacher = make(url, max_retries=1)
        other = make(server.base_url.replace("http://", "http://bob:other@"), max_retries=1)
        assert teacher.fingerprint == other.fingerprint  # the credentials are no part of it
        with pytest.raises(TeacherError) as info:
            teacher.generate(["x"], max_tokens=4)
    for shown in (str(info.value), repr(teacher), str(teacher.served_identity())):
        assert "s3cret" not in shown
    assert "alice:***@127.0.0.1" in str(info.value)
    import base64

    sent = {r["headers"].get("authorization") for r in server.requests}  # still sent, as Basic auth
    assert sent == {"Basic " + base64.b64encode(b"alice:s3cret").decode(), "Basic " + base64.b64encode(b"bob:other").decode()} \
        or sent == {"Basic " + base64.b64encode(b"alice:s3cret").decode()}


# ---- issue 25 item 4: the cache knows which model answered -----------------------------------


def test_another_model_served_under_the_same_name_is_asked_afresh(tmp_path) -> None:
    from llmkd.teachers.cache import CachedTeacher, TeacherCache

    cache = TeacherCache(tmp_path / "c.sqlite")
    prompts = ["a", "b", "c"]
    with FakeOpenAIServer(script=lambda p: "positive", served="/models/qwen-7b") as first:
        assert [r.text for r in CachedTeacher(make(first.base_url), cache).generate(prompts, max_tokens=4)] == \
            ["positive"] * 3
    with FakeOpenAIServer(script=lambda p: "negative", served="/models/llama-8b") as second:
        again = CachedTeacher(make(second.base_url), cache)
        assert [r.text for r in again.generate(prompts, max_tokens=4)] == ["negative"] * 3
    assert len(second.requests) == 3 and again.misses == 3
    with FakeOpenAIServer(script=lambda p: "other", served="/models/qwen-7b") as restarted:  # same weights, new port
        rerun = CachedTeacher(make(restarted.base_url), cache)
        assert [r.text for r in rerun.generate(prompts, max_tokens=4)] == ["positive"] * 3
    assert restarted.requests == [] and len(restarted.gets) == 1  # the volatile `created` is left out


def test_a_pool_serving_different_models_under_one_name_is_refused() -> None:
    with FakeOpenAIServer(served="/models/a") as a, FakeOpenAIServer(served="/models/b") as b:
        teacher = make([a.base_url, b.base_url])
        with pytest.raises(TeacherError) as info:
            teacher.generate(["x"], max_tokens=4)
    assert "serve different models under the name 'fake-model'" in str(info.value)
    assert "/models/a" in str(info.value) and "/models/b" in str(info.value)
    assert a.requests == [] and b.requests == []


def test_a_server_that_lists_no_models_is_keyed_by_the_name(caplog: pytest.LogCaptureFixture) -> None:
    with FakeOpenAIServer(models_status=404) as server:
        teacher = make(server.base_url)
        assert teacher.fingerprint == make(server.base_url, identify=False).fingerprint
        assert teacher.served_identity() is None
    assert "does not say which model it serves" in caplog.text
    assert len(server.gets) == 1  # asked once per teacher, not per use


def test_identity_keeps_only_stable_fields() -> None:
    from llmkd.teachers.openai import _model_entry, _stable_identity

    now = 2_000_000_000.0
    vllm = {"id": "teacher", "object": "model", "created": int(now), "owned_by": "vllm", "root": "/m/Qwen2.5-7B",
            "parent": None, "max_model_len": 32768, "permission": [{"id": "modelperm-123", "created": int(now)}]}
    assert _stable_identity(vllm, now) == {"id": "teacher", "owned_by": "vllm", "root": "/m/Qwen2.5-7B",
                                           "max_model_len": 32768}
    hosted = {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}
    assert _stable_identity(hosted, now)["created"] == 1721172741
    llamacpp = {"id": "q.gguf", "created": int(now), "owned_by": "llamacpp",
                "meta": {"n_params": 494032768, "size": 531065856, "n_vocab": 151936, "n_ctx_train": 32768}}
    assert _stable_identity(llamacpp, now)["meta"]["size"] == 531065856
    listing = {"data": [hosted, {"id": "gpt-4o"}]}
    assert _model_entry(listing, "gpt-4o-mini") == (hosted, "")
    assert _model_entry(listing, "nope")[0] is None
    assert _model_entry({"data": [llamacpp]}, "any-name") == (llamacpp, "")  # one-model server
    assert _model_entry({"models": [{"id": "llama3:latest"}, {"id": "x"}]}, "llama3")[0] == {"id": "llama3:latest"}


def test_a_server_down_when_identified_gives_a_fingerprint_that_matches_nothing() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    teacher = make(f"http://127.0.0.1:{port}/v1", max_retries=0)
    assert teacher.fingerprint != make(f"http://127.0.0.1:{port}/v1", identify=False).fingerprint
    with pytest.raises(TeacherError, match=r"GET http://127\.0\.0\.1:\d+/v1/models failed after 1 attempt; .*"
                                           r"teacher\.openai\.identify: false"):
        teacher.generate(["x"], max_tokens=4)


def test_a_prompt_the_server_finds_too_long_abstains_and_the_rest_are_labeled(tmp_path) -> None:
    """Issue 25 item 4 for servers: vLLM / llama.cpp server answer 400 'maximum context length'."""
    from tests.fake_openai_server import _error
    from llmkd.labeling import label_examples
    from llmkd.tasks.classification import ClassificationTask
    from llmkd.teachers.cache import CachedTeacher, TeacherCache
    from llmkd.types import Unlabeled

    import json

    class SmallContextServer(FakeOpenAIServer):
        def handle(self, path: str, body: Any) -> Any:
            if body and "LONG" in json.dumps(body):
                return _error(400, "This model's maximum context length is 2048 tokens. However, you requested 9000")
            return super().handle(path, body)

    task = ClassificationTask(labels=["negative", "positive"])
    items = [Unlabeled("a", "fine"), Unlabeled("b", "LONG " * 50), Unlabeled("c", "good")]
    with SmallContextServer(script=lambda p: "positive") as server:
        teacher = CachedTeacher(make(server.base_url, concurrency=4), TeacherCache(tmp_path / "c.sqlite"))
        labels = label_examples(task, teacher, items, (), mode="generate", confidence=False, progress=False)
    assert [lab.label for lab in labels] == ["positive", None, "positive"]
    assert labels[1].error.startswith("too_long: the server refused the prompt as too long (HTTP 400: This model's maximum")


# ---- issue 31: real-server correctness -------------------------------------------------------

CHOICE = ["negative", "positive"]
SCHEMA = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}}
GRAMMAR = 'root ::= "yes" | "no"'


def constrained_bodies(server: FakeOpenAIServer) -> list[dict[str, Any]]:
    return [r["body"] for r in server.requests]


def test_vllm_0_12_gets_structured_outputs_in_every_shape() -> None:
    from llmkd.teachers.base import Constraint

    with FakeOpenAIServer(script=lambda p: "not json", vllm_version="0.13.1") as s:
        teacher = make(s.base_url)
        (choice,) = teacher.generate(["a"], max_tokens=4, constraint=Constraint.choice(CHOICE))
        (js,) = teacher.generate(["b"], max_tokens=4, constraint=Constraint.json_schema(SCHEMA))
        teacher.generate(["c"], max_tokens=4, constraint=Constraint.gbnf(GRAMMAR))
        make(s.base_url, chat=False).generate(["d"], max_tokens=4, constraint=Constraint.choice(CHOICE))
    bodies = constrained_bodies(s)
    assert bodies[0]["structured_outputs"] == {"choice": CHOICE}
    assert bodies[1]["structured_outputs"] == {"json": SCHEMA}
    assert bodies[2]["structured_outputs"] == {"grammar": GRAMMAR}
    assert bodies[3]["structured_outputs"] == {"choice": CHOICE} and "prompt" in bodies[3]  # /completions too
    assert not any(k.startswith("guided_") for b in bodies for k in b)
    assert (choice.text, js.text) == ("negative", "{}")  # the fake applied them
    assert s.gets.count("/version") == 1  # once per server and process, for every teacher on it


def test_old_vllm_gets_the_guided_fields() -> None:
    from llmkd.teachers.base import Constraint

    with FakeOpenAIServer(script=lambda p: "maybe", vllm_version="0.11.2") as s:
        teacher = make(s.base_url)
        (reply,) = teacher.generate(["a"], max_tokens=4, constraint=Constraint.choice(CHOICE))
        teacher.generate(["b"], max_tokens=4, constraint=Constraint.json_schema(SCHEMA))
        teacher.generate(["c"], max_tokens=4, constraint=Constraint.gbnf(GRAMMAR))
        assert teacher.applies(Constraint.choice(CHOICE)) is True
    bodies = constrained_bodies(s)
    assert bodies[0]["guided_choice"] == CHOICE and bodies[1]["guided_json"] == SCHEMA
    assert bodies[2]["guided_grammar"] == GRAMMAR
    assert not any("structured_outputs" in b for b in bodies)
    assert reply.text == "negative"


@pytest.mark.parametrize(("applies", "sent"), [("structured_outputs", "structured_outputs"),
                                               ("guided", "guided_choice"), ("none", None)])
def test_a_server_without_a_version_is_probed(applies: str, sent: str | None) -> None:
    from llmkd.teachers.base import Constraint

    choice = Constraint.choice(CHOICE)
    with FakeOpenAIServer(script=lambda p: "maybe", vllm_version=None, applies=applies) as s:
        teacher = make(s.base_url)
        (reply,) = teacher.generate(["a"], max_tokens=4, constraint=choice)
        make(s.base_url).generate(["b"], max_tokens=4, constraint=choice)  # known for the process: no probe
        applied = teacher.applies(choice)
    assert applied is (sent is not None)
    probes = [b for b in constrained_bodies(s) if "Reply with one word." in json.dumps(b)]
    assert 1 <= len(probes) <= 2 and len(s.requests) == len(probes) + 2
    last = s.requests[-1]["body"]
    if sent is None:  # applies neither: plain requests, and the cache files the replies as free ones
        assert reply.text == "maybe"
        assert not {"structured_outputs", "guided_choice"} & set(last)
    else:
        assert sent in last and reply.text == "negative"


def test_the_request_body_is_what_vllm_documents() -> None:
    """The whole body of a constrained chat request to vLLM >= 0.12, field by field."""
    from llmkd.teachers.base import Constraint

    with FakeOpenAIServer() as s:
        make(s.base_url).generate(["hello"], max_tokens=3, stop=["\n"], seed=5, constraint=Constraint.choice(CHOICE))
    assert s.requests[0]["path"] == "/v1/chat/completions"
    assert s.requests[0]["body"] == {
        "model": "fake-model", "max_tokens": 3, "temperature": 0.0, "seed": 5,
        "messages": [{"role": "user", "content": "hello"}], "logprobs": True, "stop": ["\n"],
        "structured_outputs": {"choice": CHOICE},
    }


@pytest.mark.parametrize("version", ["0.12.0", None])
def test_a_reply_that_breaks_the_constraint_is_cached_and_counted_unconstrained(tmp_path, version) -> None:
    """Issue 31: vLLM >= 0.12 ignored guided_choice, answered 200, and the free replies were
    cached as constrained. Here a server reports 0.12 but ignores the fields (or reports nothing)."""
    from llmkd.teachers.base import Constraint
    from llmkd.teachers.cache import CachedTeacher, TeacherCache

    choice = Constraint.choice(CHOICE)
    script = {"a": "positive", "b": "I think it is positive", "c": " negative"}
    cache = TeacherCache(tmp_path / "c.sqlite")
    with FakeOpenAIServer(script=lambda p: script.get(p, "maybe"), vllm_version=version, applies="none") as s:
        t = CachedTeacher(make(s.base_url), cache)
        replies = t.generate(["a", "b", "c"], max_tokens=8, constraint=choice)
    if version is None:  # the probe found that it applies nothing: all three are free replies
        assert [r.constrained for r in replies] == [False] * 3 and t.violations == 0
        assert t.unconstrained_replies == 3
        return
    assert [r.constrained for r in replies] == [True, False, True]
    assert (t.constrained_replies, t.unconstrained_replies, t.violations) == (2, 1, 1)
    with FakeOpenAIServer(script=lambda p: "never asked") as s2:  # a rerun: all cached, the same verdict
        again = CachedTeacher(make(s2.base_url), cache)
        replies = again.generate(["a", "b", "c"], max_tokens=8, constraint=choice)
        assert s2.requests == [] and again.hits == 3
    assert [r.constrained for r in replies] == [True, False, True] and again.unconstrained_replies == 1
    import sqlite3

    stored = [json.loads(v) for (v,) in sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT value FROM entries")]
    assert sorted(str(v.get("constrained")) for v in stored) == ["False", "None", "None"]


def test_rows_cached_before_the_check_are_checked_when_read(tmp_path) -> None:
    """A reply cached under a constrained key by an older llmkd (no marker) is checked on read."""
    from llmkd.teachers.base import Constraint
    from llmkd.teachers.cache import CachedTeacher, TeacherCache, cache_key
    from llmkd.types import Reply

    choice = Constraint.choice(CHOICE)
    cache = TeacherCache(tmp_path / "c.sqlite")
    with FakeOpenAIServer() as s:
        teacher = make(s.base_url)
        params = {"max_tokens": 8, "temperature": 0.0, "stop": [], "constraint": choice.key()}
        cache.put(cache_key(teacher.fingerprint, "generate", "x", params), teacher.fingerprint, "generate",
                  Reply("a free reply").to_dict(), 0.1)
        t = CachedTeacher(teacher, cache)
        (reply,) = t.generate(["x"], max_tokens=8, constraint=choice)
    assert reply.text == "a free reply" and reply.constrained is False and t.violations == 1
    assert s.requests == []


def test_local_backends_replies_are_checked_too(tmp_path) -> None:
    """The check is the cache wrapper's: it holds for every backend, e.g. one that says it applies
    every constraint (like llama.cpp) but returns a JSON reply cut off at max_tokens."""
    from llmkd.teachers.base import Constraint
    from llmkd.teachers.cache import CachedTeacher, TeacherCache
    from llmkd.types import Reply

    class Local:
        name, fingerprint = "local", "local-v1"

        def applies(self, constraint: Constraint) -> bool:
            return True

        def generate(self, prompts, **kw):
            return [Reply('{"label": "a"}' if p == "ok" else '{"label": "a', completion_tokens=4) for p in prompts]

        def count_tokens(self, text: str) -> int:
            return len(text.split())

    t = CachedTeacher(Local(), TeacherCache(tmp_path / "c.sqlite"))
    replies = t.generate(["ok", "cut"], max_tokens=4, constraint=Constraint.json_schema(SCHEMA))
    assert [r.constrained for r in replies] == [True, False] and t.violations == 1
    assert t.asked_completion_tokens == 8
    (free,) = t.generate(["ok"], max_tokens=4)
    assert free.constrained is None


@pytest.mark.parametrize(("kind", "good", "bad"), [
    ("choice", " positive\n", "positively"),
    ("json", '{"label": "a"}', '{"label": '),
    ("grammar", "yes", "yes!"),
])
def test_constraint_violation(kind: str, good: str, bad: str) -> None:
    from llmkd.teachers.base import Constraint

    c = {"choice": Constraint.choice(CHOICE), "json": Constraint.json_schema(SCHEMA), "grammar": Constraint.gbnf(GRAMMAR)}[kind]
    assert c.violation(good) == ""
    assert c.violation(bad) != ""


def test_the_tasks_grammars_are_checked() -> None:
    from llmkd.tasks.ner import NerTask
    from llmkd.teachers.base import Constraint

    grammar = NerTask(labels=["PER", "LOC"]).constraint()
    assert isinstance(grammar, Constraint) and grammar.kind == "grammar"
    assert grammar.violation("PER: John Smith\nLOC: Paris") == ""
    assert grammar.violation(" none") == ""
    assert "does not follow the grammar" in grammar.violation("ORG: ACME")
    assert Constraint.gbnf("root ::= (((").violation("anything") == ""  # unreadable: not checked


def test_a_pool_gets_each_servers_dialect() -> None:
    from llmkd.teachers.base import Constraint

    with FakeOpenAIServer(script=lambda p: "maybe", vllm_version="0.12.1") as new, \
            FakeOpenAIServer(script=lambda p: "maybe", vllm_version="0.10.1") as old:
        teacher = make([new.base_url, old.base_url], concurrency=2)
        replies = teacher.generate([f"p{i}" for i in range(6)], max_tokens=4, constraint=Constraint.choice(CHOICE))
    assert {r.text for r in replies} == {"negative"}
    assert new.requests and old.requests
    assert all("structured_outputs" in r["body"] for r in new.requests)
    assert all("guided_choice" in r["body"] for r in old.requests)


def test_a_version_from_a_server_that_is_not_vllm_is_not_trusted() -> None:
    """SGLang also answers GET /version; only a server whose model is owned_by vllm (or says
    nothing) is taken at its version, the others are probed."""
    from llmkd.teachers.base import Constraint

    models = [{"id": "fake-model", "object": "model", "owned_by": "sglang", "root": "/m"}]
    with FakeOpenAIServer(script=lambda p: "maybe", vllm_version="0.4.6", applies="structured_outputs",
                          models=models) as s:
        (reply,) = make(s.base_url).generate(["a"], max_tokens=4, constraint=Constraint.choice(CHOICE))
    assert reply.text == "negative" and "structured_outputs" in s.requests[-1]["body"]
    assert "llmkd-probe-zq7x" in json.dumps(s.requests[0]["body"])
