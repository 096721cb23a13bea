"""Choosing llama.cpp's weight-repacking setting: the child-process probe, its cached verdict, the
AMX rule and the error that names a crash. The probe command is replaced by real child processes
that crash (a NULL read: SIGSEGV) or pass, so no model is needed here; tests/integration/
test_native.py runs the real probe on SmolLM2."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from llmkd.errors import TeacherError
from llmkd.teachers import native

CRASH = [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]
PASS = [sys.executable, "-c", "print('{\"load_s\": 0.5, \"prompt_s\": 0.1, \"tokens_per_s\": 42.0, \"text\": \" positive\"}')"]
NO_AMX = {"model": "Test CPU", "machine": "x86_64", "flags": ["avx2", "avx512f"]}
AMX = {"model": "Intel(R) Xeon(R) Platinum 8480+", "machine": "x86_64", "flags": ["amx_int8", "amx_tile", "avx2", "avx512f"]}


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[bool]:
    """LLMKD_HOME in tmp; repack on crashes, off passes; returns the list of probed settings."""
    monkeypatch.setenv("LLMKD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LLMKD_NO_PROBE", raising=False)
    monkeypatch.setattr(native, "cpu_info", lambda: NO_AMX)
    calls: list[bool] = []

    def command(model_path: str, repack: bool, n_threads: int | None) -> list[str]:
        calls.append(repack)
        return CRASH if repack else PASS

    monkeypatch.setattr(native, "_probe_command", command)
    return calls


def test_a_crashing_child_is_reported_by_signal_name(probes: list[bool]) -> None:
    result = native.probe("m.gguf", True)
    assert not result.ok and result.detail.startswith("SIGSEGV (signal 11)")
    assert "FAIL" in result.describe() and "repack on" in result.describe()
    ok = native.probe("m.gguf", False)
    assert ok.ok and ok.tokens_per_s == 42.0 and ok.text == " positive"


def test_auto_falls_back_to_off_warns_once_and_caches_the_verdict(probes: list[bool], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert native.resolve_repack("m.gguf", "sha-a", "auto") is False
    assert probes == [True, False]
    assert "SIGSEGV" in caplog.text and "teacher.repack=off" in caplog.text
    saved = json.loads((Path(native._verdicts_path())).read_text())
    assert sorted(r["ok"] for r in saved.values()) == [False, True]
    # a second resolution (a new run on the same machine) reads the verdicts: no child process
    assert native.resolve_repack("m.gguf", "sha-a", "auto") is False
    assert probes == [True, False]
    # another model is probed on its own
    native.resolve_repack("other.gguf", "sha-b", "auto")
    assert probes == [True, False, True, False]


def test_an_explicit_setting_that_crashes_is_a_clear_error(probes: list[bool]) -> None:
    with pytest.raises(TeacherError) as err:
        native.resolve_repack("m.gguf", "sha-a", "on")
    msg = str(err.value)
    assert "SIGSEGV" in msg and "Test CPU" in msg and "teacher.repack=off" in msg and "\n" not in msg


def test_nothing_runs_is_a_clear_error(probes: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_probe_command", lambda *a: CRASH)
    with pytest.raises(TeacherError, match="SIGSEGV.*llmkd doctor"):
        native.resolve_repack("m.gguf", "sha-a", "auto")


def test_amx_cpus_never_try_repacking(probes: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    assert native.candidates("auto", NO_AMX) == [True, False]
    assert native.candidates("auto", AMX) == [False]
    assert native.candidates("on", AMX) == [True] and native.candidates("off", NO_AMX) == [False]
    monkeypatch.setattr(native, "cpu_info", lambda: AMX)
    assert native.resolve_repack("m.gguf", "sha-a", "auto") is False
    assert probes == [False]


def test_a_corrupt_verdict_file_is_probed_again(probes: list[bool]) -> None:
    native._verdicts_path().write_text("{not json")
    assert native.resolve_repack("m.gguf", "sha-a", "off") is False
    assert probes == [False]


def test_the_setting_in_force_is_in_the_fingerprint(probes: list[bool]) -> None:
    from llmkd.teachers.base import make_fingerprint
    from llmkd.teachers.llamacpp import LlamaCppTeacher

    on = LlamaCppTeacher(model_path="m.gguf", weights_sha256="w", chat=False)
    on._repack = True
    off = LlamaCppTeacher(model_path="m.gguf", weights_sha256="w", chat=False, repack="off")
    # repacking on keeps the key every cache entry had before the option existed
    assert on.fingerprint == make_fingerprint(backend="llamacpp", weights="w", chat=False, v=1)
    assert off.fingerprint != on.fingerprint and probes == [False]
    with pytest.raises(TeacherError, match="auto, on, off"):
        LlamaCppTeacher(model_path="m.gguf", weights_sha256="w", repack="maybe")  # type: ignore[arg-type]


def test_cpu_info_reads_the_flags_that_matter() -> None:
    info = native.cpu_info()
    assert info["model"] and set(info["flags"]) <= set(native._FLAGS_OF_INTEREST)
    if Path("/proc/cpuinfo").exists() and "cpu family" in Path("/proc/cpuinfo").read_text():
        family, model = info["family"].split("/")  # "26/2": the generation, which "AMD EPYC" hides
        assert family.isdigit() and model.isdigit()


def test_the_run_manifest_records_the_cpu() -> None:
    from types import SimpleNamespace

    from llmkd.report import manifest

    m = manifest(SimpleNamespace(seed=3), {"teacher": "abc"})
    assert m["cpu"] == native.cpu_info() and m["seed"] == 3
