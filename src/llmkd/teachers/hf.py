"""Teacher on a Hugging Face causal LM (any hub id or local directory; a GGUF file is loaded
through ``gguf_file`` and dequantized to torch, which needs ``llmkd[hf]``).

Generation is greedy (or sampled with ``temperature > 0``) in left-padded batches; the logprob of
every generated token is kept. ``score_options`` runs prompt + option through the model and sums
the option tokens' logprobs, all options of one prompt in one right-padded batch.
Not handled: prefix KV reuse across prompts (see the throughput issue), multi-GPU sharding.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from ..errors import TeacherError
from ..types import Reply
from .base import continuation, make_fingerprint

log = logging.getLogger(__name__)


class HFTeacher:
    name = "hf"

    def __init__(self, *, model: str, weights_sha256: str, gguf_file: str | None = None, chat: bool = True,
                 device: str = "auto", batch_size: int = 8, dtype: str = "auto") -> None:
        self.model = model
        self.weights_sha256 = weights_sha256
        self.gguf_file = gguf_file
        self.chat = chat
        self.device = device
        self.batch_size = batch_size
        self.dtype = dtype
        self._model: Any = None
        self._tok: Any = None

    @property
    def fingerprint(self) -> str:
        return make_fingerprint(backend="hf", weights=self.weights_sha256, chat=self.chat, v=1)

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src, gguf = self.model, self.gguf_file
        p = Path(src)
        if p.is_file() and p.suffix == ".gguf":
            src, gguf = str(p.parent), p.name
        kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
        if gguf:
            from ..errors import require

            require("gguf", "hf", "loading a GGUF file with the hf teacher backend")
        try:
            self._tok = AutoTokenizer.from_pretrained(src, **kwargs)
            self._model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
        except OSError as exc:
            raise TeacherError(f"hf teacher: cannot load {self.model!r}: {exc}") from exc
        dev = self.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        self._model.to(dev).eval()
        self._dev = dev
        if self._tok.pad_token_id is None:
            self._tok.pad_token = self._tok.eos_token

    def format(self, prompt: str) -> str:
        self._load()
        if self.chat and getattr(self._tok, "chat_template", None):
            return self._tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        return prompt

    def count_tokens(self, text: str) -> int:
        self._load()
        return len(self._tok(self.format(text), add_special_tokens=False)["input_ids"])

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0) -> list[Reply]:
        import torch

        self._load()
        tok, model = self._tok, self._model
        tok.padding_side = "left"
        out: list[Reply] = []
        for i in range(0, len(prompts), self.batch_size):
            batch = [self.format(p) for p in prompts[i : i + self.batch_size]]
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self._dev)
            torch.manual_seed(seed)
            with torch.no_grad():
                gen = model.generate(
                    **enc, max_new_tokens=max_tokens, do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
                    output_scores=True, return_dict_in_generate=True, pad_token_id=tok.pad_token_id,
                )
            scores = model.compute_transition_scores(gen.sequences, gen.scores, normalize_logits=True)
            new = gen.sequences[:, enc["input_ids"].shape[1]:]
            for row, lps, n_prompt in zip(new, scores, enc["attention_mask"].sum(1).tolist()):
                ids, logps = [], []
                for t, lp in zip(row.tolist(), lps.tolist()):
                    if t == tok.pad_token_id and t == tok.eos_token_id and ids and ids[-1] == t:
                        break
                    ids.append(t)
                    logps.append(lp)
                    if t == tok.eos_token_id:
                        break
                text, ids, logps, reason = _cut(tok, ids, logps, stop, max_tokens)
                out.append(Reply(text=text, tokens=tuple(tok.decode([t]) for t in ids),
                                 token_logprobs=tuple(logps), prompt_tokens=int(n_prompt),
                                 completion_tokens=len(ids), finish_reason=reason))
        return out

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        import torch

        self._load()
        tok, model = self._tok, self._model
        tok.padding_side = "right"
        result = []
        for p in prompts:
            ctx = self.format(p)
            ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
            seqs, starts = [], []
            for o in options:
                full = tok(ctx + continuation(ctx, o, ctx != p), add_special_tokens=False)["input_ids"]
                lcp = _common_prefix(ctx_ids, full)
                seqs.append(full)
                starts.append(max(lcp, 1))
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), tok.pad_token_id)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for j, s in enumerate(seqs):
                ids[j, : len(s)] = torch.tensor(s)
                mask[j, : len(s)] = 1
            with torch.no_grad():
                logits = model(input_ids=ids.to(self._dev), attention_mask=mask.to(self._dev)).logits.float()
            logp = torch.log_softmax(logits, -1).cpu()
            row = []
            for j, s in enumerate(seqs):
                row.append(float(sum(logp[j, t - 1, s[t]] for t in range(starts[j], len(s)))))
            result.append(row)
        return result


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _cut(tok: Any, ids: list[int], logps: list[float], stop: Sequence[str], max_tokens: int) -> tuple[str, list[int], list[float], str]:
    """Drop the EOS token and cut at the first stop string; say why generation ended."""
    reason = "length" if len(ids) >= max_tokens else "stop"
    if ids and ids[-1] == tok.eos_token_id:
        ids, logps, reason = ids[:-1], logps[:-1], "stop"
    text = tok.decode(ids, skip_special_tokens=True)
    for s in stop:
        k = text.find(s)
        if k >= 0:
            text, reason = text[:k], "stop"
            # keep the tokens whose decoded prefix lies inside the cut text
            keep = 0
            while keep < len(ids) and len(tok.decode(ids[: keep + 1], skip_special_tokens=True)) <= k:
                keep += 1
            ids, logps = ids[: max(keep, 1) if k > 0 else 0], logps[: max(keep, 1) if k > 0 else 0]
    return text, ids, logps, reason
