"""Teacher on a GGUF model through llama-cpp-python (``llmkd[llamacpp]``).

Generation is a plain loop over llama.cpp's logits: greedy (argmax) at ``temperature == 0``,
else seeded sampling. The log-probability of every generated token is recorded without
``logits_all`` (only the last position's logits are read), so prompt processing keeps full speed.

KV reuse (``prefix_reuse=True``, the default): each prompt's tokens are compared with the tokens
already in the context, and only the differing suffix is evaluated. Consecutive few-shot prompts
share the instruction and demonstrations, so only the example itself is processed.
``score_options`` evaluates a prompt once (not at all right after generating from it) and scores
every option from that state, each distinct option prefix once: by default as parallel sequences
in one batch (``batch_options``), else walked one token at a time in token order, so labels that
share first tokens (BANKING77's "card_arrival", "card_linking") share those steps.
``prefix_reuse=False`` is the naive reference path: every prompt (and, with ``batch_options``
off, every option of ``score_options``) is evaluated from an empty context. Both paths
evaluate every position in the same chunk layout, a function of the prompt alone (see
:meth:`LlamaCppTeacher._layout`), so they give the same greedy replies and option
log-likelihoods (tests/integration/test_teacher_equivalence.py); the switch is therefore not part of
the fingerprint. A task's :class:`~llmkd.tasks.base.Prompt` says where its shared part ends; the
layout then evaluates the example in one chunk from there, which is exactly the work a raw
llama.cpp loop with prefix matching does (docs/results/teacher_speed.md).

Constrained decoding (``generate(..., constraint=...)``): a ``choice`` constraint follows a token
trie of the choices (:class:`~llmkd.teachers.base.ChoiceTrie`) inside this loop; ``json`` and
``grammar`` constraints go through llama.cpp's own GBNF grammar sampler (a JSON schema is
compiled to GBNF by llama-cpp-python). Token logprobs stay those of the unconstrained model, so a
reply forced into the label set still shows how sure the model was.

Weight repacking (``repack``: auto / on / off) is chosen per machine by a probe in a child
process, so that a llama.cpp crash (AMX repacking on Intel Xeons) is named instead of killing the
run; see :mod:`llmkd.teachers.native`.

Multi-sequence batching is used for option scoring only (one sequence per option, see
:meth:`LlamaCppTeacher._score_batched`); prompts are evaluated one after another. A prompt
longer than ``n_ctx - max_tokens`` raises :class:`~llmkd.errors.PromptTooLong` before anything is
evaluated; labeling makes that example an abstention.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Sequence

from ..errors import PromptTooLong, TeacherError, require
from ..types import Reply
from . import native
from .native import Repack
from .base import ChoiceTrie, Constraint, common_prefix, continuation, wants_chat, log_softmax, log_softmax_at, make_fingerprint, pick_token, render_chat

log = logging.getLogger(__name__)

ALIGN = 32  # evaluation chunk; see LlamaCppTeacher._layout
MAX_SEQS = 256  # parallel sequences of the context (batched option scoring: one per option, seq 0 the prompt)


class LlamaCppTeacher:
    name = "llamacpp"
    uses_shared_prefix = True  # Prompt.shared changes the chunk layout: the cache keys it

    def __init__(self, *, model_path: str, weights_sha256: str, chat: bool = True, n_ctx: int = 4096,
                 n_threads: int | None = None, n_batch: int = 512, seed: int = 0, prefix_reuse: bool = True,
                 repack: Repack = "auto", batch_options: bool = True) -> None:
        if repack not in ("auto", "on", "off"):
            raise TeacherError(f"teacher.repack: allowed values are auto, on, off (got {repack!r})")
        self.model_path = model_path
        self.repack = repack
        self._repack: bool | None = None  # the setting in force, once resolved (native.resolve_repack)
        self.weights_sha256 = weights_sha256
        self.chat = chat
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.seed = seed
        self.prefix_reuse = prefix_reuse  # not in the fingerprint: it cannot change replies
        self.batch_options = batch_options  # score_options: the label tokens as parallel sequences in one batch
        self._n_seqs = 1  # the context's sequences (llama_n_seq_max), once loaded
        self.evaluated_tokens = 0  # prompt/option tokens actually run through the model (for the benchmark)
        self._llm: Any = None
        self._memo: tuple[list[int], list[int], Any] | None = None  # tokens, layout, last logits
        self._bounds: list[int] = [0]  # chunk starts of the context's state, then its end
        self._head: tuple[str, list[int]] | None = None  # the last shared text and its tokens

    @property
    def fingerprint(self) -> str:
        # Repacked and plain weights run other kernels, whose rounding can flip a close greedy
        # choice; "on" keeps the key that every cache entry had before the option existed.
        extra = {} if self.repacking else {"repack": "off"}
        return make_fingerprint(backend="llamacpp", weights=self.weights_sha256, chat=self.chat, v=1, **extra)

    @property
    def repacking(self) -> bool:
        """Whether the weights are (to be) repacked: ``repack`` resolved on this machine by a probe
        in a child process whose verdict is cached (:mod:`llmkd.teachers.native`)."""
        if self._repack is None:
            self._repack = native.resolve_repack(self.model_path, self.weights_sha256, self.repack,
                                                 n_threads=self.n_threads)
        return self._repack

    # -- model state --------------------------------------------------------------------------
    def _load(self) -> Any:
        if self._llm is None:
            llama_cpp = require("llama_cpp", "llamacpp", "the llamacpp teacher backend")
            threads = native.default_threads(self.n_threads)
            # llama.cpp aborts (GGML_ASSERT n_outputs_max) when a context has more sequences than
            # one batch has outputs, and a batch is at most min(n_batch, n_ctx) tokens
            seqs = (min(MAX_SEQS, llama_cpp.llama_max_parallel_sequences(), self.n_batch, self.n_ctx)
                    if self.batch_options else 1)
            self._llm = native.load_llama(self.model_path, repack=self.repacking, n_seq_max=seqs, n_ctx=self.n_ctx,
                                          n_threads=threads, n_threads_batch=threads, n_batch=self.n_batch,
                                          logits_all=False, verbose=False, seed=self.seed)
            self._lib = llama_cpp
            self._n_seqs = int(llama_cpp.llama_n_seq_max(self._llm._ctx.ctx))
            meta = self._llm.metadata
            self._chat_template = meta.get("tokenizer.chat_template")
            self._template = self._chat_template if self.chat else None
            if self.chat and not self._template:
                log.warning("%s has no chat template; prompts are sent as plain text", self.model_path)
            eos_id = self._llm.token_eos()
            self._eos_text = self._llm.detokenize([eos_id], special=True).decode("utf-8", "ignore") if eos_id >= 0 else ""
        return self._llm

    def format(self, prompt: str) -> str:
        self._load()
        template = self._chat_template if wants_chat(prompt, self.chat) else None
        if template:
            return render_chat(template, str(prompt), bos_token="", eos_token=self._eos_text)
        return str(prompt)

    def _tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def count_tokens(self, text: str) -> int:
        self._load()
        return len(self._tokenize(self.format(text)))

    def _last_logits(self) -> Any:
        import numpy as np

        n_vocab = self._llm.n_vocab()
        return np.ctypeslib.as_array(self._llm._ctx.get_logits_ith(-1), shape=(n_vocab,)).copy()

    def _layout(self, n: int, shared: int = 0) -> list[int]:
        """Where the chunks start when ``n`` prompt tokens are evaluated, plus ``n`` at the end.

        llama.cpp's kernels give slightly different numbers for different batch shapes, so a
        position's KV state and the last logits depend on how the prompt was cut into ``eval``
        calls. The cut is therefore a function of the prompt alone, never of what the context
        held before: chunks of ``ALIGN`` tokens from 0, and, when the prompt's first ``shared``
        tokens are the task's shared part, a chunk boundary there and the rest in one chunk (of
        at most ``n_batch``). Reuse (:meth:`_prefill`) keeps only state computed in the same
        chunks, so reused and from-scratch evaluation agree bit for bit."""
        if 0 < shared < n:
            return list(range(0, shared, ALIGN)) + list(range(shared, n, self.n_batch)) + [n]
        return list(range(0, n, ALIGN)) + [n]

    def _shared_tokens(self, prompt: str, ctx_text: str, toks: list[int]) -> int:
        """How many of ``toks`` (the formatted ``prompt``) are the prompt's shared part: the tokens
        the shared text's own tokenization has in common with them (a token that merges across
        the boundary is the example's). 0 for a plain string."""
        shared = getattr(prompt, "shared", 0)
        body = str(prompt)
        at = 0 if ctx_text == body else ctx_text.find(body)  # the chat template wraps the prompt
        if not shared or at < 0:
            return 0
        head = ctx_text[: at + shared]
        if self._head is None or self._head[0] != head:
            self._head = (head, self._tokenize(head))
        return common_prefix(self._head[1], toks)

    def _rewind(self, n: int) -> None:
        """Keep the first ``n`` tokens of the context (and the chunk starts below them)."""
        self._llm.n_tokens = n
        self._bounds = [b for b in self._bounds if b < n] + [n]

    def _prefill(self, tokens: list[int], shared: int = 0) -> Any:
        """Bring the context to ``tokens``, evaluating only what differs from what is there.

        The chunks follow :meth:`_layout`. State already in the context is kept up to the last
        chunk start that it shares with the new layout (every chunk before it the same, and the
        tokens the same up to it); from there the new layout's chunks are evaluated. The logits
        of the last prefill are memoised, so scoring right after generating reuses them
        exactly."""
        llm = self._llm
        layout = self._layout(len(tokens), shared)
        if not self.prefix_reuse:
            llm.n_tokens = 0
            self._memo = None
            for start, end in zip(layout, layout[1:]):
                llm.eval(tokens[start:end])
            self._bounds = layout
            self.evaluated_tokens += len(tokens)
            return self._last_logits()
        if self._memo is not None and self._memo[0] == tokens and self._memo[1] == layout \
                and llm.n_tokens >= len(tokens) and llm.input_ids[: len(tokens)].tolist() == tokens:
            self._rewind(len(tokens))
            return self._memo[2]
        lcp = common_prefix(llm._input_ids.tolist(), tokens)
        keep = 0
        for have, want in zip(self._bounds, layout):
            if have != want or want > lcp or want >= len(tokens):
                break
            keep = want
        llm.n_tokens = keep
        for start, end in zip(layout, layout[1:]):
            if start >= keep:
                llm.eval(tokens[start:end])
        self._bounds = list(layout)  # a copy: steps append to the bounds, the memo keeps the layout
        self.evaluated_tokens += len(tokens) - keep
        logits = self._last_logits()
        self._memo = (list(tokens), layout, logits)
        return logits

    def _step(self, token: int) -> Any:
        # the memo stays: steps only append to the context, so the prompt's state and last
        # logits are still there (the memo check compares the tokens), and scoring right after
        # generating a reply rewinds to the prompt instead of evaluating the example again
        self.evaluated_tokens += 1
        self._llm.eval([token])
        self._bounds.append(self._llm.n_tokens)  # a one-token chunk
        return self._last_logits()

    @property
    def context_tokens(self) -> int:
        """The context window prompts must fit (``n_ctx``); labeling fits the shots to it."""
        return self.n_ctx

    def _check_len(self, n: int, extra: int) -> None:
        if n + extra > self.n_ctx:
            raise PromptTooLong(n, extra, self.n_ctx)

    # -- the protocol -------------------------------------------------------------------------
    def applies(self, constraint: Constraint) -> bool:
        """Every kind: a token trie for choices, llama.cpp's grammar sampler for json / grammar."""
        return True

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0, constraint: Constraint | None = None) -> list[Reply]:
        import numpy as np

        llm = self._load()
        vocab = llm._model.vocab
        out = []
        for prompt in prompts:
            ctx_text = self.format(prompt)
            toks = self._tokenize(ctx_text)
            self._check_len(len(toks), max_tokens)
            logits = self._prefill(toks, self._shared_tokens(prompt, ctx_text, toks))
            rng = np.random.default_rng(
                int.from_bytes(hashlib.sha256(f"{seed}|{prompt}".encode()).digest()[:8], "little"))
            trie = self._choice_trie(ctx_text, constraint) if constraint is not None and constraint.kind == "choice" else None
            grammar = self._grammar_sampler(constraint) if constraint is not None and trie is None else None
            ids: list[int] = []
            lps: list[float] = []
            raw = b""
            reason = "length"
            text = ""
            cut = False  # a stop string ended the reply
            try:
                for _ in range(max_tokens):
                    allowed = trie.allowed(ids, llm.token_eos()) if trie is not None else None
                    if trie is not None and not allowed:
                        reason = "stop"
                        break
                    masked = self._apply_grammar(grammar, logits) if grammar is not None else logits
                    tok = pick_token(masked, allowed, temperature, rng)
                    if self._lib.llama_vocab_is_eog(vocab, tok):
                        reason = "stop"
                        break
                    if grammar is not None:
                        self._lib.llama_sampler_accept(grammar, tok)
                    ids.append(tok)
                    lps.append(log_softmax_at(logits, tok))
                    raw += llm.detokenize([tok])
                    text = raw.decode("utf-8", "ignore")
                    hit = min((k for k in (text.find(s) for s in stop if s) if k >= 0), default=-1)
                    if hit >= 0:
                        text, reason, cut = text[:hit], "stop", True
                        break
                    if trie is not None and trie.done(ids):
                        reason = "stop"
                        break
                    if len(ids) < max_tokens:
                        logits = self._step(tok)
            finally:
                if grammar is not None:
                    self._lib.llama_sampler_free(grammar)
            if not cut:
                text = raw.decode("utf-8", "ignore")
            out.append(Reply(
                text=text, tokens=tuple(llm.detokenize([t]).decode("utf-8", "replace") for t in ids),
                token_logprobs=tuple(lps), prompt_tokens=len(toks), completion_tokens=len(ids),
                finish_reason=reason,
            ))
        return out

    # -- constraints --------------------------------------------------------------------------
    def _choice_trie(self, ctx_text: str, constraint: Constraint) -> ChoiceTrie:
        """Each choice tokenized as the reply would start: on its own after the chat template's
        assistant header, after a separating space in plain-text mode (as in score_options)."""
        chat = bool(self._template)
        seqs = [self._llm.tokenize(continuation(ctx_text, c, chat).encode("utf-8"), add_bos=False, special=False)
                for c in constraint.choices]
        return ChoiceTrie(seqs)

    def _grammar_sampler(self, constraint: Constraint) -> Any:
        if constraint.kind == "json":
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            gbnf = json_schema_to_gbnf(constraint.schema)
        else:
            gbnf = constraint.grammar
        smpl = self._lib.llama_sampler_init_grammar(self._llm._model.vocab, gbnf.encode("utf-8"), b"root")
        if not smpl:
            raise TeacherError(f"llamacpp teacher: llama.cpp could not parse the {constraint.kind} constraint's "
                               f"grammar (GBNF, root rule 'root'): {gbnf[:300]!r}")
        return smpl

    def _apply_grammar(self, smpl: Any, logits: Any) -> Any:
        """The logits with every token the grammar forbids here set to -inf."""
        import ctypes

        from llama_cpp._internals import LlamaTokenDataArray

        if getattr(self, "_cands", None) is None:
            self._cands = LlamaTokenDataArray(n_vocab=len(logits))
        cands = self._cands
        cands.copy_logits(logits)
        self._lib.llama_sampler_apply(smpl, ctypes.byref(cands.candidates))
        masked = logits.copy()
        keep = cands.candidates_data.logit[: cands.candidates.size]
        ids = cands.candidates_data.id[: cands.candidates.size]
        masked[:] = -float("inf")
        masked[ids] = keep
        return masked

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        """Each option's log-likelihood after each prompt. The prompt is evaluated once (with
        prefix reuse, not at all right after generating from it); the options' tokens after it
        are then evaluated as parallel sequences in one batch (``batch_options``, the default,
        see :meth:`_score_batched`), or walked one token at a time in token order, where a step
        the previous option already took (a shared first token, as in "card_arrival" /
        "card_linking") is not evaluated again."""
        self._load()
        result = []
        for prompt in prompts:
            ctx_text = self.format(prompt)
            ctx = self._tokenize(ctx_text)
            self._check_len(len(ctx), 16)
            shared = self._shared_tokens(prompt, ctx_text, ctx)
            fulls = [self._tokenize(ctx_text + continuation(ctx_text, o, bool(self._template))) for o in options]
            row = [0.0] * len(options)
            after_ctx = []
            for i, full in enumerate(fulls):
                k = common_prefix(ctx, full)
                if k == len(ctx) and (self.prefix_reuse or self._batching):
                    after_ctx.append((full[k:], i))
                else:  # naive: every option from scratch; or the option merged with the prompt's last token(s)
                    row[i] = self._walk(full[k:], [log_softmax(self._prefill(full[:k], min(shared, k)))])
            after_ctx.sort()  # token order: options sharing a start are neighbours (the walk), and the
            # batches are a function of the option set, not of its order
            if after_ctx and self._batching:
                self._score_batched(ctx, shared, after_ctx, row)
            elif after_ctx:
                self._score_walked(ctx, shared, after_ctx, row)
            result.append(row)
        return result

    def _score_walked(self, ctx: list[int], shared: int, items: list[tuple[list[int], int]], row: list[float]) -> None:
        """``row[i]`` for each ``(rest, i)`` of ``items`` (in token order): the options' tokens
        ``rest`` after the prompt ``ctx`` walked one token at a time, each step the previous
        option already took reused."""
        path: list[int] = []  # the option tokens after ctx now in the context
        logp = [log_softmax(self._prefill(ctx, shared))]  # logp[d]: after path[:d] (the memo's logits
        # when the prompt was just generated from)
        for rest, i in items:
            keep = common_prefix(path, rest[:-1])
            if keep < len(path):
                self._rewind(len(ctx) + keep)
                del path[keep:], logp[keep + 1:]
            row[i] = self._walk(rest, logp, path)

    @property
    def _batching(self) -> bool:
        return self.batch_options and self._n_seqs > 1

    def _score_batched(self, ctx: list[int], shared: int, items: list[tuple[list[int], int]], row: list[float]) -> None:
        """``row[i]`` for each ``(rest, i)`` of ``items``: the log-likelihood of the option tokens
        ``rest`` after the prompt ``ctx``, with every option a sequence of its own.

        The prompt is in sequence 0; each option's sequence starts as a copy of it (shared KV
        cells, no copy of the data). Each distinct proper prefix of the options' tokens (a node of
        their token trie) is one batch entry, at its position, in the sequences of every option
        that passes through it; parents come before children. So BANKING77's 77 labels (about
        170 prefixes after Qwen's tokenizer) are one forward pass instead of 170 one-token
        steps. Options beyond the context's sequences go in further groups; a group whose
        prefixes do not fit the free context is walked one token at a time instead.

        llama.cpp's kernels round differently for different batch shapes, so these numbers
        differ from the one-token walk's within that rounding (docs/results/
        label_confidence_speed_banking77.md measures it); they are a function of the prompt and
        the option set, not of what the context held before, nor of the options' order."""
        n = len(ctx)
        logp0 = log_softmax(self._prefill(ctx, shared))
        width = self._n_seqs - 1
        for g in range(0, len(items), width):
            group = items[g : g + width]
            # trie node (a proper prefix) -> the tokens looked up after it, the sequences through it
            trie: dict[tuple[int, ...], tuple[set[int], list[int]]] = {}
            for s, (rest, _) in enumerate(group, start=1):
                for j in range(1, len(rest)):
                    nxt, seqs = trie.setdefault(tuple(rest[:j]), (set(), []))
                    nxt.add(rest[j])
                    seqs.append(s)
            if n + len(trie) > self.n_ctx:  # no room for the prefixes: one token at a time
                self._score_walked(ctx, shared, group, row)
                continue
            after = self._decode_prefixes(n, len(group), trie) if trie else {}
            for rest, i in group:  # an empty continuation scores 0, as in the walk
                row[i] = (float(logp0[rest[0]]) + sum(after[tuple(rest[:j])][rest[j]] for j in range(1, len(rest)))
                          if rest else 0.0)

    def _decode_prefixes(self, n: int, n_seqs: int, trie: dict[tuple[int, ...], tuple[set[int], list[int]]],
                         ) -> dict[tuple[int, ...], dict[int, float]]:
        """Evaluate the ``trie`` nodes (node -> the tokens looked up after it, the sequences 1 ..
        ``n_seqs`` of the options through it) after the ``n`` prompt tokens of sequence 0;
        returns each node's log-probabilities of the tokens it names. The options' sequences are
        removed again, so sequence 0 is left as it was (up to ``n``)."""
        import numpy as np

        lib, llm = self._lib, self._llm
        cctx = llm._ctx.ctx
        mem = lib.llama_get_memory(cctx)
        order = sorted(trie, key=lambda node: (len(node), node))  # parents first
        self._rewind(n)  # the context is the prompt (a walked group before may have stepped past it)
        lib.llama_memory_seq_rm(mem, -1, n, -1)  # whatever followed the prompt (a generated reply)
        for s in range(1, n_seqs + 1):
            lib.llama_memory_seq_cp(mem, 0, s, 0, n)
        n_vocab = llm.n_vocab()
        out: dict[tuple[int, ...], dict[int, float]] = {}
        batch = lib.llama_batch_init(self.n_batch, 0, n_seqs)
        try:
            for start in range(0, len(order), self.n_batch):
                chunk = order[start : start + self.n_batch]
                batch.n_tokens = len(chunk)
                for k, node in enumerate(chunk):
                    seqs = trie[node][1]
                    batch.token[k] = node[-1]
                    batch.pos[k] = n + len(node) - 1
                    batch.n_seq_id[k] = len(seqs)
                    for q, s in enumerate(seqs):
                        batch.seq_id[k][q] = s
                    batch.logits[k] = True
                code = lib.llama_decode(cctx, batch)
                if code != 0:
                    raise TeacherError(f"llamacpp teacher: llama_decode returned {code} on {len(chunk)} option "
                                       "prefixes; construct the teacher with batch_options=False to score them one "
                                       "token at a time")
                for k, node in enumerate(chunk):
                    lp = log_softmax(np.ctypeslib.as_array(lib.llama_get_logits_ith(cctx, k), shape=(n_vocab,)))
                    out[node] = {tok: float(lp[tok]) for tok in trie[node][0]}
        finally:
            lib.llama_batch_free(batch)
            for s in range(1, n_seqs + 1):
                lib.llama_memory_seq_rm(mem, s, -1, -1)
        self.evaluated_tokens += len(order)
        return out

    def _walk(self, rest: list[int], logp: list[Any], path: list[int] | None = None) -> float:
        """Σ log p(rest[j] | context, rest[:j]). ``logp[d]`` are the log-probabilities after the
        first ``d`` tokens of ``rest``; the missing ones are stepped into the context (and, when
        ``path`` is given, recorded there, so the next option can start from them)."""
        total = 0.0
        for j, tok in enumerate(rest):
            total += float(logp[j][tok])
            if j < len(rest) - 1 and j + 1 >= len(logp):
                logp.append(log_softmax(self._step(tok)))
                if path is not None:
                    path.append(tok)
        return total
