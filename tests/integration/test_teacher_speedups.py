"""Scale-out: OpenAITeacher over N one-slot loopback servers spreads its requests over all N and
keeps at most ``concurrency / N`` in flight at each, which is what makes N servers label about N
times faster. The speed itself is measured by the benchmark (bench/teacher_speed.py), never by a
timed assertion here: these checks hold however loaded the machine is."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from llmkd.teachers.openai import OpenAITeacher

from tests.fake_openai_server import FakeOpenAIServer


@pytest.mark.parametrize("n_servers", [1, 2, 4])
def test_requests_are_spread_over_all_one_slot_servers(n_servers: int) -> None:
    prompts = [f"prompt {i}" for i in range(32)]
    per_server = 2
    with ExitStack() as stack:
        servers = [stack.enter_context(FakeOpenAIServer(delay=0.02, slots=1)) for _ in range(n_servers)]
        teacher = OpenAITeacher(model="stub", base_url=[s.base_url for s in servers], api_key_env=None,
                                concurrency=per_server * n_servers, max_retries=0)
        replies = teacher.generate(prompts, max_tokens=1)
    assert [r.text for r in replies] == ["positive"] * len(prompts)
    counts = [len(s.requests) for s in servers]
    assert sum(counts) == len(prompts)
    # the first concurrency requests go out round-robin over equally idle servers
    assert min(counts) >= per_server
    for s in servers:
        assert s.max_busy == 1  # one slot: one request handled at a time
        assert s.max_in_flight <= per_server  # least-busy balancing never piles onto one server
