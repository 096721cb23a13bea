"""ONNX export of a classifier or tagger student, and an ONNX Runtime stand-in for its torch model.

:func:`export_onnx` writes ``model.onnx`` with torch's ``torch.export``-based exporter
(``dynamo=True``, needs ``onnxscript``): inputs ``input_ids`` / ``attention_mask`` (and
``token_type_ids`` where the encoder has them), dynamic batch and sequence axes, output
``logits``. The TorchScript exporter is not used: under transformers 5 it bakes the attention
mask path of the traced batch into the graph (logits off by 0.04 on MiniLM).
:func:`quantize_int8` writes the int8 file in one of two schemes (:data:`QUANTIZE`): ``int8``,
onnxruntime's dynamic int8 quantization (weights int8 with a scale per output channel,
activations quantized per batch at run time: the fastest, and the furthest from fp32), or
``int8-block``, onnxruntime's ``MatMulNBits`` (every MatMul's weights int8 with a scale per block
of 32 along the input; the kernel quantizes each activation row per block of 32 as it computes,
``accuracy_level`` 4, so no prediction depends on its batch-mates; the embedding table stays
float): closer to fp32, 2.5x the size. Its fp32-compute variant (``accuracy_level`` 1) agreed
with fp32 no better on the SST-2 student (99.7 % vs 99.8 %) and ran slower.

:class:`OnnxModel` answers ``model(**encoding).logits`` like the transformers model, so a student
built on it (:func:`onnx_student`) tokenizes, batches and decodes exactly as the torch student
does: the agreement check compares the networks and nothing else.

Needs the ``export`` extra (``pip install 'llmkd[export]'``: onnx, onnxruntime, onnxscript).
Not handled: seq2seq / parser students, GPU execution providers, static (calibrated) quantization,
quantized embeddings in ``int8-block`` (int8 Gather cost 0.3 points of agreement and gained no speed).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .errors import ConfigError

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"  #: the folder inside an exported model that holds the ONNX files
FILES = {"fp32": "model.onnx", "int8": "model_quantized.onnx"}
#: ``--quantize`` schemes: each writes ``FILES["int8"]``; docs/results/student_speed.md measures both.
QUANTIZE = {
    "int8": "dynamic int8 (weights per output channel, activations per batch at run time; smallest, fastest)",
    "int8-block": "block-wise int8 (MatMul weights and activations per block of 32, MatMulNBits; closest to fp32)",
}


def require_onnx() -> None:
    """A :class:`ConfigError` naming the install command when the ONNX packages are missing."""
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigError(f"--onnx needs {', '.join(missing)} (not installed): pip install 'llmkd[export]'")


def _input_names(model: Any) -> list[str]:
    names = ["input_ids", "attention_mask"]
    if getattr(model.config, "type_vocab_size", 0):  # BERT-like encoders take segment ids
        names.append("token_type_ids")
    return names


def export_onnx(model: Any, tokenizer: Any, folder: Path, max_length: int) -> Path:
    """Write ``folder/model.onnx`` for a transformers sequence or token classifier; returns its path."""
    import torch

    require_onnx()
    folder.mkdir(parents=True, exist_ok=True)
    names = _input_names(model)

    class Logits(torch.nn.Module):  # named tensor inputs in, logits out: what the graph takes and gives
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    class SegmentLogits(Logits):
        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:  # type: ignore[override]
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    model = model.to("cpu").eval()
    enc = tokenizer(["an example", "a longer example sentence for the export"], padding=True, return_tensors="pt")
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=1, max=max(2, max_length))
    out = folder / FILES["fp32"]
    with torch.no_grad():
        torch.onnx.export((SegmentLogits if len(names) == 3 else Logits)(model).eval(), tuple(enc[n] for n in names), str(out), dynamo=True, verbose=False,
                          input_names=names, output_names=["logits"], external_data=False,
                          dynamic_shapes={n: {0: batch, 1: seq} for n in names})
    return out


def quantize_int8(src: Path, dst: Path, scheme: str = "int8") -> Path:
    """Int8 quantization of ``src`` into ``dst`` in ``scheme`` (:data:`QUANTIZE`). The exporter's recorded
    intermediate shapes are dropped first: onnxruntime's shape inference rejects some of them
    ("Inferred shape and existing shape differ") and infers them again anyway."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    del model.graph.value_info[:]
    bare = dst.with_name(dst.stem + ".bare.onnx")
    onnx.save(model, str(bare))
    try:
        if scheme == "int8-block":
            from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                         MatMulNBitsQuantizer)

            # it logs every MatMul it quantizes or skips at INFO, which llmkd's log format would print
            logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)

            # accuracy_level 4: the kernel may compute in int8 internally (block-wise), as fast as it gets
            config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=8)
            quantizer = MatMulNBitsQuantizer(onnx.load(str(bare)), algo_config=config)
            quantizer.process()
            quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
        else:
            # per-channel weight scales: on the SST-2 / TREC students of docs/results/student_speed.md the
            # int8 model then agrees with torch on 99.5 % / 100 % of 200 test inputs, against 94.5 % / 97.5 %
            # with one scale per tensor (onnxruntime's default)
            quantize_dynamic(str(bare), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        bare.unlink(missing_ok=True)
    return dst


class OnnxModel:
    """An ONNX Runtime session that a student calls like its transformers model."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 8)
        self.path = Path(path)
        self.session_ = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs_ = [i.name for i in self.session_.get_inputs()]

    def __call__(self, **enc: Any) -> Any:
        import numpy as np
        import torch

        feed = {n: enc[n].cpu().numpy().astype(np.int64) for n in self.inputs_}
        return SimpleNamespace(logits=torch.from_numpy(self.session_.run(["logits"], feed)[0]))

    def eval(self) -> OnnxModel:
        return self

    def to(self, device: Any) -> OnnxModel:
        return self


def onnx_student(student: Any, path: str | Path, threads: int | None = None) -> Any:
    """``student`` (a built classifier or tagger) with its network replaced by the ONNX file at
    ``path``: it predicts through ONNX Runtime (and can no longer train)."""
    student._ensure()
    student.model_ = OnnxModel(path, threads)
    return student
