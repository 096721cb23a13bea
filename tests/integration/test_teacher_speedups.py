"""Scale-out: N one-slot loopback servers label about N times faster (the throughput issue's
target is >= 0.9 N for N <= 4; this test asks for a looser 0.7 N so a loaded CI machine does
not make it flaky -- the benchmark, bench/teacher_speed.py, measures the real ratio)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from teacher_speed import stub_server  # noqa: E402

from llmkd.teachers.openai import OpenAITeacher  # noqa: E402


def _throughput(n_servers: int, prompts: list[str], delay: float) -> float:
    servers = [stub_server(delay) for _ in range(n_servers)]
    try:
        t = OpenAITeacher(model="stub", base_url=[u for _, u in servers], api_key_env=None,
                          concurrency=2 * n_servers, max_retries=0)
        t0 = time.perf_counter()
        replies = t.generate(prompts, max_tokens=1)
        assert [r.text for r in replies] == ["positive"] * len(prompts)
        return len(prompts) / (time.perf_counter() - t0)
    finally:
        for httpd, _ in servers:
            httpd.shutdown()
            httpd.server_close()


def test_n_loopback_servers_give_about_n_times_the_throughput() -> None:
    prompts = [f"prompt {i}" for i in range(32)]
    delay = 0.08  # long enough that client overhead on a loaded machine stays small next to it
    one = _throughput(1, prompts, delay)
    for n in (2, 4):
        assert _throughput(n, prompts, delay) >= 0.7 * n * one
