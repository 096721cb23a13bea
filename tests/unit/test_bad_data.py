"""Bad data inputs are rejected, never read wrongly (issue 25 items 3 and 9): one table of small
bad files, each with the exact fragments its DataError must hold (what, file:line, the fix), plus
the readings that must stay right."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import pytest

from llmkd.config import DataConfig
from llmkd.data import read_examples, read_split
from llmkd.errors import DataError


def cfg(**kw: Any) -> DataConfig:
    base: dict[str, Any] = {"train": "unused", "test": "unused"}
    base.update(kw)
    return DataConfig(**base)


def read(path: Path, c: DataConfig) -> list:
    return read_split(path, c, "train") if c.format == "brackets" else read_examples(path, c)


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


NOT_NER = ("which is not an NER tag (O, B-<type>, I-<type>); the tags are read from the last column "
           "(data.tag_column unset): set data.tag_column to the column of the NER tags (1 = the token)")
TREE_OPEN = "(a line that starts with '(' starts a tree; indent the lines inside a tree). Add the missing ')'"
CONLL_LINES = "EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n"

BAD = [
    # -- item 2: CoNLL columns and tags
    ("conll-chunk-column", "d.conll", "EU NNP B-NP\nrejects VBZ B-VP\nGerman JJ B-NP\n\nPeter NNP B-NP\n", {},
     ["{path}:1: the tag column (column 3, the last) holds chunk tags (types NP, VP), not NER tags: a CoNLL file "
      "without its NER column? Use the file with NER tags (CoNLL-2003: token POS chunk NER), or set "
      "data.tag_column to the column of the NER tags"]),
    ("conll-column-count", "d.conll", "EU NNP B-NP B-ORG\nrejects VBZ B-VP\n", {},
     ["{path}:2: 3 columns, but line 1 has 4; every token line of a CoNLL file needs the same columns (token "
      "first, NER tag last): fix this line ('rejects VBZ B-VP')"]),
    ("conll-pos-column-last", "d.conll", "EU B-ORG NNP\n", {}, ["{path}:1: column 3 of 3 holds 'NNP', " + NOT_NER]),
    ("conll-iobes", "d.conll", "EU S-ORG\n", {},
     ["{path}:1: tag 'S-ORG' (column 2) is an IOBES/BILOU tag, which is not supported; convert the file to IOB2"]),
    ("conll-label-map-empty", "d.conll", CONLL_LINES, {"label_map": {"ORG": ""}},
     ["{path}:1: data.label_map maps the entity type 'ORG' to an empty type; map it to a type name, or to 'O'"]),
    # -- item 3: bracket trees
    ("trees-errors-cancel-out", "d.mrg", "(S (NP a) (VP b)\n(S (NP c) (VP d)))\n(S (NP e) (VP f))\n",
     {"format": "brackets"},
     ["{path}:1: the tree starting here is not closed (missing ')'): 1 bracket is still open where the next tree "
      "starts at line 2 " + TREE_OPEN]),
    ("trees-closes-early", "d.mrg", "(S (NP a)) (VP b)\n", {"format": "brackets"},
     ["{path}:1: the tree starting at line 1 closes at column 10 of this line and another tree starts at column 12: "
      "a ')' too many in that tree? Remove it (each tree starts on a line of its own)"]),
    ("trees-open-at-end", "d.mrg", "(S (NP a) (VP b))\n( (S (NP c)\n    (VP d))\n", {"format": "brackets"},
     ["{path}:2: the tree starting here is not closed (missing ')'): 1 bracket is still open at the end of the "
      "file; add the missing ')'"]),
    ("trees-latin1", "d.mrg", "(S (NP caf\u00e9) (VP b))\n".encode("latin-1"), {"format": "brackets"},
     ["{path}:1: not valid utf-8 (invalid continuation byte at byte 10 of the line); set data.encoding to the "
      "file's encoding, e.g. latin-1"]),
]


@pytest.mark.parametrize("name, content, options, fragments", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_rejected(tmp_path: Path, name: str, content: str | bytes, options: dict[str, Any],
                               fragments: list[str]) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as exc:
        read(path, cfg(**options))
    for fragment in fragments:
        assert fragment.replace("{path}", str(path)) in str(exc.value)


def test_utf8_bom_is_skipped_in_conll_and_trees(tmp_path: Path) -> None:
    conll = write(tmp_path / "d.conll", codecs.BOM_UTF8 + CONLL_LINES.encode())
    assert read_examples(conll, cfg())[0].text == "EU rejects German call"
    trees = write(tmp_path / "d.mrg", codecs.BOM_UTF8 + b"(S (NP a) (VP b))\n")
    assert read_split(trees, cfg(format="brackets"), "train")[0].text == "a b"


def test_latin1_error_line_counts_past_a_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "d.mrg", codecs.BOM_UTF8 + b"(S (NP a))\n(S (NP caf\xe9))\n")
    with pytest.raises(DataError, match=r"d.mrg:2: not valid utf-8 \(invalid continuation byte at byte 10 "):
        read_split(path, cfg(format="brackets"), "train")


def test_tree_layouts_that_stay_valid(tmp_path: Path) -> None:
    path = write(tmp_path / "d.mrg", "( (S\n    (NP a)\n    (VP b) ))\n(S (NP c) (VP d))\n\n(S e f)\n")
    assert [e.text for e in read_split(path, cfg(format="brackets"), "train")] == ["a b", "c d", "e f"]


def test_tree_files_sharing_a_stem_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write(tmp_path / "a" / "doc.mrg", "(S x y)\n")
    write(tmp_path / "b" / "doc.tree", "(S z w)\n")
    with pytest.raises(DataError) as exc:
        read_split(tmp_path, cfg(format="brackets"), "train")
    assert str(exc.value) == (
        f"{tmp_path / 'b' / 'doc.tree'}: its trees would get the ids doc:0, doc:1, ... of the trees of "
        f"{tmp_path / 'a' / 'doc.mrg'} (ids are <file name up to the first '.'>:<index>); rename one of the two "
        "files, or select one with data.members")
