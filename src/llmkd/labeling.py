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
"""

from __future__ import annotations

import hashlib
import math
import logging
from typing import Any, Sequence

from .errors import ParseError
from .tasks.base import Constrained, ParsesDetailed, ParsesReply, ScoresOptions, StopsAt
from .teachers.base import normalize_options
from .types import Example, TeacherLabel

log = logging.getLogger(__name__)
_UNSET: Any = object()


def prompt_id(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def label_examples(task: Any, teacher: Any, items: Sequence[Any], shots: Sequence[Example], *,
                   mode: str = "generate", confidence: bool = True, max_tokens: int = 8,
                   temperature: float = 0.0, stage: str = "teacher", progress: bool = True,
                   desc: str = "labeling", constrained: bool = False) -> list[TeacherLabel]:
    """Label ``items`` (objects with ``id`` and ``text``) with the teacher. Order is preserved.

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
    out: list[TeacherLabel] = []
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="ex")
    for start in range(0, len(items), chunk):
        batch = items[start : start + chunk]
        prompts = [task.render(x.text, shots) for x in batch]
        extra = {"constraint": task.constraint()} if constrained and isinstance(task, Constrained) else {}
        replies = teacher.generate(prompts, max_tokens=max_tokens, temperature=temperature,
                                   stop=task.stop if isinstance(task, StopsAt) else (), **extra) if mode == "generate" else None
        scores = teacher.score_options(prompts, options) if options and (confidence or mode == "score") else None
        for i, (x, prompt) in enumerate(zip(batch, prompts)):
            probs = None
            if scores is not None:
                probs = dict(zip(task.labels, normalize_options(scores[i])))
            if replies is None:
                assert probs is not None
                label = max(probs, key=probs.__getitem__)
                out.append(TeacherLabel(x.id, label, probs[label], False, "teacher", prompt_id(prompt),
                                        raw="", stage=stage, probs=probs))
                continue
            raw = replies[i].text
            meta, conf = None, _UNSET
            try:
                if isinstance(task, ParsesReply):  # NER: needs the whole reply (per-mention logprobs) + the input
                    label, conf, meta = task.parse_reply(replies[i], x.text)
                elif isinstance(task, ParsesDetailed):  # tasks that need the input (seq2seq repair) and report details
                    label, meta = task.parse_detailed(raw, x.text)
                else:
                    label = task.parse(raw)
            except ParseError as exc:
                out.append(TeacherLabel(x.id, None, None, True, "teacher", prompt_id(prompt), raw=raw,
                                        stage=stage, probs=probs, error=exc.expected))
                continue
            if conf is not _UNSET:
                pass  # the task computed it
            elif probs is not None and label in probs:
                conf = probs[label]
            else:
                lp = task.label_logprob(replies[i])
                conf = None if lp is None else float(min(1.0, max(0.0, math.exp(lp))))
            out.append(TeacherLabel(x.id, label, conf, False, "teacher", prompt_id(prompt), raw=raw,
                                    stage=stage, probs=probs, meta=meta))
        bar.update(len(batch))
    bar.close()
    return out


def abstention_rate(labels: Sequence[TeacherLabel]) -> float:
    return sum(lab.abstained for lab in labels) / len(labels) if labels else 0.0
