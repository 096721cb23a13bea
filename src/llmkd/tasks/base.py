"""The Task protocol: how to render a prompt, parse a reply and score predictions."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

from ..types import Example, Reply

PROMPTS = Path(__file__).parent / "prompts"


@lru_cache(maxsize=None)
def load_template(name: str):
    """Load ``prompts/<name>.jinja`` (e.g. ``classify.v1``). The version is in the file name and
    the rendered text is part of the cache key, so editing a template means a new version."""
    from jinja2 import Environment, StrictUndefined

    path = PROMPTS / f"{name}.jinja"
    if not path.exists():
        from ..errors import ConfigError

        have = sorted(p.stem for p in PROMPTS.glob("*.jinja"))
        raise ConfigError(f"task.template: unknown template {name!r}; available: {have}")
    env = Environment(undefined=StrictUndefined, keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(path.read_text(encoding="utf-8"))


@runtime_checkable
class Task(Protocol):
    kind: Literal["classification", "ner", "seq2seq"]
    labels: tuple[str, ...]

    def render(self, text: str, shots: Sequence[Example]) -> str: ...

    def parse(self, raw: str) -> Any:
        """The label in a reply; raises ParseError when there is none."""
        ...

    def label_logprob(self, reply: Reply) -> float | None: ...

    def score(self, gold: Sequence[Any], pred: Sequence[Any | None]) -> dict[str, float]: ...
