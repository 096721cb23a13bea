"""A loopback OpenAI-protocol server for tests: deterministic replies and scripted faults.

    with FakeOpenAIServer(script=lambda prompt: "positive", faults=["429"]) as server:
        teacher = OpenAITeacher(model="fake", base_url=server.base_url, ...)

Tokens are the whitespace-delimited words with their leading whitespace (``"a  b"`` ->
``"a"``, ``"  b"``); a token's logprob is ``-0.1 * len(token.strip())``, unless the token is a
key of ``top_logprobs`` (then that value). A reply is ``script(prompt)`` cut at the first stop
string and at ``max_tokens`` tokens.

Faults are consumed one per request, in order, whatever the endpoint: ``"429"``, ``"500"``,
``"400"``, ``"timeout"`` (sleep ``hang`` seconds, then answer normally), ``"garbage"`` (200 with a
body that is not JSON) and ``"no_choices"`` (200 JSON without ``choices``).

``GET /v1/models`` lists ``models`` (default: one entry like vLLM's, ``owned_by: vllm``, id
``fake-model``, ``root`` = ``served``, ``created`` = the request time); ``models_status`` other than
200 answers that status instead. GETs are recorded in ``gets``, not ``requests``, and use up no
fault. Replies carry ``"model": reply_model`` (default: the requested name).

It behaves like vLLM 0.12 or later by default (``vllm_version="0.12.0"``): ``GET /version``
answers ``{"version": vllm_version}`` (404 when ``vllm_version`` is None); ``structured_outputs``
(``{"choice": [...]}`` or ``{"json": schema}``) is applied and unknown fields, the removed
``guided_*`` ones included, are ignored. A ``vllm_version`` below 0.12 makes it old vLLM: it
applies ``guided_choice`` / ``guided_json`` and ignores ``structured_outputs``. ``applies``
overrides what is applied (``"structured_outputs"``, ``"guided"`` or ``"none"``, e.g. a server
that reports no version). Applying a choice: the scripted reply where it is one of the choices
(surrounding whitespace ignored), else the first choice; a JSON schema: the scripted reply where
it parses as JSON, else ``{}``. Grammars are accepted but not applied (the scripted reply is
returned). ``applied`` lists what was applied, one entry per reply (None: nothing).

``POST /tokenize`` (at the server root, like vLLM) answers ``{"count", "max_model_len",
"tokens"}`` with the fake tokenizer (the last message's content for ``messages``); 404 with
``tokenize=False``. Those requests go to ``tokenize_requests``, not ``requests``, and use up no
fault. ``/completions`` takes a list of prompts (one choice per prompt, with ``index``), as vLLM
does; ``list_prompts=False`` refuses it with HTTP 400.

``slots=1`` makes it a one-slot server, like a llama.cpp server started with one slot: it
accepts requests concurrently but handles one at a time (each takes ``delay`` seconds under a
lock); ``max_busy`` is the most requests it handled at once, ``max_in_flight`` the most it held
(waiting or handled).

Listens on 127.0.0.1 only, on an ephemeral port; stops when the ``with`` block ends, which also
cuts every sleep short. Not handled: streaming, ``n > 1``.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Iterator

FAULTS = ("429", "500", "400", "timeout", "garbage", "no_choices")
_TOKEN = re.compile(r"\s*\S+")


def tokenize(text: str) -> list[tuple[str, int]]:
    """(token, character offset) pairs, the fake server's tokenizer."""
    return [(m.group(), m.start()) for m in _TOKEN.finditer(text)]


def token_logprob(token: str) -> float:
    """The fake server's logprob of a token (when ``top_logprobs`` does not set it)."""
    return -0.1 * len(token.strip())


class FakeOpenAIServer:
    """OpenAI-protocol test server on 127.0.0.1; use as a context manager.

    ``requests`` holds every request received: ``{"path", "body", "headers"}`` (header names
    lower-cased; ``body`` is None when it was not JSON). ``max_in_flight`` is the most requests
    held at once (waiting for a slot or handled), ``max_busy`` the most handled at once (at most
    ``slots`` when that is set).
    """

    def __init__(
        self,
        script: Callable[[str], str] | None = None,
        delay: float = 0.0,
        *,
        faults: Iterable[str] = (),
        supports_echo: bool = True,
        zero_max_tokens: bool = True,
        top_logprobs: dict[str, float] | None = None,
        retry_after: str | None = None,
        hang: float = 2.0,
        slots: int | None = None,
        served: str = "fake-weights-v1",
        models: list[dict[str, Any]] | None = None,
        models_status: int = 200,
        reply_model: str | None = None,
        vllm_version: str | None = "0.12.0",
        applies: str = "auto",
        tokenize: bool = True,
        list_prompts: bool = True,
    ) -> None:
        self.script = script or (lambda prompt: "positive")
        self.delay = delay
        self.supports_echo = supports_echo
        self.zero_max_tokens = zero_max_tokens
        self.top_logprobs = dict(top_logprobs or {})
        self.retry_after = retry_after
        self.hang = hang
        self.served = served
        self.models = models
        self.models_status = models_status
        self.reply_model = reply_model
        self.vllm_version = vllm_version
        if applies == "auto":
            major_minor = tuple(int(x) for x in re.findall(r"\d+", vllm_version or "")[:2])
            applies = "none" if not major_minor else "structured_outputs" if major_minor >= (0, 12) else "guided"
        if applies not in ("structured_outputs", "guided", "none"):
            raise ValueError(f"applies must be auto, structured_outputs, guided or none; got {applies!r}")
        self.applies = applies
        self.tokenize = tokenize
        self.list_prompts = list_prompts
        self.applied: list[str | None] = []
        self.tokenize_requests: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.gets: list[str] = []
        self.max_in_flight = 0
        self.max_busy = 0
        self.slots = slots
        self._slot = threading.BoundedSemaphore(slots) if slots is not None else None
        self._busy = 0
        self._faults: deque[str] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add_faults(*faults)

    # ---- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAIServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:  # the port may serve another fake next: llmkd must ask it afresh
            from llmkd.teachers.openai import forget_server

            forget_server(self.base_url)
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer: enter the context (with ...) before using base_url")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def add_faults(self, *faults: str) -> None:
        """Queue faults; each is used up by one request."""
        for fault in faults:
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; allowed: {', '.join(FAULTS)}")
        with self._lock:
            self._faults.extend(faults)

    # ---- called by the handler threads ---------------------------------------------------

    def _record(self, path: str, body: Any, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append({"path": path, "body": body, "headers": headers})

    @contextmanager
    def _counting(self, current: str, peak: str) -> Iterator[None]:
        """Count one request in attribute ``current`` while inside, and keep its maximum in ``peak``."""
        with self._lock:
            setattr(self, current, getattr(self, current) + 1)
            setattr(self, peak, max(getattr(self, peak), getattr(self, current)))
        try:
            yield
        finally:
            with self._lock:
                setattr(self, current, getattr(self, current) - 1)

    def _tracked(self):  # -> context manager: one request received and not yet answered
        return self._counting("_in_flight", "max_in_flight")

    @contextmanager
    def _handling(self) -> Iterator[None]:
        """One request being handled: waits for a free slot when ``slots`` is set."""
        if self._slot is not None:
            self._slot.acquire()
        try:
            with self._counting("_busy", "max_busy"):
                yield
        finally:
            if self._slot is not None:
                self._slot.release()

    def _next_fault(self) -> str | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    def handle(self, path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        """(status, body bytes, extra headers) for one request."""
        self._sleep(self.delay)
        fault = self._next_fault()
        if fault == "timeout":
            self._sleep(self.hang)
        elif fault == "429":
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return _error(429, "rate limited (scripted fault)", headers)
        elif fault == "500":
            return _error(500, "internal error (scripted fault)")
        elif fault == "400":
            return _error(400, "bad request (scripted fault)")
        elif fault == "garbage":
            return 200, b"<html>this is not json", {}
        elif fault == "no_choices":
            return _json(200, {"id": "x", "object": "text_completion"})
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        route = path.split("?", 1)[0]
        route = route[3:] if route.startswith("/v1") else route
        if route == "/chat/completions":
            return self._chat(body)
        if route == "/completions":
            return self._completions(body)
        return _error(404, f"no route {path}")

    def handle_tokenize(self, body: Any) -> tuple[int, bytes, dict[str, str]]:
        """``POST /tokenize``, like vLLM's: the prompt, or the last message's content."""
        with self._lock:
            self.tokenize_requests.append(body)
        if not self.tokenize:
            return _error(404, "Not Found")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        messages = body.get("messages")
        text = str(messages[-1].get("content", "")) if isinstance(messages, list) and messages else body.get("prompt")
        if not isinstance(text, str):
            return _error(400, "prompt or messages is required")
        tokens = [len(t) for t, _ in tokenize(text)]  # ids: anything; the count is what matters
        return _json(200, {"count": len(tokens), "max_model_len": 4096, "tokens": tokens})

    def handle_get(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        """(status, body bytes, extra headers) for a GET: ``/v1/models`` and ``/version``."""
        with self._lock:
            self.gets.append(path)
        route = path.split("?", 1)[0]
        if route == "/version":
            if self.vllm_version is None:
                return _error(404, "Not Found")
            return _json(200, {"version": self.vllm_version})
        if route not in ("/v1/models", "/models"):
            return _error(404, f"no route {path}")
        if self.models_status != 200:
            return _error(self.models_status, "models listing unavailable (scripted)")
        import time

        models = self.models if self.models is not None else [
            {"id": "fake-model", "object": "model", "created": int(time.time()), "owned_by": "vllm", "root": self.served}
        ]
        return _json(200, {"object": "list", "data": models})

    # ---- replies -------------------------------------------------------------------------

    def _logprob(self, token: str) -> float:
        return self.top_logprobs.get(token, token_logprob(token))

    def _alternatives(self, token: str, n: int) -> list[tuple[str, float]]:
        """The top-n (token, logprob) for a generated position: the token itself, plus the
        ``top_logprobs`` entries for the first position."""
        pool = {token: self._logprob(token), **self.top_logprobs}
        return sorted(pool.items(), key=lambda kv: -kv[1])[:n]

    def _constrained(self, text: str, body: dict[str, Any]) -> str:
        """``text`` kept inside the constraint of ``body`` that this server applies."""
        if self.applies == "structured_outputs":
            spec = body.get("structured_outputs")
            spec = spec if isinstance(spec, dict) else {}
            choice, schema = spec.get("choice"), spec.get("json")
        elif self.applies == "guided":
            choice, schema = body.get("guided_choice"), body.get("guided_json")
        else:
            choice = schema = None
        if isinstance(choice, list) and choice:
            with self._lock:
                self.applied.append("choice")
            return next((c for c in choice if c.strip() == text.strip()), choice[0])
        if schema is not None:
            with self._lock:
                self.applied.append("json")
            try:
                json.loads(text)
                return text
            except ValueError:
                return "{}"
        with self._lock:
            self.applied.append(None)
        return text

    def _reply_tokens(self, prompt: str, body: dict[str, Any]) -> tuple[list[str], str]:
        text = self._constrained(str(self.script(prompt)), body)
        for stop in body.get("stop") or []:
            if stop and stop in text:
                text = text[: text.index(stop)]
        tokens = [t for t, _ in tokenize(text)]
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and len(tokens) > max_tokens:
            return tokens[:max_tokens], "length"
        return tokens, "stop"

    def _chat(self, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
            return _error(400, "messages must be a non-empty list")
        prompt = str(messages[-1].get("content", ""))
        tokens, finish = self._reply_tokens(prompt, body)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(tokens)},
            "finish_reason": finish,
            "logprobs": None,
        }
        if body.get("logprobs"):
            n_top = int(body.get("top_logprobs") or 0)
            choice["logprobs"] = {"content": [
                {
                    "token": t,
                    "logprob": self._logprob(t),
                    "bytes": list(t.encode()),
                    "top_logprobs": [
                        {"token": a, "logprob": lp, "bytes": list(a.encode())}
                        for a, lp in (self._alternatives(t, n_top) if k == 0 else [(t, self._logprob(t))][:n_top])
                    ],
                }
                for k, t in enumerate(tokens)
            ]}
        usage = {"prompt_tokens": len(tokenize(prompt)), "completion_tokens": len(tokens)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return _json(200, {"id": "chatcmpl-fake", "object": "chat.completion", "model": self.reply_model or body.get("model"),
                           "choices": [choice], "usage": usage})

    def _completions(self, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        prompts = body.get("prompt")
        if isinstance(prompts, list) and prompts and all(isinstance(p, str) for p in prompts):
            if not self.list_prompts:
                return _error(400, "prompt must be a string")
            answers = [self._completion(p, body, index=k) for k, p in enumerate(prompts)]
            if any(status != 200 for status, _ in answers):
                return next((status, out, {"Content-Type": "application/json"}) for status, out in answers if status != 200)
            usage = {name: sum(out["usage"][name] for _, out in answers)
                     for name in ("prompt_tokens", "completion_tokens", "total_tokens")}
            return _json(200, {**answers[0][1], "choices": [out["choices"][0] for _, out in answers], "usage": usage})
        if not isinstance(prompts, str):
            return _error(400, "prompt must be a string")
        status, out = self._completion(prompts, body)
        return (status, out, {"Content-Type": "application/json"}) if status != 200 else _json(200, out)

    def _completion(self, prompt: str, body: dict[str, Any], index: int = 0) -> tuple[int, Any]:
        """(200, reply JSON) or (error status, error body bytes) for one prompt."""
        echo = bool(body.get("echo"))
        if echo and not self.supports_echo:
            return _error(400, "echo is not supported by this server")[:2]
        if body.get("max_tokens") == 0 and not self.zero_max_tokens:
            return _error(400, "max_tokens must be at least 1")[:2]
        generated, finish = self._reply_tokens(prompt, body)
        gen_text = "".join(generated)
        prompt_tokens = tokenize(prompt)
        choice: dict[str, Any] = {"index": index, "text": prompt + gen_text if echo else gen_text,
                                  "finish_reason": finish, "logprobs": None}
        n_top = body.get("logprobs")
        if n_top is not None and n_top is not False:
            n_top = int(n_top)
            tokens: list[str] = []
            values: list[float | None] = []
            offsets: list[int] = []
            tops: list[dict[str, float] | None] = []
            if echo:
                for k, (t, offset) in enumerate(prompt_tokens):
                    tokens.append(t)
                    values.append(None if k == 0 else self._logprob(t))
                    offsets.append(offset)
                    tops.append(None if k == 0 else dict([(t, self._logprob(t))][:n_top]))
            offset = len(prompt)
            for k, t in enumerate(generated):
                tokens.append(t)
                values.append(self._logprob(t))
                offsets.append(offset)
                offset += len(t)
                tops.append(dict(self._alternatives(t, n_top) if k == 0 else [(t, self._logprob(t))][:n_top]))
            choice["logprobs"] = {"tokens": tokens, "token_logprobs": values,
                                  "top_logprobs": tops, "text_offset": offsets}
        usage = {"prompt_tokens": len(prompt_tokens), "completion_tokens": len(generated)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return 200, {"id": "cmpl-fake", "object": "text_completion", "model": self.reply_model or body.get("model"),
                     "choices": [choice], "usage": usage}


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    return _json(status, {"error": {"message": message, "type": "fake_error", "code": status}}, headers)


class _Handler(BaseHTTPRequestHandler):
    timeout = 5.0  # a stuck connection is dropped after this many seconds

    def do_POST(self) -> None:  # noqa: N802 - the http.server naming
        fake: FakeOpenAIServer = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if self.path.split("?", 1)[0] in ("/tokenize", "/extras/tokenize/count"):
            self._answer(*fake.handle_tokenize(body) if self.path.startswith("/tokenize") else _error(404, "Not Found"))
            return
        fake._record(self.path, body, {k.lower(): v for k, v in self.headers.items()})
        with fake._tracked(), fake._handling():
            status, payload, headers = fake.handle(self.path, body)
        self._answer(status, payload, headers)

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        fake: FakeOpenAIServer = self.server.fake  # type: ignore[attr-defined]
        status, payload, headers = fake.handle_get(self.path)
        self._answer(status, payload, headers)

    def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            headers.setdefault("Content-Type", "text/plain")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (e.g. a "timeout" fault): nothing to answer
            pass

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass
