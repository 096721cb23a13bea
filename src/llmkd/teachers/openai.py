"""Teacher backend for any OpenAI-compatible HTTP server: vLLM, the llama.cpp server, OpenAI.

Requests run concurrently (asyncio + httpx, at most ``concurrency`` in flight) and are spread
over one or more base URLs, each request going to the URL with the fewest requests in flight
(ties go round-robin). Transient failures are retried with exponential backoff: HTTP 429 and 5xx,
timeouts, connection errors, and replies that are not JSON or carry no ``choices``. Any other 4xx
fails at once with the server's message.

Not handled: streaming, ``n > 1``, tool calls, images, several prompts in one request, and exact
token counts (:meth:`OpenAITeacher.count_tokens` is an estimate). The ``concurrency`` bound holds
per call: calls made from several threads at once each get their own bound. ``timeout`` applies to
each network step (connect, read, write) as httpx counts them, not to a request as a whole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import logging
import math
import os
import random
import threading
import time
from typing import Any, Coroutine, Literal, Sequence, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, TeacherError, require
from ..types import Reply
from .base import Constraint, gbnf_literal, make_fingerprint, wants_chat

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_RETRY_AFTER_CAP = 60.0  # seconds: a longer Retry-After header is cut to this
_TOP_LOGPROBS = 20  # alternatives asked for by the score_options fallback
_ECHO_REFUSED = (400, 404, 422)  # statuses that mean "this server does not do echo scoring"
_TOKEN_MARKS = " \t\r\n\u2581\u0120"  # whitespace plus the SentencePiece / GPT-2 space marks


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
      (``echo: true, max_tokens: 0``, or 1 where 0 is refused): the sum of the logprobs of the
      echoed tokens that overlap the option, located by ``text_offset`` (character offsets). A
      token straddling the prompt/option boundary counts toward the option.
    * approximate otherwise, and always with ``chat=True`` (the server applies the chat template,
      so the templated prompt text that echo scoring needs is not known here): one request per
      prompt with ``max_tokens: 1`` and the top 20 logprobs of the first reply token. An option
      scores the logprob of the longest of those tokens that is a prefix of the option (leading
      whitespace and case ignored; tokens equal after that are summed in probability), else
      ``-inf``. Options sharing a first token get the same score, and only the first token of
      each option counts.

    Which path works is found out once per instance (one probe request) and remembered.

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
        self.chat = chat
        self.seed = seed
        self._urls = [u.strip().rstrip("/") for u in urls]
        self._balancer = _Balancer(len(self._urls))
        self._rng = random.Random(seed)
        self._score_path: Literal["echo", "top"] | None = None  # found out on first use
        self._echo_max_tokens = 0

    def __repr__(self) -> str:
        urls = [_redact(u) for u in self._urls]
        shown = urls[0] if isinstance(self.base_url, str) else urls
        return f"OpenAITeacher(model={self.model!r}, base_url={shown!r}, chat={self.chat})"

    @property
    def fingerprint(self) -> str:
        """Backend, model, chat mode and the guided-decoding dialect (it decides whether a
        constrained request is honoured). The base URLs are left out on purpose, so that a pool of
        identical servers (or the same server moved to another port) shares the cache."""
        return make_fingerprint(backend="openai", model=self.model, chat=self.chat, guided=self.guided)

    def count_tokens(self, text: str) -> int:
        """A rough estimate, ``max(1, len(text) // 4)``: the server's tokenizer is in general not
        reachable, and the OpenAI protocol has no tokenize endpoint."""
        return max(1, len(text) // 4)

    # ---- generation ----------------------------------------------------------------------

    def applies(self, constraint: Constraint) -> bool | None:
        """False when the dialect cannot carry ``constraint`` or the server refused guided
        decoding; None until the first guided request has been answered; else True."""
        if not _guided_fields(self.guided, constraint) or not self._guided_ok:
            return False
        return True if self._guided_checked else None

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0, constraint: Constraint | None = None) -> list[Reply]:
        """One reply per prompt, in input order, with per-token logprobs where the server
        gives them (else ``token_logprobs=None``).

        A ``constraint`` is sent in the dialect of ``guided`` (teacher.openai.guided): ``vllm``
        (``guided_choice`` / ``guided_json`` / ``guided_grammar``), ``llamacpp`` (the llama.cpp
        server's ``grammar`` / ``json_schema``; a choice becomes a GBNF alternation), ``openai``
        (``response_format`` with a JSON schema; choice and grammar constraints are not sent) or
        ``none``. If the server refuses a guided request (HTTP 400/404/422), the constraint is
        dropped for the rest of this teacher's life with one warning, and the replies go through
        the task's parser as usual (and :meth:`applies` turns False, so the cache files them
        under the unconstrained key)."""
        guided = _guided_fields(self.guided, constraint) if self._guided_ok else {}
        bodies = []
        for prompt in prompts:
            chat = wants_chat(prompt, self.chat)  # a ChatTurn goes to /chat/completions in any mode
            path = "/chat/completions" if chat else "/completions"
            body = self._body(prompt, max_tokens=max_tokens, temperature=temperature, seed=seed, chat=chat)
            body["logprobs"] = True if chat else 1
            if stop:
                body["stop"] = list(stop)
            body.update(guided)
            bodies.append((path, body))
        first: list[dict[str, Any]] = []
        if guided and not self._guided_checked:  # one request first: does this server take it?
            try:
                first = self._post_batch(bodies[:1])
                self._guided_checked = True
            except _Refused as exc:
                if exc.status not in _ECHO_REFUSED:
                    raise
                log.warning("openai teacher: the server refused guided decoding (%s, HTTP %d); generating "
                            "without the constraint from now on (the task's parser decides)", sorted(guided), exc.status)
                self._guided_ok = False
                for _, body in bodies:
                    for k in guided:
                        body.pop(k, None)
        return [_reply(data, chat=path == "/chat/completions")
                for (path, _), data in zip(bodies, first + self._post_batch(bodies[len(first):]))]

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
        for max_tokens in (0, 1):
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
            return "echo"
        log.info("openai teacher: no echo scoring on this server; scoring options by first-token logprobs")
        return "top"

    def _echo_body(self, prompt: str, option: str, max_tokens: int) -> dict[str, Any]:
        body = self._body(prompt + option, max_tokens=max_tokens, temperature=0.0, seed=0)
        body.update(echo=True, logprobs=0)
        return body

    def _score_echo(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]] | None:
        pairs = [(p, o) for p in prompts for o in options]
        requests = [("/completions", self._echo_body(p, o, self._echo_max_tokens)) for p, o in pairs]
        flat = []
        for (prompt, option), data in zip(pairs, self._post_batch(requests)):
            score = _echo_score(data, len(prompt), len(prompt) + len(option))
            if score is None:
                return None
            flat.append(score)
        k = len(options)
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
        candidates = [_first_token_candidates(data, chat=self.chat) for data in self._post_batch(requests)]
        if missing := sum(not c for c in candidates):
            log.warning("openai teacher: no top logprobs in %d of %d replies; their options all score -inf",
                        missing, len(candidates))
        return [[_match_first_token(c, option) for option in options] for c in candidates]

    # ---- HTTP ----------------------------------------------------------------------------

    def _body(self, prompt: str, *, max_tokens: int, temperature: float, seed: int,
              chat: bool | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": temperature, "seed": seed}
        if self.chat if chat is None else chat:
            body["messages"] = [{"role": "user", "content": str(prompt)}]
        else:
            body["prompt"] = str(prompt)
        return body

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None

    def _scrub(self, text: str) -> str:
        """Remove the API key from text that came from elsewhere (a server's error message)."""
        key = self._api_key()
        return text.replace(key, "***") if key else text

    def _post_batch(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """POST every (path, body), at most ``concurrency`` at once; replies in input order."""
        if not requests:
            return []
        return _run_sync(self._post_all(requests))

    async def _post_all(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        httpx = require("httpx", "openai", "the openai teacher backend")
        semaphore = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout) as client:

            async def one(path: str, body: dict[str, Any]) -> dict[str, Any]:
                async with semaphore:
                    return await self._post(httpx, client, path, body)

            tasks = [asyncio.ensure_future(one(path, body)) for path, body in requests]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    async def _post(self, httpx: Any, client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request with retries; returns the reply JSON (a dict with ``choices``)."""
        attempts = self.max_retries + 1
        tried: list[str] = []
        last = ""
        for attempt in range(attempts):
            index = self._balancer.acquire()
            url = self._urls[index] + path
            tried.append(_redact(url))
            retry_after = None
            try:
                key = self._api_key()
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                response = await client.post(url, json=body, headers=headers)
            except httpx.TimeoutException:
                last = f"no reply within {self.timeout:g}s (timeout)"
            except httpx.TransportError as exc:
                last = f"connection error ({type(exc).__name__}: {exc})"
            else:
                data, last, retry_after = self._check(response, tried[-1])
                if data is not None:
                    return data
            finally:
                self._balancer.release(index)
            last = self._scrub(last)
            if attempt + 1 < attempts:
                delay = self.backoff * 2**attempt
                delay += self._rng.uniform(0.0, 0.1 * delay)  # jitter, so a pool does not retry in lockstep
                if retry_after is not None:
                    delay = max(delay, min(retry_after, _RETRY_AFTER_CAP))
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

    def _check(self, response: Any, url: str) -> tuple[dict[str, Any] | None, str, float | None]:
        """(reply JSON, "", None) for a good reply; (None, what went wrong, Retry-After seconds)
        for a retryable one; raises :class:`_Refused` for any other 4xx."""
        status = response.status_code
        if 200 <= status < 300:
            try:
                data = response.json()
            except ValueError:
                return None, f"HTTP {status} with a body that is not JSON: {response.text[:200]!r}", None
            if not _has_choices(data):
                return None, f"HTTP {status} JSON without 'choices': {str(data)[:200]}", None
            return data, "", None
        message = self._scrub(_server_message(response))
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
        if kind == "json":
            return {"json_schema": json.loads(constraint.schema)}
        return {"grammar": constraint.grammar}
    if kind == "json":  # dialect == "openai"
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "reply", "schema": json.loads(constraint.schema)}}}
    return {}


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion from sync code, also when an event loop is already running
    in this thread (a notebook): then it runs on a fresh loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _redact(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _has_choices(data: Any) -> bool:
    choices = _dict(data).get("choices")
    return isinstance(choices, list) and bool(choices) and isinstance(choices[0], dict)


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
