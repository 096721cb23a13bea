"""Fake teachers and students shared by the unit tests (no model is loaded).

- :class:`ScriptedTeacher` answers every prompt by the item text inside it: a table or a function
  of that text gives the reply, another table the option scores; it records every call.
- :class:`JsonStudent` is the base of the fake students: ``save`` writes :meth:`state` as JSON,
  ``load`` rebuilds the student from it (``cls(**state)``), as a real checkpoint would.
- :class:`MemoStudent` remembers the label of every text it trained on and predicts it back;
  other texts get :meth:`MemoStudent.fallback`.
- :func:`ngram_embedder` is ``RunContext.embedder`` without a model: only the ``ngram`` embedder.

Fakes with behaviour of their own (a cache test's echoing teacher, EvoKD's prompt-kind script, a
student that learns late) stay in their test files, on these bases where they fit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from llmkd.types import Example, Prediction, Reply


def write_file(path: Path, content: str | bytes) -> Path:
    """Write ``content`` (UTF-8 text, or bytes as they are) to ``path``; returns ``path``."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def classify_text(prompt: str) -> str:
    """The item's text in a rendered classify prompt (its last 'Text:' line; classify.v2's
    ``<text>...</text>`` delimiters taken off)."""
    text = prompt.rsplit("Text: ", 1)[1].split("\nLabel:")[0]
    return text[len("<text>"):-len("</text>")] if text.startswith("<text>") and text.endswith("</text>") else text


def ner_text(prompt: str) -> str:
    """The item's sentence in a rendered ner.v1 prompt (its last 'Sentence:')."""
    return prompt.rsplit("Sentence: ", 1)[1].split("\nEntities:")[0]


def ngram_embedder(name: str) -> Callable[..., Any]:
    """``RunContext.embedder`` for unit tests (in place of ``llmkd.build.build_embedder``): the
    model-free hashed n-gram embedder; any other name is an error, so no test loads an encoder."""
    from llmkd.synthesis import ngram_embed

    if name != "ngram":
        raise AssertionError(f"unit tests use embedder='ngram', not {name!r} (it would load a model)")
    return ngram_embed


class ScriptedTeacher:
    """Replies and option scores looked up by the item text inside each prompt (``text_of``).

    ``replies`` maps a text to its reply (a ``str`` or a whole :class:`Reply`), or is a function
    of the text; ``logprobs`` maps a text to the token logprobs of a ``str`` reply; ``scores`` maps
    a text to the scores of the options. Records the prompts of every call (``generate_calls``,
    ``score_calls``) and the stop sequences asked for (``stops``)."""

    name = "scripted"

    def __init__(self, replies: Mapping[str, str | Reply] | Callable[[str], str | Reply], *,
                 scores: Mapping[str, list[float]] | None = None,
                 logprobs: Mapping[str, tuple[float, ...]] | None = None, batch_size: int = 1,
                 fingerprint: str = "scripted-0", text_of: Callable[[str], str] = classify_text) -> None:
        self.replies = replies
        self.scores = scores if scores is not None else {}
        self.logprobs = logprobs or {}
        self.batch_size = batch_size
        self.fingerprint = fingerprint
        self.text_of = text_of
        self.generate_calls: list[list[str]] = []
        self.score_calls: list[tuple[list[str], list[str]]] = []
        self.stops: list[tuple[str, ...]] = []

    def reply(self, text: str) -> Reply:
        r = self.replies(text) if callable(self.replies) else self.replies[text]
        return r if isinstance(r, Reply) else Reply(r, token_logprobs=self.logprobs.get(text))

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0) -> list[Reply]:
        self.generate_calls.append(list(prompts))
        self.stops.append(tuple(stop))
        return [self.reply(self.text_of(p)) for p in prompts]

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        self.score_calls.append((list(prompts), list(options)))
        return [self.scores[self.text_of(p)] for p in prompts]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class JsonStudent:
    """Base of the fake students: a checkpoint is ``state()`` as JSON, loaded with ``cls(**state)``."""

    def state(self) -> dict[str, Any]:
        return {}

    def save(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "student.json").write_text(json.dumps(self.state()))

    @classmethod
    def load(cls, path: str | Path) -> Any:
        return cls(**json.loads((Path(path) / "student.json").read_text()))


class MemoStudent(JsonStudent):
    """Remembers the label of each text it trained on and predicts it back (no probabilities);
    any other text gets :meth:`fallback`. Counts its epochs."""

    labels: tuple[str, ...] = ()

    def __init__(self, memory: dict[str, Any] | None = None, epochs: int = 0) -> None:
        self.memory = dict(memory or {})
        self.epochs = epochs

    def fallback(self, text: str) -> Any:
        return None

    def fit_epoch(self, examples: Sequence[Example], weights: Sequence[float] | None = None) -> float:
        self.memory.update({e.text: e.label for e in examples})
        self.epochs += 1
        return 0.1

    def predict(self, examples: Sequence[Any]) -> list[Prediction]:
        return [Prediction(self.memory[e.text] if e.text in self.memory else self.fallback(e.text), {})
                for e in examples]

    def state(self) -> dict[str, Any]:
        return {"memory": self.memory, "epochs": self.epochs}


def write_like_a_run(ctx: Any, res: Any) -> tuple[dict[str, Any], Any]:
    """What ``llmkd.api.run`` writes for a finished method, into ``ctx.workdir``: result.json,
    predictions, labels, record tables and the method's rendered files. Returns the result dict
    and the :class:`~llmkd.method_reports.Rendered` (its markdown sections)."""
    from llmkd.report import render_method, write_method_result, write_rendered

    result = write_method_result(ctx.workdir, res, ctx.test, dict(res.timings))
    out = render_method(result, ctx.task)
    write_rendered(ctx.workdir, out)
    return result, out
