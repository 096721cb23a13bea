"""Records that flow through llmkd. All frozen: methods build new ones instead of mutating."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["gold", "teacher", "student", "human"]  # human: llmkd review (docs/review.md)


@dataclass(frozen=True)
class Example:
    """A labeled example (gold, or pseudo-labeled for training). ``label`` is a class name for
    classification; other task families store their own label type here. ``soft``: the teacher's
    probability of every class (classification, ``TeacherLabel.probs``), set by the methods when
    ``student.targets`` is ``soft`` or ``mix``; None (gold examples, hard targets) trains on ``label``."""

    id: str
    text: str
    label: Any
    soft: dict[str, float] | None = field(default=None, hash=False)  # a dict: left out of the hash


@dataclass(frozen=True)
class Span:
    """An entity mention over the whitespace tokens ``[start, end)`` of an example's text (NER).
    ``confidence`` is the teacher's probability of the mention where logprobs exist."""

    start: int
    end: int
    type: str
    text: str = ""
    confidence: float | None = None


@dataclass(frozen=True)
class Unlabeled:
    """An example of the unlabeled pool. It has *no* label field on purpose: gold labels of the
    pool live in a separate :class:`llmkd.data.GoldVault` that method code never receives."""

    id: str
    text: str


@dataclass(frozen=True)
class Reply:
    """A teacher's raw reply. ``token_logprobs`` holds the log-probability of each generated
    token where the backend gives them, else ``None``. ``constrained``: for a reply asked for
    under a constraint, whether it keeps it (False: generated freely, or it breaks the
    constraint); None when no constraint was asked for (or before the cache wrapper checked)."""

    text: str
    tokens: tuple[str, ...] = ()
    token_logprobs: tuple[float, ...] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    constrained: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "text": self.text,
            "tokens": list(self.tokens),
            "token_logprobs": None if self.token_logprobs is None else list(self.token_logprobs),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
        }
        if self.constrained is not None:  # only then: the stored form of other replies is unchanged
            out["constrained"] = self.constrained
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reply:
        lp = d.get("token_logprobs")
        return cls(
            text=d["text"],
            tokens=tuple(d.get("tokens") or ()),
            token_logprobs=None if lp is None else tuple(lp),
            prompt_tokens=int(d.get("prompt_tokens", 0)),
            completion_tokens=int(d.get("completion_tokens", 0)),
            finish_reason=d.get("finish_reason", "stop"),
            constrained=d["constrained"] if isinstance(d.get("constrained"), bool) else None,
        )


@dataclass(frozen=True)
class TeacherLabel:
    """A pseudo-label with its provenance. ``abstained`` labels have ``label=None`` and must never
    be trained on or mapped to a default class."""

    example_id: str
    label: Any
    confidence: float | None
    abstained: bool
    source: Source = "teacher"
    prompt_id: str = ""
    raw: str = ""
    stage: str = ""
    probs: dict[str, float] | None = None
    error: str = ""
    meta: dict[str, Any] | None = None  # task-specific parse details (NER: kept / dropped mentions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.example_id,
            "label": self.label,
            "confidence": self.confidence,
            "abstained": self.abstained,
            "source": self.source,
            "prompt_id": self.prompt_id,
            "raw": self.raw,
            "stage": self.stage,
            "probs": self.probs,
            "error": self.error,
            **({"meta": self.meta} if self.meta is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TeacherLabel:
        return cls(
            example_id=d["id"],
            label=tuple(d["label"]) if isinstance(d["label"], list) else d["label"],  # JSON gives NER tags as a list
            confidence=d.get("confidence"),
            abstained=bool(d["abstained"]),
            source=d.get("source", "teacher"),
            prompt_id=d.get("prompt_id", ""),
            raw=d.get("raw", ""),
            stage=d.get("stage", ""),
            probs=d.get("probs"),
            error=d.get("error", ""),
            meta=d.get("meta"),
        )


@dataclass(frozen=True)
class Prediction:
    """A student's (or teacher's) prediction: the label and the probability of every class."""

    label: Any
    probs: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TagPrediction(Prediction):
    """A token classifier's prediction: ``label`` is the IOB2 tag tuple, ``token_probs`` the tag
    distribution of every word, ``spans`` the decoded entities and ``confidence`` the smallest
    per-word top probability (``probs`` stays empty: a sentence has no single class)."""

    spans: tuple[Span, ...] = ()
    token_probs: tuple[dict[str, float], ...] = ()
    confidence: float | None = None


@dataclass(frozen=True)
class RunResult:
    """What a method returns: test predictions, test metrics and why it stopped."""

    method: str
    metrics: dict[str, float]
    predictions: tuple[Prediction | None, ...]
    labels: tuple[TeacherLabel, ...] = ()
    stop_reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: row tables for the run directory: ``records["selection"]`` becomes ``<method>/selection.jsonl``
    #: (written by :mod:`llmkd.report`, like everything else in the run directory)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
