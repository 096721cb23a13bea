"""The Teacher protocol every backend implements, plus helpers they share.

A teacher receives *user prompts* (the task's rendered text). Backends with ``chat=True`` wrap
them in the model's chat template themselves, so a cache entry is keyed by the user prompt plus a
fingerprint that covers the weights, the backend, the chat template and the decoding set-up.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

from ..types import Reply


class ChatTurn(str):
    """A prompt to send as one chat user turn whatever ``teacher.chat`` says: an instruction
    with no demonstrations to continue (EvoKD's analysis and synthesis prompts), which small
    instruct models follow only inside their chat template. Few-shot labeling prompts stay plain
    strings and follow ``teacher.chat``. The cache keys a ChatTurn apart from the same text sent
    plain. Any string operation on it gives a plain ``str`` again."""

    __slots__ = ()


def wants_chat(prompt: str, chat: bool) -> bool:
    """Whether a backend with chat mode ``chat`` should wrap ``prompt`` in the chat template."""
    return chat or isinstance(prompt, ChatTurn)


@dataclass(frozen=True)
class Constraint:
    """What a reply may be, for backends that can constrain decoding.

    * ``choice``: the reply is exactly one of ``choices`` (a classification label set). llama.cpp
      and hf follow a token trie of the choices in their own decoding loop; OpenAI-compatible
      servers get vLLM's ``structured_outputs`` choice (``guided_choice`` before vLLM 0.12).
    * ``json``: the reply is JSON matching ``schema`` (e.g. NER spans). llama.cpp compiles the
      schema to a GBNF grammar; servers get vLLM's ``structured_outputs`` json (``guided_json``).
    * ``grammar``: the reply matches the GBNF ``grammar`` (root rule ``root``), e.g. balanced
      brackets for trees. llama.cpp applies it with its grammar sampler; servers get vLLM's
      ``structured_outputs`` grammar (``guided_grammar``).

    A backend that cannot apply a constraint generates freely (and logs it once): the task's
    parser and its abstention path still decide the label, so a constraint only ever removes
    unparseable replies, it is never needed for correctness. Every reply generated under a
    constraint is checked against it (:meth:`violation`, done by the cache wrapper): one that
    breaks it is recorded and counted as unconstrained.
    """

    kind: Literal["choice", "json", "grammar"]
    choices: tuple[str, ...] = ()
    schema: str = ""  # JSON schema, serialised with sorted keys (hashable, stable cache key)
    grammar: str = ""

    @classmethod
    def choice(cls, choices: Sequence[str]) -> "Constraint":
        choices = tuple(choices)
        if not choices or not all(isinstance(c, str) and c for c in choices):
            raise ValueError(f"Constraint.choice needs a non-empty list of non-empty strings, got {list(choices)!r}")
        return cls("choice", choices=choices)

    @classmethod
    def json_schema(cls, schema: dict[str, Any]) -> "Constraint":
        return cls("json", schema=json.dumps(schema, sort_keys=True))

    @classmethod
    def gbnf(cls, grammar: str) -> "Constraint":
        if "root" not in grammar:
            raise ValueError("Constraint.gbnf: the grammar needs a rule named 'root' (e.g. root ::= ...)")
        return cls("grammar", grammar=grammar)

    def key(self) -> dict[str, Any]:
        """The part of a cache key that this constraint adds (it can change replies)."""
        return {"kind": self.kind, "choices": list(self.choices), "schema": self.schema, "grammar": self.grammar}

    def violation(self, text: str) -> str:
        """Why ``text`` breaks this constraint ("" when it keeps it, or cannot be checked).

        * ``choice``: the reply, stripped of surrounding whitespace, must be one of the choices
          (stripped alike: a plain-text backend puts a space before the label);
        * ``json``: the reply must parse as JSON and, where the ``jsonschema`` package is
          installed, validate against the schema;
        * ``grammar``: the reply must be derived from the grammar's ``root`` rule
          (:mod:`llmkd.teachers.gbnf`); a grammar that recognizer cannot read is not checked.

        A reply cut off by ``max_tokens`` usually breaks a json or grammar constraint: it was
        not completed inside it."""
        if self.kind == "choice":
            if text.strip() in {c.strip() for c in self.choices}:
                return ""
            shown = text if len(text) <= 60 else text[:60] + "..."
            return f"the reply {shown!r} is not one of the {len(self.choices)} choices"
        if self.kind == "json":
            try:
                value = json.loads(text)
            except ValueError as exc:
                return f"the reply is not JSON ({exc})"
            try:
                import jsonschema
            except ImportError:
                return ""
            try:
                jsonschema.validate(value, json.loads(self.schema))
            except jsonschema.ValidationError as exc:
                return f"the reply does not match the JSON schema ({exc.message})"
            except jsonschema.SchemaError:
                return ""
            return ""
        from .gbnf import GbnfError, matches

        try:
            ok = matches(self.grammar, text)
        except GbnfError:
            return ""
        except RecursionError:
            return ""
        if ok:
            return ""
        shown = text if len(text) <= 60 else text[:60] + "..."
        return f"the reply {shown!r} does not follow the grammar"


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal (quotes, backslashes and newlines escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def gbnf_alternatives(texts: Sequence[str]) -> str:
    """A GBNF alternation of the literals ``texts``, longest first (``"B-x" | "O"``)."""
    return " | ".join(gbnf_literal(t) for t in sorted(dict.fromkeys(texts), key=lambda t: (-len(t), t)))


@runtime_checkable
class Teacher(Protocol):
    name: str

    @property
    def fingerprint(self) -> str: ...

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0, constraint: Constraint | None = None) -> list[Reply]:
        """One reply per prompt, with per-token logprobs where the backend has them. With a
        ``constraint`` the backend keeps the reply inside it where it can (see
        :class:`Constraint`); the logprobs stay those of the unconstrained model."""
        ...

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        """For each prompt, the total log-likelihood of each option as the start of the reply.
        In chat mode the reply starts right after the assistant header; in plain-text mode a
        space is put between a prompt that ends without whitespace and the option (see
        :func:`continuation`)."""
        ...

    def count_tokens(self, text: str) -> int: ...

    # Optional: ``applies(constraint) -> bool | None``, whether ``generate`` would apply
    # ``constraint`` (None: not known yet, e.g. before a server has been asked). The cache uses it
    # to file replies generated without the constraint under the unconstrained key, so that a
    # backend that ignores a constraint never passes its free replies off as constrained ones.
    # A teacher without it is taken to apply every constraint.


@runtime_checkable
class KnowsContext(Protocol):
    """A teacher that knows its context window (llama.cpp: ``n_ctx``; the cached wrapper forwards
    it, None when the backend does not say). Labeling fits the demonstrations to it."""

    @property
    def context_tokens(self) -> int | None: ...


def applies(teacher: Any, constraint: Constraint | None) -> bool | None:
    """Whether ``teacher`` applies ``constraint`` (True for None and for teachers that do not say)."""
    if constraint is None:
        return True
    check = getattr(teacher, "applies", None)
    return True if check is None else check(constraint)


_SECRET_QUERY = {"key", "api_key", "apikey", "api-key", "token", "access_token", "auth", "password", "secret",
                 "sig", "signature", "code"}


def redact_url(url: str) -> str:
    """``url`` with the credentials it carries masked, for configs, logs and messages:
    ``https://user:pass@host`` -> ``https://user:***@host``, a user part alone (often a token) ->
    ``***@host``, and the values of query parameters named like secrets (``?api_key=***``)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL: mask anything between '//' and '@' all the same
        import re

        return re.sub(r"//[^/@]*@", "//***@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon and user else f"***@{host}"
    query = "&".join(
        f"{name}=***" if sep and name.lower() in _SECRET_QUERY else f"{name}{sep}{value}"
        for name, sep, value in (item.partition("=") for item in parts.query.split("&"))
    ) if parts.query else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query))


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
    prompt. Used for GGUF files, whose metadata carries the template. The compiled template is
    kept (compiling it costs more than rendering, and it is rendered once per prompt)."""
    return _compiled_chat(template).render(
        messages=[{"role": "user", "content": user}],
        add_generation_prompt=True,
        bos_token=bos_token,
        eos_token=eos_token,
    )


@functools.lru_cache(maxsize=8)
def _compiled_chat(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def common_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items (token ids, characters) ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def log_softmax_at(logits: Any, token: int) -> float:
    """log p(token) under a logits vector (numpy), computed stably."""
    return float(log_softmax(logits)[token])


def log_softmax(logits: Any) -> Any:
    """The log-probabilities of a logits vector (numpy float64), computed stably: one pass serves
    every token looked up in it."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    return x - m - math.log(np.exp(x - m).sum())


def continuation(formatted_prompt: str, option: str, chat: bool) -> str:
    """The text that follows the formatted prompt when the reply is ``option``."""
    if chat or not formatted_prompt or formatted_prompt[-1].isspace() or option[:1].isspace():
        return option
    return " " + option


class ChoiceTrie:
    """Token-level trie of a choice constraint, for backends with their own decoding loop.

    ``sequences`` are the token ids of each choice as the reply would start (tokenized on its
    own, after the assistant header or the separating space). :meth:`allowed` gives the token
    ids that keep the reply on a path to some choice after ``prefix``, plus ``eos`` where
    ``prefix`` already is a complete choice that another choice extends; :meth:`done` says the
    reply is complete and nothing can follow. Equal token sequences are merged."""

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        self.sequences = sorted({tuple(s) for s in sequences if len(s)})
        if not self.sequences:
            raise ValueError("ChoiceTrie: every choice tokenized to nothing")

    def allowed(self, prefix: Sequence[int], eos: int | None) -> list[int]:
        n = len(prefix)
        pre = tuple(prefix)
        nxt = sorted({s[n] for s in self.sequences if len(s) > n and s[:n] == pre})
        if eos is not None and nxt and any(s == pre for s in self.sequences):
            nxt.append(eos)
        return nxt

    def done(self, prefix: Sequence[int]) -> bool:
        pre = tuple(prefix)
        return pre in self.sequences and not any(len(s) > len(pre) and s[: len(pre)] == pre for s in self.sequences)


def pick_token(logits: Any, allowed: Sequence[int] | None, temperature: float, rng: Any) -> int:
    """Greedy (``temperature == 0``) or sampled next token, restricted to ``allowed`` if given."""
    import numpy as np

    if temperature <= 0:  # argmax needs no float64 copy of the vocabulary: same index
        if allowed is None:
            return int(np.argmax(logits))
        idx = np.asarray(allowed, dtype=np.int64)
        return int(idx[int(np.argmax(np.asarray(logits)[idx]))])
    x = np.asarray(logits, dtype=np.float64)
    if allowed is not None:
        idx = np.asarray(allowed, dtype=np.int64)
        sub = x[idx]
        z = sub / temperature
        p = np.exp(z - z.max())
        return int(idx[int(rng.choice(len(p), p=p / p.sum()))])
    z = x / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))
