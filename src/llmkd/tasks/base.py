"""The Task protocol: how to render a prompt, parse a reply and score predictions."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence, runtime_checkable

from ..types import Example, Reply, TeacherLabel

if TYPE_CHECKING:
    from ..teachers.base import Constraint

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


class Prompt(str):
    """A rendered few-shot prompt that knows where its shared part ends.

    ``shared`` is the number of leading characters (instruction, label set, demonstrations) that
    the prompt has in common with every other prompt rendered from the same template and shots,
    before the example's own text. Local backends lay their evaluation out around that boundary
    (llamacpp: the shared part in fixed chunks, the example in one), so that reusing the shared
    part's KV state costs exactly the example's tokens and a prompt's numbers never depend on
    which prompt came before. It is a hint about this exact text: any string operation gives a
    plain ``str`` again, and a plain ``str`` is evaluated without it."""

    shared: int

    def __new__(cls, text: str, shared: int = 0) -> "Prompt":
        obj = super().__new__(cls, text)
        obj.shared = max(0, min(int(shared), len(obj)))
        return obj


_MARK = "\x00llmkd:example\x00"  # stands in for the example's text to find where it starts


def render_prompt(template: str, *, text: str, **context: Any) -> Prompt:
    """Render ``prompts/<template>.jinja`` for one example (``text``) as a :class:`Prompt`.

    The template is rendered a second time with a marker in place of ``text``; everything before
    the marker's first occurrence, where both renderings agree, is the shared part. A template
    that changes ``text`` (a filter) or puts nothing before it gives ``shared = 0``."""
    tpl = load_template(template)
    full = tpl.render(text=text, **context).strip()
    probe = tpl.render(text=_MARK, **context).strip()
    cut = probe.find(_MARK)
    return Prompt(full, cut if cut > 0 and full[:cut] == probe[:cut] else 0)


@runtime_checkable
class Task(Protocol):
    kind: Literal["classification", "ner", "seq2seq"]
    labels: tuple[str, ...]
    primary_metric: str
    """The key of :meth:`score` that selects and compares students (early stopping, best round):
    see :func:`llmkd.methods.base.primary_metric`."""

    def render(self, text: str, shots: Sequence[Example]) -> str: ...

    def parse(self, raw: str) -> Any:
        """The label in a reply; raises ParseError when there is none."""
        ...

    def label_logprob(self, reply: Reply) -> float | None: ...

    def score(self, gold: Sequence[Any], pred: Sequence[Any | None]) -> dict[str, float]: ...


# ---- optional capabilities -------------------------------------------------------------------
# A task offers these beyond :class:`Task` when it can; callers check them with ``isinstance``
# (each is ``runtime_checkable``), never with ``hasattr`` or by the task's ``kind``.
# tests/unit/test_contracts.py lists which task class has which.


@runtime_checkable
class ScoresOptions(Protocol):
    """A closed label set the teacher can score option by option (``teacher.labeling=score``,
    teacher confidences): classification."""

    def options(self) -> list[str]:
        """The answer strings to score, one per label, in ``labels`` order."""
        ...


@runtime_checkable
class Constrained(Protocol):
    """A constraint on the reply (label choice or GBNF grammar) for ``teacher.constrained=true``."""

    def constraint(self) -> Constraint | None: ...


@runtime_checkable
class ParsesReply(Protocol):
    """Parses the whole reply (per-mention logprobs) against the input, and computes its own
    confidence: NER."""

    def parse_reply(self, reply: Reply, text: str) -> tuple[Any, float | None, dict[str, Any]]: ...


@runtime_checkable
class ParsesDetailed(Protocol):
    """Parses the reply text against the input and reports details (repairs): seq2seq."""

    def parse_detailed(self, raw: str, text: str) -> tuple[Any, dict[str, Any]]: ...


@runtime_checkable
class StopsAt(Protocol):
    """Stop sequences for the teacher's generation."""

    stop: tuple[str, ...]



@runtime_checkable
class HasTrivialBaseline(Protocol):
    """A prediction that needs no model (the ``trivial`` method, :mod:`llmkd.methods.baselines`):
    right-branching trees, all-``O`` slot tags, the gold labeled set's most frequent class."""

    trivial_name: str
    """What the baseline is, for the report (``right-branching trees``)."""

    def trivial(self, text: str, labeled: Sequence[Any]) -> Any:
        """The baseline's label for ``text`` (``labeled``: the gold labeled examples)."""
        ...


@runtime_checkable
class Synthesizes(Protocol):
    """A teacher can *write* new inputs for it, and the samples can be checked and shown in prompts
    (EvoKD and ``synth_nofeedback``, :mod:`llmkd.methods.evokd`): classification and NER."""

    instruction: str
    synthesis_prompts: str
    """The suffix of the prompt templates ``evokd_analyze_<suffix>.v1`` / ``evokd_generate_<suffix>.v1``."""

    def synthesis_descriptions(self) -> dict[str, str]:
        """The label descriptions the synthesis prompts get (a template may not show them)."""
        ...

    def synthesis_label(self, text: str, label: Any) -> Any:
        """``label`` of ``text`` as the analysis / generation prompts show it."""
        ...

    def synthesis_text(self, text: str) -> str:
        """A generated text made ready for hygiene, labeling and the student (e.g. tokenised)."""
        ...

    def synthesis_label_problem(self, label: TeacherLabel, text: str) -> str | None:
        """Why the teacher's (non-abstained) label of a generated ``text`` is unusable
        (a :class:`llmkd.synthesis.HygieneCounts` reason such as ``bad_label``), or None."""
        ...
