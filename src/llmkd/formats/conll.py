"""Token-tagged data for NER: CoNLL column files, ``seq.in`` / ``seq.out`` slot folders, and the
BIO helpers every NER component shares.

Representation (the choice the NER task family rests on): an NER :class:`~llmkd.types.Example`
has ``text`` = its tokens joined by single spaces (tokens never contain whitespace, so
``text.split()`` gives them back exactly) and ``label`` = a tuple of **IOB2** tags, one per token
(``("B-person", "I-person", "O")``). Tags are what seqeval scores and what the token classifier
trains on; :func:`spans_from_tags` / :func:`tags_from_spans` convert to and from
:class:`~llmkd.types.Span` records (token offsets, end exclusive) where spans read better (the
teacher's prompt and reply, decoded student predictions).

Readers:

- ``conll``: one token per line, whitespace- or tab-separated columns, the token in the first
  column and the tag in the last (CoNLL-2003 ``word POS chunk NER``, WNUT-17 ``word<TAB>tag``);
  a blank line ends a sentence; ``-DOCSTART-`` lines are skipped wherever they are.
- ``seq_in_out``: a folder with ``seq.in`` (one whitespace-tokenized sentence per line) and
  ``seq.out`` (one tag per token), as in the ATIS / SNIPS slot-filling releases.

Tags may be IOB1 (CoNLL-2003: ``I-`` everywhere, ``B-`` only between two touching entities of one
type) or IOB2; both are normalised to IOB2 (:func:`to_iob2`; a no-op on valid IOB2).
``data.label_map`` renames entity *types* (``PER`` -> ``person``); mapping a type to ``O``
removes it, and the key ``"*"`` maps every type that is neither a key nor in ``data.labels``
(``{"*": O}`` keeps only the listed types: handy for ATIS' 80 slot types).

Checked (DataError naming ``file:line`` and the fix): every token line of a CoNLL file has as many
columns as the first; the tag column (``data.tag_column``, default the last) holds IOB tags on
every line; a last column that holds chunk tags only (``B-NP``, ``I-VP``: a CoNLL-2003 file
without its NER column) is rejected unless ``data.tag_column`` names it. Not handled: IOBES /
BILOU tags (rejected with a DataError), nested or discontinuous entities, document context
(sentences are independent examples).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import DataError
from ..types import Example, Span


# -- BIO helpers ------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    """The tokens of an NER example's text (whitespace tokenization, see the module docstring)."""
    return text.split()


def split_tag(tag: str) -> tuple[str, str | None]:
    """``"B-person"`` -> ``("B", "person")``; ``"O"`` -> ``("O", None)``."""
    if tag == "O":
        return "O", None
    prefix, sep, typ = tag.partition("-")
    if not sep or prefix not in ("B", "I") or not typ:
        raise ValueError(
            f"tag {tag!r} is not a BIO tag; expected 'O', 'B-<type>' or 'I-<type>' (IOBES/BILOU are not supported)"
        )
    return prefix, typ


def to_iob2(tags: Sequence[str]) -> tuple[str, ...]:
    """IOB1 or IOB2 -> IOB2: an ``I-X`` that starts a chunk (after ``O`` or another type) becomes
    ``B-X``. Valid IOB2 is returned unchanged; it also repairs a tagger's stray ``I-`` tags."""
    out: list[str] = []
    prev_type: str | None = None
    for tag in tags:
        prefix, typ = split_tag(tag)
        if prefix == "I" and typ != prev_type:
            tag = f"B-{typ}"
        out.append(tag)
        prev_type = typ
    return tuple(out)


def spans_from_tags(tags: Sequence[str], tokens: Sequence[str] | None = None) -> list[Span]:
    """Decode IOB2 tags into spans (a stray ``I-X`` starts a new span, as :func:`to_iob2` does)."""
    spans: list[Span] = []
    start, typ = -1, None
    for i, tag in enumerate(list(to_iob2(tags)) + ["O"]):
        prefix, t = split_tag(tag)
        if typ is not None and prefix != "I":
            spans.append(Span(start, i, typ, " ".join(tokens[start:i]) if tokens is not None else ""))
            typ = None
        if prefix == "B":
            start, typ = i, t
    return spans


def tags_from_spans(n: int, spans: Iterable[Span]) -> tuple[str, ...]:
    """IOB2 tags of ``n`` tokens with the given (non-overlapping) spans."""
    tags = ["O"] * n
    for s in spans:
        if not 0 <= s.start < s.end <= n:
            raise ValueError(f"span {s} is outside the sentence of {n} tokens")
        if any(t != "O" for t in tags[s.start : s.end]):
            raise ValueError(f"span {s} overlaps another span")
        tags[s.start] = f"B-{s.type}"
        for i in range(s.start + 1, s.end):
            tags[i] = f"I-{s.type}"
    return tuple(tags)


def tag_set(types: Sequence[str]) -> tuple[str, ...]:
    """The tagger's output classes: ``O`` then ``B-``/``I-`` of every type, in type order."""
    return ("O",) + tuple(f"{p}-{t}" for t in types for p in ("B", "I"))


def entity_types(examples: Iterable[Example]) -> list[str]:
    """The entity types that occur in tagged examples, sorted."""
    return sorted({split_tag(t)[1] for ex in examples for t in ex.label if t != "O"})  # type: ignore[misc]


def is_tagged(examples: Sequence[Example]) -> bool:
    return bool(examples) and isinstance(examples[0].label, tuple)


# -- readers ----------------------------------------------------------------------------------
def tagged_sentence(tokens: list[str], raw_tags: list[str], label_map: dict[str, str], where: str,
              keep: Sequence[str] | None = None) -> tuple[str, tuple[str, ...]]:
    """The text and IOB2 tags of one sentence: ``label_map`` (and its ``"*"`` key) renames entity
    types, IOB1 becomes IOB2; a DataError at ``where`` for a tag that is not a BIO tag."""
    mapped = []
    for tag in raw_tags:
        try:
            prefix, typ = split_tag(tag)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
        if typ is not None:
            if typ not in label_map and "*" in label_map and typ not in (keep or ()):
                typ = label_map["*"]
            mapped_typ = label_map.get(typ, typ)
            if not mapped_typ.strip():
                raise DataError(f"{where}: data.label_map maps the entity type {typ!r} to an empty type; map it to a "
                                "type name, or to 'O' to drop it")
            typ = mapped_typ
            tag = "O" if typ == "O" else f"{prefix}-{typ}"
        mapped.append(tag)
    return " ".join(tokens), to_iob2(mapped)


CHUNK_TYPES = frozenset({"NP", "VP", "PP", "ADVP", "ADJP", "SBAR", "PRT", "CONJP", "INTJ", "LST", "UCP"})
"""The phrase types of CoNLL-2000 / CoNLL-2003 chunk tags (``B-NP``): a tag column of these only is
the chunk column, not NER tags."""

_IOBES = ("E-", "S-", "L-", "U-")


def _check_tag(tag: str, where: str, column: int, n_cols: int, explicit: bool) -> None:
    """DataError unless ``tag`` is an IOB tag (O, B-X, I-X), naming the column and the fix."""
    try:
        split_tag(tag)
    except ValueError:
        pass
    else:
        return
    if tag.startswith(_IOBES):
        raise DataError(f"{where}: tag {tag!r} (column {column}) is an IOBES/BILOU tag, which is not supported; "
                        "convert the file to IOB2 (S-X -> B-X, E-X / L-X -> I-X, U-X -> B-X)")
    which = "data.tag_column" if explicit else "the last column (data.tag_column unset)"
    raise DataError(
        f"{where}: column {column} of {n_cols} holds {tag!r}, which is not an NER tag (O, B-<type>, I-<type>); "
        f"the tags are read from {which}: set data.tag_column to the column of the NER tags (1 = the token)"
    )


def read_conll(path: Path, *, encoding: str = "utf-8", label_map: dict[str, str] | None = None,
               prefix: str = "", keep: Sequence[str] | None = None, tag_column: int | None = None) -> list[Example]:
    """Read a CoNLL column file (see the module docstring). Example ids are
    ``<prefix><line number of the sentence's first token>``. Every token line must have as many
    columns as the first; the tag column (``tag_column``, 1-based, default the last) must hold IOB
    tags, and when it is not given, a last column of chunk tags only (``B-NP``: a file without its
    NER column) is rejected."""
    from .text import read_text

    label_map = label_map or {}
    out: list[Example] = []
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    n_cols = 0  # columns of the first token line
    n_cols_line = 0
    types: dict[str, int] = {}  # entity type -> first line

    def flush() -> None:
        if tokens:
            text, label = tagged_sentence(tokens, tags, label_map, f"{path}:{first}", keep)
            out.append(Example(id=f"{prefix}{first}", text=text, label=label))
        tokens.clear()
        tags.clear()

    for lineno, line in enumerate(read_text(path, encoding).split("\n"), 1):
        if not line.strip():
            flush()
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        cols = [c.strip() for c in cols]
        if cols[0].startswith("-DOCSTART-"):
            flush()
            continue
        if len(cols) < 2 or not cols[0] or not cols[-1]:
            raise DataError(
                f"{path}:{lineno}: expected a token and a tag separated by whitespace or a tab "
                f"(CoNLL format: token first, tag last), got {line!r}"
            )
        if not n_cols:
            n_cols, n_cols_line = len(cols), lineno
        elif len(cols) != n_cols:
            raise DataError(
                f"{path}:{lineno}: {len(cols)} columns, but line {n_cols_line} has {n_cols}; every token line of a "
                f"CoNLL file needs the same columns (token first, NER tag last): fix this line ({line!r})"
            )
        column = tag_column or n_cols
        if column > n_cols:
            raise DataError(f"{path}:{lineno}: data.tag_column is {column}, but the lines have {n_cols} columns; "
                            "set data.tag_column to the column of the NER tags (1 = the token)")
        tag = cols[column - 1]
        _check_tag(tag, f"{path}:{lineno}", column, n_cols, tag_column is not None)
        if tag != "O":
            types.setdefault(tag[2:], lineno)
        if not tokens:
            first = lineno
        tokens.append("".join(cols[0].split()) or "_")  # a token never holds whitespace
        tags.append(tag)
    flush()
    if not out:
        raise DataError(f"{path}: no sentences found (expected one 'token ... tag' line per token, "
                        "a blank line between sentences)")
    if tag_column is None and "NP" in types and set(types) <= CHUNK_TYPES:
        raise DataError(
            f"{path}:{types['NP']}: the tag column (column {n_cols}, the last) holds chunk tags (types "
            f"{', '.join(sorted(types))}), not NER tags: a CoNLL file without its NER column? Use the file with NER "
            f"tags (CoNLL-2003: token POS chunk NER), or set data.tag_column to the column of the NER tags"
        )
    return out


def read_seq_in_out(folder: Path, *, encoding: str = "utf-8", label_map: dict[str, str] | None = None,
                    prefix: str = "", keep: Sequence[str] | None = None) -> list[Example]:
    """Read a ``seq.in`` / ``seq.out`` folder (ATIS, SNIPS). Ids are ``<prefix><line number>``."""
    label_map = label_map or {}
    fin, fout = folder / "seq.in", folder / "seq.out"
    missing = [p.name for p in (fin, fout) if not p.exists()]
    if missing:
        have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise DataError(f"{folder}: format seq_in_out needs the files seq.in and seq.out in this folder; "
                        f"missing {missing}, found {have}")
    from .text import read_text

    sents = read_text(fin, encoding).splitlines()
    tagl = read_text(fout, encoding).splitlines()
    if len(sents) != len(tagl):
        raise DataError(f"{folder}: seq.in has {len(sents)} lines but seq.out has {len(tagl)}; they must match line by line")
    out: list[Example] = []
    for lineno, (s, t) in enumerate(zip(sents, tagl), 1):
        toks, tags = s.split(), t.split()
        if not toks and not tags:
            continue
        if len(toks) != len(tags):
            raise DataError(f"{folder}/seq.in:{lineno}: {len(toks)} tokens but seq.out line {lineno} has "
                            f"{len(tags)} tags; every token needs exactly one tag")
        text, label = tagged_sentence(toks, tags, label_map, f"{folder}/seq.out:{lineno}", keep)
        out.append(Example(id=f"{prefix}{lineno}", text=text, label=label))
    if not out:
        raise DataError(f"{folder}: no sentences found in seq.in")
    return out


def read_tagged(path: Path, fmt: str, *, encoding: str = "utf-8", label_map: dict[str, Any] | None = None,
                prefix: str = "", keep: Sequence[str] | None = None, tag_column: int | None = None) -> list[Example]:
    """Dispatch on ``fmt`` (``conll`` or ``seq_in_out``)."""
    if fmt == "seq_in_out":
        if not path.is_dir():
            raise DataError(f"{path}: format seq_in_out expects a folder holding seq.in and seq.out, got a file")
        return read_seq_in_out(path, encoding=encoding, label_map=label_map, prefix=prefix, keep=keep)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; format conll expects a file (for seq.in/seq.out folders set "
                        "data.format: seq_in_out)")
    return read_conll(path, encoding=encoding, label_map=label_map, prefix=prefix, keep=keep, tag_column=tag_column)


def check_tag_types(examples: Sequence[Example], types: Sequence[str], source: str) -> None:
    allowed = set(types)
    for ex in examples:
        for tag in ex.label:
            typ = split_tag(tag)[1]
            if typ is not None and typ not in allowed:
                raise DataError(
                    f"{source}: example {ex.id} has entity type {typ!r}, which is not in data.labels "
                    f"{list(types)}. Add it to data.labels, rename it with data.label_map, or map it to 'O' to drop it."
                )
