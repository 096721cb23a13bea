"""llmkd export --onnx (agreement with the torch student checked on the test set) and llmkd predict
on jsonl / csv / stdin, with bad input refused on one line (issue 29 items 2 and 3)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmkd.export import ExportCheckFailed, export
from tests.integration.export_runs import classification_run

pytestmark = pytest.mark.slow


def llmkd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmkd.cli", *args], capture_output=True, text=True, timeout=300,
                          input=stdin)


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    return classification_run(tmp_path_factory.mktemp("cls"))


def test_onnx_export_agrees_with_the_torch_student(cls_run: Path, tmp_path: Path) -> None:
    for module in ("onnxruntime", "onnxscript", "onnx"):
        pytest.importorskip(module, reason=f"{module} is not installed: pip install 'llmkd[export]'")
    try:
        export(cls_run, tmp_path / "m", onnx=True, quantize="int8")
        failed = False
    except ExportCheckFailed:
        failed = True  # the folder and its card are written all the same
    info = json.loads((tmp_path / "m" / "llmkd.json").read_text())
    fp32, int8 = info["onnx"]["fp32"], info["onnx"]["int8"]
    assert fp32["agreement"] >= 0.995 and abs(fp32["onnx_score"] - fp32["torch_score"]) <= 0.005 and fp32["passed"]
    assert failed == (not int8["passed"])  # int8 on a barely trained student may flip near-0.5 probabilities
    assert (tmp_path / "m" / "onnx" / "model.onnx").exists() and (tmp_path / "m" / "onnx" / "model_quantized.onnx").exists()
    assert int8["size_mb"] < fp32["size_mb"] / 3
    assert "ONNX fp32 (`onnx/model.onnx`" in (tmp_path / "m" / "README.md").read_text()
    # predict through the ONNX file gives the torch student's labels
    (tmp_path / "in.txt").write_text("a good film, number 3\n\na bad film, number 8\n")
    torch_out = llmkd("predict", str(tmp_path / "m"), "--input", str(tmp_path / "in.txt"), "-q")
    onnx_out = llmkd("predict", str(tmp_path / "m"), "--input", str(tmp_path / "in.txt"), "--onnx", "fp32", "-q")
    assert torch_out.returncode == 0 and onnx_out.returncode == 0, onnx_out.stderr[-2000:]
    labels = [[json.loads(x)["label"] for x in o.stdout.splitlines()] for o in (torch_out, onnx_out)]
    assert labels[0] == labels[1] and len(labels[0]) == 2


def test_blockwise_int8_is_recorded_and_closer_to_fp32(cls_run: Path, tmp_path: Path) -> None:
    for module in ("onnxruntime", "onnxscript", "onnx"):
        pytest.importorskip(module, reason=f"{module} is not installed: pip install 'llmkd[export]'")
    report = export(cls_run, tmp_path / "w", onnx=True, quantize="int8-block")  # raises if the check fails
    info = json.loads((tmp_path / "w" / "llmkd.json").read_text())
    fp32, int8 = info["onnx"]["fp32"], info["onnx"]["int8"]
    assert int8["scheme"] == "int8-block" and fp32["scheme"] == "fp32" and int8["passed"]
    assert int8["size_mb"] < fp32["size_mb"] * 0.8  # MatMul weights int8; the embedding table stays float
    assert any(line.startswith("onnx int8 (int8-block) (onnx/model_quantized.onnx") for line in report.lines())
    assert "ONNX int8 (int8-block) (`onnx/model_quantized.onnx`" in (tmp_path / "w" / "README.md").read_text()
    bad = llmkd("export", str(cls_run), "--to", str(tmp_path / "x"), "--onnx", "--quantize", "int4")
    assert bad.returncode != 0 and "--quantize must be one of: int8:" in bad.stderr and "int8-block:" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_predict_jsonl_csv_and_stdin_from_a_run_folder(cls_run: Path, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": "a", "review": "a good film"}\n\n{"review": "a bad film"}\n')
    out = llmkd("predict", str(cls_run), "--input", str(tmp_path / "in.jsonl"), "--text-field", "review",
                "-o", str(tmp_path / "out.jsonl"), "-q")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "method " in out.stderr and "2 predictions ->" in out.stderr
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "line3"]
    assert all(r["label"] in ("negative", "positive") and sum(r["probs"].values()) == pytest.approx(1, abs=1e-4)
               for r in rows)
    (tmp_path / "in.csv").write_text('id,text\n1,"a good film, really"\n2,a bad one\n')
    out = llmkd("predict", str(cls_run), "--input", str(tmp_path / "in.csv"), "--format", "csv",
                "-o", str(tmp_path / "out.csv"), "-q")
    assert out.returncode == 0, out.stderr[-2000:]
    table = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert [r["id"] for r in table] == ["1", "2"] and table[0]["text"] == "a good film, really"
    assert set(table[0]) == {"id", "text", "label", "prob_negative", "prob_positive"}
    piped = llmkd("predict", str(cls_run), "--input", "-", "-q", stdin="a good film\nanother bad film\n")
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 2


@pytest.mark.parametrize("name, content, where, why", [
    ("bad.jsonl", '{"text": "fine"}\n{"text": "ok"\n', "bad.jsonl:2", "malformed JSON"),
    ("bad.jsonl", '{"text": "fine"}\n{"body": "no text"}\n', "bad.jsonl:2", "field 'text' not found; fields are ['body']"),
    ("bad.csv", 'text\nfine\n""\n', "bad.csv:3", "must be a non-empty string"),
])
def test_bad_input_is_one_line_naming_the_line_and_leaves_no_output(cls_run: Path, tmp_path: Path, name: str,
                                                                    content: str, where: str, why: str) -> None:
    (tmp_path / name).write_text(content)
    out = llmkd("predict", str(cls_run), "--input", str(tmp_path / name), "-o", str(tmp_path / "out.jsonl"), "-q")
    assert out.returncode == 2
    errors = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and where in errors[0] and why in errors[0], out.stderr
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.tmp").exists()
