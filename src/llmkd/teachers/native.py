"""llama.cpp on the CPU it finds: weight repacking, a crash probe in a child process, system facts.

Why this exists: llama.cpp repacks quantized weights at load time into "extra buffer types" laid
out for the CPU's matrix instructions (AVX2 / AVX-512 "CPU_REPACK", Intel AMX tiles "AMX"). On
Intel Xeons with AMX (Sapphire Rapids and later), llama-cpp-python 0.3.36 built from source dies
with SIGSEGV in ``ggml_backend_amx_buffer_set_tensor`` on the zoo's Qwen2.5 Q4_K_M GGUF, taking
the Python process with it. Turning the extra buffer types off (llama.cpp's ``--no-repack``, the
model parameter ``use_extra_bufts = False``) makes the same completion run correctly.

The design (``teacher.repack: auto | on | off``, default ``auto``):

* A native crash cannot be caught in the process it kills, so every setting is first tried in a
  **child process** (:func:`probe`): load the model, generate a few tokens. Its verdict is cached
  in ``$LLMKD_HOME/llamacpp_probe.json``, keyed by the llama-cpp-python version, llama.cpp's
  system info (the CPU features it was built for), the CPU model and flags, the model's weights
  and the setting. The cost is one extra model load per (machine, library version, model), once.
* ``auto`` tries repacking **on** first (it is llama.cpp's default, and where it works it is the
  faster path; docs/results/teacher_speed.md measures it), except on a CPU with AMX where the
  crash is known, then **off**. The first setting whose probe passes is used.
* ``on`` / ``off`` are probed too: a setting that crashes raises a :class:`TeacherError` that names
  the signal, the CPU and the fix in one line, instead of killing the run.

Greedy replies can differ between the two settings in the last bits of the logits (other kernels,
other rounding), so the setting in force is part of the teacher's cache fingerprint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from ..errors import TeacherError

log = logging.getLogger(__name__)

Repack = Literal["auto", "on", "off"]
PROBE_PROMPT = "Text: a wonderful, moving film.\nSentiment: positive\nText: dull and lifeless.\nSentiment:"
PROBE_TOKENS = 8
PROBE_TIMEOUT_S = 600
_FLAGS_OF_INTEREST = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                      "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16")
_lock = threading.RLock()  # _defaults nests: model_params and context_params in load_llama


# -- facts about the machine --------------------------------------------------------------------
def cpu_info() -> dict[str, Any]:
    """The CPU's model name, its family / model numbers ("26/2"; virtual machines often name only
    "AMD EPYC", and the generation decides which llama.cpp kernels run, so a teacher's answers can
    differ between two machines of one name) and the instruction-set flags that matter to llama.cpp
    and torch (Linux: /proc/cpuinfo; elsewhere the model from :mod:`platform`, no family, no flags)."""
    model, flags = platform.processor() or platform.machine(), set()
    numbers: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("cpu family", "model") and key not in numbers:
                numbers[key] = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    family = f"{numbers['cpu family']}/{numbers.get('model', '?')}" if "cpu family" in numbers else None
    return {"model": model, "family": family, "machine": platform.machine(),
            "flags": sorted(f for f in _FLAGS_OF_INTEREST if f in flags)}


def default_threads(n_threads: int | None) -> int:
    """llama.cpp's thread count: the configured one, else every core."""
    return n_threads or max(1, os.cpu_count() or 1)


def has_amx(info: dict[str, Any] | None = None) -> bool:
    return any(f.startswith("amx") for f in (info or cpu_info())["flags"])


def llama_info() -> dict[str, str] | None:
    """llama-cpp-python's version and llama.cpp's system info line, or None if it is not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    return {"version": getattr(llama_cpp, "__version__", "?"),
            "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()}


# -- loading with or without repacking ----------------------------------------------------------
@contextlib.contextmanager
def _defaults(name: str, **fields: Any) -> Iterator[None]:
    """While active, ``llama_cpp.llama_cpp.<name>()`` (a ``llama_*_default_params``) returns its
    parameters with ``fields`` set. ``Llama.__init__`` starts from those defaults, so this sets
    what llama-cpp-python 0.3.36 has no keyword for."""
    import llama_cpp.llama_cpp as lib

    original = getattr(lib, name)

    def patched():  # type: ignore[no-untyped-def]
        params = original()
        for key, value in fields.items():
            setattr(params, key, value)
        return params

    with _lock:
        setattr(lib, name, patched)
        try:
            yield
        finally:
            setattr(lib, name, original)


def model_params(repack: bool) -> contextlib.AbstractContextManager[None]:
    """While active, ``llama_cpp.Llama`` builds its model parameters with ``use_extra_bufts =
    repack`` (no keyword for it in llama-cpp-python 0.3.36)."""
    return _defaults("llama_model_default_params", use_extra_bufts=repack)


def context_params(n_seq_max: int) -> contextlib.AbstractContextManager[None]:
    """While active, ``llama_cpp.Llama`` builds its context for ``n_seq_max`` sequences in one
    unified KV cache (``kv_unified``: every sequence sees the whole ``n_ctx``, and a sequence
    copied from another shares its cells). llama-cpp-python 0.3.36 has no keyword for either (it
    sets them only for embeddings). One sequence's numbers are the same bit for bit (checked on
    Qwen-1.5B: prompt and next-token logits with 1 and 256 sequences)."""
    return _defaults("llama_context_default_params", n_seq_max=n_seq_max, kv_unified=True)


def load_llama(model_path: str, *, repack: bool, n_seq_max: int = 1, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(model_path, **kwargs)`` with weight repacking on or off, and a context
    for ``n_seq_max`` parallel sequences (see :func:`context_params`) when above 1."""
    import llama_cpp

    with model_params(repack), (context_params(n_seq_max) if n_seq_max > 1 else contextlib.nullcontext()):
        return llama_cpp.Llama(model_path=model_path, **kwargs)


# -- the probe ----------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    repack: bool
    ok: bool
    detail: str  # "" when ok; else what went wrong ("SIGSEGV (signal 11)", "exit 1: ...", "timed out")
    tokens_per_s: float | None = None
    load_s: float | None = None
    text: str = ""

    def describe(self) -> str:
        state = f"repack {'on' if self.repack else 'off'}"
        if self.ok:
            return f"{state}: pass ({self.tokens_per_s:.1f} tokens/s generation, load {self.load_s:.1f} s)"
        return f"{state}: FAIL ({self.detail})"


def _probe_command(model_path: str, repack: bool, n_threads: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "llmkd.teachers.native", model_path, "on" if repack else "off"]
    return cmd + ([str(n_threads)] if n_threads else [])


def probe(model_path: str, repack: bool, *, n_threads: int | None = None, timeout: float = PROBE_TIMEOUT_S) -> ProbeResult:
    """Load ``model_path`` and generate :data:`PROBE_TOKENS` tokens in a child process."""
    cmd = _probe_command(model_path, repack, n_threads)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ProbeResult(repack, False, f"timed out after {timeout:.0f} s")
    if proc.returncode == 0:
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("{"):
                rec = json.loads(line)
                return ProbeResult(repack, True, "", rec["tokens_per_s"], rec["load_s"], rec["text"])
        return ProbeResult(repack, False, f"no result printed: {proc.stdout[-300:]!r}")
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = "signal"
        detail = f"{name} (signal {-proc.returncode})"
    else:
        detail = f"exit {proc.returncode}"
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:]
    return ProbeResult(repack, False, detail + (f": {tail[0][:300]}" if tail else ""))


def _child(model_path: str, setting: str, n_threads: int | None) -> None:
    """The probe itself (run as ``python -m llmkd.teachers.native MODEL on|off [THREADS]``)."""
    import faulthandler

    faulthandler.enable()
    threads = default_threads(n_threads)
    t0 = time.perf_counter()
    llm = load_llama(model_path, repack=setting == "on", n_ctx=512, n_threads=threads, n_threads_batch=threads,
                     verbose=False, seed=0)
    t1 = time.perf_counter()
    llm.eval(llm.tokenize(PROBE_PROMPT.encode(), add_bos=True, special=True))
    t2 = time.perf_counter()
    out = []
    for _ in range(PROBE_TOKENS):
        import numpy as np

        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
        if not np.isfinite(logits).all():
            raise SystemExit("llama.cpp returned non-finite logits")
        tok = int(np.argmax(logits))
        out.append(tok)
        llm.eval([tok])
    t3 = time.perf_counter()
    text = llm.detokenize(out).decode("utf-8", "replace")
    print(json.dumps({"load_s": t1 - t0, "prompt_s": t2 - t1, "tokens_per_s": PROBE_TOKENS / (t3 - t2), "text": text}))


# -- choosing the setting -----------------------------------------------------------------------
def _verdicts_path() -> Path:
    from ..zoo import home

    return home() / "llamacpp_probe.json"


def _machine_key(weights: str, repack: bool) -> str:
    info = {"cpu": cpu_info(), "llama": llama_info(), "weights": weights, "repack": repack}
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:32]


def _read_verdicts() -> dict[str, Any]:
    try:
        data = json.loads(_verdicts_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or corrupt: probe again (it is only a memo)


def _write_verdict(key: str, result: ProbeResult) -> None:
    path = _verdicts_path()
    data = _read_verdicts()
    data[key] = asdict(result)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def checked(model_path: str, weights: str, repack: bool, *, n_threads: int | None = None, fresh: bool = False) -> ProbeResult:
    """The probe's verdict for this setting on this machine: cached, or measured now."""
    key = _machine_key(weights, repack)
    if not fresh:
        rec = _read_verdicts().get(key)
        if rec is not None:
            return ProbeResult(**rec)
    log.info("checking llama.cpp on this CPU with weight repacking %s (a child process, once per machine and model)",
             "on" if repack else "off")
    result = probe(model_path, repack, n_threads=n_threads)
    _write_verdict(key, result)
    return result


def candidates(setting: Repack, info: dict[str, Any] | None = None) -> list[bool]:
    """The repack values to try, in order."""
    if setting == "on":
        return [True]
    if setting == "off":
        return [False]
    return [False] if has_amx(info) else [True, False]


def resolve_repack(model_path: str, weights: str, setting: Repack, *, n_threads: int | None = None) -> bool:
    """The repack value to load ``model_path`` with: the first candidate whose probe passes.

    Raises :class:`TeacherError` with the cause and the fix when none does."""
    if os.environ.get("LLMKD_NO_PROBE") == "1":  # the child process itself, or a user who opts out
        return candidates(setting)[0]
    info = cpu_info()
    failed: list[ProbeResult] = []
    for repack in candidates(setting, info):
        result = checked(model_path, weights, repack, n_threads=n_threads)
        if result.ok:
            if failed:
                log.warning("llama.cpp %s with weight repacking on this CPU (%s); using teacher.repack=off. "
                            "Verdict cached in %s; `llmkd doctor` shows the details.",
                            failed[0].detail.split(":")[0], info["model"], _verdicts_path())
            return repack
        failed.append(result)
    tried = "; ".join(r.describe() for r in failed)
    fix = ("set teacher.repack=off (`--set teacher.repack=off`)" if setting == "on" else
           "run `llmkd doctor` and report its output; try another teacher model or the hf backend (teacher.backend=hf)")
    raise TeacherError(f"llama.cpp cannot run {Path(model_path).name} on this CPU ({info['model']}, "
                       f"{' '.join(info['flags']) or 'no flags read'}): {tried}. Fix: {fix}")


if __name__ == "__main__":  # pragma: no cover - run by probe() in a child process
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None)
