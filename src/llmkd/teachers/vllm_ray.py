"""Teacher on vLLM engines that Ray Data runs on a Ray cluster's GPUs (``ray.data.llm``):
``teacher.backend: vllm`` (``pip install 'llmkd[vllm]'``).

Each call of :meth:`VllmRayTeacher.generate` / :meth:`~VllmRayTeacher.score_options` (a chunk of
at most ``batch_size`` prompts: the labeler hands over the cache misses in such chunks) is one
Ray Data pipeline built by ``ray.data.llm.build_processor`` from a ``vLLMEngineProcessorConfig``
(``concurrency`` engines of ``engine_kwargs``, ``engine_batch`` rows per engine batch). The
process that calls the teacher (the driver) gets the answers back and, through
:class:`~llmkd.teachers.cache.CachedTeacher`, alone writes the cache, under this teacher's
fingerprint (model weights or hub id, chat mode, the engine settings that can change replies).

What the vLLM stage is asked for and what is read back (ray >= 2.60's ``vLLMOutputData``):

* generate: ``sampling_params`` = temperature, max_tokens, stop, seed (when sampling) and
  ``logprobs=0`` (the log-probability of each sampled token); a constraint goes as vLLM's
  ``structured_outputs`` (``{"choice": [...]}``, ``{"json": schema}``, ``{"grammar": gbnf}``).
  The reply is ``generated_text``; its token logprobs are ``logprobs[i][generated_tokens[i]]``;
  token counts are ``num_input_tokens`` / ``num_generated_tokens``. The row carries no finish
  reason: ``"length"`` is recorded when ``max_tokens`` tokens were generated, else ``"stop"``.
* score_options: for each prompt one row of the prompt alone and one row per option (the prompt
  followed by the option as :func:`~llmkd.teachers.base.continuation` puts it; in chat mode the
  option is an assistant message the chat template stage continues), each with
  ``max_tokens=1, prompt_logprobs=0``. An option's log-likelihood is the sum of the prompt
  logprobs of its tokens: those past the common prefix of its ``prompt_token_ids`` and the
  prompt's alone, as the ``hf`` backend scores them.

Plain prompts go to vLLM as text (vLLM tokenizes them); with ``chat: true`` (and for
:class:`~llmkd.teachers.base.ChatTurn` prompts) as ``messages`` through Ray's chat template stage.
The seam to Ray is :func:`build_processor` (``processor_builder``): the tests give it Ray's own
``Processor`` with a stand-in for the vLLM stage that takes and returns the same columns.

The engines are loaded once per pipeline, so each chunk pays for loading the model on every
engine; raise ``batch_size`` for long runs (a killed run loses the chunk in flight). Inside
:meth:`VllmRayTeacher.score_alongside` (``llmkd label --executor ray`` labeling with the
confidence) a chunk's option scores are computed in its generate pipeline: one load per chunk
instead of two.

Not handled: a prompt longer than the engine's ``max_model_len`` fails the pipeline (TeacherError),
not just that item. The vLLM version is not part of the fingerprint (it is not known on the
driver). ``count_tokens`` needs the model's tokenizer on the driver (``llmkd[hf]``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any, Callable, Iterator, Sequence

from ..errors import TeacherError, require
from ..types import Reply
from .base import Constraint, common_prefix, continuation, make_fingerprint, wants_chat

log = logging.getLogger(__name__)

EXTRA = "vllm"
_WHAT = "the vllm teacher backend (vLLM engines through ray.data.llm)"
#: engine settings that decide only where and how fast the engine runs, not its replies (left out
#: of the fingerprint; everything else in engine_kwargs is in it)
THROUGHPUT_KWARGS = frozenset({
    "tensor_parallel_size", "pipeline_parallel_size", "gpu_memory_utilization", "max_num_seqs",
    "max_num_batched_tokens", "enable_prefix_caching", "enable_chunked_prefill", "distributed_executor_backend",
    "disable_log_stats", "max_model_len", "swap_space", "download_dir",
})

ProcessorBuilder = Callable[..., Callable[[Any], Any]]


def build_processor(config: dict[str, Any], *, preprocess: Callable[[dict[str, Any]], dict[str, Any]],
                    postprocess: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[Any], Any]:
    """The one call into ``ray.data.llm``: a processor (Dataset -> Dataset) of vLLM engines for
    ``config`` (the keyword arguments of ``vLLMEngineProcessorConfig``)."""
    llm = require("ray.data.llm", EXTRA, _WHAT)
    return llm.build_processor(llm.vLLMEngineProcessorConfig(**config), preprocess=preprocess,
                               postprocess=postprocess)


def structured_outputs(constraint: Constraint) -> dict[str, Any]:
    """vLLM's ``StructuredOutputsParams`` fields for ``constraint`` (the schema stays JSON text:
    vLLM takes a str or a dict, and text keeps Ray's Arrow blocks from reshaping it)."""
    if constraint.kind == "choice":
        return {"choice": list(constraint.choices)}
    if constraint.kind == "json":
        return {"json": constraint.schema}
    return {"grammar": constraint.grammar}


def _info(entry: Any, token: int) -> Any:
    """What one position's ``{token_id: {"logprob": ..., "decoded_token": ...}}`` says of ``token``
    (keys may come back as text from Arrow); None where it is missing."""
    return entry.get(token, entry.get(str(token))) if entry and hasattr(entry, "get") else None


def _logprob_of(entry: Any, token: int) -> float | None:
    info = _info(entry, token)
    if info is None:
        return None
    return float(info["logprob"] if hasattr(info, "get") else info)


def _piece(entry: Any, token: int) -> str:
    info = _info(entry, token)
    return str(info.get("decoded_token") or "") if info is not None and hasattr(info, "get") else ""


def _ints(xs: Any) -> list[int]:
    return [int(x) for x in (xs if xs is not None else [])]


def _postprocess(row: dict[str, Any]) -> dict[str, Any]:
    """Runs in the pipeline after the vLLM stage: the answer of one row as JSON text (an id and
    a string column, so Arrow never reshapes the logprob dicts on the way to the driver)."""
    if row["kind"] == "generate":
        tokens = _ints(row.get("generated_tokens"))
        lps = row.get("logprobs")
        if lps is None and tokens:
            raise TeacherError("the ray.data.llm vLLM stage returned no 'logprobs' column although logprobs=0 was "
                               "asked: llmkd's vllm backend needs ray >= 2.60 (pip install 'llmkd[vllm]')")
        lps = list(lps) if lps is not None else []
        token_lps = [_logprob_of(e, t) for e, t in zip(lps, tokens)]
        n = int(row.get("num_generated_tokens") or len(tokens))
        value = {"text": str(row.get("generated_text") or ""), "tokens": [_piece(e, t) for e, t in zip(lps, tokens)],
                 "token_logprobs": None if any(x is None for x in token_lps) else token_lps,
                 "prompt_tokens": int(row.get("num_input_tokens") or 0), "completion_tokens": n,
                 "finish_reason": "length" if n >= int(row["max_tokens"]) else "stop"}
    else:
        ids = _ints(row.get("prompt_token_ids"))
        plps = row.get("prompt_logprobs")
        if plps is None:
            raise TeacherError("the ray.data.llm vLLM stage returned no 'prompt_logprobs' column although "
                               "prompt_logprobs=0 was asked: llmkd's vllm backend needs ray >= 2.60 "
                               "(pip install 'llmkd[vllm]')")
        value = {"ids": ids, "logprobs": [_logprob_of(e, t) for e, t in zip(list(plps), ids)]}
    return {"i": int(row["i"]), "result": json.dumps(value)}


def _preprocess(row: dict[str, Any]) -> dict[str, Any]:
    """Runs in the pipeline before the stages: the request columns from the row's JSON text."""
    return json.loads(row["request"])


class VllmRayTeacher:
    """A teacher whose answers come from ``ray.data.llm`` vLLM engines (see the module docstring).

    ``model``: a hub id or a local folder every GPU node can read; ``weights``: its fingerprint
    (:func:`llmkd.zoo.weights_fingerprint`). ``engine_kwargs``: vLLM engine arguments (dtype,
    max_model_len, tensor_parallel_size, ...). ``concurrency``: engines (one per GPU, times
    ``tensor_parallel_size``). ``engine_batch``: rows per engine batch. ``batch_size``: prompts
    per pipeline (the labeler's chunk). ``address``: the Ray cluster to join when none is joined
    yet (None: ``RAY_ADDRESS``, else a local one on 127.0.0.1). ``processor_builder``: the seam
    to ``ray.data.llm`` (:func:`build_processor`)."""

    name = "vllm"
    runs_on_ray = True  # the labeler's Ray executor labels on the driver: this teacher spreads the work

    def __init__(self, *, model: str, weights: str, chat: bool = False, engine_kwargs: dict[str, Any] | None = None,
                 concurrency: int = 1, engine_batch: int = 64, batch_size: int = 4096,
                 accelerator_type: str | None = None, address: str | None = None,
                 processor_builder: ProcessorBuilder | None = None) -> None:
        self.model = model
        self.weights = weights
        self.chat = chat
        self.engine_kwargs = dict(engine_kwargs or {})
        self.concurrency = concurrency
        self.engine_batch = engine_batch
        self.batch_size = batch_size
        self.accelerator_type = accelerator_type
        self.address = address
        self.processor_builder = processor_builder
        self.pipelines = 0  # Ray Data pipelines run (each loads the model on every engine)
        self._tok: Any = None
        self._alongside: tuple[str, ...] = ()  # options scored in generate's pipeline (score_alongside)
        self._scored: dict[tuple[str, tuple[str, ...]], list[float]] = {}  # ... their scores, until asked for

    @contextlib.contextmanager
    def score_alongside(self, options: Sequence[str]) -> Iterator[None]:
        """Inside: every :meth:`generate` also scores ``options`` for its prompts in the same
        pipeline (the engines load once instead of twice per chunk), and :meth:`score_options`
        answers those prompts from them. Labeling with the confidence uses it."""
        self._alongside = tuple(options)
        try:
            yield
        finally:
            self._alongside = ()
            self._scored.clear()

    @property
    def fingerprint(self) -> str:
        engine = {k: v for k, v in sorted(self.engine_kwargs.items()) if k not in THROUGHPUT_KWARGS}
        return make_fingerprint(backend="vllm", weights=self.weights, chat=self.chat, engine=engine, v=1)

    def applies(self, constraint: Constraint | None) -> bool:
        return True  # vLLM's structured outputs take choices, JSON schemas and GBNF grammars

    def count_tokens(self, text: str) -> int:
        if self._tok is None:
            transformers = require("transformers", "hf", "counting tokens for the vllm teacher backend")
            self._tok = transformers.AutoTokenizer.from_pretrained(self.model)
        if wants_chat(text, self.chat) and getattr(self._tok, "chat_template", None):
            return len(self._tok.apply_chat_template([{"role": "user", "content": str(text)}], tokenize=True,
                                                     add_generation_prompt=True))
        return len(self._tok(str(text))["input_ids"])

    # ---- requests ----------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0, constraint: Constraint | None = None) -> list[Reply]:
        params: dict[str, Any] = {"temperature": float(temperature), "max_tokens": int(max_tokens),
                                  "stop": [str(s) for s in stop], "logprobs": 0}
        if temperature > 0:
            params["seed"] = int(seed)
        if constraint is not None:
            params["structured_outputs"] = structured_outputs(constraint)
        rows = [(p, {"kind": "generate", "max_tokens": int(max_tokens), **self._input(p),
                     "sampling_params": params}) for p in prompts]
        options = self._alongside
        values = self._run(rows + (self._score_rows(prompts, options) if options else []))
        if options:
            for p, scores in zip(prompts, self._scores(values[len(rows):], len(prompts), len(options))):
                self._scored[(str(p), options)] = scores
        return [Reply.from_dict(v) for v in values[: len(rows)]]

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        if not prompts or not options:
            return [[] for _ in prompts]
        options = tuple(options)
        todo = [p for p in dict.fromkeys(str(p) for p in prompts) if (p, options) not in self._scored]
        if todo:
            scored = self._scores(self._run(self._score_rows(todo, options)), len(todo), len(options))
            self._scored.update(((p, options), s) for p, s in zip(todo, scored))
        out = [self._scored[(str(p), options)] for p in prompts]
        for p in prompts:  # answered: the cache holds them from now on
            self._scored.pop((str(p), options), None)
        return out

    def _score_rows(self, prompts: Sequence[str], options: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        """Per prompt: the prompt alone, then the prompt followed by each option."""
        params = {"temperature": 0.0, "max_tokens": 1, "prompt_logprobs": 0}
        rows = []
        for p in prompts:
            rows.append((p, {"kind": "score", **self._input(p), "sampling_params": params}))
            chat = wants_chat(p, self.chat)
            for o in options:
                body = ({"messages": [{"role": "user", "content": str(p)}, {"role": "assistant", "content": o}]}
                        if chat else {"prompt": str(p) + continuation(str(p), o, False)})
                rows.append((p, {"kind": "score", **body, "sampling_params": params}))
        return rows

    @staticmethod
    def _scores(values: list[dict[str, Any]], n_prompts: int, n_options: int) -> list[list[float]]:
        """Option log-likelihoods from the answers of :meth:`_score_rows`: each option's tokens
        are those past the common prefix with the prompt alone."""
        out: list[list[float]] = []
        per = n_options + 1
        for j in range(n_prompts):
            ctx = values[j * per]["ids"]
            row = []
            for full in values[j * per + 1 : (j + 1) * per]:
                ids, lps = full["ids"], full["logprobs"]
                picked = lps[max(1, common_prefix(ctx, ids)):]
                if not picked or any(x is None for x in picked):
                    raise TeacherError(f"vllm teacher: the prompt logprobs of an option of prompt {j} are missing "
                                       f"({len(picked)} option tokens); nothing of this call was cached")
                row.append(float(sum(picked)))
            out.append(row)
        return out

    def _input(self, prompt: str) -> dict[str, Any]:
        if wants_chat(prompt, self.chat):
            return {"messages": [{"role": "user", "content": str(prompt)}]}
        return {"prompt": str(prompt)}

    # ---- the pipeline ------------------------------------------------------------------------

    def processor_config(self, chat: bool) -> dict[str, Any]:
        """The ``vLLMEngineProcessorConfig`` of a pipeline: with ``chat`` Ray's chat template
        stage renders ``messages``; vLLM tokenizes and detokenizes itself."""
        cfg: dict[str, Any] = {"model_source": self.model, "engine_kwargs": dict(self.engine_kwargs),
                               "concurrency": self.concurrency, "batch_size": self.engine_batch,
                               "chat_template_stage": chat, "tokenize_stage": False, "detokenize_stage": False}
        if self.accelerator_type:
            cfg["accelerator_type"] = self.accelerator_type
        return cfg

    def _run(self, rows: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """The answers of ``rows`` ((prompt, request columns) pairs), in order: one pipeline per
        chat mode present (a pipeline's rows all have ``prompt`` or all have ``messages``)."""
        out: list[dict[str, Any] | None] = [None] * len(rows)
        for chat in (False, True):
            mine = [i for i, (_, req) in enumerate(rows) if ("messages" in req) == chat]
            if mine:
                got = self._pipeline([rows[i][1] for i in mine], chat)
                for i, value in zip(mine, got):
                    out[i] = value
        return [v for v in out if v is not None]

    def _pipeline(self, requests: list[dict[str, Any]], chat: bool) -> list[dict[str, Any]]:
        from ..ray_labeling import join_cluster

        join_cluster(self.address, extra=EXTRA, what=_WHAT)  # left joined for the next chunk; ray leaves at exit
        import ray.data

        builder = self.processor_builder or build_processor
        processor = builder(self.processor_config(chat), preprocess=_preprocess, postprocess=_postprocess)
        ds = ray.data.from_items([{"i": i, "request": json.dumps(r)} for i, r in enumerate(requests)])
        self.pipelines += 1
        found: dict[int, dict[str, Any]] = {}
        try:
            for row in processor(ds).iter_rows():
                found[int(row["i"])] = json.loads(row["result"])
        except TeacherError:
            raise
        except Exception as exc:  # a Ray task error wraps the engine's (e.g. a prompt over max_model_len)
            raise TeacherError(
                f"vllm teacher: the ray.data.llm pipeline over {len(requests)} requests failed ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}); nothing of this chunk was "
                "cached. A prompt longer than the engine's context needs a larger teacher.vllm.engine_kwargs."
                "max_model_len or fewer task.shots; a model that does not load needs teacher.model to name a hub id "
                "or a folder every GPU node can read.") from exc
        missing = len(requests) - len(found)
        if missing:
            raise TeacherError(f"vllm teacher: the ray.data.llm pipeline returned {len(found)} answers for "
                               f"{len(requests)} requests; nothing of this chunk was cached")
        return [found[i] for i in range(len(requests))]

