"""Teacher labeling: render few-shot prompts, ask the (cached) teacher, parse, attach confidence.

``mode="generate"``: the teacher writes a reply, the task parses it (tasks with
``parse_detailed(raw, text) -> (label, meta)`` get the input text, e.g. to repair a seq2seq output
against the input words, and their ``meta`` is kept on the label; tasks with
``parse_reply(reply, text) -> (label, confidence, meta)`` also get the whole reply, e.g. NER's
per-mention token logprobs); an unparseable reply is an
abstention (``label=None``), never a default class. With ``confidence=True`` the label set is
also scored (``score_options``) and the confidence is the parsed label's probability normalised
over the label set. ``mode="score"``: the label is the argmax of the label log-likelihoods.

Prompts go to the teacher in chunks of its ``batch_size`` (1 for llama.cpp, so that generating
and scoring one prompt share its KV state); each answer is cached as soon as it arrives.

The demonstrations of each prompt come from a :class:`Demonstrations` (``task.demonstrations``):
the same ones for every item (``fixed``), or a seeded draw of its own per item (``per_query``).
"""

from __future__ import annotations

import hashlib
import math
import logging
import random
from dataclasses import dataclass
from typing import Any, Sequence

from .errors import ParseError, PromptTooLong
from .tasks.base import Constrained, ParsesDetailed, ParsesReply, ScoresOptions, StopsAt
from .teachers.base import KnowsContext, normalize_options
from .types import Example, TeacherLabel

log = logging.getLogger(__name__)
_UNSET: Any = object()


def prompt_id(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Demonstrations:
    """The demonstrations each teacher prompt shows (``task.demonstrations``).

    ``k=None`` (``fixed``): ``examples`` in every prompt, in their order, so that all prompts share
    one prefix (llama.cpp evaluates it once and reuses its KV state). ``k`` set (``per_query``):
    each item gets ``k`` of ``examples`` (the labeled set), drawn by a generator seeded with
    (``seed``, the item's id) alone, so a resumed run, another method of the run, the teacher
    gate or a Ray worker renders the same prompt for an item and finds its cached answer. A draw
    is shown in the order of ``examples`` (the labeled set's seeded order), so its prompt depends
    on the set drawn only; an item never gets itself (an example with its id) as a demonstration.

    Picklable and teacher-free: Ray actors get it as it is. Fitting to the teacher's context
    happens before (:func:`fit_demonstrations`)."""

    examples: tuple[Example, ...]
    k: int | None = None
    seed: int = 0

    @property
    def mode(self) -> str:
        """``fixed`` or ``per_query`` (the config's ``task.demonstrations``)."""
        return "fixed" if self.k is None else "per_query"

    @property
    def per_prompt(self) -> int:
        """How many demonstrations a prompt shows."""
        return len(self.examples) if self.k is None else min(self.k, len(self.examples))

    def for_item(self, item: Any) -> tuple[Example, ...]:
        """The demonstrations of ``item``'s prompt (an object with an ``id``)."""
        if self.k is None:
            return self.examples
        others = [e for e in self.examples if e.id != item.id]
        picked = set(random.Random(f"demonstrations:{self.seed}:{item.id}").sample(range(len(others)),
                                                                                   min(self.k, len(others))))
        return tuple(e for i, e in enumerate(others) if i in picked)


def as_demonstrations(shots: Sequence[Example] | Demonstrations) -> Demonstrations:
    """``shots`` as :class:`Demonstrations`: a plain sequence is the fixed demonstrations of every prompt."""
    return shots if isinstance(shots, Demonstrations) else Demonstrations(tuple(shots))


def label_examples(task: Any, teacher: Any, items: Sequence[Any], shots: Sequence[Example] | Demonstrations, *,
                   mode: str = "generate", confidence: bool = True, max_tokens: int = 8,
                   temperature: float = 0.0, stage: str = "teacher", progress: bool = True,
                   desc: str = "labeling", constrained: bool = False) -> list[TeacherLabel]:
    """Label ``items`` (objects with ``id`` and ``text``) with the teacher. Order is preserved.
    ``shots``: the demonstrations of every prompt, or a :class:`Demonstrations` that gives each
    item its own.

    ``constrained=True`` passes the task's ``constraint()`` (classification: the label set; NER
    and seq2seq: a GBNF grammar of the reply format) to ``teacher.generate``; backends that
    cannot apply it generate freely, and the parser and abstention path work as always."""
    from tqdm.auto import tqdm

    if mode not in ("generate", "score"):
        raise ValueError(f"mode must be 'generate' or 'score' (got {mode!r})")
    options = task.options() if isinstance(task, ScoresOptions) else None
    if mode == "score" and not options:
        raise ValueError(f"mode='score' needs a task with a label set; {task.kind} has none")
    chunk = max(1, int(getattr(teacher, "batch_size", 1)))
    extra = {"constraint": task.constraint()} if constrained and isinstance(task, Constrained) else {}
    stop = task.stop if isinstance(task, StopsAt) else ()
    demos = as_demonstrations(shots)

    def ask(prompts: list[str]) -> tuple[Any, Any]:
        replies = teacher.generate(prompts, max_tokens=max_tokens, temperature=temperature, stop=stop,
                                   **extra) if mode == "generate" else None
        scores = teacher.score_options(prompts, options) if options and (confidence or mode == "score") else None
        return replies, scores

    out: list[TeacherLabel] = []
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="ex")
    for start in range(0, len(items), chunk):
        batch = items[start : start + chunk]
        prompts = [task.render(x.text, demos.for_item(x)) for x in batch]
        try:
            groups = [(batch, prompts, ask(prompts))]
        except PromptTooLong:  # one prompt of the batch does not fit: ask one at a time, the rest go on
            groups = []
            for x, prompt in zip(batch, prompts):
                try:
                    groups.append(([x], [prompt], ask([prompt])))
                except PromptTooLong as exc:
                    groups.append(([x], [prompt], exc))
        for xs, ps, answer in groups:
            if isinstance(answer, PromptTooLong):
                out.append(TeacherLabel(xs[0].id, None, None, True, "teacher", prompt_id(ps[0]), stage=stage,
                                        error=answer.reason))
                continue
            replies, scores = answer
            for i, (x, prompt) in enumerate(zip(xs, ps)):
                # every option at -inf: the teacher gave no label any probability; never a uniform guess
                scored = scores is not None and any(s > -math.inf for s in scores[i])
                probs = dict(zip(task.labels, normalize_options(scores[i]))) if scored else None
                out.append(_label_one(task, x, prompt, None if replies is None else replies[i], probs, stage))
        bar.update(len(batch))
    bar.close()
    n_long = sum(lab.error.startswith("too_long") for lab in out)
    if n_long:
        log.warning("%d of %d inputs do not fit the teacher's context with the demonstrations and abstained "
                    "(error 'too_long' in their provenance); raise teacher.n_ctx to label them", n_long, len(out))
    return out


def _label_one(task: Any, x: Any, prompt: str, reply: Any, probs: dict[str, float] | None, stage: str) -> TeacherLabel:
    """The label of one item from its reply (generate) or its label-set probabilities (score)."""
    if reply is None:
        if probs is None:
            return TeacherLabel(x.id, None, None, True, "teacher", prompt_id(prompt), stage=stage,
                                error="no_score: every label scored -inf (the teacher gave none of them a probability)")
        label = max(probs, key=probs.__getitem__)
        return TeacherLabel(x.id, label, probs[label], False, "teacher", prompt_id(prompt), raw="", stage=stage,
                            probs=probs)
    raw = reply.text
    meta, conf = None, _UNSET
    try:
        if isinstance(task, ParsesReply):  # NER: needs the whole reply (per-mention logprobs) + the input
            label, conf, meta = task.parse_reply(reply, x.text)
        elif isinstance(task, ParsesDetailed):  # tasks that need the input (seq2seq repair) and report details
            label, meta = task.parse_detailed(raw, x.text)
        else:
            label = task.parse(raw)
    except ParseError as exc:
        return TeacherLabel(x.id, None, None, True, "teacher", prompt_id(prompt), raw=raw, stage=stage, probs=probs,
                            error=exc.expected)
    if conf is not _UNSET:
        pass  # the task computed it
    elif probs is not None and label in probs:
        conf = probs[label]
    else:
        lp = task.label_logprob(reply)
        conf = None if lp is None else float(min(1.0, max(0.0, math.exp(lp))))
    return TeacherLabel(x.id, label, conf, False, "teacher", prompt_id(prompt), raw=raw, stage=stage, probs=probs,
                        meta=meta)


def fit_shots(task: Any, teacher: Any, shots: Sequence[Example], *, max_tokens: int, texts: Sequence[str],
              ) -> tuple[Example, ...]:
    """The demonstrations that fit the teacher's context (``teacher.context_tokens``; all of them
    where the backend does not say): the prompt with the shots, ``max_tokens`` of reply and a
    typical input (the 95th percentile of ``texts``, estimated as a token per 3 characters and at
    most half the context) must fit. Shots are dropped one at a time, the last one of the class
    that has the most (any last one for labels that are not classes), so that the classes stay
    as even as they can; a warning says how many were kept.

    The tokenizer is only loaded where a cheap bound (2 characters a token) says the prompt might
    not fit, so a run with a few short shots never loads the teacher for this."""
    room = _room(teacher, max_tokens, texts) if shots else None
    if room is None or _fits(task, teacher, shots, room[1], cheap=True):
        return tuple(shots)
    kept = list(shots)
    while kept and not _fits(task, teacher, kept, room[1]):
        labels = [e.label for e in kept if isinstance(e.label, str)]
        most = max(labels, key=labels.count) if len(labels) == len(kept) else None
        drop = max(i for i, e in enumerate(kept) if most is None or e.label == most)
        kept.pop(drop)
    if len(kept) < len(shots):
        log.warning("the teacher's context (teacher.n_ctx=%d) holds %d of the %d demonstrations with room for "
                    "max_tokens=%d and a %d-token input; labeling uses those %d. Raise teacher.n_ctx to keep all, "
                    "or lower task.shots to choose.", teacher.context_tokens, len(kept), len(shots), max_tokens,
                    room[0], len(kept))
    return tuple(kept)


def fit_demonstrations(task: Any, teacher: Any, demos: Demonstrations, *, max_tokens: int, texts: Sequence[str],
                       ) -> Demonstrations:
    """``demos`` fitted to the teacher's context as :func:`fit_shots` fits shots. ``fixed``: the
    shots themselves (:func:`fit_shots`). ``per_query``: the number drawn per item, lowered until
    the longest draw there can be (the ``k`` examples whose demonstration renders longest) fits,
    so that no item's draw overflows where another's fits; a warning says when it was lowered.
    Computed once per run, before any prompt, so that every path renders the same prompts."""
    if demos.k is None:
        return Demonstrations(fit_shots(task, teacher, demos.examples, max_tokens=max_tokens, texts=texts))
    k = demos.per_prompt
    room = _room(teacher, max_tokens, texts) if k else None
    if room is None:
        return demos
    longest = sorted(demos.examples, key=lambda e: len(task.render("", [e])), reverse=True)
    if _fits(task, teacher, longest[:k], room[1], cheap=True):
        return demos
    fit = k
    while fit and not _fits(task, teacher, longest[:fit], room[1]):
        fit -= 1
    if fit < k:
        log.warning("the teacher's context (teacher.n_ctx=%d) holds %d of the %d demonstrations per query in the "
                    "longest draw, with room for max_tokens=%d and a %d-token input; labeling draws %d per item "
                    "(task.demonstrations: per_query). Raise teacher.n_ctx to draw %d, or lower task.shots to "
                    "choose.", teacher.context_tokens, fit, k, max_tokens, room[0], fit, k)
    return Demonstrations(demos.examples, fit, demos.seed)


def _room(teacher: Any, max_tokens: int, texts: Sequence[str]) -> tuple[int, int] | None:
    """(tokens kept for the input, tokens left for the demonstrations' prompt) in the teacher's
    context; None where the teacher does not say how long its context is."""
    limit = teacher.context_tokens if isinstance(teacher, KnowsContext) else None
    if not limit:
        return None
    lengths = sorted(len(t) for t in texts) or [0]
    reserve = min(limit // 2, lengths[int(0.95 * (len(lengths) - 1))] // 3 + 1)
    return reserve, limit - max_tokens - reserve


def _fits(task: Any, teacher: Any, shots: Sequence[Example], budget: int, *, cheap: bool = False) -> bool:
    """Whether the prompt of ``shots`` (without an input) fits ``budget`` tokens; ``cheap``: by the
    bound of 2 characters a token (no tokenizer), else counted by the teacher."""
    prompt = task.render("", list(shots))
    return len(prompt) / 2 <= budget if cheap else teacher.count_tokens(prompt) <= budget


def abstention_rate(labels: Sequence[TeacherLabel]) -> float:
    return sum(lab.abstained for lab in labels) / len(labels) if labels else 0.0
