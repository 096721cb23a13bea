"""A stand-in for ``ray.data.llm``'s vLLM engine stage, for tests without a GPU or vLLM.

:func:`fake_build_processor` has the signature of :func:`llmkd.teachers.vllm_ray.build_processor`
and builds Ray's own ``Processor`` (the preprocess / stages / postprocess of ``ray.data.llm``)
from the real ``vLLMEngineProcessorConfig`` (so the config is checked as Ray checks it), with two
stand-in stages in place of vLLM's:

* :class:`FakeChatTemplateStage` (when ``chat_template_stage``): needs ``messages``, writes
  ``prompt`` with a fixed template, continuing a trailing assistant message as Ray's does;
* :class:`FakeVllmStage`: needs ``sampling_params`` and ``prompt``; returns what
  ``vLLMEngineStageUDF`` returns (Ray's own ``vLLMOutputData`` fields plus request_id,
  batch_uuid, time_taken_llm, params), from a toy model over characters: token id = ``ord(c)``,
  the reply is ``reply_of(prompt)`` (cut at a stop string and at ``max_tokens``; a ``choice``
  structured output is applied by taking the choice the toy model scores highest), and every
  token's log-probability is :func:`toy_logprob` of its position. Sampling params are checked
  against the ``vllm.SamplingParams`` fields llmkd may send.

:class:`ToyTeacher` is the same toy model as a local teacher, for "identical to local labeling".
"""

from __future__ import annotations

import time
import uuid
import zlib
from typing import Any, AsyncIterator, Callable, Dict, List, Sequence

from llmkd.teachers.base import Constraint, continuation
from llmkd.types import Reply

TEMPLATE_USER = "<|user|>\n{}\n<|assistant|>\n"
#: vllm.SamplingParams / StructuredOutputsParams fields this stand-in knows
SAMPLING_FIELDS = {"temperature", "max_tokens", "stop", "seed", "logprobs", "prompt_logprobs"}
STRUCTURED_FIELDS = {"choice", "json", "grammar", "regex"}


def toy_logprob(prefix: Sequence[int], token: int) -> float:
    """The toy model's log-probability of ``token`` after ``prefix`` (a function of the last 3
    tokens): deterministic, in (-4, -0.01]."""
    key = ",".join(map(str, list(prefix)[-3:])) + f"|{token}"
    return -0.01 - (zlib.crc32(key.encode()) % 1000) / 250.0


def toy_score(prompt_ids: Sequence[int], text: str) -> float:
    ids = list(prompt_ids)
    total = 0.0
    for c in text:
        total += toy_logprob(ids, ord(c))
        ids.append(ord(c))
    return total


def render(messages: list[dict[str, str]]) -> str:
    """The stand-in chat template: user turns, and a trailing assistant message continued."""
    out = ""
    for m in messages:
        out += TEMPLATE_USER.format(m["content"]) if m["role"] == "user" else m["content"]
    return out


def _reply_text(prompt: str, reply_of: Callable[[str], str], params: dict[str, Any]) -> str:
    text = reply_of(prompt)
    so = params.get("structured_outputs") or {}
    if so.get("choice") is not None and text not in so["choice"]:
        ids = [ord(c) for c in prompt]
        text = max(so["choice"], key=lambda c: toy_score(ids, c))
    for s in params.get("stop") or []:
        if s and s in text:
            text = text[: text.index(s)]
    return text[: int(params.get("max_tokens") or 16)]


def _stage_classes() -> tuple[type, type, type, type]:
    from ray.llm._internal.batch.stages.base import StatefulStage, StatefulStageUDF
    from ray.llm._internal.batch.stages.common import maybe_convert_ndarray_to_list
    from ray.llm._internal.batch.stages.vllm_engine_stage import vLLMOutputData

    class FakeVllmUDF(StatefulStageUDF):
        def __init__(self, data_column: str, expected_input_keys: List[str], reply_of: Callable[[str], str],
                     model: str) -> None:
            super().__init__(data_column, expected_input_keys)
            self.reply_of = reply_of
            self.model = model
            self.request_id = 0

        async def udf(self, batch: List[Dict[str, Any]]) -> AsyncIterator[Dict[str, Any]]:
            batch_uuid = uuid.uuid4()
            for row in batch:
                prompt = row.pop("prompt")  # as vLLMEngineWrapper._prepare_llm_request pops its inputs
                params = maybe_convert_ndarray_to_list(row.pop("sampling_params"))
                params = {k: v for k, v in params.items() if v is not None}  # Arrow fills absent struct fields
                unknown = set(params) - SAMPLING_FIELDS - {"structured_outputs"}
                if unknown:
                    raise TypeError(f"SamplingParams got unexpected keyword arguments {sorted(unknown)}")
                so = {k: v for k, v in (params.get("structured_outputs") or {}).items() if v is not None}
                if set(so) - STRUCTURED_FIELDS or len(so) > 1:
                    raise ValueError(f"StructuredOutputsParams: one of {sorted(STRUCTURED_FIELDS)} expected, got {so}")
                params["structured_outputs"] = so
                t = time.perf_counter()
                ids = [ord(c) for c in prompt]
                text = _reply_text(prompt, self.reply_of, params)
                gen = [ord(c) for c in text]
                out = vLLMOutputData(prompt=prompt, prompt_token_ids=ids, num_input_tokens=len(ids),
                                     generated_tokens=gen, generated_text=text, num_generated_tokens=len(gen))
                if params.get("logprobs") is not None:
                    out.logprobs = [{g: {"logprob": toy_logprob(ids + gen[:k], g), "rank": 1, "decoded_token": chr(g)}}
                                    for k, g in enumerate(gen)]
                if params.get("prompt_logprobs") is not None:
                    out.prompt_logprobs = [None] + [
                        {ids[q]: {"logprob": toy_logprob(ids[:q], ids[q]), "rank": 1, "decoded_token": chr(ids[q])}}
                        for q in range(1, len(ids))]
                self.request_id += 1
                yield {**out.model_dump(), "request_id": self.request_id, self.IDX_IN_BATCH_COLUMN: row[self.IDX_IN_BATCH_COLUMN],
                       "batch_uuid": batch_uuid.hex, "time_taken_llm": time.perf_counter() - t, "params": str(params),
                       "__inference_error__": ""}

    class FakeVllmStage(StatefulStage):
        fn: type = FakeVllmUDF

        def get_required_input_keys(self) -> Dict[str, str]:
            return {"sampling_params": "The sampling parameters.", "prompt": "The text prompt."}

    class FakeChatUDF(StatefulStageUDF):
        def __init__(self, data_column: str, expected_input_keys: List[str]) -> None:
            super().__init__(data_column, expected_input_keys)

        async def udf(self, batch: List[Dict[str, Any]]) -> AsyncIterator[Dict[str, Any]]:
            for row in batch:
                messages = row["messages"].tolist() if hasattr(row["messages"], "tolist") else row["messages"]
                yield {self.IDX_IN_BATCH_COLUMN: row[self.IDX_IN_BATCH_COLUMN], "prompt": render(list(messages))}

    class FakeChatTemplateStage(StatefulStage):
        fn: type = FakeChatUDF

        def get_required_input_keys(self) -> Dict[str, str]:
            return {"messages": "A list of messages in OpenAI chat format."}

    return FakeVllmUDF, FakeVllmStage, FakeChatUDF, FakeChatTemplateStage


class FakeBuilder:
    """``processor_builder`` for :class:`~llmkd.teachers.vllm_ray.VllmRayTeacher`: Ray's Processor
    with the stand-in stages; records every config it was given (``configs``)."""

    def __init__(self, reply_of: Callable[[str], str]) -> None:
        self.reply_of = reply_of
        self.configs: list[dict[str, Any]] = []

    def __call__(self, config: dict[str, Any], *, preprocess: Any, postprocess: Any) -> Any:
        import ray.data
        from ray.data.llm import vLLMEngineProcessorConfig
        from ray.llm._internal.batch.processor.base import Processor

        self.configs.append(config)
        cfg = vLLMEngineProcessorConfig(**config)  # checked as ray.data.llm checks it
        _, vllm_stage, _, chat_stage = _stage_classes()
        stages = []
        if config.get("chat_template_stage"):
            stages.append(chat_stage(map_batches_kwargs={"compute": ray.data.ActorPoolStrategy(size=1), "num_cpus": 0.25}))
        stages.append(vllm_stage(
            fn_constructor_kwargs={"reply_of": self.reply_of, "model": cfg.model_source},
            # a quarter CPU each (a real engine takes a GPU), so the map tasks around them find a CPU on 2 cores
            map_batches_kwargs={"zero_copy_batch": True, "max_concurrency": 2, "num_cpus": 0.25,
                                "compute": ray.data.ActorPoolStrategy(size=int(cfg.concurrency))}))
        return Processor(cfg, stages, preprocess=preprocess, postprocess=postprocess)


class ToyTeacher:
    """The stand-in stage's toy model as a local teacher (plain text or the stand-in chat template)."""

    name = "toy"

    def __init__(self, reply_of: Callable[[str], str], *, chat: bool = False, fingerprint: str = "toy-0") -> None:
        self.reply_of = reply_of
        self.chat = chat
        self.fingerprint = fingerprint
        self.batch_size = 1000

    def _format(self, prompt: str) -> str:
        return render([{"role": "user", "content": str(prompt)}]) if self.chat else str(prompt)

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0, constraint: Constraint | None = None) -> list[Reply]:
        params: dict[str, Any] = {"max_tokens": max_tokens, "stop": list(stop)}
        if constraint is not None and constraint.kind == "choice":
            params["structured_outputs"] = {"choice": list(constraint.choices)}
        out = []
        for p in prompts:
            f = self._format(p)
            ids = [ord(c) for c in f]
            text = _reply_text(f, self.reply_of, params)
            lps = tuple(toy_logprob(ids + [ord(c) for c in text[:k]], ord(c)) for k, c in enumerate(text))
            out.append(Reply(text, tokens=tuple(text), token_logprobs=lps, prompt_tokens=len(ids),
                             completion_tokens=len(text), finish_reason="length" if len(text) >= max_tokens else "stop"))
        return out

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        out = []
        for p in prompts:
            f = self._format(p)
            out.append([toy_score([ord(c) for c in f], continuation(f, o, self.chat)) for o in options])
        return out

    def count_tokens(self, text: str) -> int:
        return len(self._format(text))
