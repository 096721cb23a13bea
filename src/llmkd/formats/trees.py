"""Constituency trees for seq2seq parsing: read treebank brackets, linearize, repair, score.

MCKD (Zhao et al. 2023, arXiv 2311.08640, v1 §3 and Table 2) casts constituency parsing as
sequence generation: the input is the sentence, the output its *unlabeled* bracketing with every
word kept as a leaf, e.g. ``( ( The ( big cat ) ) ( sat ) )``. This module does every tree step:

* :func:`read_trees` reads Penn-style bracket files (one tree per line, or a tree over several
  lines with indented continuation lines, as PTB ``.mrg``; the outer nameless ``( (S ...) )``
  wrapper of PTB and CRAFT is allowed). Unbalanced brackets are a DataError naming the line.
* :func:`clean` removes traces (``-NONE-``), punctuation (:data:`PUNCT_TAGS`), function tags and
  indices (``NP-SBJ-1`` -> ``NP``), empty constituents and the POS layer (preterminals become
  plain words).  The paper's metric removes punctuation; we remove it from the *input* too, so
  input words, target leaves and scored spans all refer to the same word sequence.
* :func:`linearize` writes the target: unlabeled (the paper; unary chains collapse, since they
  have one span) or labeled (``(S (NP The big cat ) (VP sat ) )``, our extension, for EVALB-style
  labeled F1).
* :func:`repair` validates a generated tree against the input words and repairs it (see its
  docstring for the exact steps). What cannot be repaired raises :class:`~llmkd.errors.ParseError`,
  which callers count as an abstention.
* :func:`bracket_scores` computes unlabeled bracket F1 over spans of length >= 2, both as the
  mean of sentence-level F1 (the paper's number) and corpus-level, plus labeled EVALB-style F1
  when the trees carry labels.

Choices the paper leaves open (documented here and in docs/results/parsing.md):

* the whole-sentence span counts (it has length >= 2); duplicate spans (unary chains) count once
  in unlabeled scoring and once per label in labeled scoring (EVALB counts unary brackets);
* a sentence whose gold and predicted trees have no span of length >= 2 (one-word sentences)
  scores sentence F1 = 1; an abstention scores sentence F1 = 0 *and* is counted
  (``abstention_rate``), never silently;
* punctuation is what EVALB's COLLINS.prm deletes (``, . : `` ''``) plus brackets ``-LRB- -RRB-``
  and OntoNotes' ``HYPH`` / ``NFP`` (CRAFT has them).

Not handled: discontinuous constituents, trees whose words contain literal parentheses (PTB and
CRAFT write them as ``-LRB-``/``-RRB-``, which are punctuation and removed).
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

from ..errors import DataError, ParseError

PUNCT_TAGS = frozenset({",", ".", ":", "``", "''", "-LRB-", "-RRB-", "HYPH", "NFP", "-NONE-"})
"""POS tags whose words are removed before linearizing and scoring (``-NONE-`` = traces)."""

_TOKEN = re.compile(r"\(|\)|[^\s()]+")


@dataclass
class Node:
    """A constituent: a label ("" when unlabeled) and children that are nodes or words."""

    label: str
    children: list[Union["Node", str]] = field(default_factory=list)

    def leaves(self) -> list[str]:
        out: list[str] = []
        for c in self.children:
            out.extend(c.leaves() if isinstance(c, Node) else [c])
        return out


# -- reading ------------------------------------------------------------------------------------
def read_trees(text: str, *, source: str = "<string>") -> list[Node]:
    """All bracketed trees in ``text`` (Penn format). A tree starts on a new line, and a line that
    starts with ``(`` (no indentation) starts a new tree: one tree per line, or a tree over several
    lines whose continuation lines are indented (PTB ``.mrg``). Raises DataError naming the line
    when brackets do not balance: a ``)`` that closes nothing, a tree still open where the next
    tree starts or at the end of the text, or a tree that closes before the end of its line with
    another one after it on the same line (two bracket errors that cancel out are caught here)."""
    trees: list[Node] = []
    stack: list[Node] = []
    line = 1
    line_start = 0  # offset of the current line in text
    pos = 0
    start_line = 1
    closed_at: tuple[int, int] | None = None  # (line, column) where the last tree closed
    for m in re.finditer(r"\(|\)|[^\s()]+|\n", text):
        tok = m.group()
        if tok == "\n":
            line += 1
            line_start = m.end()
            continue
        if tok == "(":
            if not stack:
                if closed_at is not None and closed_at[0] == line:
                    raise DataError(
                        f"{source}:{line}: the tree starting at line {start_line} closes at column {closed_at[1]} of "
                        f"this line and another tree starts at column {m.start() - line_start + 1}: a ')' too many "
                        "in that tree? Remove it (each tree starts on a line of its own)")
                start_line = line
            elif m.start() == line_start:
                raise DataError(
                    f"{source}:{start_line}: the tree starting here is not closed (missing ')'): {len(stack)} "
                    f"bracket{'s are' if len(stack) > 1 else ' is'} still open where the next tree starts at line "
                    f"{line} (a line that starts with '(' starts a tree; indent the lines inside a tree). Add the "
                    "missing ')'")
            node = Node("")
            if stack:
                stack[-1].children.append(node)
            stack.append(node)
            pos = m.end()
        elif tok == ")":
            if not stack:
                raise DataError(f"{source}:{line}: a ')' closes no open bracket; the file's brackets do not balance")
            node = stack.pop()
            if not stack:
                trees.append(node)
                closed_at = (line, m.start() - line_start + 1)
        else:
            if not stack:
                raise DataError(f"{source}:{line}: text {tok!r} outside any tree; expected '(' to start a tree")
            top = stack[-1]
            if not top.label and not top.children and m.start() == pos:
                top.label = tok  # "(NP" : the label follows the bracket directly
            else:
                top.children.append(tok)
    if stack:
        raise DataError(f"{source}:{start_line}: the tree starting here is not closed (missing ')'): "
                        f"{len(stack)} bracket{'s are' if len(stack) > 1 else ' is'} still open at the end of the "
                        "file; add the missing ')'")
    return trees


def _base_label(label: str) -> str:
    if not label or label.startswith("-"):
        return label
    return re.split(r"[-=]", label)[0] or label


def clean(tree: Node, *, punct_tags: frozenset[str] = PUNCT_TAGS) -> Node | None:
    """Remove traces, punctuation, function tags, empty constituents and the POS layer. Returns
    None when nothing is left (a tree of punctuation only)."""

    def walk(node: Node) -> Node | str | None:
        if len(node.children) == 1 and isinstance(node.children[0], str):  # preterminal (POS word)
            return None if node.label in punct_tags else node.children[0]
        kids = [k for k in (walk(c) if isinstance(c, Node) else c for c in node.children) if k is not None]
        if not kids:
            return None
        return Node(_base_label(node.label), kids)

    out = walk(tree)
    while isinstance(out, Node) and out.label in ("", "TOP", "ROOT") and len(out.children) == 1 \
            and isinstance(out.children[0], Node):
        out = out.children[0]  # the nameless wrapper of PTB / CRAFT files
    if out is None:
        return None
    return out if isinstance(out, Node) else Node("", [out])


def linearize(tree: Node, *, labeled: bool = False) -> str:
    """The target string. Unlabeled: ``( ( The ( big cat ) ) ( sat ) )`` with unary chains
    collapsed; labeled: ``(S (NP The ( big cat ) ) (VP sat ) )``."""
    parts: list[str] = []

    def walk(node: Node) -> None:
        if not labeled:
            while len(node.children) == 1 and isinstance(node.children[0], Node):
                node = node.children[0]
        parts.append("(" + (node.label if labeled else ""))
        for c in node.children:
            if isinstance(c, Node):
                walk(c)
            else:
                parts.append(c)
        parts.append(")")

    walk(tree)
    return " ".join(parts)


def right_branching(words: Sequence[str]) -> str:
    """The right-branching unlabeled tree over ``words`` (``( a ( b ( c d ) ) )``): every suffix of
    two or more words is a constituent. Parsing's trivial baseline; English leans right, so it
    scores well above zero (MCKD's teacher has to beat it to be worth distilling)."""
    if not words:
        raise ValueError("a tree needs at least one word")
    root = node = Node("")
    for i, word in enumerate(words):
        if i < len(words) - 2:
            child = Node("")
            node.children.extend([word, child])
            node = child
        else:
            node.children.append(word)
    return linearize(root)


def from_linearized(text: str, *, labels: Iterable[str] | None = None) -> Node:
    """Read a linearized tree (strict: one balanced tree). ``labels``: the label set of labeled
    trees; ``(X`` with X outside it is read as a bracket followed by the word X."""
    known = set(labels or ())
    stack: list[Node] = []
    root: Node | None = None
    for m in re.finditer(r"\(([^\s()]*)|\)|[^\s()]+", text):
        tok = m.group()
        if tok.startswith("("):
            if root is not None and not stack:
                raise ValueError(f"more than one tree in {text!r}")
            glued = m.group(1)
            node = Node(glued if glued in known else "")
            if glued and glued not in known:
                node.children.append(glued)
            if stack:
                stack[-1].children.append(node)
            stack.append(node)
        elif tok == ")":
            if not stack:
                raise ValueError(f"unbalanced ')' in {text!r}")
            node = stack.pop()
            if not stack:
                root = node
        else:
            if not stack:
                raise ValueError(f"word {tok!r} outside the tree in {text!r}")
            stack[-1].children.append(tok)
    if stack or root is None:
        raise ValueError(f"unbalanced or empty tree {text!r}")
    return root


# -- repair -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Repair:
    """A repaired tree and what was done to it (counts per action, see :func:`repair`)."""

    tree: str
    actions: dict[str, int]

    @property
    def repaired(self) -> bool:
        return bool(self.actions)


def _reply_line(raw: str) -> str:
    """The line of a reply that holds the tree: drop code fences and an ``Output:`` prefix."""
    text = raw.replace("```", "\n")
    for line in text.splitlines():
        line = re.sub(r"^\s*(output|tree|parse|answer)\s*:\s*", "", line.strip(), flags=re.I)
        if "(" in line or ")" in line:
            return line
    return ""


def align_words(pred: Sequence[str], words: Sequence[str]
                ) -> tuple[list[list[str]], list[list[str]], list[str], Counter]:
    """Map each predicted word to the input words that replace it (possibly none) so that the
    concatenation is ``words`` exactly. Returns (per-pred replacement, per-pred restored words
    that follow it, restored words before the first pred word, action counts). Shared by tree
    and slot repair."""
    acts: Counter = Counter()
    repl: list[list[str]] = [[] for _ in pred]
    after: list[list[str]] = [[] for _ in pred]
    head: list[str] = []
    sm = difflib.SequenceMatcher(None, [w.lower() for w in pred], [w.lower() for w in words], autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            for k in range(i2 - i1):
                repl[i1 + k] = [words[j1 + k]]
                if pred[i1 + k] != words[j1 + k]:
                    acts["case_restored"] += 1
        elif op == "replace":
            if "".join(pred[i1:i2]).lower() == "".join(words[j1:j2]).lower():
                repl[i1] = list(words[j1:j2])  # merged or split tokens: re-split onto the input words
                acts["resplit"] += 1
            elif i2 - i1 == j2 - j1:
                for k in range(i2 - i1):
                    repl[i1 + k] = [words[j1 + k]]
                acts["substituted"] += j2 - j1
            else:
                repl[i1] = list(words[j1:j2])
                acts["substituted"] += max(i2 - i1, j2 - j1)
        elif op == "delete":
            acts["dropped"] += i2 - i1
        elif op == "insert":
            if i1 == 0:
                head.extend(words[j1:j2])
            else:
                after[i1 - 1].extend(words[j1:j2])
            acts["restored"] += j2 - j1
    return repl, after, head, acts


def repair(raw: str, words: Sequence[str], *, labels: Iterable[str] | None = None,
           max_edit: float = 0.5) -> Repair:
    """Validate a generated tree against the input ``words`` and repair it, in this order:

    1. take the reply line that holds brackets (code fences and an ``Output:`` prefix dropped);
       no bracket at all -> ParseError;
    2. tokenize into ``(``/``(LABEL``, ``)`` and words (``(word`` glued without a space is a
       bracket plus a word unless ``word`` is a known label);
    3. align the leaves with the input words (case-insensitive, difflib): case is restored from
       the input; merged or split tokens whose concatenation matches are re-split onto the input
       words (``resplit``); extra words are dropped (``dropped``); missing input words are put back
       after the preceding leaf, inside its constituent (``restored``); other mismatches take the
       input word (``substituted``). If dropped + restored + substituted exceeds
       ``max_edit`` x len(words), the output is not a parse of this sentence -> ParseError;
    4. balance: a ``)`` that closes nothing is dropped (``closed_dropped``), missing ``)`` are
       added at the end (``closed_added``), several top-level pieces are wrapped in one root
       bracket (``root_added``); empty brackets ``( )`` are removed (``empty_dropped``).

    The result is re-linearized in canonical form. ``actions`` counts each step that fired.
    """
    known = set(labels or ())
    labeled = bool(known)
    line = _reply_line(raw)
    if not line:
        raise ParseError(raw, "a bracketed tree such as ( ( The cat ) ( sat ) )")
    toks: list[tuple[str, str]] = []  # ("open", label) | ("close", "") | ("word", w)
    for m in re.finditer(r"\(([^\s()]*)|\)|[^\s()]+", line):
        tok = m.group()
        if tok.startswith("("):
            glued = m.group(1)
            toks.append(("open", glued if glued in known else ""))
            if glued and glued not in known:
                toks.append(("word", glued))
        elif tok == ")":
            toks.append(("close", ""))
        else:
            toks.append(("word", tok))
    pred_words = [t for k, t in toks if k == "word"]
    if not pred_words:
        raise ParseError(raw, f"a tree over the words {' '.join(words)!r}, got no words")
    repl, after, head, acts = align_words(pred_words, words)
    edits = acts["dropped"] + acts["restored"] + acts["substituted"]
    if edits > max_edit * max(1, len(words)):
        raise ParseError(raw, f"a tree whose leaves are the input words {' '.join(words)!r} "
                              f"({edits} of {len(words)} words differ; at most {max_edit:.0%} are repaired)")
    # rebuild the token stream with the input words
    out: list[tuple[str, str]] = []
    wi = 0
    for kind, val in toks:
        if kind == "word":
            if wi == 0 and head:
                out.extend(("word", w) for w in head)
            out.extend(("word", w) for w in repl[wi] + after[wi])
            wi += 1
        else:
            out.append((kind, val))
    # balance
    depth = 0
    balanced: list[tuple[str, str]] = []
    for kind, val in out:
        if kind == "close":
            if depth == 0:
                acts["closed_dropped"] += 1
                continue
            depth -= 1
        elif kind == "open":
            depth += 1
        balanced.append((kind, val))
    if depth:
        acts["closed_added"] += depth
        balanced.extend([("close", "")] * depth)
    # top-level pieces
    pieces = 0
    depth = 0
    for kind, _ in balanced:
        if depth == 0 and kind != "close":
            pieces += 1
        depth += 1 if kind == "open" else -1 if kind == "close" else 0
    if pieces != 1 or balanced[0][0] != "open":
        acts["root_added"] += 1
        balanced = [("open", "")] + balanced + [("close", "")]
    tree = _build(balanced, acts)
    if tree is None:
        raise ParseError(raw, "a tree with at least one word")
    acts = Counter({k: v for k, v in acts.items() if v})
    acts.pop("case_restored", None)  # not a structural repair: bert2bert students are uncased
    if tree.leaves() != list(words):  # pragma: no cover - the alignment guarantees it
        raise ParseError(raw, f"leaves equal to the input words {' '.join(words)!r}")
    return Repair(linearize(tree, labeled=labeled), dict(acts))


def _build(toks: list[tuple[str, str]], acts: Counter) -> Node | None:
    stack: list[Node] = [Node("")]
    for kind, val in toks:
        if kind == "open":
            node = Node(val)
            stack[-1].children.append(node)
            stack.append(node)
        elif kind == "close":
            node = stack.pop()
            if not node.children:
                stack[-1].children.pop()
                acts["empty_dropped"] += 1
        else:
            stack[-1].children.append(val)
    top = stack[0]
    if not top.children:
        return None
    return top.children[0] if isinstance(top.children[0], Node) else None


# -- scoring ------------------------------------------------------------------------------------
def spans(tree: Node) -> tuple[set[tuple[int, int]], Counter]:
    """(unlabeled spans of length >= 2 as (start, end) word offsets, labeled constituents as a
    multiset of (label, start, end) of every length). Offsets count words of ``tree.leaves()``."""
    unl: set[tuple[int, int]] = set()
    lab: Counter = Counter()

    def walk(node: Node, start: int) -> int:
        end = start
        for c in node.children:
            end = walk(c, end) if isinstance(c, Node) else end + 1
        if end - start >= 2:
            unl.add((start, end))
        if node.label:
            lab[(node.label, start, end)] += 1
        return end

    walk(tree, 0)
    return unl, lab


def _prf(match: float, n_pred: float, n_gold: float) -> tuple[float, float, float]:
    p = match / n_pred if n_pred else 0.0
    r = match / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def bracket_scores(gold: Sequence[str], pred: Sequence[str | None], *, labels: Iterable[str] | None = None,
                   ) -> dict[str, float]:
    """Bracket F1 of linearized trees. ``pred`` items are repaired trees or None (abstention).

    Keys: ``sentence_f1`` (mean of per-sentence unlabeled F1, MCKD's number; abstentions count 0),
    ``corpus_f1`` / ``corpus_precision`` / ``corpus_recall`` (unlabeled, pooled counts; an
    abstention adds its gold spans to the recall denominator), ``labeled_f1`` (EVALB-style,
    pooled, only when ``labels`` is given), ``exact_match``, ``abstention_rate`` and ``n``.
    A prediction whose leaves differ from the gold leaves raises ValueError: repair it first.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} trees, predictions {len(pred)}")
    known = list(labels or ())
    sent_f1: list[float] = []
    m_u = p_u = g_u = 0
    m_l = p_l = g_l = 0
    exact = abst = 0
    for i, (g, p) in enumerate(zip(gold, pred)):
        gt = from_linearized(g, labels=known)
        gu, gl = spans(gt)
        g_u += len(gu)
        g_l += sum(gl.values())
        if p is None:
            abst += 1
            sent_f1.append(0.0)
            continue
        pt = from_linearized(p, labels=known)
        if pt.leaves() != gt.leaves():
            raise ValueError(f"prediction {i} has leaves {pt.leaves()} but gold has {gt.leaves()}; repair it first")
        pu, pl = spans(pt)
        match = len(gu & pu)
        m_u += match
        p_u += len(pu)
        m_l += sum((gl & pl).values())
        p_l += sum(pl.values())
        sent_f1.append(1.0 if not gu and not pu else _prf(match, len(pu), len(gu))[2])
        exact += int(gu == pu and (not known or gl == pl))
    n = len(gold)
    cp, cr, cf = _prf(m_u, p_u, g_u)
    out = {
        "sentence_f1": sum(sent_f1) / n if n else 0.0,
        "corpus_f1": cf, "corpus_precision": cp, "corpus_recall": cr,
    }
    if known:
        out["labeled_f1"] = _prf(m_l, p_l, g_l)[2]
    out.update({"exact_match": exact / n if n else 0.0, "abstention_rate": abst / n if n else 0.0, "n": n})
    return out


def tree_words(linearized: str) -> list[str]:
    """The words (leaves) of a linearized tree, labeled or not (``(X`` counts as a label)."""
    return [t for t in _TOKEN.findall(re.sub(r"\([^\s()]*", "(", linearized)) if t not in ("(", ")")]


def tree_labels(linearized: str) -> set[str]:
    """The constituent labels used in a labeled linearized tree."""
    return {m for m in re.findall(r"\(([^\s()]+)", linearized)}


# -- treebank files -----------------------------------------------------------------------------
def _member_filter(select: str | list[str] | None, base: Path) -> Callable[[str], bool]:
    """A predicate on file names from ``data.members.<split>``: glob patterns (a list) or the path
    of a file listing document ids, one per line (matched against the file name's stem)."""
    import fnmatch
    from pathlib import Path

    if select is None:
        return lambda name: True
    if isinstance(select, str):
        path = Path(select) if Path(select).is_absolute() else base / select
        if not path.exists():
            raise DataError(f"data.members: the document id file {path} does not exist "
                            "(a relative path is read from the folder of the data file)")
        ids = {x.strip() for x in path.read_text().split() if x.strip()}
        return lambda name: Path(name).name.split(".")[0] in ids
    return lambda name: any(fnmatch.fnmatch(Path(name).name, pat) for pat in select)


def read_treebank(path: str | Path, *, members: str | list[str] | None = None,
                  encoding: str = "utf-8") -> list[tuple[str, Node]]:
    """(id, tree) for every tree in a bracket file, a folder of them (``*.mrg``, ``*.tree``,
    ``*.txt``, ``*.trees``, read in name order) or a ``.tar.gz`` of them. ``members`` selects files
    (see :func:`_member_filter`). Ids are ``<file stem>:<tree index>``."""
    import tarfile
    from pathlib import Path

    from .text import decode, read_text

    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist; check data.train / data.test / data.dev")
    keep = _member_filter(members, path.parent if path.is_file() else path)
    exts = (".mrg", ".tree", ".trees", ".txt", ".ptb")
    files: list[tuple[str, str]] = []
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in exts):
            if keep(f.name):
                files.append((str(f), read_text(f, encoding)))
    elif path.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as tar:
            for m in sorted(tar.getmembers(), key=lambda m: m.name):
                if m.isfile() and Path(m.name).suffix in exts and keep(m.name):
                    fh = tar.extractfile(m)
                    assert fh is not None
                    files.append((f"{path}!{m.name}", decode(fh.read(), encoding, f"{path}!{m.name}")))
    else:
        files.append((str(path), read_text(path, encoding)))
    if not files:
        raise DataError(f"{path}: no tree files selected (looked for {', '.join(exts)}"
                        f"{'' if members is None else f' matching data.members {members!r}'})")
    out: list[tuple[str, Node]] = []
    file_of: dict[str, str] = {}  # file stem -> the file it came from
    for name, text in files:
        stem = Path(name.split("!")[-1]).name.split(".")[0]
        if stem in file_of:
            raise DataError(f"{name}: its trees would get the ids {stem}:0, {stem}:1, ... of the trees of "
                            f"{file_of[stem]} (ids are <file name up to the first '.'>:<index>); rename one of the "
                            "two files, or select one with data.members")
        file_of[stem] = name
        for i, tree in enumerate(read_trees(text, source=name)):
            out.append((f"{stem}:{i}", tree))
    return out
