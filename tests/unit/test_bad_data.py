"""Bad data inputs are rejected, never read wrongly (issue 25 items 3 and 9): one table of small
bad files, each with the exact fragments its DataError must hold (what, file:line, the fix), plus
the readings that must stay right (a stray quote in TSV, a BOM, quoted multi-line CSV)."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

import pytest

from llmkd.config import DataConfig, parse_config
from llmkd.data import check_task_data, read_examples, read_split
from llmkd.errors import ConfigError, DataError
from tests.fakes import write_file


def cfg(**kw: Any) -> DataConfig:
    base: dict[str, Any] = {"train": "unused", "test": "unused"}
    base.update(kw)
    return DataConfig(**base)


def read(path: Path, c: DataConfig) -> list:
    return read_split(path, c, "train") if c.format == "brackets" else read_examples(path, c)


write = write_file


QUOTE_FIX = ('Close the quote (inside a quoted value write a quote as ""), or set data.quoting: none if quotes in '
             'this file are plain text (data.quoting: multiline if the value really spans these lines)')
QUOTE_FIX_EOF = 'Close the quote (inside a quoted value write a quote as ""), or set data.quoting: none if quotes in '
NOT_NER = ("which is not an NER tag (O, B-<type>, I-<type>); the tags are read from the last column "
           "(data.tag_column unset): set data.tag_column to the column of the NER tags (1 = the token)")
TREE_OPEN = "(a line that starts with '(' starts a tree; indent the lines inside a tree). Add the missing ')'"
CONLL_LINES = "EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n"

BAD = [
    # -- item 1: an unbalanced quote never swallows the rows after it
    ("csv-stray-quote-to-eof", "d.csv", 'text,label\ngood film,pos\n"a stray quote,neg\nfine,pos\nbad,neg\n', {},
     ['{path}:3: the quote (") at column 1 opens a value that does not close on this line; read on, the value '
      "would run to the end of the file and swallow the rows in between. " + QUOTE_FIX_EOF]),
    ("csv-stray-quote-closed-later", "d.csv", 'text,label\n"a stray,pos\nb,neg\nc "quoted" d,pos\ne,neg\n', {},
     ['{path}:2: the quote (") at column 1 opens a value that does not close on this line; read on, the value '
      "would run to line 4 and swallow the rows in between. " + QUOTE_FIX]),
    ("csv-stray-quote-in-label", "d.csv", 'text,label\nok,"pos\nb,neg\n', {},
     ['{path}:2: the quote (") at column 4 opens a value']),
    ("csv-stray-quote-even-count", "d.csv", 'text,label\n"x,pos\n"y,neg\nz,pos\n', {},
     # the second quote closes the first: csv alone would read "x,pos\n" as one value
     ['{path}:2: the quote (") at column 1 opens a value that does not close on this line']),
    ("tsv-quoted-stray-quote", "d.tsv", 'label\ttext\npos\t"a stray\nneg\tb\n', {"quoting": "quoted"},
     ['{path}:2: the quote (") at column 5 opens a value', "would run to the end of the file"]),
    ("csv-text-after-closing-quote", "d.csv", 'text,label\n"a"b,pos\n', {},
     ["{path}:2: malformed quoted value (',' expected after '\"'): a value that starts with a quote must end "
      'with it. Close the quote (inside a quoted value write a quote as ""), or set data.quoting: none']),
    ("tsv-csv-quoted-value", "d.tsv", 'label\ttext\npos\t"it\'s ""fine"""\n', {},
     ["{path}:2: the value '\"it\\'s \"\"fine\"\"\"' looks csv-quoted (in quotes, with quotes doubled inside), "
      "but data.quoting is none, so the quotes would stay in the text; set data.quoting: quoted"]),
    ("tsv-tab-too-many", "d.tsv", "label\ttext\npos\ta\tb\n", {},
     ["{path}:2: more fields than the header has; a value contains a tab or the line has a tab too many"]),
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
    ("conll-tag-column-too-far", "d.conll", "EU B-ORG\n", {"tag_column": 3},
     ["{path}:1: data.tag_column is 3, but the lines have 2 columns; set data.tag_column to the column"]),
    ("conll-tag-column-wrong", "d.conll", "EU NNP B-NP B-ORG\n", {"tag_column": 2},
     ["{path}:1: column 2 of 4 holds 'NNP', which is not an NER tag", "the tags are read from data.tag_column"]),
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
    # -- item 4: empty labels
    ("regex-empty-group", "d.txt", "pos a fine film\n", {"format": "label_text", "label_regex": r"(\d*)"},
     ["{path}:1: data.label_regex '(\\\\d*)' gives an empty label for 'pos' (its first group matched ''); make "
      "the group match the label's characters, e.g. + instead of * or ?"]),
    ("regex-optional-group", "d.txt", "x a fine film\n", {"format": "label_text", "label_regex": r"x(\d)?"},
     ["{path}:1: data.label_regex 'x(\\\\d)?' gives an empty label for 'x' (its first group took no part in the "
      "match)"]),
    ("label-map-empty", "d.jsonl", '{"text": "a", "label": "pos"}\n', {"label_map": {"pos": " "}},
     ["{path}:1: data.label_map maps 'pos' to an empty label; map it to a class name"]),
    # -- item 5 (content): a CoNLL file read as classification lines
    ("conll-read-as-label-text", "d.txt", CONLL_LINES, {"format": "label_text"},
     ["{path}: this looks like token-tagged NER data (CoNLL: one token and its tag per line), not classification "
      "data read as label_text: 4 of 4 texts end in an IOB tag, e.g. 'B-ORG' (label 'EU'); set data.format: "
      "conll and task.kind: ner"]),
    # -- item 6: byte order marks that contradict data.encoding
    ("utf8-bom-read-as-latin1", "d.csv", codecs.BOM_UTF8 + b"text,label\na,pos\n", {"encoding": "latin-1"},
     ["{path}: starts with a UTF-8 byte order mark (BOM), so it is UTF-8 text, but data.encoding is 'latin-1'; "
      "set data.encoding: utf-8 (the mark is then skipped)"]),
    ("utf16-read-as-utf8", "d.csv", "text,label\na,pos\n".encode("utf-16"), {},
     ["{path}: starts with a UTF-16 byte order mark (BOM), but data.encoding is 'utf-8'; set data.encoding: utf-16"]),
    # -- item 7: duplicate ids name the id and both lines
    ("duplicate-id-jsonl", "d.jsonl",
     '{"id": 1, "text": "a", "label": "x"}\n{"id": 2, "text": "b", "label": "x"}\n{"id": 1, "text": "c", "label": "y"}\n',
     {}, ["{path}:3: example id '1' is used again (first at {path}:1); every example needs its own id: change or "
          "remove one of the two 'id' values"]),
    ("duplicate-id-csv", "d.csv", "id,text,label\n7,a,x\n8,b,y\n7,c,y\n", {},
     ["{path}:4: example id '7' is used again (first at {path}:2)"]),
]


@pytest.mark.parametrize("name, content, options, fragments", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_rejected(tmp_path: Path, name: str, content: str | bytes, options: dict[str, Any],
                               fragments: list[str]) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as exc:
        read(path, cfg(**options))
    for fragment in fragments:
        assert fragment.replace("{path}", str(path)) in str(exc.value)


# ---- what must still be read right ---------------------------------------------------------------


def test_tsv_quotes_are_plain_text_so_a_stray_quote_swallows_nothing(tmp_path: Path) -> None:
    rows = [f"pos\tsentence {i}" for i in range(200)]
    rows[17] = 'neg\t" a quote that opens and never closes'
    path = write(tmp_path / "d.tsv", "label\ttext\n" + "\n".join(rows) + "\n")
    examples = read_examples(path, cfg())
    assert len(examples) == 200 and max(len(e.text) for e in examples) < 50
    assert (examples[17].text, examples[17].label) == ('" a quote that opens and never closes', "neg")


def test_csv_with_200_rows_and_one_stray_quote_is_rejected(tmp_path: Path) -> None:
    rows = [f"sentence {i},pos" for i in range(200)]
    rows[40] = '"sentence 40 with a stray quote,neg'
    rows[150] = 'a "quoted" word,pos'
    path = write(tmp_path / "d.csv", "text,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"d.csv:42: the quote \(\"\) at column 1 opens a value .* run to line 152"):
        read_examples(path, cfg())


def test_quoted_csv_values_may_span_lines_that_are_not_rows(tmp_path: Path) -> None:
    # RFC 4180 quoting, as banking77's train.csv has it: a value over lines that hold no delimiter
    path = write(tmp_path / "d.csv", 'text,label\n"a, b ""c""",pos\n"\nno card\n\n",neg\n"one, two\n",pos\nlast,pos\n')
    got = [(e.id, e.text, e.label) for e in read_examples(path, cfg())]
    assert got == [("2", 'a, b "c"', "pos"), ("3", "no card", "neg"), ("7", "one, two", "pos"), ("9", "last", "pos")]


def test_a_value_over_lines_that_look_like_rows_needs_multiline(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", 'text,label\n"first line\nthen, the second\nthe third",neg\nlast,pos\n')
    with pytest.raises(DataError) as exc:
        read_examples(path, cfg())
    assert str(exc.value) == (
        f'{path}:2: the quote (") at column 1 opens a value that does not close on this line; read on, the value '
        f"would run to line 4 and swallow the rows in between. {QUOTE_FIX}")
    got = [(e.id, e.text, e.label) for e in read_examples(path, cfg(quoting="multiline"))]
    assert got == [("2", "first line\nthen, the second\nthe third", "neg"), ("5", "last", "pos")]


def test_tsv_quoted_on_request(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", 'label\ttext\npos\t"it\'s ""fine"""\n')
    assert read_examples(path, cfg(quoting="quoted"))[0].text == "it's \"fine\""


@pytest.mark.parametrize("name, content", [
    ("d.csv", "text,label\nfine,pos\n"), ("d.tsv", "text\tlabel\nfine\tpos\n"),
    ("d.jsonl", '{"text": "fine", "label": "pos"}\n'), ("d.txt", "pos fine\n"),
], ids=["csv", "tsv", "jsonl", "label_text"])
def test_utf8_bom_is_skipped(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path / name, codecs.BOM_UTF8 + content.encode())
    options = {"format": "label_text"} if name.endswith(".txt") else {}
    (ex,) = read_examples(path, cfg(**options))
    assert (ex.text, ex.label) == ("fine", "pos")


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


def test_conll_chunk_column_on_request_and_real_ner_column(tmp_path: Path) -> None:
    path = write(tmp_path / "d.conll", "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    assert read_examples(path, cfg())[0].label == ("B-ORG", "O")
    assert read_examples(path, cfg(tag_column=3))[0].label == ("B-NP", "B-VP")


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


# ---- item 5: task kind and data format ---------------------------------------------------------

KIND = [
    ("ner", None, {"train": "t.jsonl"},
     "task.kind is 'ner', but data.format 'jsonl' (from the extension of data.train t.jsonl) is classification data "
     "(one class label per text), not token-tagged NER data (one IOB tag per token); set task.kind: classification, "
     "or give ner data (data.format: conll (a CoNLL column file), seq_in_out (a seq.in/seq.out folder), or parquet / "
     "datasets with a column of tag lists)"),
    ("classification", None, {"train": "eng.train", "format": "conll"},
     "task.kind is 'classification', but data.format 'conll' is token-tagged NER data (one IOB tag per token), not "
     "classification data (one class label per text); set task.kind: ner, or give classification data "
     "(data.format: jsonl, csv, tsv, label_text, parquet or datasets)"),
    ("classification", None, {"train": "t.conll"},
     "task.kind is 'classification', but data.format 'conll' (from the extension of data.train t.conll) is "
     "token-tagged NER data"),
    ("seq2seq", "tree", {"train": "t.csv"}, "set task.kind: classification"),
    ("ner", None, {"train": "ptb", "format": "brackets"}, "set task.kind: seq2seq"),
    ("seq2seq", "tree", {"train": "atis", "format": "slots"},
     "task.target is 'tree', which needs data.format: brackets, but data.format 'slots' is given; set "
     "task.target: slots, or give brackets data"),
]


@pytest.mark.parametrize("kind, target, data, fragment", KIND, ids=["ner-on-jsonl", "classification-on-conll",
                         "classification-on-conll-ext", "seq2seq-on-csv", "ner-on-trees", "tree-target-on-slots"])
def test_task_kind_must_fit_the_data(kind: str, target: str | None, data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        check_task_data(kind, target, cfg(**data))
    assert fragment in str(exc.value)


@pytest.mark.parametrize("kind, target, data", [
    ("classification", None, {"train": "t.jsonl"}), ("ner", None, {"train": "t.conll"}),
    ("ner", None, {"train": "atis", "format": "seq_in_out"}), ("seq2seq", "slots", {"train": "atis", "format": "slots"}),
    ("seq2seq", None, {"train": "ptb", "format": "brackets"}),
])
def test_task_kind_that_fits(kind: str, target: str | None, data: dict[str, Any]) -> None:
    check_task_data(kind, target, cfg(**data))


def test_session_checks_the_task_kind_before_reading(tmp_path: Path) -> None:
    from llmkd.build import Session

    raw = {"data": {"train": str(tmp_path / "absent.jsonl"), "test": str(tmp_path / "absent.jsonl")},
           "task": {"kind": "ner"}}
    with pytest.raises(ConfigError, match=r"task.kind is 'ner', but data.format 'jsonl'"):
        Session(parse_config(raw))


@pytest.mark.parametrize("data, fragment", [
    ({"format": "jsonl", "quoting": "none"},
     "data.quoting applies to data.format csv / tsv only, but data.format is 'jsonl'; remove data.quoting"),
    ({"format": "slots", "tag_column": 4},
     "data.tag_column applies to data.format conll only, but data.format is 'slots'; remove data.tag_column"),
    ({"tag_column": 1}, "data.tag_column: Input should be greater than or equal to 2 (got 1)"),
], ids=["quoting-on-jsonl", "tag-column-on-slots", "tag-column-1"])
def test_format_options_are_checked(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"data": {"train": "t", "test": "t", **data}})
    assert fragment in str(exc.value)


def test_jsonl_fixture_is_valid_json() -> None:  # the table's jsonl rows are what they claim
    for case in BAD:
        if case[1].endswith(".jsonl"):
            for line in str(case[2]).splitlines():
                json.loads(line)
