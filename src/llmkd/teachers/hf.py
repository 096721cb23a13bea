"""Teacher on a Hugging Face causal LM (any hub id or local directory; a GGUF file is loaded
through ``gguf_file`` and dequantized to torch, which needs ``llmkd[hf]``).

Generation is our own greedy (or, with ``temperature > 0``, seeded sampling) loop over the
model's logits, keeping the logprob of every generated token. With ``prefix_reuse=True`` (the
default):

* shared-prefix KV reuse: the longest token prefix common to all prompts of a call (the
  instruction + few-shot block) is run once; its ``past_key_values`` are kept (also across
  calls while the prefix stays the same) and copied for every batch;
* padding-aware, length-sorted batching: prompts are sorted by length and batched
  ``batch_size`` at a time, so a batch pads little; each row is laid out as
  ``[shared prefix][padding][own suffix]`` with the padding masked out and position ids that skip
  it, so a row is computed as if it were alone;
* ``score_options`` runs each prompt once from the shared prefix and scores all options from
  that state in one right-padded batch.

``prefix_reuse=False`` is the naive reference path: one prompt at a time from scratch, one full
forward pass per option. Both give the same greedy replies and option log-likelihoods up to
float rounding (tests/integration/test_teacher_equivalence.py), so the switch is not in the
fingerprint. A ``choice`` constraint follows a token trie of the choices; ``json`` / ``grammar``
constraints are not applied here (logged once; the task's parser decides).
Not handled: multi-GPU sharding.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from pathlib import Path
from typing import Any, Sequence

from ..errors import TeacherError
from ..types import Reply
from .base import ChoiceTrie, Constraint, common_prefix, continuation, make_fingerprint, pick_token, wants_chat

log = logging.getLogger(__name__)


class HFTeacher:
    name = "hf"

    def __init__(self, *, model: str, weights_sha256: str, gguf_file: str | None = None, chat: bool = True,
                 device: str = "auto", batch_size: int = 8, dtype: str = "auto", prefix_reuse: bool = True) -> None:
        self.model = model
        self.weights_sha256 = weights_sha256
        self.gguf_file = gguf_file
        self.chat = chat
        self.device = device
        self.batch_size = batch_size
        self.dtype = dtype
        self.prefix_reuse = prefix_reuse  # not in the fingerprint: it cannot change replies
        self.evaluated_tokens = 0  # token positions run through the model, padding excluded
        self._prefix: tuple[list[int], Any] | None = None  # (tokens, past_key_values of batch 1)
        self._warned: set[str] = set()
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
        if wants_chat(prompt, self.chat) and getattr(self._tok, "chat_template", None):
            return self._tok.apply_chat_template([{"role": "user", "content": str(prompt)}], tokenize=False,
                                                 add_generation_prompt=True)
        return str(prompt)

    def count_tokens(self, text: str) -> int:
        self._load()
        return len(self._tok(self.format(text), add_special_tokens=False)["input_ids"])

    def _ids(self, text: str) -> list[int]:
        return self._tok(text, add_special_tokens=False)["input_ids"]

    def _forward(self, ids: Any, mask: Any, cache: Any, n_real: int) -> Any:
        """One forward pass; ``ids`` [B, T]; ``mask`` covers cache + ids. Returns float logits."""
        import torch

        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
        self.evaluated_tokens += n_real
        with torch.no_grad():
            out = self._model(input_ids=ids.to(self._dev), attention_mask=mask.to(self._dev),
                              position_ids=pos.to(self._dev), past_key_values=cache, use_cache=True)
        return out.logits.float()

    def _prefix_state(self, tokens: list[int]) -> Any:
        """past_key_values (batch 1) of ``tokens``. The last one is kept: when the shared prefix
        of a new call is the same, it is reused as is; when it differs, the kept state is cut
        back to the common part and only the rest is run (the labeler hands over chunks of
        ``batch_size`` prompts, whose common prefix varies by a few tokens of the examples)."""
        import torch
        from transformers import DynamicCache

        if self._prefix is not None and self._prefix[0] == tokens:
            return self._prefix[1]
        k = common_prefix(self._prefix[0], tokens) if self._prefix is not None else 0
        if k:
            cache = copy.deepcopy(self._prefix[1])
            drop = cache.get_seq_length() - k
            if drop > 0:
                cache.crop(-drop)  # negative = tokens to drop, in every transformers version
        else:
            cache = DynamicCache()
        if len(tokens) > k:
            t = torch.tensor([tokens[k:]])
            self._forward(t, torch.ones((1, len(tokens)), dtype=torch.long), cache, len(tokens) - k)
        self._prefix = (list(tokens), cache)
        return cache

    def _shared(self, seqs: Sequence[Sequence[int]]) -> int:
        """How many leading tokens all ``seqs`` share, leaving at least one token of each."""
        if not self.prefix_reuse or not seqs:
            return 0
        n = min(len(s) for s in seqs) - 1
        first = seqs[0]
        for s in seqs[1:]:
            n = min(n, common_prefix(first[:n], s))
        return max(n, 0)

    def applies(self, constraint: Constraint) -> bool:
        """Only ``choice`` constraints (a token trie); json / grammar ones are not applied."""
        return constraint.kind == "choice"

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0, constraint: Constraint | None = None) -> list[Reply]:
        import numpy as np
        import torch

        self._load()
        tok = self._tok
        texts = [self.format(p) for p in prompts]
        seqs = [self._ids(t) for t in texts]
        if constraint is not None and not self.applies(constraint) and constraint.kind not in self._warned:
            self._warned.add(constraint.kind)
            log.info("hf teacher: %s constraints are not applied by this backend; the task's parser decides", constraint.kind)
        tries = [self._trie(t, constraint) if constraint is not None and self.applies(constraint) else None
                 for t in texts]
        shared = self._shared(seqs)
        prefix = self._prefix_state(seqs[0][:shared]) if shared else None
        order = sorted(range(len(prompts)), key=lambda i: len(seqs[i])) if self.prefix_reuse else list(range(len(prompts)))
        size = self.batch_size if self.prefix_reuse else 1
        eos = tok.eos_token_id
        pad = tok.pad_token_id
        out: list[Reply | None] = [None] * len(prompts)
        for b in range(0, len(order), size):
            rows = order[b : b + size]
            n = len(rows)
            suffix = [seqs[i][shared:] for i in rows]
            width = max(len(s) for s in suffix)
            ids = torch.full((n, width), pad, dtype=torch.long)
            mask = torch.zeros((n, shared + width), dtype=torch.long)
            mask[:, :shared] = 1
            for r, s in enumerate(suffix):  # [prefix][padding][suffix]
                ids[r, width - len(s):] = torch.tensor(s)
                mask[r, shared + width - len(s):] = 1
            cache = None
            if prefix is not None:
                cache = copy.deepcopy(prefix)
                if n > 1:
                    cache.batch_repeat_interleave(n)
            if cache is None:
                from transformers import DynamicCache

                cache = DynamicCache()
            logits = self._forward(ids, mask, cache, sum(len(s) for s in suffix))[:, -1]
            rngs = [np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}|{prompts[i]}".encode()).digest()[:8], "little"))
                    for i in rows]
            gen: list[list[int]] = [[] for _ in rows]
            lps: list[list[float]] = [[] for _ in rows]
            done = [False] * n
            cut = [False] * n
            for step in range(max_tokens):
                logp = torch.log_softmax(logits, -1)
                nxt = []
                for r, i in enumerate(rows):
                    if done[r]:
                        nxt.append(pad)
                        continue
                    trie = tries[i]
                    allowed = trie.allowed(gen[r], eos) if trie is not None else None
                    if trie is not None and not allowed:
                        done[r] = True
                        nxt.append(pad)
                        continue
                    t = pick_token(logits[r].cpu().numpy(), allowed, temperature, rngs[r])
                    gen[r].append(t)
                    lps[r].append(float(logp[r, t]))
                    if t == eos or (trie is not None and trie.done(gen[r])):
                        done[r] = True
                    elif stop:
                        text = tok.decode(gen[r], skip_special_tokens=True)
                        if any(s and s in text for s in stop):
                            done[r] = cut[r] = True
                    nxt.append(t)
                if all(done) or step + 1 == max_tokens:
                    break
                # a finished row is fed padding from here on; its outputs are never read
                mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], 1)
                logits = self._forward(torch.tensor([[t] for t in nxt]), mask, cache, sum(not d for d in done))[:, -1]
            for r, i in enumerate(rows):
                text, ids_r, lp_r, reason = _cut(tok, gen[r], lps[r], stop, max_tokens)
                if tries[i] is not None and done[r] and not cut[r]:
                    reason = "stop"
                out[i] = Reply(text=text, tokens=tuple(tok.decode([t]) for t in ids_r), token_logprobs=tuple(lp_r),
                               prompt_tokens=len(seqs[i]), completion_tokens=len(ids_r), finish_reason=reason)
        return [r for r in out if r is not None]

    def _trie(self, ctx_text: str, constraint: Constraint) -> ChoiceTrie:
        chat = self.chat and bool(getattr(self._tok, "chat_template", None))
        return ChoiceTrie([self._ids(continuation(ctx_text, c, chat)) for c in constraint.choices])

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        import torch

        self._load()
        tok = self._tok
        texts = [self.format(p) for p in prompts]
        ctxs = [self._ids(t) for t in texts]
        fulls = [[self._ids(t + continuation(t, o, t != p)) for o in options] for t, p in zip(texts, prompts)]
        shared = self._shared(ctxs)
        result = []
        for ctx, full in zip(ctxs, fulls):
            lcps = [common_prefix(ctx, f) for f in full]
            starts = [max(k, 1) for k in lcps]
            if not self.prefix_reuse:  # naive: one full forward pass per option
                row = []
                for f, st in zip(full, starts):
                    t = torch.tensor([f])
                    from transformers import DynamicCache

                    logp = torch.log_softmax(self._forward(t, torch.ones_like(t), DynamicCache(), len(f))[0], -1)
                    row.append(float(sum(logp[q - 1, f[q]] for q in range(st, len(f)))))
                result.append(row)
                continue
            # state = ctx[:m]; every option continues from it (m < every start)
            m = min(min(lcps), len(ctx)) - 1
            base = copy.deepcopy(self._prefix_state(ctx[: min(shared, m)]))
            have = min(shared, m)
            if m > have:
                t = torch.tensor([ctx[have:m]])
                self._forward(t, torch.ones((1, m), dtype=torch.long), base, m - have)
            rest = [f[m:] for f in full]
            width = max(len(r) for r in rest)
            ids = torch.full((len(rest), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rest), m + width), dtype=torch.long)
            mask[:, :m] = 1
            for j, r in enumerate(rest):  # right padding: padded positions come after every real one
                ids[j, : len(r)] = torch.tensor(r)
                mask[j, m : m + len(r)] = 1
            if len(rest) > 1:
                base.batch_repeat_interleave(len(rest))
            logp = torch.log_softmax(self._forward(ids, mask, base, sum(len(r) for r in rest)), -1)
            row = []
            for j, (f, st) in enumerate(zip(full, starts)):
                # output q (input token f[m + q]) predicts f[m + q + 1]
                row.append(float(sum(logp[j, q - 1 - m, f[q]] for q in range(st, len(f)))))
            result.append(row)
        return result



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
