"""Slot filling as sequence generation (ATIS, SNIPS), the way MCKD's reference code casts it.

Target format: every word followed by its BIO slot tag, optionally preceded by the intent::

    show O flights O from O boston B-fromloc.city_name
    atis_flight | show O flights O from O boston B-fromloc.city_name      (data.with_intent: true)

(The MCKD v4 paper text was not available; its code interleaves tokens and tags like this. The
``intent |`` prefix is our choice: one token for the intent, a separator no word contains.)

* :func:`read_slots` reads a ``seq.in`` / ``seq.out`` (/ ``label``) folder into examples whose
  label is the target string.
* :func:`repair_slots` validates a generated target against the input words: tags are tokens
  matching ``O`` / ``B-x`` / ``I-x``; a word without a tag gets ``O`` (``tag_added``), a tag with
  no word before it is dropped (``tag_dropped``); the words are aligned with the input like tree
  leaves (:func:`llmkd.formats.trees.align_words`: case restored, merged/split words re-split with
  the tag continued as ``I-``, missing words restored with ``O``, extra words dropped). More than
  ``max_edit`` of the words changed -> ParseError (an abstention, counted).
* :func:`slot_scores`: slot F1 via seqeval (corpus level, conlleval chunks), the mean of
  sentence-level chunk F1 (the MCKD code's number; a sentence with no gold and no predicted chunk
  scores 1), exact match, intent accuracy when the gold carries intents, abstention rate.

Not handled: nested slots, slot values that are not contiguous words.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Sequence

from ..errors import DataError, ParseError
from ..types import Example

TAG = re.compile(r"^(O|[BIbi]-\S+)$")
SEP = " | "


def to_target(words: Sequence[str], tags: Sequence[str], intent: str | None = None) -> str:
    body = " ".join(f"{w} {t}" for w, t in zip(words, tags))
    return f"{intent}{SEP}{body}" if intent else body


def parse_target(target: str) -> tuple[str | None, list[str], list[str]]:
    """(intent, words, tags) of a well-formed target (gold or repaired)."""
    intent = None
    if SEP in target:
        intent, target = target.split(SEP, 1)
        intent = intent.strip()
    toks = target.split()
    if len(toks) % 2:
        raise ValueError(f"target {target!r} has an odd number of tokens; expected word tag pairs")
    return intent, toks[0::2], toks[1::2]


def read_slots(folder: str | Path, *, with_intent: bool = False, encoding: str = "utf-8",
               prefix: str = "") -> list[Example]:
    """Examples of a ``seq.in`` / ``seq.out`` (/ ``label`` when ``with_intent``) folder. Ids are
    ``<prefix><line number>``."""
    folder = Path(folder)
    names = ["seq.in", "seq.out"] + (["label"] if with_intent else [])
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise DataError(f"{folder}: format 'slots' needs a folder with {names}; missing {missing}, found {have}"
                        + ("" if folder.is_dir() else " (not a folder: point data.train at the folder)"))
    from .text import read_text

    cols = [read_text(folder / n, encoding).splitlines() for n in names]
    if len({len(c) for c in cols}) != 1:
        raise DataError(f"{folder}: {', '.join(f'{n} has {len(c)} lines' for n, c in zip(names, cols))}; "
                        "they must match line by line")
    out: list[Example] = []
    for lineno, row in enumerate(zip(*cols), 1):
        words, tags = row[0].split(), row[1].split()
        if not words:
            continue
        if len(words) != len(tags):
            raise DataError(f"{folder}/seq.out:{lineno}: {len(words)} words but {len(tags)} tags; "
                            "every word needs exactly one tag")
        bad = [t for t in tags if not TAG.match(t)]
        if bad:
            raise DataError(f"{folder}/seq.out:{lineno}: tags {bad} are not BIO tags (O, B-type, I-type)")
        intent = row[2].strip() if with_intent else None
        out.append(Example(f"{prefix}{lineno}", " ".join(words), to_target(words, tags, intent)))
    if not out:
        raise DataError(f"{folder}: no sentences found in seq.in")
    return out


def _reply_line(raw: str) -> str:
    for line in raw.replace("```", "\n").splitlines():
        line = re.sub(r"^\s*(output|answer|tags)\s*:\s*", "", line.strip(), flags=re.I)
        if line:
            return line
    return ""


def repair_slots(raw: str, words: Sequence[str], *, with_intent: bool = False, max_edit: float = 0.5,
                 ) -> tuple[str, dict[str, int]]:
    """The repaired target for input ``words`` and the counts of repair actions (module doc)."""
    from .trees import align_words

    line = _reply_line(raw)
    acts: Counter = Counter()
    intent = None
    if SEP.strip() in line:
        head, line = line.split(SEP.strip(), 1)
        intent = head.strip() or None
    if with_intent and not intent:
        raise ParseError(raw, "'<intent> | word tag word tag ...'")
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for tok in line.split():
        if TAG.match(tok) or (tok == "o" and pending is not None):  # "o": an uncased model's O
            tag = "O" if tok in ("O", "o") else tok[0].upper() + tok[1:]
            if pending is None:
                acts["tag_dropped"] += 1
            else:
                pairs.append((pending, tag))
                pending = None
        else:
            if pending is not None:
                pairs.append((pending, "O"))
                acts["tag_added"] += 1
            pending = tok
    if pending is not None:
        pairs.append((pending, "O"))
        acts["tag_added"] += 1
    if not pairs:
        raise ParseError(raw, f"word tag pairs for {' '.join(words)!r}, e.g. 'show O flights O'")
    repl, after, head, al = align_words([w for w, _ in pairs], words)
    acts.update(al)
    edits = al["dropped"] + al["restored"] + al["substituted"] + acts["tag_added"]
    if edits > max_edit * max(1, len(words)):
        raise ParseError(raw, f"one tag per input word of {' '.join(words)!r} "
                              f"({edits} of {len(words)} words differ; at most {max_edit:.0%} are repaired)")
    out_w: list[str] = list(head)
    out_t: list[str] = ["O"] * len(head)
    for (_, tag), ws, extra in zip(pairs, repl, after):
        for k, w in enumerate(ws):
            out_w.append(w)
            out_t.append(tag if k == 0 or tag == "O" else "I-" + tag[2:])
        out_w.extend(extra)
        out_t.extend(["O"] * len(extra))
    assert out_w == list(words)
    acts.pop("case_restored", None)
    return to_target(out_w, out_t, intent if with_intent else None), {k: v for k, v in acts.items() if v}


def slot_scores(gold: Sequence[str], pred: Sequence[str | None]) -> dict[str, float]:
    """Slot F1 (seqeval, corpus), mean sentence chunk F1, exact match, intent accuracy, abstention
    rate. An abstention predicts all-``O`` for the corpus F1 (so its gold slots are missed) and
    scores 0 for the sentence mean; both are also counted in ``abstention_rate``."""
    from ..errors import require

    require("seqeval", "seq2seq", "slot F1")
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.metrics.sequence_labeling import get_entities

    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} items, predictions {len(pred)}")
    g_tags, p_tags, sent, exact, abst = [], [], [], 0, 0
    intents_right = n_intents = 0
    for i, (g, p) in enumerate(zip(gold, pred)):
        gi, gw, gt = parse_target(g)
        g_tags.append(gt)
        if p is None:
            abst += 1
            p_tags.append(["O"] * len(gt))
            sent.append(0.0)
            n_intents += gi is not None
            continue
        pi, pw, pt = parse_target(p)
        if [w.lower() for w in pw] != [w.lower() for w in gw]:
            raise ValueError(f"prediction {i} has words {pw} but gold has {gw}; repair it first")
        p_tags.append(pt)
        ge, pe = set(get_entities(gt)), set(get_entities(pt))
        if not ge and not pe:
            sent.append(1.0)
        else:
            m = len(ge & pe)
            pr, rc = (m / len(pe) if pe else 0.0), (m / len(ge) if ge else 0.0)
            sent.append(2 * pr * rc / (pr + rc) if pr + rc else 0.0)
        if gi is not None:
            n_intents += 1
            intents_right += int(pi == gi)
        exact += int(gt == pt and pi == gi)
    n = len(gold)
    out = {
        "slot_f1": float(f1_score(g_tags, p_tags, zero_division=0)) if n else 0.0,
        "slot_precision": float(precision_score(g_tags, p_tags, zero_division=0)) if n else 0.0,
        "slot_recall": float(recall_score(g_tags, p_tags, zero_division=0)) if n else 0.0,
        "sentence_f1": sum(sent) / n if n else 0.0,
        "exact_match": exact / n if n else 0.0,
    }
    if n_intents:
        out["intent_accuracy"] = intents_right / n_intents
    out.update({"abstention_rate": abst / n if n else 0.0, "n": n})
    return out
