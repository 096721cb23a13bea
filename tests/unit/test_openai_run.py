"""Issue 25 items 3 and 5, through the API with the loopback OpenAI server: credentials in
teacher.openai.base_url never reach the run folder or the log, and a run resumed against the
same model on another port is the same run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from llmkd import api
from llmkd.config import dump_config, parse_config
from llmkd.errors import ConfigError
from tests.fake_openai_server import FakeOpenAIServer


def config(tmp_path: Path, base_url: str, **teacher: Any):
    rows = [{"text": f"{'good' if i % 2 else 'bad'} film number {i}", "label": "positive" if i % 2 else "negative"}
            for i in range(40)]
    for name in ("train", "test"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return parse_config({
        "name": "creds", "seed": 0,
        "data": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl"),
                 "split": {"labeled_per_class": 2, "dev_per_class": 2, "pool_size": 6}},
        "teacher": {"backend": "openai", "model": "fake", "confidence": False,
                    "openai": {"base_url": base_url, "api_key_env": None, "max_retries": 0}, **teacher},
        "methods": ["vanilla"], "output_dir": str(tmp_path / "runs"), "cache": str(tmp_path / "cache.sqlite"),
        "progress": False,
    })


def script(prompt: str) -> str:
    return "positive" if prompt.rstrip().rsplit("Text:", 1)[-1].count("good") else "negative"


def test_url_credentials_never_reach_the_run_folder_or_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(script=script) as server:
        url = server.base_url.replace("http://", "http://alice:s3cret-pw@")
        run_dir, labels = api.label(config(tmp_path, url))
    assert len(labels) == 6
    written = (run_dir / "config.yaml").read_text()
    assert "s3cret-pw" not in written and "alice:***@127.0.0.1" in written
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert "s3cret-pw" not in path.read_text(errors="replace"), path
    assert "s3cret-pw" not in caplog.text
    with FakeOpenAIServer() as server:
        cfg = config(tmp_path, [server.base_url.replace("http://", "http://bob:pw2@"), server.base_url])
        assert "pw2" not in dump_config(cfg) and "bob:***@" in dump_config(cfg)


def test_a_rerun_against_the_same_model_on_another_port_resumes(tmp_path: Path) -> None:
    """Issue 25 item 5: only the port changed, and the rerun refused with "different config"."""
    with FakeOpenAIServer(script=script) as first:
        run_dir, labels = api.label(config(tmp_path, first.base_url))
    with FakeOpenAIServer(script=script) as moved:  # the same weights, served from another port
        again_dir, again = api.label(config(tmp_path, moved.base_url))
    assert again_dir == run_dir and [lab.label for lab in again] == [lab.label for lab in labels]
    assert moved.requests == []  # the cache knows the served model: nothing is asked again
    with FakeOpenAIServer(script=script) as moved:
        with pytest.raises(ConfigError, match=r"differs in: teacher"):
            api.label(config(tmp_path, moved.base_url, model="another-model"))


def test_the_dry_run_shows_the_servers_token_counts_and_dollars(tmp_path: Path) -> None:
    """Issue 31: the dry run counted len(text) // 4 and showed no cost."""
    from tests.fake_openai_server import tokenize

    with FakeOpenAIServer(script=script) as server:
        cfg = config(tmp_path, server.base_url, price_per_mtok={"input": 2.0, "output": 10.0})
        est = api.dry_run(cfg)
        counted = [r["messages"][-1]["content"] for r in server.tokenize_requests]
    assert est["prompt_tokens_counted_by"] == "server" and server.requests == []  # nothing generated
    sample = counted[: est["prompts"]]  # every prompt (6 < 50), then the shared prefix
    mean = sum(len(tokenize(t)) for t in sample) / len(sample)
    assert est["prompt_tokens"] == int(mean * est["prompts"])
    assert est["labeling_prompt_tokens"] == int(mean * est["prompts"])  # confidence: false, generate
    assert est["labeling_completion_tokens_at_most"] == 8 * est["prompts"]
    assert est["labeling_usd_at_most"] == pytest.approx(
        round((mean * est["prompts"] * 2.0 + 8 * est["prompts"] * 10.0) / 1e6, 4))
    with FakeOpenAIServer(script=script) as server:  # no price: tokens only
        assert "labeling_usd_at_most" not in api.dry_run(config(tmp_path, server.base_url))


def test_the_price_is_not_part_of_the_run(tmp_path: Path) -> None:
    with FakeOpenAIServer(script=script) as server:
        run_dir, _ = api.label(config(tmp_path, server.base_url))
        again, _ = api.label(config(tmp_path, server.base_url, price_per_mtok={"input": 1, "output": 1}))
    assert again == run_dir
    with pytest.raises(Exception, match="output"):
        config(tmp_path, server.base_url, price_per_mtok={"input": 1})


def test_the_report_shows_measured_tokens_and_dollars(tmp_path: Path) -> None:
    from llmkd.teachers.cache import CachedTeacher, TeacherCache
    from llmkd.teachers.openai import OpenAITeacher
    from llmkd.teachers.usage import counters, since, usage_section

    with FakeOpenAIServer(script=lambda p: "positive", supports_echo=False,
                          top_logprobs={"positive": -0.1, "negative": -2.0}) as server:
        teacher = CachedTeacher(OpenAITeacher(model="fake", base_url=server.base_url, api_key_env=None),
                                TeacherCache(tmp_path / "c.sqlite"))
        before = counters(teacher)
        teacher.generate(["one two three", "four five"], max_tokens=4)
        teacher.score_options(["one two three"], ["positive", "negative"])
        used = since(before, counters(teacher))
    # generation: 3 + 2 prompt tokens, 1 + 1 completion; scoring (one max_tokens=1 request): 3 + 1
    assert (used["sent_prompt_tokens"], used["sent_completion_tokens"]) == (8, 3)
    assert (teacher.prompt_tokens, teacher.completion_tokens) == (5, 2)
    timings = {"prompt_tokens": 5, "completion_tokens": 2, **used}
    cfg = config(tmp_path, "http://127.0.0.1:1/v1", price_per_mtok={"input": 1000.0, "output": 2000.0})
    lines = "\n".join(usage_section(cfg, {"vanilla": {"timings": timings}, "supervised": {"timings": {}}}))
    assert "| vanilla | 5 | 2 | 8 | 3 | 0.0090 | 0.0140 |" in lines and "supervised" not in lines
    assert "input 1000, output 2000 US$ per million tokens" in lines
    plain = "\n".join(usage_section(config(tmp_path, "http://127.0.0.1:1/v1"), {"vanilla": {"timings": timings}}))
    assert "| vanilla | 5 | 2 | 8 | 3 |" in plain and "$" not in plain


def test_a_run_reports_the_servers_tokens_and_the_constraint_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through llmkd.api.run, with a fake student: report.md's Teacher tokens section holds the
    tokens the server reported, and dollars at teacher.price_per_mtok; a server that ignores the
    constraint (reports vLLM 0.12, applies nothing) gets its replies counted as unconstrained."""
    from llmkd import build
    from llmkd.types import Prediction
    from tests.fakes import JsonStudent

    class Student(JsonStudent):
        def fit_epoch(self, examples: Any, weights: Any = None) -> float:
            return 0.1

        def predict(self, examples: Any) -> list[Prediction]:
            return [Prediction("positive", {}) for _ in examples]

        def state(self) -> dict[str, Any]:
            return {}

    monkeypatch.setattr(build, "make_student_factory", lambda cfg, labels, task=None: (lambda seed: Student(), Student.load))
    replies = iter(["positive", "it is negative"] * 50)
    with FakeOpenAIServer(script=lambda p: next(replies), applies="none") as server:
        cfg = config(tmp_path, server.base_url, constrained=True, gate="off",
                     price_per_mtok={"input": 1.0, "output": 4.0})
        summary = api.run(cfg)
        sent = sum(r["body"].get("max_tokens", 0) >= 0 for r in server.requests)
    timings = json.loads((summary.run_dir / "metrics.json").read_text())["results"]["vanilla"]["timings"]
    assert sent == 6 and timings["sent_prompt_tokens"] > 0 and timings["prompt_tokens"] == timings["sent_prompt_tokens"]
    assert (timings["constrained_replies"], timings["unconstrained_replies"], timings["constraint_violations"]) == (3, 3, 3)
    report = summary.report
    assert "## Teacher tokens" in report and "Replies that broke the constraint" in report
    cost = (timings["prompt_tokens"] * 1.0 + timings["completion_tokens"] * 4.0) / 1e6
    assert f"| vanilla | {timings['prompt_tokens']:,} | {timings['completion_tokens']:,} |" in report
    assert f"{cost:.4f} | {cost:.4f} |" in report
