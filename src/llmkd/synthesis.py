"""Hygiene for LLM-generated training data: parse, validate, dedupe, guard against leaks.

Used by EvoKD (``methods/evokd.py``) and its no-feedback baseline; usable by any method that asks
a teacher to *write* inputs. Every dropped sample gets a reason, and :class:`HygieneCounts`
counts them, so a report can say how many of the generated samples were kept and why the others
were not:

- ``unparseable``   the generation reply had no line in the requested format (bounded re-ask first)
- ``invalid``       empty, too short / too long, or a copy of the prompt's placeholder text
- ``abstained``     the separate labeling call gave no parseable label (never a default class)
- ``bad_label``     the label is not in the label set
- ``bad_span``      NER: an entity span does not occur in the text
- ``exact_dup``     same normalised text as a kept sample, a gold seed or an earlier sample
- ``near_dup``      embedding cosine >= ``near_dup`` to one of those
- ``leak``          same normalised text, a shared ``leak_ngram``-word run, or embedding cosine
                    >= ``leak`` to a dev or test text (the texts only; their labels are not read)

Embeddings: :class:`EncoderEmbedder` mean-pools a Hugging Face encoder (default the packaged
all-MiniLM-L6-v2) and L2-normalises; :func:`ngram_embed` is a dependency-free hashed character
trigram vector for tests and for machines without torch.

Not handled: semantic validation (whether a generated text really belongs to the task), and
near-duplicates across different runs (each run dedupes against its own data only).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

Embed = Callable[[Sequence[str]], np.ndarray]

DROP_REASONS = ("unparseable", "invalid", "abstained", "bad_label", "bad_span", "exact_dup", "near_dup", "leak")


# -- parsing of generation replies ------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[-*•]+|\d{1,3}\s*[.):]|\(\d{1,3}\))\s*")
_TAG = re.compile(r"^\s*(?:[\[(]\s*(?P<b>hard|easy)\s*[\])]\s*[:\-–|]?"
                  r"|\**\s*(?P<t>hard|easy|text|new text|sentence|example)\s*(?:example|text)?\s*\**\s*[:\-–|])\s*",
                  re.IGNORECASE)
_HEADER = re.compile(r"^\s*[#*]*\s*(hard|easy)\b[^:]*:?\s*[*]*\s*$", re.IGNORECASE)
_PLACEHOLDERS = {"<text>", "text", "...", "<new text>", "<sentence>", "[text]"}


@dataclass(frozen=True)
class Generated:
    """One input text parsed from a generation reply; ``kind`` is hard / easy / plain."""

    text: str
    kind: str


def _strip_label_suffix(text: str, labels: Sequence[str]) -> str:
    """Drop a label the model appended although it was told not to: ``... (positive)``,
    ``... - Label: positive``, and an entity list copied from the examples' format
    (``... (entities: location: Paris)``, closed or cut off) or from the way an analysis quotes
    samples (``... . - organization: The company; products``), which the tagger would otherwise
    tag as part of the sentence. A label word inside the sentence is left alone."""
    text = re.sub(r"(?:\s*[\[(]|\s*[-–|]|(?<=[.!?]))\s*entit(?:y|ies)\s*:.*$", "", text, flags=re.IGNORECASE)
    if labels:
        alt = "|".join(re.escape(lab) for lab in sorted(labels, key=len, reverse=True))
        text = re.sub(rf"\s*[\[(]\s*(?:label\s*:\s*)?(?:{alt})\s*[\])]\s*$", "", text, flags=re.IGNORECASE)
        # the analysis prompt's own sample format, copied: "... . - organization: The company; products"
        text = re.sub(rf"(?:\s+[-–|]|\s*[\[(])\s*(?:{alt})\s*:.*$", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\s*[-–|]*\s*label\s*:\s*[\w -]+$", "", text, flags=re.IGNORECASE)
    return text.strip()


def parse_generated(raw: str, *, kinds: Sequence[str] = ("hard", "easy"), labels: Sequence[str] = ()) -> list[Generated]:
    """Parse a generation reply into texts, one per line.

    Accepted line shapes (bullets and numbering are stripped)::

        HARD: <text>          EASY: <text>          TEXT: <text>
        1. [hard] <text>      - Easy - <text>       2. <text>

    A section header on a line of its own (``Hard examples:``) tags the lines below it. The kind
    is the line's tag, else its section, else ``plain``; with ``kinds=("plain",)`` (no hard/easy
    split requested) every line is ``plain``. A line with neither tag, section nor bullet (prose
    such as "Here are the texts:") is skipped. Surrounding quotes and an appended label
    (``(positive)``, ``Label: positive``) are removed. Returns [] when nothing matches; the caller
    re-asks. Never guesses a label.
    """
    out: list[Generated] = []
    section: str | None = None
    plain_only = set(kinds) == {"plain"}
    for line in raw.splitlines():
        if not line.strip():
            continue
        body = _BULLET.sub("", line, count=1)
        bulleted = body != line
        tag = _TAG.match(body)
        header = _HEADER.match(line)
        if header and (not tag or not body[tag.end():].strip()):  # "Hard examples:" or a bare "HARD:"
            section = header.group(1).lower()
            continue
        if tag:
            kind = (tag.group("b") or tag.group("t")).lower()
            kind = kind if kind in ("hard", "easy") else (section or "plain")
            body = body[tag.end():]
            while (again := _TAG.match(body)) and body[again.end():].strip():  # "TEXT: TEXT: ..." (Qwen-0.5B)
                body = body[again.end():]
        elif section is not None or bulleted:
            kind = section or "plain"
        else:
            continue
        text = body.strip().strip("\"'“”‘’`").strip()
        text = _strip_label_suffix(text, labels).strip().strip("\"'“”‘’`").strip()
        if text:
            out.append(Generated(text, "plain" if plain_only else kind))
    return out


def conll_tokenize(text: str) -> str:
    """Space out punctuation the way CoNLL-2003 tokenises (``Paris.`` -> ``Paris .``,
    ``(Reuters)`` -> ``( Reuters )``, ``Smith's`` -> ``Smith 's``), keeping abbreviations with
    inner dots (``U.S.``) and hyphenated words whole. NER labels are tags over these tokens."""
    out = []
    for tok in text.split():
        lead = ""
        while tok[:1] in "\"'(([{“‘" and len(tok) > 1:
            lead, tok = lead + tok[0] + " ", tok[1:]
        trail = []
        while len(tok) > 1 and tok[-1] in "\".,;:!?)]}”’'" and not re.fullmatch(r"(?:[A-Za-z]\.){2,}", tok):
            trail.insert(0, tok[-1])
            tok = tok[:-1]
        m = re.fullmatch(r"(.+?)('s|n't|'re|'ve|'ll|'d|'m)", tok, flags=re.IGNORECASE)
        parts = [m.group(1), m.group(2)] if m else [tok]
        out.append(lead + " ".join(parts + trail))
    return " ".join(" ".join(out).split())


# -- validation -------------------------------------------------------------------------------

def normalize(text: str) -> str:
    """Lower case, NFKC, punctuation removed, whitespace collapsed: the key of exact dedupe."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = re.sub(r"[^\w\s]", " ", t)
    return " ".join(t.split())


def validate_text(text: str, *, min_words: int = 2, max_words: int = 80) -> str | None:
    """The reason a generated text is unusable (``invalid: ...``), or None when it is fine."""
    words = text.split()
    if not words:
        return "invalid: empty"
    if text.strip().lower() in _PLACEHOLDERS or re.fullmatch(r"[<\[].*[>\]]", text.strip()):
        return "invalid: placeholder"
    if len(words) < min_words:
        return f"invalid: fewer than {min_words} words"
    if len(words) > max_words:
        return f"invalid: more than {max_words} words"
    return None


def validate_label(label: Any, labels: Sequence[str], text: str = "") -> str | None:
    """Classification: the label must be one of ``labels``. NER (a list of spans with ``text``
    and ``label`` / ``type`` fields or ``(span_text, type)`` pairs): every type must be in
    ``labels`` and every span's text must occur in ``text``."""
    if label is None:
        return "abstained"
    if isinstance(label, str):
        return None if label in labels else "bad_label"
    for span in label:
        s_text, s_type = _span_parts(span)
        if s_type not in labels:
            return "bad_label"
        if not s_text or s_text not in text:
            return "bad_span"
    return None


def _span_parts(span: Any) -> tuple[str, str]:
    if isinstance(span, dict):
        return str(span.get("text", "")), str(span.get("label", span.get("type", "")))
    if isinstance(span, (tuple, list)) and len(span) == 2:
        return str(span[0]), str(span[1])
    return str(getattr(span, "text", "")), str(getattr(span, "label", getattr(span, "type", "")))


# -- embeddings -------------------------------------------------------------------------------

def ngram_embed(texts: Sequence[str], dim: int = 2048) -> np.ndarray:
    """Hashed character-trigram counts, L2-normalised: a cheap, deterministic embedding."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        s = f"  {normalize(t)}  "
        for j in range(len(s) - 2):
            h = int.from_bytes(hashlib.blake2b(s[j : j + 3].encode(), digest_size=4).digest(), "little")
            out[i, h % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-9)


class EncoderEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings from a Hugging Face encoder (the
    sentence-transformers recipe of all-MiniLM-L6-v2). Loaded on first use."""

    def __init__(self, model: str, *, max_length: int = 128, batch_size: int = 64, device: str = "cpu") -> None:
        self.model = model
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self._tok: Any = None
        self._enc: Any = None

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if self._enc is None:
            self._tok = AutoTokenizer.from_pretrained(self.model)
            self._enc = AutoModel.from_pretrained(self.model).to(self.device).eval()
        chunks = []
        with torch.no_grad():
            for s in range(0, len(texts), self.batch_size):
                batch = self._tok(list(texts[s : s + self.batch_size]), truncation=True, max_length=self.max_length,
                                  padding=True, return_tensors="pt").to(self.device)
                hidden = self._enc(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 1), dtype=np.float32)


# -- dedupe and leak guard --------------------------------------------------------------------

@dataclass
class HygieneCounts:
    """Samples generated, kept, and dropped per reason (one round or a whole run)."""

    generated: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"generated": self.generated, "kept": self.kept,
                "dropped": {r: int(self.dropped.get(r, 0)) for r in DROP_REASONS},
                "dropped_total": int(sum(self.dropped.values()))}


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = normalize(text).split()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


class SampleFilter:
    """Remembers every text seen so far (gold seeds, kept samples) and the protected dev/test
    texts; :meth:`check` says why a new text must be dropped, :meth:`accept` remembers it.

    ``near_dup`` and ``leak`` are cosine thresholds on ``embed`` vectors; ``leak_ngram`` is the
    length of a word run shared with a protected text that counts as a leak (0 = off).
    """

    def __init__(self, *, embed: Embed, protected: Sequence[str], known: Iterable[str] = (),
                 near_dup: float = 0.95, leak: float = 0.9, leak_ngram: int = 8) -> None:
        if not 0 < near_dup <= 1 or not 0 < leak <= 1:
            raise ValueError(f"near_dup and leak must be cosine thresholds in (0, 1]; got {near_dup}, {leak}")
        self.embed = embed
        self.near_dup = near_dup
        self.leak = leak
        self.leak_ngram = leak_ngram
        self._prot_norm = {normalize(t) for t in protected}
        self._prot_ngrams: set[tuple[str, ...]] = set()
        if leak_ngram:
            for t in protected:
                self._prot_ngrams |= _ngrams(t, leak_ngram)
        self._prot_emb = embed(list(protected)) if protected else None
        self._known_norm: set[str] = set()
        self._known_emb: list[np.ndarray] = []
        known = list(known)
        if known:
            self._known_norm |= {normalize(t) for t in known}
            self._known_emb.extend(embed(known))

    def check_batch(self, texts: Sequence[str]) -> list[str | None]:
        """The drop reason of each text (None = keep), taking earlier texts of the batch into
        account as if accepted in order. Call :meth:`accept` for the ones you keep."""
        if not texts:
            return []
        emb = self.embed(list(texts))
        reasons: list[str | None] = []
        batch_norm: set[str] = set()
        batch_emb: list[np.ndarray] = []
        for text, e in zip(texts, emb):
            norm = normalize(text)
            reason = None
            if norm in self._prot_norm or (self.leak_ngram and _ngrams(text, self.leak_ngram) & self._prot_ngrams):
                reason = "leak"
            elif self._prot_emb is not None and len(self._prot_emb) and float((self._prot_emb @ e).max()) >= self.leak:
                reason = "leak"
            elif norm in self._known_norm or norm in batch_norm:
                reason = "exact_dup"
            else:
                pool = self._known_emb + batch_emb
                if pool and float((np.stack(pool) @ e).max()) >= self.near_dup:
                    reason = "near_dup"
            reasons.append(reason)
            if reason is None:
                batch_norm.add(norm)
                batch_emb.append(e)
        self._last = dict(zip(texts, emb))
        return reasons

    def accept(self, texts: Sequence[str]) -> None:
        """Remember kept texts, so later samples are deduped against them."""
        cached = getattr(self, "_last", {})
        missing = [t for t in texts if t not in cached]
        extra = dict(zip(missing, self.embed(missing))) if missing else {}
        for t in texts:
            self._known_norm.add(normalize(t))
            self._known_emb.append(cached[t] if t in cached else extra[t])
