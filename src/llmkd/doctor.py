"""``llmkd doctor``: what a user (or a bug report) needs to know when something is off.

Each check returns a :class:`Check` with a status: ``ok``, ``warn`` (worth knowing, not broken) or
``fail`` (llmkd cannot work as configured). The command exits non-zero when any check fails.
The llama.cpp generation check runs in child processes (:func:`llmkd.teachers.native.probe`), so a
native crash is reported as a failed check, never as a dead doctor.
"""

from __future__ import annotations

import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["ok", "warn", "fail"]
MIN_FREE_GB = 3.0  # the two Qwen teachers, MiniLM and a run folder


@dataclass
class Check:
    name: str
    status: Status
    detail: str


def check_python() -> Check:
    return Check("python", "ok", f"{platform.python_version()} ({sys.executable}) on {platform.platform()}")


def check_cpu() -> Check:
    from .teachers.native import cpu_info

    info = cpu_info()
    flags = set(info["flags"])
    family = f", family/model {info['family']}" if info.get("family") else ""
    parts = [f"{info['model']} ({info['machine']}{family})",
             f"AVX2 {'yes' if 'avx2' in flags else 'no'}",
             f"AVX-512 {'yes' if 'avx512f' in flags else 'no'}"
             + (f" ({', '.join(sorted(f for f in flags if f.startswith('avx512') and f != 'avx512f'))})"
                if 'avx512f' in flags else ""),
             f"AMX {'yes (' + ', '.join(sorted(f for f in flags if f.startswith('amx'))) + ')' if any(f.startswith('amx') for f in flags) else 'no'}"]
    status: Status = "ok" if "avx2" in flags or info["machine"] not in ("x86_64", "AMD64") else "warn"
    return Check("cpu", status, "; ".join(parts))


def check_torch() -> Check:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        return Check("torch", "fail", f"cannot import torch: {exc}")
    return Check("torch", "ok", f"{torch.__version__}, {torch.get_num_threads()} threads, "
                                f"CUDA {'available' if torch.cuda.is_available() else 'not available'}")


def check_llama() -> Check:
    from .teachers.native import llama_info

    info = llama_info()
    if info is None:
        return Check("llama.cpp", "warn", "llama-cpp-python is not installed (the default teacher backend needs it): "
                                          "pip install 'llmkd[llamacpp]'")
    return Check("llama.cpp", "ok", f"llama-cpp-python {info['version']}; {info['system_info']}")


def default_probe_model() -> str | None:
    """The default teacher if it is installed, else the smallest installed zoo GGUF, else None."""
    from . import zoo
    from .config import TeacherConfig

    names = [TeacherConfig().model] + sorted((m.name for m in zoo.ZOO.values() if m.kind == "teacher"),
                                             key=lambda n: zoo.ZOO[n].size_mb)
    return next((n for n in names if zoo.is_installed(zoo.ZOO[n])), None)


def check_generation(model: str | None) -> list[Check]:
    """One prompt with weight repacking on and off, each in a child process, and what
    ``teacher.repack: auto`` will use. Fresh probes: the verdict cache is updated."""
    from . import zoo
    from .errors import LlmkdError
    from .teachers import native

    if native.llama_info() is None:
        return [Check("generation", "warn", "skipped: llama-cpp-python is not installed")]
    model = model or default_probe_model()
    if model is None:
        return [Check("generation", "warn", "skipped: no zoo teacher installed; run `llmkd models pull "
                                            "smollm2-135m-instruct` (98 MB) or pass --model PATH.gguf")]
    try:
        path, sha = zoo.resolve(model, auto_pull=False)
        weights = zoo.weights_fingerprint(path, sha)
    except LlmkdError as exc:
        return [Check("generation", "fail", str(exc))]
    results = [native.checked(path, weights, repack, fresh=True) for repack in (True, False)]
    checks = [Check(f"generation, repack {'on' if r.repack else 'off'}", "ok" if r.ok else "warn",
                    f"{Path(path).name}: " + r.describe().split(": ", 1)[1] + (f", reply {r.text!r}" if r.ok else ""))
              for r in results]
    try:
        chosen = native.resolve_repack(path, weights, "auto")
        checks.append(Check("teacher.repack auto", "ok", f"resolves to teacher.repack={'on' if chosen else 'off'} on this machine"))
    except LlmkdError as exc:
        checks.append(Check("teacher.repack auto", "fail", str(exc)))
    if not any(r.ok for r in results):
        for c in checks[:2]:
            c.status = "fail"
    return checks


def check_zoo() -> list[Check]:
    from . import zoo
    from .errors import LlmkdError

    checks = []
    for m in zoo.ZOO.values():
        if not zoo.is_installed(m):
            checks.append(Check(f"zoo {m.name}", "ok", f"not installed ({m.size_mb} MB; llmkd models pull {m.name})"))
            continue
        try:
            path = zoo.assembled_path(m)
            if path is None:
                checks.append(Check(f"zoo {m.name}", "ok", "packages installed, not assembled yet (done on first use)"))
                continue
            zoo.verify(m, path)
        except (LlmkdError, OSError, ImportError) as exc:
            checks.append(Check(f"zoo {m.name}", "fail", f"installed but not usable: {exc}"))
            continue
        checks.append(Check(f"zoo {m.name}", "ok", f"installed, {'sha256 verified' if m.sha256 else 'folder'}: {path}"))
    return checks


def check_cache(path: Path | None = None) -> Check:
    from .teachers.cache import TeacherCache
    from .zoo import home

    path = path or home() / "teacher.sqlite"
    if not path.exists():
        return Check("cache", "ok", f"{path} (empty: no teacher call cached yet)")
    try:
        stats = TeacherCache(path).stats()
    except Exception as exc:  # noqa: BLE001 - a corrupt file is the finding
        return Check("cache", "fail", f"{path} cannot be read ({exc}); move it away or run `llmkd cache clear`")
    return Check("cache", "ok", f"{path}: {stats['bytes'] / 1e6:.1f} MB, {stats['entries']} entries, "
                                f"{stats['teachers']} teacher(s)")


def check_disk() -> Check:
    from .zoo import home

    free = shutil.disk_usage(home()).free / 1e9
    status: Status = "ok" if free >= MIN_FREE_GB else "warn"
    return Check("disk", status, f"{free:.1f} GB free at {home()}" + ("" if status == "ok" else
                                 f" (under {MIN_FREE_GB:.0f} GB: the zoo teachers and a run folder may not fit)"))


def run_checks(model: str | None = None, generate: bool = True, cache: Path | None = None) -> list[Check]:
    checks = [check_python(), check_cpu(), check_torch(), check_llama()]
    if generate:
        checks += check_generation(model)
    return checks + check_zoo() + [check_cache(cache), check_disk()]
