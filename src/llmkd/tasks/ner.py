"""Named-entity recognition: k-shot span-extraction prompt, mention parser + aligner, seqeval scores.

Labels are tuples of IOB2 tags over the whitespace tokens of the text (see :mod:`llmkd.formats.conll`).

**Prompt** (``ner.v1``): the instruction, the entity types with verbalized descriptions
(``task.label_descriptions``; default: the type name with ``_`` / ``.`` read as spaces), then the
demonstrations, each ``Sentence: ...`` / ``Entities:`` followed by one ``type: text`` line per
gold entity in sentence order (``none`` when there is none). A line format, not JSON: it costs
fewer generated tokens and small models copy it reliably. JSON replies (a list of
``{"text": ..., "type": ...}``) are parsed too. With ``teacher.constrained: true`` the reply is held
to this line format by a GBNF grammar (:meth:`NerTask.constraint`: known types only, ``none``, no
other lines); the words are not pinned to the sentence, so the tolerant parser below still runs.

**Parsing** a reply (:meth:`NerTask.parse_reply`):

1. Each line is ``type: text`` (bullets, numbering, markdown ``**`` and quotes around either part
   are stripped). ``none`` / ``[]`` means "no entity". Other lines are counted as unparsed.
   A reply with neither a mention nor ``none`` is an **abstention** (ParseError), never all-``O``.
   If the reply hit ``max_tokens`` the unfinished last line is dropped (``truncated``).
2. The type must be one of the task's types: exact, case-insensitive, a ``task.aliases`` key, or
   the verbalized type name; otherwise the mention is dropped (``unknown_type``).
3. Alignment to tokens. Occurrences are ranked by match level, then sentence order: exact token
   sequence; then case-insensitive; then *loose* (Unicode NFKC, curly quotes/dashes folded, case
   and whitespace ignored, so ``Smith's`` matches ``Smith 's``; retried with surrounding
   punctuation stripped). A mention with ``,`` or ``;`` found nowhere is split into its parts
   (``location: Paris, London``). Found nowhere: dropped (``not_in_sentence``, hallucinations).
4. Overlaps: mentions are placed **longest first** (ties in reply order), each at its best-ranked
   occurrence that overlaps no placed span ("first unused occurrence": a repeated word named
   twice tags both occurrences in order; ``Paris`` named a third time may take ``paris``). So ``Bank of America`` wins over ``America``, and
   ``America`` then takes another occurrence if there is one. A mention with no free occurrence
   is dropped: ``duplicate`` if the same typed span is already placed, else ``overlap``.
   A parseable reply whose mentions are all dropped labels the sentence all-``O`` (the reply
   was understood; its mentions were not in the sentence).

**Confidence** (where the backend returns token logprobs): a mention's confidence is the
probability of its reply line, ``exp(sum of the logprobs of the tokens that overlap the line)``
(the teacher's joint decision on type and text). The sentence's confidence is the **minimum**
over its kept mentions (the weakest entity bounds the label's reliability); with no kept mention
it is the probability of the whole reply (e.g. of ``none``). Without logprobs it is ``None``.

Not handled: nested / discontinuous entities, entity linking, document context.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

from ..formats.conll import spans_from_tags, tags_from_spans, words
from ..errors import ConfigError, ParseError
from ..metrics import span_scores
from ..types import Example, Reply, Span, TeacherLabel
from .base import render_prompt

DROP_REASONS = ("not_in_sentence", "unknown_type", "overlap", "duplicate", "truncated")
_NONE = {"none", "no entities", "no entity", "[]", "n/a", "nothing", "no named entities"}
_LINE = re.compile(r"^(?:[-*\u2022]\s+|\d+[.)]\s+)?(?P<type>[^:\n]{1,80}?)\s*:\s*(?P<text>\S.*?)\s*$")
_WRAP = "\"'`*“”‘’"
_PUNCT = ".,;:!?()[]{}<>" + _WRAP
_FOLD = str.maketrans({"‘": "'", "’": "'", "‚": "'", "′": "'", "`": "'", "“": '"', "”": '"', "„": '"',
                       "″": '"', "–": "-", "—": "-", "‐": "-", "‑": "-"})


@dataclass(frozen=True)
class Mention:
    """A mention as the teacher wrote it; ``start``/``end`` are character offsets of its line in
    the reply (for its confidence)."""

    type: str
    text: str
    start: int
    end: int


def verbalize(entity_type: str) -> str:
    """Default description of a type: ``fromloc.city_name`` -> ``fromloc city name``."""
    return re.sub(r"[_.]+", " ", entity_type).strip()


def _norm(s: str) -> str:
    return "".join(unicodedata.normalize("NFKC", s).translate(_FOLD).casefold().split())


def find_occurrences(tokens: Sequence[str], mention: str) -> list[tuple[str, tuple[int, int]]]:
    """Token spans ``(start, end)`` where ``mention`` occurs, each with its match level: all
    ``exact`` ones first, then the further ``case``-insensitive ones, then the further ``loose``
    ones, each level in sentence order. Empty if nowhere."""
    mw = mention.split()
    n = len(mw)
    if n == 0:
        return []
    found: dict[tuple[int, int], str] = {}
    for i in range(len(tokens) - n + 1):
        if list(tokens[i : i + n]) == mw:
            found[(i, i + n)] = "exact"
    low, mlow = [t.casefold() for t in tokens], [w.casefold() for w in mw]
    for i in range(len(tokens) - n + 1):
        if low[i : i + n] == mlow:
            found.setdefault((i, i + n), "case")
    normed = [_norm(t) for t in tokens]
    for target in dict.fromkeys((_norm(mention), _norm(mention.strip(_PUNCT + " ")))):
        if not target:
            continue
        for i in range(len(tokens)):
            acc = ""
            for j in range(i, len(tokens)):
                acc += normed[j]
                if len(acc) >= len(target):
                    if acc == target:
                        found.setdefault((i, j + 1), "loose")
                    break
    return [(level, occ) for level in ("exact", "case", "loose") for occ, lv in found.items() if lv == level]


class NerTask:
    kind = "ner"
    stop = ("\n\n", "\nSentence:")
    primary_metric = "f1"  # entity-level span F1 (seqeval, strict IOB2)

    def __init__(self, *, labels: Sequence[str], instruction: str = "Find the named entities in the sentence.",
                 template: str = "ner.v1", label_descriptions: dict[str, str] | None = None,
                 aliases: dict[str, str] | None = None) -> None:
        if not labels:
            raise ConfigError("task: NER needs at least one entity type; set data.labels or use data with entities")
        self.labels = tuple(labels)
        self.instruction = instruction
        self.template = template
        descriptions = dict(label_descriptions or {})
        stray = sorted(set(descriptions) - set(self.labels))
        if stray:
            raise ConfigError(f"task.label_descriptions: types {stray} are not entity types of the data "
                              f"{list(self.labels)}; check the spelling (or data.label_map)")
        self.descriptions = {t: descriptions.get(t) or verbalize(t) for t in self.labels}
        bad = sorted(v for v in (aliases or {}).values() if v not in self.labels)
        if bad:
            raise ConfigError(f"task.aliases: target types {bad} are not in the entity types {list(self.labels)}")
        self._type_of = {verbalize(t).casefold(): t for t in self.labels}
        self._type_of.update({t.casefold(): t for t in self.labels})
        self._type_of.update({k.casefold().strip(): v for k, v in (aliases or {}).items()})

    @property
    def template_id(self) -> str:
        return self.template

    # -- prompt -------------------------------------------------------------------------------
    @staticmethod
    def answer(example: Example) -> str:
        """The reply a demonstration shows: ``type: text`` per gold entity, or ``none``."""
        toks = words(example.text)
        spans = spans_from_tags(example.label, toks)
        return "\n".join(f"{s.type}: {s.text}" for s in spans) or "none"

    def render(self, text: str, shots: Sequence[Example]) -> str:
        return render_prompt(
            self.template,
            instruction=self.instruction,
            types=self.labels,
            descriptions=self.descriptions,
            shots=[{"text": s.text, "answer": self.answer(s)} for s in shots],
            example_text=next((sp.text for s in shots for sp in spans_from_tags(s.label, words(s.text))
                               if sp.type == self.labels[0]), "..."),
            text=text,
        )

    def constraint(self) -> Any:
        """The GBNF grammar for ``teacher.constrained``: ``none``, or one ``type: words`` line per
        entity with ``type`` one of the entity types as the demonstrations write them, then at
        most a blank line (where the ``\\n\\n`` stop ends the reply). It does not pin the words
        to the sentence's (one grammar serves every sentence): the aligner still drops mentions
        found nowhere."""
        from ..teachers.base import Constraint, gbnf_alternatives

        return Constraint.gbnf(
            "root ::= \" \"? (\"none\" | line (\"\\n\" line)*) (\"\\n\" \"\\n\"?)?\n"
            "line ::= type \": \" [^\\n]+\n"
            f"type ::= {gbnf_alternatives(self.labels)}\n")

    # -- synthesis (tasks.base.Synthesizes: EvoKD writes new sentences) ------------------------
    synthesis_prompts = "ner"

    def synthesis_descriptions(self) -> dict[str, str]:
        """The entity types' descriptions (the ``evokd_*_ner.v1`` templates do not show them)."""
        return self.descriptions

    def synthesis_label(self, text: str, label: Any) -> str:
        """IOB2 tags shown as ``type: text; type: text`` (or ``none``)."""
        return self.answer(Example("", text, tuple(label))).replace("\n", "; ")

    def synthesis_text(self, text: str) -> str:
        """CoNLL-style tokens (:func:`llmkd.synthesis.conll_tokenize`): the tagger and the aligner
        work on them."""
        from ..synthesis import conll_tokenize

        return conll_tokenize(text)

    def synthesis_label_problem(self, label: TeacherLabel, text: str) -> str | None:
        """:func:`ner_label_problem`: an unknown type or a span not in the sentence."""
        return ner_label_problem(label, self.labels, text)

    # -- parsing ------------------------------------------------------------------------------
    def mentions(self, raw: str, *, complete: bool = True) -> tuple[list[Mention], bool, int, int]:
        """(mentions, said_none, unparsed_lines, truncated) of a reply. ``complete=False`` drops
        an unfinished last line (the reply hit max_tokens)."""
        js = self._json_mentions(raw)
        if js is not None:
            return js[0], js[1], 0, 0
        out: list[Mention] = []
        said_none, unparsed, truncated = False, 0, 0
        pos = 0
        lines = raw.split("\n")
        for k, line in enumerate(lines):
            start, pos = pos, pos + len(line) + 1
            body = line.strip()
            if not body:
                continue
            if body.strip(_PUNCT + " ").casefold() in _NONE or body in ("[]", "{}"):
                said_none = True
                continue
            m = _LINE.match(body.replace("**", ""))
            if not m or not m.group("text").strip(_WRAP + " "):
                unparsed += 1
                continue
            if not complete and k == len(lines) - 1:
                truncated += 1
                continue
            out.append(Mention(m.group("type").strip(_WRAP + " "), m.group("text").strip(_WRAP + " "),
                               start, start + len(line)))
        return out, said_none, unparsed, truncated

    @staticmethod
    def _json_mentions(raw: str) -> tuple[list[Mention], bool] | None:
        body = raw.strip()
        if not body.startswith(("[", "{")):
            return None
        try:
            data = json.loads(body[: body.rfind("]") + 1] if body.startswith("[") else body)
        except ValueError:
            return None
        items = data if isinstance(data, list) else data.get("entities") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return None
        out: list[Mention] = []
        cursor = 0
        for item in items:
            if not isinstance(item, dict):
                continue
            text = next((item[k] for k in ("text", "entity", "mention", "span", "name") if isinstance(item.get(k), str)), None)
            typ = next((item[k] for k in ("type", "label", "entity_type", "category") if isinstance(item.get(k), str)), None)
            if text is None or typ is None:
                continue
            at = raw.find(text, cursor)
            start = at if at >= 0 else 0
            end = start + len(text) if at >= 0 else len(raw)
            cursor = max(cursor, end)
            out.append(Mention(typ.strip(), text.strip(), start, end))
        return out, not out

    def resolve_type(self, written: str) -> str | None:
        return self._type_of.get(written.casefold().strip())

    def align(self, text: str, mentions: Sequence[Mention], reply: Reply | None = None
              ) -> tuple[tuple[str, ...], list[Span], dict[str, int]]:
        """Place mentions on the sentence's tokens (rules in the module docstring). Returns the
        IOB2 tags, the kept spans (with confidences) and the counts of every outcome."""
        toks = words(text)
        counts = {"mentions": 0, "kept": 0, "case_matches": 0, "loose_matches": 0, **{r: 0 for r in DROP_REASONS}}
        located: list[tuple[Mention, str, list[tuple[str, tuple[int, int]]]]] = []
        for m in mentions:
            typ = self.resolve_type(m.type)
            if typ is None:
                counts["mentions"] += 1
                counts["unknown_type"] += 1
                continue
            occ = find_occurrences(toks, m.text)
            parts = [p.strip() for p in re.split(r"[,;]", m.text)] if not occ and re.search(r"[,;]", m.text) else []
            if parts and all(p for p in parts):
                for p in parts:
                    located.append((Mention(m.type, p, m.start, m.end), typ, find_occurrences(toks, p)))
            else:
                located.append((m, typ, occ))
        placed: list[Span] = []
        for m, typ, occ in sorted(located, key=lambda x: -len(x[0].text)):  # stable: ties keep reply order
            counts["mentions"] += 1
            if not occ:
                counts["not_in_sentence"] += 1
                continue
            free = [(lv, o) for lv, o in occ if all(o[1] <= s.start or o[0] >= s.end for s in placed)]
            if not free:
                dup = any((s.start, s.end, s.type) == (o[0], o[1], typ) for _, o in occ for s in placed)
                counts["duplicate" if dup else "overlap"] += 1
                continue
            level, (s, e) = free[0]
            conf = None if reply is None else _prob(reply, m.start, m.end)
            placed.append(Span(s, e, typ, " ".join(toks[s:e]), conf))
            counts["kept"] += 1
            if level in ("case", "loose"):
                counts[f"{level}_matches"] += 1
        placed.sort(key=lambda sp: sp.start)
        return tags_from_spans(len(toks), placed), placed, counts

    def parse(self, raw: str, text: str | None = None) -> tuple[str, ...]:
        """The IOB2 tags a reply gives ``text``; raises ParseError when the reply names no entity
        and does not say ``none``. NER needs the sentence to align mentions, so ``text`` is required."""
        if text is None:
            raise TypeError("NerTask.parse needs the sentence to align mentions to: call parse(raw, text)")
        mentions, said_none, _, _ = self.mentions(raw)
        if not mentions and not said_none:
            raise ParseError(raw, f"one 'type: text' line per entity (types {list(self.labels)}) or 'none'")
        return self.align(text, mentions)[0]

    def parse_reply(self, reply: Reply, text: str) -> tuple[tuple[str, ...], float | None, dict[str, Any]]:
        """(tags, sentence confidence, meta) of a teacher reply; ParseError = abstention.
        ``meta`` holds the outcome counts and the kept spans ``[start, end, type, confidence]``."""
        complete = reply.finish_reason != "length" or reply.text.endswith("\n")
        mentions, said_none, unparsed, truncated = self.mentions(reply.text, complete=complete)
        if not mentions and not said_none:
            raise ParseError(reply.text, f"one 'type: text' line per entity (types {list(self.labels)}) or 'none'"
                             + (" (the reply was cut at max_tokens)" if truncated else ""))
        tags, spans, counts = self.align(text, mentions, reply)
        counts["mentions"] += truncated
        counts["truncated"] += truncated
        counts["unparsed_lines"] = unparsed
        confs = [s.confidence for s in spans if s.confidence is not None]
        if confs:
            conf: float | None = min(confs)
        else:
            conf = _prob(reply, 0, len(reply.text)) if reply.token_logprobs is not None else None
        meta = {**counts, "spans": [[s.start, s.end, s.type, s.confidence] for s in spans]}
        return tags, conf, meta

    def label_logprob(self, reply: Reply) -> float | None:
        if reply.token_logprobs is None:
            return None
        return float(sum(reply.token_logprobs))

    # -- scoring ------------------------------------------------------------------------------
    def score(self, gold: Sequence[Any], pred: Sequence[Any | None]) -> dict[str, float]:
        return span_scores(gold, pred, self.labels)

    @staticmethod
    def label_stats(labels: Sequence[TeacherLabel]) -> dict[str, Any]:
        """Totals over a labeling pass: mentions the teacher wrote, kept, dropped by reason, and
        the dropped-mention rate (dropped / written)."""
        keys = ("mentions", "kept", *DROP_REASONS, "case_matches", "loose_matches", "unparsed_lines")
        tot = {k: 0 for k in keys}
        for lab in labels:
            if lab.meta:
                for k in keys:
                    tot[k] += int(lab.meta.get(k, 0))
        dropped = sum(tot[r] for r in DROP_REASONS)
        out: dict[str, Any] = {f"teacher mentions {'written' if k == 'mentions' else k.replace('_', ' ')}": v
                               for k, v in tot.items()}
        out["dropped-mention rate"] = dropped / tot["mentions"] if tot["mentions"] else 0.0
        return out


def ner_label_problem(lab: TeacherLabel, types: Sequence[str], text: str) -> str | None:
    """NER label hygiene for a generated sentence labeled by the teacher (EvoKD step 5): a mention of an unknown type is ``bad_label``; a mention whose text
    does not occur in the sentence (the aligner's ``not_in_sentence``) is ``bad_span``. Either
    drops the whole sentence: its other entities cannot be trusted to be complete."""
    meta = lab.meta or {}
    if meta.get("unknown_type"):
        return "bad_label"
    if meta.get("not_in_sentence"):
        return "bad_span"
    tags = tuple(lab.label)
    if len(tags) != len(text.split()):
        return "bad_span"
    if any(t != "O" and t.split("-", 1)[-1] not in types for t in tags):
        return "bad_label"
    return None


def _prob(reply: Reply, start: int, end: int) -> float | None:
    """exp(sum of logprobs of the reply tokens overlapping characters [start, end)). If the tokens
    do not spell the text (a multi-byte character split across tokens), the whole reply is used."""
    if reply.token_logprobs is None:
        return None
    joined = "".join(reply.tokens)
    lps = reply.token_logprobs
    if not reply.tokens or len(reply.tokens) != len(lps) or not joined.startswith(reply.text):
        return float(math.exp(sum(lps)))
    total, pos = 0.0, 0
    for tok, lp in zip(reply.tokens, lps):
        t0, pos = pos, pos + len(tok)
        if t0 < end and pos > start:
            total += lp
        if t0 >= end:
            break
    return float(math.exp(total))
