"""Seq2seq student: any Hugging Face encoder-decoder, or bert2bert built from an encoder.

``model`` may be

* an encoder-decoder checkpoint (T5, BART, ... as MCKD used T5-Base; hub id or local dir):
  loaded with ``AutoModelForSeq2SeqLM``;
* a saved ``EncoderDecoderModel`` dir (``model_type: encoder-decoder``);
* an encoder-only checkpoint (BERT-like, e.g. the packaged MiniLM, the offline default): a
  bert2bert ``EncoderDecoderModel.from_encoder_decoder_pretrained(m, m)`` whose decoder gets
  causal masks and fresh cross-attention (Rothe et al. 2020);
* a decoder-only causal LM (hub id, local dir, or a ``.gguf`` file, dequantized by transformers,
  e.g. the zoo's ``smollm2-135m-instruct``): trained on ``<input>\n=> <target><eos>`` with the
  loss on the target only, decoded after ``=>``.

Training is sequence-level KD (MCKD v1 §3.1, Kim & Rush 2016): token cross-entropy on the hard
target string, optionally weighted per example. Prediction decodes greedily (``num_beams=1``) or
with beam search; the confidence of an output is the geometric mean of its token probabilities
(``exp`` of the mean token log-probability). Each output goes through ``postprocess(text, raw)``
(the task's repair); an output that cannot be repaired is a ``Prediction(label=None)``:
an abstention, counted by the scorer.

``extra_tokens`` (slot tags, intents, ``(NP``) are added to the tokenizer as whole tokens that
are not lower-cased, so an uncased BERT keeps ``B-fromloc.city_name`` and ``O`` intact.
``save`` writes safetensors weights, the tokenizer, ``student.json`` and the AdamW moments.
Not handled: constrained decoding; gradient accumulation. Many devices: ``accelerate launch`` (:mod:`llmkd.distributed`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from ..types import Example, Prediction
from .base import HasText
from .checkpoint import LazyStudent, adamw, load_into, read_meta, weighted_epoch, write_checkpoint
from .classifier import pick_device

log = logging.getLogger(__name__)

Postprocess = Callable[[str, str], tuple[Any, dict[str, Any]]]
ENCODER_ONLY = {"bert", "roberta", "distilbert", "electra", "xlm-roberta", "mpnet", "deberta", "deberta-v2",
                "albert", "camembert"}
SEP = "\n=>"  # decoder-only students: the input, then this, then the target


class Seq2SeqStudent(LazyStudent):
    def __init__(self, *, model: str, labels: Sequence[str] = (), extra_tokens: Sequence[str] = (),
                 max_length: int = 128, max_target_length: int = 160, batch_size: int = 16, lr: float = 1e-4,
                 weight_decay: float = 0.01, warmup_steps: int = 10, seed: int = 0, num_beams: int = 1,
                 device: str = "auto", threads: int | None = None, postprocess: Postprocess | None = None) -> None:
        self.model_name = model
        self.labels = tuple(labels)
        self.extra_tokens = tuple(extra_tokens)
        self.max_length = max_length
        self.max_target_length = max_target_length
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.seed = seed
        self.num_beams = num_beams
        self.device = device
        self.threads = threads
        self.postprocess = postprocess
        self.epochs_done_ = 0
        self.steps_done_ = 0
        self._built = False

    # -- construction -------------------------------------------------------------------------
    def _build(self, source: str | None = None) -> None:
        import torch
        from transformers import AddedToken, AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

        if self.threads:
            torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        src = source or self.model_name
        kw: dict[str, Any] = {}
        if src.endswith(".gguf"):  # a GGUF file (zoo teachers): transformers dequantizes it
            kw = {"gguf_file": Path(src).name}
            src = str(Path(src).parent)
        tok = AutoTokenizer.from_pretrained(src, **kw)
        config = AutoConfig.from_pretrained(src, **kw)
        if config.model_type not in ENCODER_ONLY and not getattr(config, "is_encoder_decoder", False) \
                and config.model_type != "encoder-decoder":
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(src, **kw)
            if getattr(model, "hf_quantizer", None) is not None:  # GGUF: dequantized; allow save_pretrained
                model.hf_quantizer = None
                if hasattr(model.config, "quantization_config"):
                    del model.config.quantization_config
            self.arch_ = "decoder"
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
        elif config.model_type == "encoder-decoder":
            model = EncoderDecoderModel.from_pretrained(src)
            self.arch_ = "bert2bert"
        elif getattr(config, "is_encoder_decoder", False):
            model = AutoModelForSeq2SeqLM.from_pretrained(src)
            self.arch_ = "seq2seq"
        else:
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(src, src)
            self.arch_ = "bert2bert"
        if source is None and self.extra_tokens:
            have = tok.get_vocab()
            new = [t for t in self.extra_tokens if t not in have]
            if new:
                tok.add_tokens([AddedToken(t, normalized=False, single_word=False) for t in new])
                if self.arch_ == "bert2bert":
                    model.encoder.resize_token_embeddings(len(tok))
                    model.decoder.resize_token_embeddings(len(tok))
                    model.config.decoder.vocab_size = len(tok)
                    model.config.encoder.vocab_size = len(tok)
                else:
                    model.resize_token_embeddings(len(tok))
        if self.arch_ == "bert2bert":
            start = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
            end = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
            model.config.decoder_start_token_id = start
            model.config.eos_token_id = end
            model.config.pad_token_id = tok.pad_token_id
            model.generation_config.decoder_start_token_id = start
            model.generation_config.eos_token_id = end
            model.generation_config.pad_token_id = tok.pad_token_id
            model.generation_config.bos_token_id = start
        self.tokenizer_ = tok
        self.model_ = model
        self.device_ = pick_device(self.device)
        self.model_.to(self.device_)
        self.optimizer_ = adamw(self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self._built = True

    # -- training -----------------------------------------------------------------------------
    def _targets(self, labels: Sequence[str]) -> Any:
        import torch

        enc = self.tokenizer_(list(labels), truncation=True, max_length=self.max_target_length, padding=True,
                              return_tensors="pt")
        ids = enc["input_ids"]
        if self.arch_ == "bert2bert":
            ids = ids[:, 1:]  # drop [CLS]: it is the decoder start token; [SEP] ends the target
            mask = enc["attention_mask"][:, 1:]
        else:
            mask = enc["attention_mask"]
        return torch.where(mask.bool(), ids, torch.full_like(ids, -100)).to(self.device_)

    def _decoder_batch(self, texts: Sequence[str], targets: Sequence[str]) -> tuple[Any, Any]:
        """Right-padded ``<input>\n=> <target><eos>`` rows and labels (-100 outside the target)."""
        import torch

        tok = self.tokenizer_
        rows, labs = [], []
        for text, target in zip(texts, targets):
            p = tok(text + SEP, add_special_tokens=True, truncation=True, max_length=self.max_length)["input_ids"]
            t = tok(" " + target, add_special_tokens=False, truncation=True,
                    max_length=self.max_target_length - 1)["input_ids"] + [tok.eos_token_id]
            rows.append(p + t)
            labs.append([-100] * len(p) + t)
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), tok.pad_token_id)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        lab = torch.full((len(rows), n), -100)
        for i, (r, lb) in enumerate(zip(rows, labs)):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
            lab[i, : len(lb)] = torch.tensor(lb)
        return {"input_ids": ids.to(self.device_), "attention_mask": mask.to(self.device_)}, lab.to(self.device_)

    def fit_epoch(self, examples: Sequence[Example], weights: Sequence[float] | None = None) -> float:
        import torch.nn.functional as F

        self._ensure()
        bad = [e.id for e in examples if not isinstance(e.label, str) or not e.label.strip()]
        if bad:
            raise ValueError(f"fit_epoch: a seq2seq student trains on target strings; examples {bad[:5]} have none")

        def batch_loss(idx: list[int]) -> Any:
            if self.arch_ == "decoder":
                enc, labels = self._decoder_batch([examples[i].text for i in idx], [examples[i].label for i in idx])
            else:
                enc = self.tokenizer_([examples[i].text for i in idx], truncation=True, max_length=self.max_length,
                                      padding=True, return_tensors="pt").to(self.device_)
                labels = self._targets([examples[i].label for i in idx])
            if self.arch_ == "decoder":
                logits = self.model_(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, :-1]
                labels = labels[:, 1:]
            else:
                logits = self.model_(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                     labels=labels).logits
            tok_loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                                       ignore_index=-100, reduction="none").view(labels.shape)
            return tok_loss.sum(1) / (labels != -100).sum(1).clamp(min=1)  # per example

        return weighted_epoch(self, len(examples), weights, batch_loss)

    # -- inference ----------------------------------------------------------------------------
    def generate(self, texts: Sequence[str], *, num_beams: int | None = None, batch_size: int = 32,
                 ) -> list[tuple[str, float]]:
        """(raw decoded output, confidence) for each text."""
        import torch

        self._ensure()
        self.model_.eval()
        beams = num_beams or self.num_beams
        out: list[tuple[str, float]] = [("", 0.0)] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.no_grad():
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                extra: dict[str, Any] = {}
                if self.arch_ == "decoder":
                    self.tokenizer_.padding_side = "left"
                    enc = self.tokenizer_([texts[i] + SEP for i in idx], truncation=True, max_length=self.max_length,
                                          padding=True, return_tensors="pt").to(self.device_)
                    self.tokenizer_.padding_side = "right"
                    extra = {"pad_token_id": self.tokenizer_.pad_token_id, "eos_token_id": self.tokenizer_.eos_token_id}
                else:
                    enc = self.tokenizer_([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                          padding=True, return_tensors="pt").to(self.device_)
                gen = self.model_.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                           max_new_tokens=self.max_target_length, num_beams=beams, do_sample=False,
                                           output_scores=True, return_dict_in_generate=True, **extra)
                seqs = gen.sequences
                if beams > 1:
                    trans = self.model_.compute_transition_scores(seqs, gen.scores, gen.beam_indices, normalize_logits=False)
                else:
                    trans = self.model_.compute_transition_scores(seqs, gen.scores, normalize_logits=True)
                gen_ids = seqs[:, -trans.shape[1]:]
                pad = self.tokenizer_.pad_token_id
                for row, i in enumerate(idx):
                    valid = gen_ids[row] != pad
                    lp = trans[row][valid]
                    lp = lp[torch.isfinite(lp)]
                    conf = float(math.exp(lp.mean().item())) if lp.numel() else 0.0
                    text = self.tokenizer_.decode(gen_ids[row], skip_special_tokens=True,
                                                  clean_up_tokenization_spaces=False)
                    out[i] = (" ".join(text.split()), min(1.0, conf))
        return out

    def predict(self, examples: Sequence[HasText], *, num_beams: int | None = None) -> list[Prediction]:
        outs = self.generate([e.text for e in examples], num_beams=num_beams)
        preds: list[Prediction] = []
        for e, (raw, conf) in zip(examples, outs):
            label: Any = raw
            if self.postprocess is not None:
                label, _ = self.postprocess(e.text, raw)
            preds.append(Prediction(label=label, probs={} if label is None else {label: conf}))
        return preds

    # -- persistence (students/checkpoint.py) -------------------------------------------------
    def save(self, path: str | Path) -> None:
        self._ensure()
        write_checkpoint(path, self, {
            "kind": "seq2seq", "base_model": self.model_name, "labels": list(self.labels),
            "extra_tokens": list(self.extra_tokens), "max_length": self.max_length,
            "max_target_length": self.max_target_length, "batch_size": self.batch_size, "lr": self.lr,
            "weight_decay": self.weight_decay, "warmup_steps": self.warmup_steps, "seed": self.seed,
            "num_beams": self.num_beams,
        })

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", threads: int | None = None,
             postprocess: Postprocess | None = None) -> Seq2SeqStudent:
        meta = read_meta(path)
        st = cls(model=meta["base_model"], labels=meta["labels"], extra_tokens=meta["extra_tokens"],
                 max_length=meta["max_length"], max_target_length=meta["max_target_length"],
                 batch_size=meta["batch_size"], lr=meta["lr"], weight_decay=meta["weight_decay"],
                 warmup_steps=meta["warmup_steps"], seed=meta["seed"], num_beams=meta["num_beams"],
                 device=device, threads=threads, postprocess=postprocess)
        load_into(st, path, meta)
        return st
