"""Teacher backend for any OpenAI-compatible HTTP server: vLLM, the llama.cpp server, OpenAI.

Requests run concurrently (asyncio + httpx, at most ``concurrency`` in flight) and are spread
over one or more base URLs, each request going to the URL with the fewest requests in flight
(ties go round-robin). Transient failures are retried with exponential backoff (``backoff``
doubled each try, capped at ``max_backoff``, default :data:`DEFAULT_MAX_BACKOFF` = 30 s, each wait
0-10% shorter at random so that a pool does not retry in lockstep): HTTP 429 and 5xx, timeouts,
connection errors, and malformed replies (not JSON, no ``choices``, or a reply text that is not a
string). Any other 4xx fails at once with the server's message. A reply that is not accepted is
never returned, so it never reaches the cache.

What each server offers is found out once per base URL and process and remembered
(:func:`forget_server` drops it; a connection error to a server drops it too): the vLLM
version (``GET /version``: vLLM 0.12 removed the ``guided_*`` request fields, which newer servers
ignore while answering 200, so constraints go as ``structured_outputs`` from 0.12 on), a probe
where no version is reported, the tokenizer endpoint (vLLM's and the llama.cpp server's
``POST /tokenize``, llama-cpp-python's ``POST /extras/tokenize/count``).

Not handled: streaming, ``n > 1``, tool calls, images. The ``concurrency`` bound holds per call:
calls made from several threads at once each get their own bound. ``timeout`` applies to each
network step (connect, read, write) as httpx counts them, not to a request as a whole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import math
import os
import random
import re
import threading
import time
from typing import Any, Coroutine, Literal, Sequence, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import ConfigError, PromptTooLong, TeacherError, require
from ..types import Reply
from .base import Constraint, gbnf_literal, make_fingerprint, redact_url, wants_chat

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_RETRY_AFTER_CAP = 60.0  # seconds: a longer Retry-After header is cut to this
DEFAULT_MAX_BACKOFF = 30.0  # seconds: the longest wait between two retries (teacher.openai.max_backoff)
_TOP_LOGPROBS = 20  # alternatives asked for by the score_options fallback
_ECHO_REFUSED = (400, 404, 422)
#: how vLLM, the llama.cpp server and OpenAI word "this prompt does not fit the context"
_TOO_LONG = re.compile(r"maximum context length|context length|context size|exceeds? the (?:available )?context|"
                       r"too many tokens|prompt is too long|max_model_len|n_ctx", re.IGNORECASE)  # statuses that mean "this server does not do echo scoring"
_TOKEN_MARKS = " \t\r\n\u2581\u0120"  # whitespace plus the SentencePiece / GPT-2 space marks
#: the first vLLM release without the guided_* request fields (vllm-project/vllm#29326)
VLLM_STRUCTURED_OUTPUTS = (0, 12)
#: a choice no model writes unasked: a server that answers it exactly applies the constraint
_PROBE_CHOICE = "llmkd-probe-zq7x"
_PROBE_PROMPT = "Reply with one word."

# What each server offers, per base URL (credentials left out), for the life of the process.
_SERVERS_LOCK = threading.Lock()
_DIALECT: dict[str, str | None] = {}  # "structured_outputs" | "guided" | None: applies neither
_TOKENIZER: dict[str, str | None] = {}  # a key of _TOKENIZERS, or None: no tokenizer endpoint answers
#: tokenizer endpoints, tried in this order: style -> path at the server root
_TOKENIZERS = {"vllm": "/tokenize", "llama.cpp": "/tokenize", "llama-cpp-python": "/extras/tokenize/count"}


def _tokenize_body(style: str, model: str, text: str, chat: bool) -> dict[str, Any]:
    """The tokenizer request of ``style``: vLLM applies the chat template to ``messages``; the
    llama.cpp servers count the text as given."""
    if style == "vllm":
        if chat:
            return {"model": model, "messages": [{"role": "user", "content": text}], "add_generation_prompt": True}
        return {"model": model, "prompt": text}
    if style == "llama.cpp":
        return {"content": text, "add_special": True}
    return {"model": model, "input": text}


def forget_server(base_url: str) -> None:
    """Drop what was found out about the server at ``base_url`` (its vLLM dialect, its tokenizer
    endpoint): the next use asks again. For a server restarted as another version."""
    target = _split_credentials(base_url.strip().rstrip("/"))[0]
    with _SERVERS_LOCK:
        _DIALECT.pop(target, None)
        _TOKENIZER.pop(target, None)


def _root(target: str) -> str:
    """The server root of a base URL: vLLM and the llama.cpp server serve /version and
    /tokenize there, beside /v1."""
    return target[:-3] if target.endswith("/v1") else target


def _version(value: Any) -> tuple[int, int] | None:
    match = re.match(r"\s*v?(\d+)\.(\d+)", value) if isinstance(value, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


class _Refused(TeacherError):
    """A 4xx reply other than 429. Not retried; ``status`` lets score_options fall back."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Balancer:
    """Picks the base URL with the fewest requests in flight; ties go round-robin."""

    def __init__(self, n: int) -> None:
        self._in_flight = [0] * n
        self._next = 0
        self._lock = threading.Lock()

    def acquire(self) -> int:
        with self._lock:
            n = len(self._in_flight)
            order = [(self._next + k) % n for k in range(n)]
            best = min(order, key=lambda i: self._in_flight[i])  # first of the least busy
            self._in_flight[best] += 1
            self._next = (best + 1) % n
            return best

    def release(self, index: int) -> None:
        with self._lock:
            self._in_flight[index] -= 1


class OpenAITeacher:
    """A teacher served over the OpenAI HTTP protocol (``/chat/completions``, ``/completions``).

    ``chat=True`` sends each prompt as one user message to ``/chat/completions`` and lets the
    server apply the model's chat template; ``chat=False`` sends the raw prompt to
    ``/completions``. The API key is read from the environment variable named ``api_key_env``
    at request time and sent as a Bearer token; when that variable is unset no auth header is
    sent (local servers need none). The key is never stored, logged or put in a message.

    ``score_options`` gives the log-likelihood of each option continuing the prompt:

    * exact, ``chat=False`` on servers that echo prompt logprobs on ``/completions``
      (``echo: true, max_tokens: 1``; not 0: llama-cpp-python's server reads 0 as "until the
      context is full"; the generated token is not counted): the sum of the logprobs of the
      echoed tokens that overlap the option, located by ``text_offset`` (character offsets). A
      token straddling the prompt/option boundary counts toward the option. Where the server
      takes a list of prompts on ``/completions`` (vLLM, OpenAI), the options of a prompt go in
      one request (``prompt: [prompt + option, ...]``; vLLM's prefix cache computes the shared
      prompt once); elsewhere (llama-cpp-python's server) one request per option.
    * approximate otherwise, and always with ``chat=True`` (the server applies the chat template,
      so the templated prompt text that echo scoring needs is not known here): one request per
      prompt with ``max_tokens: 1`` and the top 20 logprobs of the first reply token. An option
      scores the logprob of the longest of those tokens that is a prefix of the option (leading
      whitespace and case ignored; tokens equal after that are summed in probability), else
      ``-inf``. Options sharing a first token get the same score, and only the first token of
      each option counts.

    Which path works is found out once per instance (one probe request, and one more for the
    list of prompts) and remembered.

    ``seed`` only seeds the retry jitter; the request seed is the ``seed`` given to
    :meth:`generate`.
    """

    name = "openai"

    @property
    def batch_size(self) -> int:
        """How many prompts the labeler hands over at once: enough to keep every slot busy."""
        return self.concurrency * 4

    def __init__(
        self,
        *,
        model: str,
        base_url: str | list[str],
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 60.0,
        backoff: float = 0.5,
        chat: bool = True,
        seed: int = 0,
        guided: str = "vllm",
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        identify: bool = True,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls or not all(isinstance(u, str) and u.strip() for u in urls):
            raise ConfigError(
                "OpenAITeacher: base_url (teacher.openai.base_url) must be a URL or a non-empty "
                f"list of URLs, e.g. 'http://127.0.0.1:8000/v1'; got {[_redact(u) if isinstance(u, str) else u for u in urls]!r}"
            )
        for field, value, low in (("concurrency", concurrency, 1), ("max_retries", max_retries, 0)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"OpenAITeacher: {field} (teacher.openai.{field}) must be an int >= {low}; got {value!r}"
                )
        if not timeout > 0:
            raise ConfigError(f"OpenAITeacher: timeout (teacher.openai.timeout) must be > 0 seconds; got {timeout!r}")
        if not backoff >= 0:
            raise ConfigError(f"OpenAITeacher: backoff (teacher.openai.backoff) must be >= 0 seconds; got {backoff!r}")
        if not max_backoff > 0:
            raise ConfigError(f"OpenAITeacher: max_backoff (teacher.openai.max_backoff) must be > 0 seconds; "
                              f"got {max_backoff!r}")
        if guided not in _GUIDED:
            raise ConfigError(f"OpenAITeacher: guided (teacher.openai.guided) must be one of {list(_GUIDED)}; got {guided!r}")
        self.guided = guided
        self._guided_ok = True  # until a server refuses a guided request
        self._guided_checked = False
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.identify = identify
        self.chat = chat
        self.seed = seed
        self._urls = [u.strip().rstrip("/") for u in urls]  # as given: shown redacted (redact_url)
        # what goes to httpx: the URL without its user:password part, which travels as BasicAuth
        # (what httpx made of it anyway), so that httpx's own request log never holds the password
        self._targets = [_split_credentials(u) for u in self._urls]
        self._balancer = _Balancer(len(self._urls))
        self._rng = random.Random(seed)
        self._score_path: Literal["echo", "top"] | None = None  # found out on first use
        self._echo_max_tokens = 1  # echo scoring's max_tokens (0 would be unlimited on llama-cpp-python)
        self._identity_lock = threading.Lock()
        self._identity: dict[str, Any] | None = None  # what the server reports serving (served_identity)
        self._identified = False
        self._ssl: Any = None
        self._list_prompts = False  # /completions scores all options of a prompt in one request (probed)
        self._dialect: dict[int, str | None] = {}  # base URL index -> vLLM constraint fields it applies
        self._usage_lock = threading.Lock()
        #: what the servers reported spending on every request this teacher sent (probes and scoring
        #: included): the tokens a hosted API bills
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._seen = [0, 0]  # prompt characters and prompt tokens (usage) of the replies so far
        self._counted: dict[str, int] = {}
        #: where count_tokens numbers come from: "server" (/tokenize), "usage" (the replies'
        #: prompt_tokens), or "estimate" (neither is available: characters / 4)
        self.token_count_source: str | None = None

    def __repr__(self) -> str:
        urls = [_redact(u) for u in self._urls]
        shown = urls[0] if isinstance(self.base_url, str) else urls
        return f"OpenAITeacher(model={self.model!r}, base_url={shown!r}, chat={self.chat})"

    @property
    def fingerprint(self) -> str:
        """Backend, model name, chat mode, the guided-decoding dialect (it decides whether a
        constrained request is honoured) and, with ``identify`` (the default), the identity of
        the model the server reports serving under that name (:meth:`served_identity`), so that
        another model served under the same name does not reuse the first one's cached answers.
        The base URLs are left out on purpose: a pool of identical servers, or the same server
        moved to another host or port, shares the cache. Where the server reports no identity
        (or ``identify=False``), the fingerprint is that of the name alone, as before.

        Never raises: while no base URL answers, the identity part is ``"unidentified"``, which
        matches no stored answer (the next request then reports the error), and the server is
        asked again on the next use."""
        parts: dict[str, Any] = dict(backend="openai", model=self.model, chat=self.chat, guided=self.guided)
        served: Any = None
        if self.identify:
            try:
                served = self.served_identity()
            except TeacherError as exc:
                log.debug("openai teacher: fingerprint without the served model: %s", exc)
                served = "unidentified"
        if served:
            parts["served"] = served
        return make_fingerprint(**parts)

    def served_identity(self) -> dict[str, Any] | None:
        """What the server says it serves under ``model``: the stable fields of its ``GET
        /models`` entry (see :func:`_stable_identity`), looked up once per instance on every base
        URL (they must agree); None where the server reports nothing usable. Raises TeacherError
        when no base URL answers, or when the URLs of a pool serve different models."""
        with self._identity_lock:
            if not self._identified:
                self._identity = _run_sync(self._identify())
                self._identified = True
            return self._identity

    def _http(self) -> tuple[Any, Any]:
        """httpx, and a new async client with this teacher's timeout and TLS settings."""
        httpx = require("httpx", "openai", "the openai teacher backend")
        return httpx, httpx.AsyncClient(timeout=self.timeout, verify=self._ssl_context(httpx))

    async def _identify(self) -> dict[str, Any] | None:
        httpx, new_client = self._http()
        async with new_client as client:
            found = await asyncio.gather(*(self._served_at(httpx, client, i) for i in range(len(self._urls))))
        answered = [(url, state, what) for url, state, what in found if state != "down"]
        down = [(url, what) for url, state, what in found if state == "down"]
        if not answered:
            url, last = down[-1]
            raise TeacherError(
                f"openai teacher: GET {_redact(url)}/models failed after {self.max_retries + 1} attempt"
                f"{'s' if self.max_retries else ''}; last error: {last}. The cache is keyed by the model the "
                f"server reports serving, so it must answer: check that the server is up at teacher.openai.base_url, "
                f"or set teacher.openai.identify: false to key the cache by teacher.model ({self.model!r}) alone."
            )
        for url, last in down:
            log.warning("openai teacher: %s did not answer GET /models (%s); identifying the model by the other "
                        "base URLs", _redact(url), last)
        seen = {json.dumps(what if state == "ok" else None, sort_keys=True) for _, state, what in answered}
        if len(seen) > 1:
            shown = "; ".join(f"{_redact(url)}: {what if state == 'ok' else 'reports nothing (' + what + ')'}"
                              for url, state, what in answered)
            raise TeacherError(
                f"openai teacher: the servers in teacher.openai.base_url serve different models under the name "
                f"{self.model!r}: {shown}. Their answers would be mixed in one run and one cache entry; list only "
                "servers of one model in teacher.openai.base_url (or give each model its own name and run)."
            )
        _, state, what = answered[0]
        if state != "ok":
            log.warning("openai teacher: the server does not say which model it serves under %r (%s); the cache "
                        "is keyed by that name alone, so if another model is served under it later, clear the "
                        "cache (llmkd cache clear) or rename it", self.model, what)
            return None
        log.info("openai teacher: %s is served as %s; the cache is keyed by it", self.model, what)
        return what

    async def _served_at(self, httpx: Any, client: Any, index: int) -> tuple[str, str, Any]:
        """(url, "ok", identity) | (url, "unreported", why) | (url, "down", last error) for base URL ``index``."""
        url = self._urls[index]
        target, auth = self._targets[index]
        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                key = self._api_key()
                response = await client.get(target + "/models", auth=auth,
                                            headers={"Authorization": f"Bearer {key}"} if key else {})
            except httpx.TimeoutException:
                last = f"no reply within {self.timeout:g}s (timeout)"
            except httpx.TransportError as exc:
                last = self._scrub(f"connection error ({type(exc).__name__}: {exc})")
            else:
                status = response.status_code
                if 200 <= status < 300:
                    try:
                        data = response.json()
                    except ValueError:
                        return url, "unreported", "its GET /models reply is not JSON"
                    entry, why = _model_entry(data, self.model)
                    identity = _stable_identity(entry) if entry is not None else {}
                    return (url, "ok", identity) if identity else (url, "unreported", why or "no usable fields")
                if status != 429 and (status < 500 or status == 501):
                    return url, "unreported", f"GET /models answered HTTP {status}"
                last = f"HTTP {status}: {self._scrub(_server_message(response))}"
                retry_after = _retry_after(response.headers.get("retry-after"))
            if attempt < self.max_retries:
                await asyncio.sleep(self._retry_delay(attempt, retry_after))
        return url, "down", last

    def count_tokens(self, text: str) -> int:
        """The prompt tokens of ``text`` as the server counts them (:attr:`token_count_source`):

        * ``server``: its tokenizer endpoint, found once per server (vLLM's ``POST /tokenize``,
          with the chat template applied when ``chat``; the llama.cpp server's ``POST /tokenize``
          and llama-cpp-python's ``POST /extras/tokenize/count``, both without the template);
        * ``usage``: where there is none (OpenAI), from the ``usage.prompt_tokens`` the server
          reports: one ``max_tokens: 1`` request for the first text, then tokens per character
          as measured over every reply so far;
        * ``estimate``: a server that reports neither: ``len(text) // 4``.
        """
        if text in self._counted:
            return self._counted[text]
        if self.identify:
            self.served_identity()  # a usage request may follow: which model answers is known first
        n = _run_sync(self._count(text))
        if len(self._counted) < 4096:
            self._counted[text] = n
        return n

    async def _count(self, text: str) -> int:
        httpx, new_client = self._http()
        chat = wants_chat(text, self.chat)
        async with new_client as client:
            n = await self._tokenize(httpx, client, 0, text, chat)
            if n is not None:
                self.token_count_source = "server"
                return n
            if not self._seen[1]:
                path = "/chat/completions" if chat else "/completions"
                data = await self._post(httpx, client, path, self._body(text, max_tokens=1, temperature=0.0, seed=0,
                                                                       chat=chat))
                used = int(_dict(data.get("usage")).get("prompt_tokens") or 0)
                if used > 0:
                    self._note_prompt(text, used)
                    self.token_count_source = "usage"
                    return used
            if self._seen[1]:
                self.token_count_source = "usage"
                return max(1, round(len(text) * self._seen[1] / max(1, self._seen[0])))
        if self.token_count_source != "estimate":
            log.warning("openai teacher: %s has no tokenizer endpoint and reports no usage; token counts are "
                        "estimates (characters / 4)", ", ".join(_redact(u) for u in self._urls))
        self.token_count_source = "estimate"
        return max(1, len(text) // 4)

    def _note_prompt(self, prompt: str, tokens: int) -> None:
        with self._usage_lock:
            self._seen[0] += len(str(prompt))
            self._seen[1] += tokens

    async def _tokenize(self, httpx: Any, client: Any, index: int, text: str, chat: bool) -> int | None:
        """The token count of ``text`` from the tokenizer endpoint of base URL ``index``; None
        where the server has none (found out once per server and process)."""
        target, auth = self._targets[index]
        with _SERVERS_LOCK:
            known, style = target in _TOKENIZER, _TOKENIZER.get(target)
        if known and style is None:
            return None
        for candidate in [style] if known else list(_TOKENIZERS):
            path, body = _TOKENIZERS[candidate], _tokenize_body(candidate, self.model, str(text), chat)
            try:
                key = self._api_key()
                response = await client.post(_root(target) + path, json=body, auth=auth,
                                             headers={"Authorization": f"Bearer {key}"} if key else {})
            except httpx.HTTPError as exc:
                log.debug("openai teacher: POST %s%s: %s", _redact(_root(self._urls[index])), path, exc)
                continue
            n = _token_count(response)
            if n is not None:
                if not known:
                    with _SERVERS_LOCK:
                        _TOKENIZER[target] = candidate
                    log.info("openai teacher: token counts from %s%s (%s)", _redact(_root(self._urls[index])), path,
                             candidate)
                return n
        if not known:
            with _SERVERS_LOCK:
                _TOKENIZER[target] = None
        return None

    # ---- generation ----------------------------------------------------------------------

    def applies(self, constraint: Constraint) -> bool | None:
        """False when the dialect cannot carry ``constraint``, the server refused guided decoding,
        or (``guided: vllm``) no base URL applies vLLM's constraint fields; None until that is
        known (the first guided request has been answered); else True."""
        if not _guided_fields(self.guided, constraint) or not self._guided_ok:
            return False
        if self.guided == "vllm":
            with _SERVERS_LOCK:
                found = [self._dialect[i] if i in self._dialect else _DIALECT[t]
                         for i, (t, _) in enumerate(self._targets) if i in self._dialect or t in _DIALECT]
            if len(found) < len(self._targets):
                return None
            if not any(found):
                return False
        return True if self._guided_checked else None

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0, constraint: Constraint | None = None) -> list[Reply]:
        """One reply per prompt, in input order, with per-token logprobs where the server
        gives them (else ``token_logprobs=None``).

        A ``constraint`` is sent in the dialect of ``guided`` (teacher.openai.guided):

        * ``vllm``: vLLM's ``structured_outputs`` (``{"choice": [...]}``, ``{"json": schema}``,
          ``{"grammar": gbnf}``) to vLLM 0.12 and later, the ``guided_choice`` / ``guided_json``
          / ``guided_grammar`` fields to older vLLM. The version comes from ``GET /version`` at
          the server root, once per base URL and process; a server that reports none is probed
          with a choice no model writes unasked, in each shape, and one that keeps neither gets
          the requests without constraint fields (:meth:`applies` turns False);
        * ``llamacpp``: the llama.cpp server's ``grammar`` / ``json_schema`` (a choice becomes a
          GBNF alternation);
        * ``openai``: ``response_format`` with a JSON schema (choice and grammar constraints are
          not sent);
        * ``none``: nothing is sent.

        If the server refuses a guided request (HTTP 400/404/422), the constraint is dropped for
        the rest of this teacher's life with one warning, and the replies go through the task's
        parser as usual (and :meth:`applies` turns False, so the cache files them under the
        unconstrained key). Replies are not checked against the constraint here: the cache
        wrapper checks every one (:meth:`~llmkd.teachers.base.Constraint.violation`)."""
        guided = constraint if self._guided_ok and _guided_fields(self.guided, constraint) else None
        if guided is not None and self.guided == "vllm":
            self._find_dialects()
            if self.applies(guided) is False:
                guided = None
        bodies = []
        for prompt in prompts:
            chat = wants_chat(prompt, self.chat)  # a ChatTurn goes to /chat/completions in any mode
            path = "/chat/completions" if chat else "/completions"
            body = self._body(prompt, max_tokens=max_tokens, temperature=temperature, seed=seed, chat=chat)
            body["logprobs"] = True if chat else 1
            if stop:
                body["stop"] = list(stop)
            bodies.append((path, body))
        first: list[dict[str, Any]] = []
        if guided is not None and not self._guided_checked:  # one request first: does this server take it?
            try:
                first = self._post_batch(bodies[:1], constraint=guided)
                self._guided_checked = True
            except _Refused as exc:
                if exc.status not in _ECHO_REFUSED:
                    raise
                log.warning("openai teacher: the server refused guided decoding (%s, HTTP %d); generating "
                            "without the constraint from now on (the task's parser decides)",
                            sorted(self._fields_at(0, guided)), exc.status)
                self._guided_ok = False
                guided = None
        answers = first + self._post_batch(bodies[len(first):], constraint=guided if self._guided_ok else None)
        replies = []
        for prompt, (path, _), data in zip(prompts, bodies, answers):
            reply = _reply(data, chat=path == "/chat/completions")
            if reply.prompt_tokens > 0:
                self._note_prompt(prompt, reply.prompt_tokens)
            replies.append(reply)
        return replies

    def _fields_at(self, index: int, constraint: Constraint | None) -> dict[str, Any]:
        """The request fields that carry ``constraint`` to base URL ``index`` ({}: none)."""
        if constraint is None or not self._guided_ok:
            return {}
        if self.guided != "vllm":
            return _guided_fields(self.guided, constraint)
        dialect = self._dialect.get(index)  # found by _find_dialects before any constrained request
        return _vllm_fields(dialect, constraint) if dialect else {}

    def _find_dialects(self) -> None:
        """Find out, for each base URL not yet known in this process, which vLLM constraint
        fields it applies (see :meth:`generate`)."""
        with _SERVERS_LOCK:
            for i, (t, _) in enumerate(self._targets):
                if t in _DIALECT:
                    self._dialect[i] = _DIALECT[t]
            todo = [i for i, (t, _) in enumerate(self._targets) if t not in _DIALECT]
        if not todo:
            return
        if self.identify:
            self.served_identity()
        found = _run_sync(self._dialects(todo))
        with _SERVERS_LOCK:
            for i, dialect in zip(todo, found):
                _DIALECT[self._targets[i][0]] = dialect
                self._dialect[i] = dialect
        if any(found) and not all(found):
            log.warning("openai teacher: some base URLs apply constraints and some do not (%s); replies from the "
                        "others are generated freely and count as unconstrained",
                        ", ".join(f"{_redact(self._urls[i])}: {d or 'none'}" for i, d in zip(todo, found)))

    async def _dialects(self, todo: Sequence[int]) -> list[str | None]:
        httpx, new_client = self._http()
        async with new_client as client:
            return list(await asyncio.gather(*(self._dialect_at(httpx, client, i) for i in todo)))

    async def _dialect_at(self, httpx: Any, client: Any, index: int) -> str | None:
        """"structured_outputs", "guided" or None (applies neither) for base URL ``index``."""
        target, auth = self._targets[index]
        shown = _redact(_root(self._urls[index]))
        version, raw = None, None
        try:
            key = self._api_key()
            response = await client.get(_root(target) + "/version", auth=auth,
                                        headers={"Authorization": f"Bearer {key}"} if key else {})
            if response.status_code == 200:
                raw = _dict(response.json()).get("version")
                version = _version(raw)
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("openai teacher: GET %s/version: %s", shown, exc)
        owner = _dict(self._identity).get("owned_by")
        if version is not None and owner not in (None, "vllm"):  # another server's version (SGLang has one too)
            log.info("openai teacher: %s reports version %s but its model is owned by %r, not vllm; probing it",
                     shown, raw, owner)
            version = None
        if version is not None:
            dialect = "structured_outputs" if version >= VLLM_STRUCTURED_OUTPUTS else "guided"
            log.info("openai teacher: %s reports version %s; constraints go as %s", shown, raw,
                     "structured_outputs" if dialect == "structured_outputs" else "guided_* fields")
            return dialect
        probe = Constraint.choice([_PROBE_CHOICE])
        chat = self.chat
        path = "/chat/completions" if chat else "/completions"
        for dialect in ("structured_outputs", "guided"):
            body = self._body(_PROBE_PROMPT, max_tokens=16, temperature=0.0, seed=0, chat=chat)
            body.update(_vllm_fields(dialect, probe))
            try:
                data = await self._post(httpx, client, path, body, index=index)
            except _Refused as exc:
                log.info("openai teacher: %s refused a %s probe (HTTP %d)", shown, dialect, exc.status)
                continue
            if _reply(data, chat=chat).text.strip() == _PROBE_CHOICE:
                log.info("openai teacher: %s reports no version; a probe shows it applies %s", shown, dialect)
                return dialect
        log.warning("openai teacher: %s applies neither vLLM's structured_outputs nor its guided_* fields (a probe "
                    "choice came back unconstrained): its replies are generated freely and count as unconstrained. "
                    "If it is a llama.cpp server, set teacher.openai.guided: llamacpp; an OpenAI-hosted model takes "
                    "JSON schemas only (guided: openai).", shown)
        return None

    # ---- option scoring ------------------------------------------------------------------

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        """For each prompt, the log-likelihood of each option continuing it (see the class
        docstring for the two ways it is computed)."""
        if not prompts or not options:
            return [[] for _ in prompts]
        if self._score_path is None:
            self._score_path = self._probe_echo(prompts[0], options[0])
        if self._score_path == "echo":
            scores = self._score_echo(prompts, options)
            if scores is not None:
                return scores
            log.warning("openai teacher: the server stopped echoing prompt logprobs; "
                        "scoring options by first-token logprobs from now on")
            self._score_path = "top"
        return self._score_top(prompts, options)

    def _probe_echo(self, prompt: str, option: str) -> Literal["echo", "top"]:
        """Find out with one request whether /completions echoes prompt logprobs."""
        if self.chat:
            return "top"
        for max_tokens in (self._echo_max_tokens,):
            try:
                (data,) = self._post_batch([("/completions", self._echo_body(prompt, option, max_tokens))])
            except _Refused as exc:
                if exc.status not in _ECHO_REFUSED:
                    raise
                log.info("openai teacher: echo scoring with max_tokens=%d refused (HTTP %d)", max_tokens, exc.status)
                continue
            if _echo_score(data, len(prompt), len(prompt) + len(option)) is None:
                break
            self._echo_max_tokens = max_tokens
            self._list_prompts = self._probe_list(prompt, option)
            return "echo"
        log.info("openai teacher: no echo scoring on this server; scoring options by first-token logprobs")
        return "top"

    def _probe_list(self, prompt: str, option: str) -> bool:
        """Whether /completions takes a list of prompts (vLLM, OpenAI) and echoes each with its
        logprobs: then all options of a prompt are scored in one request. One request, not
        retried (llama-cpp-python's server fails a list of two with HTTP 500)."""
        texts = [prompt + option, prompt + " " + option]
        try:
            (data,) = self._post_batch([("/completions", self._echo_body(prompt, [option, " " + option],
                                                                         self._echo_max_tokens))], attempts=1)
        except TeacherError as exc:
            log.info("openai teacher: /completions takes no list of prompts (%s); one request per option", exc)
            return False
        choices = _by_index(data, len(texts))
        if choices is None or any(_echo_score({"choices": [c]}, len(prompt), len(t)) is None
                                  for c, t in zip(choices, texts)):
            log.info("openai teacher: /completions did not answer a list of prompts with one echoed choice "
                     "each; one request per option")
            return False
        log.info("openai teacher: the options of a prompt are scored in one request (a list of prompts)")
        return True

    def _echo_body(self, prompt: str, option: str | list[str], max_tokens: int) -> dict[str, Any]:
        body = self._body(prompt, max_tokens=max_tokens, temperature=0.0, seed=0)
        if isinstance(option, list):
            body["prompt"] = [prompt + o for o in option]
        else:
            body["prompt"] = prompt + option
        body.update(echo=True, logprobs=0)
        return body

    def _score_echo(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]] | None:
        k = len(options)
        if self._list_prompts and k > 1:  # one request per prompt, its options as a list of prompts
            requests = [("/completions", self._echo_body(p, list(options), self._echo_max_tokens)) for p in prompts]
            out = []
            for prompt, data in zip(prompts, self._post_batch(requests)):
                choices = _by_index(data, k)
                if choices is None:
                    return None
                row = [_echo_score({"choices": [c]}, len(prompt), len(prompt) + len(o)) for c, o in zip(choices, options)]
                if any(v is None for v in row):
                    return None
                out.append(row)
            return out  # type: ignore[return-value]
        pairs = [(p, o) for p in prompts for o in options]
        requests = [("/completions", self._echo_body(p, o, self._echo_max_tokens)) for p, o in pairs]
        flat = []
        for (prompt, option), data in zip(pairs, self._post_batch(requests)):
            score = _echo_score(data, len(prompt), len(prompt) + len(option))
            if score is None:
                return None
            flat.append(score)
        return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]

    def _score_top(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        path = "/chat/completions" if self.chat else "/completions"
        requests = []
        for prompt in prompts:
            body = self._body(prompt, max_tokens=1, temperature=0.0, seed=0)
            if self.chat:
                body.update(logprobs=True, top_logprobs=_TOP_LOGPROBS)
            else:
                body["logprobs"] = _TOP_LOGPROBS
            requests.append((path, body))
        replies = self._post_batch(requests)
        candidates = [_first_token_candidates(data, chat=self.chat) for data in replies]
        if missing := [i for i, (c, data) in enumerate(zip(candidates, replies))
                       if not c or not _has_top_logprobs(data, chat=self.chat)]:
            raise self._no_logprobs(replies[missing[0]], len(missing), len(replies), path)
        return [[_match_first_token(c, option) for option in options] for c in candidates]

    def _no_logprobs(self, data: dict[str, Any], n: int, total: int, path: str) -> TeacherError:
        """The error for replies to a scoring request that carry no logprobs. Not retried: a server
        either returns logprobs or it does not, and scores made up without them would be wrong."""
        got = _dict(data["choices"][0]).get("logprobs")
        shown = repr(got) if len(repr(got)) <= 120 else repr(got)[:120] + "..."
        urls = ", ".join(_redact(u) for u in self._urls)
        return TeacherError(
            f"openai teacher: scoring the label set needs token logprobs, but {urls} (model {self.model!r}) "
            f"returned none in {n} of {total} replies to POST {path} with max_tokens=1 and "
            f"{'logprobs=true, top_logprobs=' if self.chat else 'logprobs='}{_TOP_LOGPROBS} "
            f"(choices[0].logprobs was {shown}); {'' if self.chat else 'echo scoring (echo=true) was not available either; '}"
            "no score was made up and nothing was cached. teacher.labeling: score and teacher.confidence: true need "
            "a server that returns logprobs (prompt logprobs with echo on /completions, or top_logprobs): "
            "set teacher.labeling: generate and teacher.confidence: false, or serve the model with a server "
            "that returns logprobs (e.g. vLLM, or the llama.cpp server)."
        )

    # ---- HTTP ----------------------------------------------------------------------------

    def _body(self, prompt: str, *, max_tokens: int, temperature: float, seed: int,
              chat: bool | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": temperature, "seed": seed}
        if self.chat if chat is None else chat:
            body["messages"] = [{"role": "user", "content": str(prompt)}]
        else:
            body["prompt"] = str(prompt)
        return body

    def _ssl_context(self, httpx: Any) -> Any:
        """One TLS context per teacher, made on first use: building it (loading the CA bundle)
        costs about 50 ms, which every request batch paid when each client made its own."""
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None

    def _scrub(self, text: str) -> str:
        """Remove the API key and any password in the base URLs from text that came from elsewhere
        (a server's error message, an exception)."""
        key = self._api_key()
        secrets = [key] if key else []
        for url in self._urls:
            try:
                parts = urlsplit(url)
                secrets += [p for p in (parts.password, unquote(parts.password or "")) if p and len(p) >= 3]
            except ValueError:
                continue
        for secret in secrets:
            text = text.replace(secret, "***")
        for url in self._urls:
            text = text.replace(url, redact_url(url))
        return text

    def _post_batch(self, requests: Sequence[tuple[str, dict[str, Any]]], *, constraint: Constraint | None = None,
                    attempts: int | None = None) -> list[dict[str, Any]]:
        """POST every (path, body), at most ``concurrency`` at once; replies in input order.
        ``constraint`` is added to each body in the dialect of the base URL it goes to;
        ``attempts`` overrides ``max_retries + 1``."""
        if not requests:
            return []
        if self.identify:
            self.served_identity()  # once: which model answers is known before its first answer
        return _run_sync(self._post_all(requests, constraint, attempts))

    async def _post_all(self, requests: Sequence[tuple[str, dict[str, Any]]], constraint: Constraint | None = None,
                        attempts: int | None = None) -> list[dict[str, Any]]:
        httpx, new_client = self._http()
        semaphore = asyncio.Semaphore(self.concurrency)
        async with new_client as client:

            async def one(path: str, body: dict[str, Any]) -> dict[str, Any]:
                async with semaphore:
                    return await self._post(httpx, client, path, body, constraint=constraint, attempts=attempts)

            tasks = [asyncio.ensure_future(one(path, body)) for path, body in requests]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    async def _post(self, httpx: Any, client: Any, path: str, body: dict[str, Any], *, index: int | None = None,
                    constraint: Constraint | None = None, attempts: int | None = None) -> dict[str, Any]:
        """One request with retries; returns the reply JSON (a dict with ``choices``). ``index``
        pins the base URL (else the least busy one is taken for each attempt)."""
        attempts = self.max_retries + 1 if attempts is None else attempts
        tried: list[str] = []
        last = ""
        for attempt in range(attempts):
            at = self._balancer.acquire() if index is None else index
            url, auth = self._targets[at][0] + path, self._targets[at][1]
            tried.append(_redact(self._urls[at] + path))
            retry_after = None
            sent = {**body, **self._fields_at(at, constraint)} if constraint is not None else body
            try:
                key = self._api_key()
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                response = await client.post(url, json=sent, headers=headers, auth=auth)
            except httpx.TimeoutException:
                last = f"no reply within {self.timeout:g}s (timeout)"
            except httpx.TransportError as exc:
                last = f"connection error ({type(exc).__name__}: {exc})"
                forget_server(self._targets[at][0])  # it may come back as another version
            else:
                data, last, retry_after = self._check(response, tried[-1], path)
                if data is not None:
                    self._note_usage(data)
                    return data
            finally:
                if index is None:
                    self._balancer.release(at)
            last = self._scrub(last)
            if attempt + 1 < attempts:
                delay = self._retry_delay(attempt, retry_after)
                log.warning("openai teacher: %s from %s; retry %d of %d in %.2fs",
                            last, tried[-1], attempt + 1, self.max_retries, delay)
                await asyncio.sleep(delay)
        where = tried[-1]
        if len(set(tried)) > 1:
            where += f" (tried {', '.join(sorted(set(tried)))})"
        raise TeacherError(
            f"openai teacher: POST {where} failed after {attempts} attempt{'s' if attempts != 1 else ''}; "
            f"last error: {last}. Check that the server is up and serves model {self.model!r} there, "
            f"or raise teacher.openai.max_retries (now {self.max_retries}) or "
            f"teacher.openai.timeout (now {self.timeout:g}s)."
        )

    def _note_usage(self, data: dict[str, Any]) -> None:
        usage = _dict(data.get("usage"))
        with self._usage_lock:
            self.usage["requests"] += 1
            for name in ("prompt_tokens", "completion_tokens"):
                value = usage.get(name)
                if _is_number(value) and value > 0:
                    self.usage[name] += int(value)

    def _retry_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt + 1``: ``backoff * 2**attempt`` capped at
        ``max_backoff``, minus 0-10% jitter (so the wait never passes the cap and a pool does not
        retry in lockstep); at least the server's Retry-After (itself cut to 60 s)."""
        delay = min(self.max_backoff, self.backoff * 2.0 ** min(attempt, 64))  # 2**64: no float overflow
        delay -= self._rng.uniform(0.0, 0.1 * delay)
        if retry_after is not None:
            delay = max(delay, min(retry_after, _RETRY_AFTER_CAP))
        return delay

    def _check(self, response: Any, url: str, path: str = "") -> tuple[dict[str, Any] | None, str, float | None]:
        """(reply JSON, "", None) for a good reply; (None, what went wrong, Retry-After seconds)
        for a retryable one (a malformed reply included); raises :class:`_Refused` for any other 4xx."""
        status = response.status_code
        if 200 <= status < 300:
            try:
                data = response.json()
            except ValueError:
                return None, f"HTTP {status} with a body that is not JSON: {response.text[:200]!r}", None
            if not _has_choices(data):
                return None, f"HTTP {status} JSON without 'choices': {str(data)[:200]}", None
            if problem := _malformed(data, chat=path.endswith("/chat/completions")):
                return None, f"HTTP {status} with a malformed reply: {problem}", None
            return data, "", None
        message = self._scrub(_server_message(response))
        if status in (400, 413, 422) and _TOO_LONG.search(message):  # this prompt only: it abstains, the rest go on
            raise PromptTooLong(-1, -1, -1, server=f"HTTP {status}: {message}")
        if status == 429 or status >= 500:
            return None, f"HTTP {status}: {message}", _retry_after(response.headers.get("retry-after"))
        if status in (401, 403):
            hint = (f"check the API key in the environment variable {self.api_key_env!r} "
                    "(teacher.openai.api_key_env)")
        elif status == 404:
            hint = "check teacher.openai.base_url (it usually ends in /v1) and teacher.model"
        else:
            hint = f"check teacher.model ({self.model!r}) and the request parameters this server accepts"
        raise _Refused(f"openai teacher: POST {url} was refused with HTTP {status}: {message}. "
                       f"Client errors are not retried; {hint}.", status)


# ---- helpers -------------------------------------------------------------------------------

_GUIDED = ("vllm", "llamacpp", "openai", "none")


def _guided_fields(dialect: str, constraint: Constraint | None) -> dict[str, Any]:
    """The request fields that carry ``constraint`` in a server's dialect ({} = not sent)."""
    import json

    if constraint is None or dialect == "none":
        return {}
    kind = constraint.kind
    if dialect == "vllm":
        if kind == "choice":
            return {"guided_choice": list(constraint.choices)}
        if kind == "json":
            return {"guided_json": json.loads(constraint.schema)}
        return {"guided_grammar": constraint.grammar}
    if dialect == "llamacpp":
        if kind == "choice":
            return {"grammar": "root ::= " + " | ".join(gbnf_literal(c) for c in constraint.choices)}
        if kind == "json":  # the llama.cpp server reads json_schema; llama-cpp-python's ignores it and
            schema = json.loads(constraint.schema)  # reads response_format (on chat completions only)
            return {"json_schema": schema, "response_format": {"type": "json_object", "schema": schema}}
        return {"grammar": constraint.grammar}
    if kind == "json":  # dialect == "openai"
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "reply", "schema": json.loads(constraint.schema)}}}
    return {}


def _vllm_fields(dialect: str, constraint: Constraint) -> dict[str, Any]:
    """vLLM's request fields for ``constraint``: ``structured_outputs`` (vLLM >= 0.12, accepted
    since 0.10.2) or the ``guided_*`` fields (before 0.12)."""
    if dialect != "structured_outputs":
        return _guided_fields("vllm", constraint)
    if constraint.kind == "choice":
        return {"structured_outputs": {"choice": list(constraint.choices)}}
    if constraint.kind == "json":
        return {"structured_outputs": {"json": json.loads(constraint.schema)}}
    return {"structured_outputs": {"grammar": constraint.grammar}}


def _token_count(response: Any) -> int | None:
    """The token count in a tokenizer endpoint's reply (``count``, else the length of
    ``tokens``), None for anything else."""
    if response.status_code != 200:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    count = _dict(data).get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count
    tokens = _dict(data).get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def _by_index(data: dict[str, Any], n: int) -> list[dict[str, Any]] | None:
    """The ``n`` choices of a reply to a list of ``n`` prompts, in prompt order (by ``index``);
    None when the reply does not hold exactly one choice per prompt."""
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != n or not all(isinstance(c, dict) for c in choices):
        return None
    indices = [c.get("index") for c in choices]
    if sorted(i for i in indices if isinstance(i, int)) != list(range(n)):
        return None
    return sorted(choices, key=lambda c: c["index"])


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion from sync code, also when an event loop is already running
    in this thread (a notebook): then it runs on a fresh loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


_redact = redact_url  # the old private name


def _split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """(``url`` without its ``user:password@`` part, (user, password) or None)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


_IDENTITY_FIELDS = ("id", "root", "parent", "owned_by", "max_model_len")  # vLLM, OpenAI, Ollama, llama.cpp
_META_FIELDS = ("vocab_type", "n_vocab", "n_ctx_train", "n_embd", "n_params", "size")  # llama.cpp server
_CREATED_RECENT = 600.0  # seconds: a `created` this close to now is the request time, not the model's


def _model_entry(data: Any, model: str) -> tuple[dict[str, Any] | None, str]:
    """The ``GET /models`` entry of ``model`` (the entry named so; ``model:latest`` for Ollama;
    the only entry of a one-model server such as the llama.cpp server, which answers any name),
    or (None, why not)."""
    entries = _dict(data).get("data")
    if not isinstance(entries, list):
        entries = _dict(data).get("models")
    if not isinstance(entries, list):
        return None, "its GET /models reply has no 'data' list"
    entries = [e for e in entries if isinstance(e, dict)]
    for name in (model, model + ":latest"):
        named = [e for e in entries if e.get("id") == name]
        if len(named) == 1:
            return named[0], ""
    if len(entries) == 1:
        return entries[0], ""
    return None, f"its GET /models lists {len(entries)} models, none with id {model!r}"


def _stable_identity(entry: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The fields of a ``GET /models`` entry that say which model it is and stay the same from one
    request to the next: ``id``, ``root`` and ``parent`` (vLLM: the weights path / the base of a
    LoRA adapter), ``owned_by``, ``max_model_len``, the llama.cpp server's ``meta`` (vocabulary,
    parameter count, file size), and ``created`` unless it lies within 10 minutes of now (vLLM and
    the llama.cpp server put the request time there; OpenAI and Ollama the model's date). Left out:
    ``permission`` (vLLM makes a new id per request) and anything else."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {}
    for name in _IDENTITY_FIELDS:
        value = entry.get(name)
        if isinstance(value, str) or _is_number(value):
            out[name] = value
    meta = _dict(entry.get("meta"))
    kept = {k: meta[k] for k in _META_FIELDS if isinstance(meta.get(k), str) or _is_number(meta.get(k))}
    if kept:
        out["meta"] = kept
    created = entry.get("created")
    if _is_number(created) and abs(float(created) - now) > _CREATED_RECENT:
        out["created"] = int(created)
    return out


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _has_choices(data: Any) -> bool:
    choices = _dict(data).get("choices")
    return isinstance(choices, list) and bool(choices) and isinstance(choices[0], dict)


def _malformed(data: dict[str, Any], *, chat: bool) -> str:
    """What makes a reply with ``choices`` unusable ("" if nothing): the reply text must be a string
    (or absent / null: an empty reply). Anything else is not turned into text and cached."""
    choice = data["choices"][0]
    if chat:
        message = choice.get("message")
        if message is None:
            return ""
        if not isinstance(message, dict):
            return f"choices[0].message is not an object (got {_kind(message)})"
        content, where = message.get("content"), "choices[0].message.content"
    else:
        content, where = choice.get("text"), "choices[0].text"
    if content is None or isinstance(content, str):
        return ""
    return f"{where} is not a string (got {_kind(content)})"


def _kind(value: Any) -> str:
    shown = repr(value)
    return f"{type(value).__name__} {shown[:80] + '...' if len(shown) > 80 else shown}"


def _server_message(response: Any) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    error = _dict(data).get("error")
    for msg in (_dict(error).get("message"), error, _dict(data).get("message"), _dict(data).get("detail")):
        if isinstance(msg, str) and msg:
            return msg[:300]
    return str(data)[:300]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _reply(data: dict[str, Any], *, chat: bool) -> Reply:
    choice = data["choices"][0]
    usage = _dict(data.get("usage"))
    logprobs = _dict(choice.get("logprobs"))
    if chat:
        text = _dict(choice.get("message")).get("content") or ""
        entries = [e for e in logprobs.get("content") or [] if isinstance(e, dict)]
        tokens = [str(e.get("token", "")) for e in entries]
        values = [e.get("logprob") for e in entries]
    else:
        text = choice.get("text") or ""
        tokens = [str(t) for t in logprobs.get("tokens") or []]
        values = list(logprobs.get("token_logprobs") or [])
    ok = bool(tokens) and len(values) == len(tokens) and all(_is_number(v) for v in values)
    return Reply(
        text=str(text),
        tokens=tuple(tokens),
        token_logprobs=tuple(float(v) for v in values) if ok else None,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        finish_reason=str(choice.get("finish_reason") or "stop"),
    )


def _echo_score(data: dict[str, Any], prompt_len: int, full_len: int) -> float | None:
    """Sum of the echoed logprobs of the tokens overlapping text[prompt_len:full_len]; None when
    the reply does not echo the prompt with logprobs and offsets. A missing logprob (the first
    token of the text has none) counts as 0."""
    choice = data["choices"][0]
    logprobs = _dict(choice.get("logprobs"))
    offsets = logprobs.get("text_offset")
    values = logprobs.get("token_logprobs")
    text = choice.get("text")
    if (not isinstance(offsets, list) or not isinstance(values, list) or not offsets
            or len(offsets) != len(values) or not isinstance(text, str) or len(text) < full_len):
        return None
    if full_len == prompt_len:
        return 0.0
    total = 0.0
    for k, (start, value) in enumerate(zip(offsets, values)):
        end = offsets[k + 1] if k + 1 < len(offsets) else math.inf
        if start < full_len and end > prompt_len and _is_number(value):
            total += float(value)
    return total


def _first_token_candidates(data: dict[str, Any], *, chat: bool) -> dict[str, float]:
    """The first reply token and its top alternatives: raw token -> logprob."""
    choice = data["choices"][0]
    logprobs = _dict(choice.get("logprobs"))
    out: dict[str, float] = {}
    if chat:
        content = logprobs.get("content") or []
        first = _dict(content[0]) if content else {}
        for entry in [first, *(first.get("top_logprobs") or [])]:
            entry = _dict(entry)
            if isinstance(entry.get("token"), str) and _is_number(entry.get("logprob")):
                out.setdefault(entry["token"], float(entry["logprob"]))
    else:
        tokens = logprobs.get("tokens") or []
        values = logprobs.get("token_logprobs") or []
        top = logprobs.get("top_logprobs") or []
        if tokens and values and isinstance(tokens[0], str) and _is_number(values[0]):
            out[tokens[0]] = float(values[0])
        for token, value in _dict(top[0] if top else None).items():
            if _is_number(value):
                out.setdefault(token, float(value))
    return out


def _has_top_logprobs(data: dict[str, Any], *, chat: bool) -> bool:
    """Whether the reply lists alternatives for its first token (``top_logprobs``): without them
    only the generated token would score, and every other option would get -inf."""
    logprobs = _dict(data["choices"][0].get("logprobs"))
    if chat:
        content = logprobs.get("content")
        first = _dict(content[0]) if isinstance(content, list) and content else {}
        top = first.get("top_logprobs")
        return isinstance(top, list) and bool(top)
    top = logprobs.get("top_logprobs")
    return isinstance(top, list) and bool(top) and isinstance(top[0], dict) and bool(top[0])


def _match_first_token(candidates: dict[str, float], option: str) -> float:
    """Logprob of the longest candidate that is a prefix of the option (leading whitespace and
    case ignored; candidates equal after that are summed in probability), else -inf."""
    target = option.lstrip(_TOKEN_MARKS).lower()
    best_len, picked = 0, []
    for token, value in candidates.items():
        norm = token.lstrip(_TOKEN_MARKS).lower()
        if not norm or not target.startswith(norm) or len(norm) < best_len:
            continue
        if len(norm) > best_len:
            best_len, picked = len(norm), []
        picked.append(value)
    if not picked:
        return -math.inf
    m = max(picked)
    return m + math.log(sum(math.exp(v - m) for v in picked))
