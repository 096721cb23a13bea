"""The Teacher protocol every backend implements, plus helpers they share.

A teacher receives *user prompts* (the task's rendered text). Backends with ``chat=True`` wrap
them in the model's chat template themselves, so a cache entry is keyed by the user prompt plus a
fingerprint that covers the weights, the backend, the chat template and the decoding set-up.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Protocol, Sequence, runtime_checkable

from ..types import Reply


@runtime_checkable
class Teacher(Protocol):
    name: str

    @property
    def fingerprint(self) -> str: ...

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0) -> list[Reply]:
        """One reply per prompt, with per-token logprobs where the backend has them."""
        ...

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        """For each prompt, the total log-likelihood of each option as the start of the reply.
        In chat mode the reply starts right after the assistant header; in plain-text mode a
        space is put between a prompt that ends without whitespace and the option (see
        :func:`continuation`)."""
        ...

    def count_tokens(self, text: str) -> int: ...


def make_fingerprint(**parts: Any) -> str:
    """A short, stable id of everything that decides a teacher's replies."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def normalize_options(logliks: Sequence[float]) -> list[float]:
    """Softmax over option log-likelihoods: the teacher's probability of each label, restricted
    to the label set (the confidence LLKD and the report use)."""
    if not logliks:
        return []
    m = max(logliks)
    if m == -math.inf:
        return [1.0 / len(logliks)] * len(logliks)
    exps = [math.exp(x - m) for x in logliks]
    z = sum(exps)
    return [e / z for e in exps]


def render_chat(template: str, user: str, *, bos_token: str = "", eos_token: str = "") -> str:
    """Render a Hugging Face-style (jinja) chat template for one user turn plus the generation
    prompt. Used for GGUF files, whose metadata carries the template."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=[{"role": "user", "content": user}],
        add_generation_prompt=True,
        bos_token=bos_token,
        eos_token=eos_token,
    )


def log_softmax_at(logits: Any, token: int) -> float:
    """log p(token) under a logits vector (numpy), computed stably."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    return float(x[token] - m - math.log(np.exp(x - m).sum()))


def continuation(formatted_prompt: str, option: str, chat: bool) -> str:
    """The text that follows the formatted prompt when the reply is ``option``."""
    if chat or not formatted_prompt or formatted_prompt[-1].isspace() or option[:1].isspace():
        return option
    return " " + option
