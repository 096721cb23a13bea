"""The llama.cpp teacher loads a real GGUF with default settings on this CPU, and `llmkd doctor`.

The generation runs in a child process: if llama.cpp crashes on this machine (as repacking did on
Intel AMX CPUs), the test fails and names the signal, instead of taking pytest down."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmkd.cli import app
from llmkd.teachers import native

pytestmark = pytest.mark.slow

CHILD = """
import json, sys
from llmkd.teachers.llamacpp import LlamaCppTeacher
from llmkd.tasks.classification import ClassificationTask
from llmkd.types import Example
task = ClassificationTask(labels=["negative", "positive"], instruction="Classify the sentiment of the movie review.")
shots = [Example("a", "a wonderful , moving film .", "positive"), Example("b", "dull and lifeless .", "negative")]
teacher = LlamaCppTeacher(model_path=sys.argv[1], weights_sha256="test-native")  # every default, repack auto
(reply,) = teacher.generate([task.render("the best movie of the year .", shots)], max_tokens=4)
print(json.dumps({"text": reply.text, "tokens": reply.completion_tokens, "repack": teacher.repacking}))
"""


def test_default_teacher_generates_on_this_cpu(smollm2_path: str, tmp_path: Path) -> None:
    env = {**os.environ, "LLMKD_HOME": str(tmp_path / "home")}  # no cached verdict: the probe runs
    proc = subprocess.run([sys.executable, "-c", CHILD, smollm2_path], capture_output=True, text=True, env=env,
                          timeout=900)
    if proc.returncode < 0:
        pytest.fail(f"llama.cpp killed the process with signal {-proc.returncode} on this CPU "
                    f"({native.cpu_info()}); stderr: {proc.stderr[-2000:]}. Run `llmkd doctor`.")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rec["tokens"] > 0
    verdicts = json.loads((tmp_path / "home" / "llamacpp_probe.json").read_text())
    assert any(v["ok"] and v["repack"] == rec["repack"] for v in verdicts.values())


def test_doctor_reports_every_check_and_passes(smollm2_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMKD_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["doctor", "--model", smollm2_path])
    out = result.output
    assert result.exit_code == 0, out
    for name in ("python", "cpu", "torch", "llama.cpp", "generation, repack on", "generation, repack off",
                 "teacher.repack auto", "zoo smollm2-135m-instruct", "cache", "disk"):
        assert re.search(rf"^(ok  |WARN) {re.escape(name)}\b", out, re.M), (name, out)
    assert re.search(r"AVX2 (yes|no); AVX-512 (yes|no).*AMX (yes|no)", out)
    assert re.search(r"tokens/s generation", out) and "llama-cpp-python 0.3" in out


def test_doctor_fails_when_llama_cpp_crashes(smollm2_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMKD_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(native, "_probe_command", lambda *a: [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"])
    result = CliRunner().invoke(app, ["doctor", "--model", smollm2_path])
    assert result.exit_code == 1
    assert re.search(r"^FAIL generation, repack on .*SIGSEGV", result.output, re.M), result.output
    assert re.search(r"^FAIL teacher.repack auto .*cannot run", result.output, re.M)


def test_doctor_fails_on_a_corrupt_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMKD_HOME", str(tmp_path / "home"))
    bad = tmp_path / "teacher.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(app, ["doctor", "--no-generate", "--cache", str(bad)])
    assert result.exit_code == 1
    assert re.search(r"^FAIL cache .*cannot be read", result.output, re.M), result.output
