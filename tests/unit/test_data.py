"""Data files and splits: the four formats, every error message word for word, seeded splits,
and the structural guarantee that method code cannot see the pool's gold labels."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from llmkd.config import DataConfig
from llmkd.data import GoldVault, Splits, check_labels, full_train, make_splits, read_examples
from llmkd.errors import DataError
from tests.fakes import write_file
from llmkd.types import Example, Unlabeled


def cfg(**kw: Any) -> DataConfig:
    base: dict[str, Any] = {"train": "unused", "test": "unused"}
    base.update(kw)
    return DataConfig(**base)


write = write_file


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def triples(examples: list[Example]) -> list[tuple[str, str, Any]]:
    return [(e.id, e.text, e.label) for e in examples]


# ---- reading the formats ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, options, expected",
    [
        ("d.jsonl", '{"text": "good film", "label": "pos"}\n\n{"text": " bad ", "label": "neg", "id": 7}\n', {},
         [("1", "good film", "pos"), ("7", "bad", "neg")]),
        ("d.json", '{"sentence": "ok", "y": 1}\n', {"text_field": "sentence", "label_field": "y"},
         [("1", "ok", "1")]),
        ("d.csv", 'text,label\n"a, quoted",pos\nplain,neg\n', {}, [("2", "a, quoted", "pos"), ("3", "plain", "neg")]),
        ("d.tsv", 'label\ttext\npos\tit \'s "fine"\n', {}, [("2", "it 's \"fine\"", "pos")]),
        ("d.txt", "1 a fine film\n0 a dull , long film\n\n", {"format": "label_text"},
         [("1", "a fine film", "1"), ("2", "a dull , long film", "0")]),
        ("d.txt", "DESC:manner how did it end ?\r\n", {"format": "label_text", "separator": " "},
         [("1", "how did it end ?", "DESC:manner")]),
        ("d.txt", "pos\tgreat\n", {"format": "label_text", "separator": "\t"}, [("1", "great", "pos")]),
        ("d.data", '{"text": "x", "label": "a"}\n', {"format": "jsonl"}, [("1", "x", "a")]),
    ],
    ids=["jsonl", "json-fields", "csv", "tsv", "label_text", "label_text-colon", "label_text-tab", "format-forced"],
)
def test_read_formats(tmp_path: Path, name: str, content: str, options: dict[str, Any],
                      expected: list[tuple[str, str, str]]) -> None:
    path = write(tmp_path / name, content)
    assert triples(read_examples(path, cfg(**options))) == expected


@pytest.mark.parametrize(
    "raw_label, options, label",
    [
        ("__label__2", {"label_regex": r"__label__(\d)"}, "2"),
        ("__label__2", {"label_regex": r"__label__(\d)", "label_map": {"2": "positive"}}, "positive"),
        ("1", {"label_map": {"0": "negative", "1": "positive"}}, "positive"),
        ("neutral", {"label_map": {"0": "negative"}}, "neutral"),  # labels not in the map pass through
        ("LOC:city", {"label_regex": r"^(\w+):"}, "LOC"),  # the coarse TREC class
    ],
    ids=["regex", "regex+map", "map", "map-passthrough", "regex-prefix"],
)
def test_label_regex_and_map(tmp_path: Path, raw_label: str, options: dict[str, Any], label: str) -> None:
    path = write(tmp_path / "d.txt", f"{raw_label} some text\n")
    (ex,) = read_examples(path, cfg(format="label_text", **options))
    assert (ex.text, ex.label) == ("some text", label)


def test_prefix_makes_ids(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    assert [e.id for e in read_examples(path, cfg(), prefix="train:")] == ["train:1", "train:2"]


# ---- reading errors ------------------------------------------------------------------------

OBJ_HINT = 'Each line must be one JSON object, e.g. {"text": "...", "label": "..."}'


@pytest.mark.parametrize(
    "name, content, options, message",
    [
        ("d.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b"\n', {},
         "{path}:3: malformed JSON (Expecting ',' delimiter at column 1). " + OBJ_HINT),
        ("d.jsonl", '{"text": "a", "label": "x"}\nnot json\n', {},
         "{path}:2: malformed JSON (Expecting value at column 1). " + OBJ_HINT),
        ("d.jsonl", '["a", "x"]\n', {}, "{path}:1: expected a JSON object, got list"),
        ("d.jsonl", '{"sentence": "a", "label": "x"}\n', {},
         "{path}:1: field 'text' not found; fields are ['label', 'sentence']; set data.text_field"),
        ("d.jsonl", '{"text": "a", "y": 1, "id": 3}\n', {},
         "{path}:1: field 'label' not found; fields are ['id', 'text', 'y']; set data.label_field"),
        ("d.csv", "sentence,label\nhi,x\n", {},
         "{path}:2: field 'text' not found; fields are ['label', 'sentence']; set data.text_field"),
        ("d.jsonl", '{"text": "  ", "label": "x"}\n', {}, "{path}:1: field 'text' must be a non-empty string, got '  '"),
        ("d.jsonl", '{"text": 5, "label": "x"}\n', {}, "{path}:1: field 'text' must be a non-empty string, got 5"),
        ("d.jsonl", '{"text": "a", "label": null}\n', {},
         "{path}:1: field 'label' is empty; every example needs a label"),
        ("d.csv", "text,label\na,\n", {}, "{path}:2: field 'label' is empty; every example needs a label"),
        ("d.csv", "text,label\na,x,y\n", {},
         "{path}:2: more fields than the header has; quote fields that contain the delimiter"),
        ("d.csv", "text,label\nno label here\n", {},
         "{path}:2: fewer fields than the header has (no value for ['label'])"),
        ("d.txt", "positive great\nnoseparator\n", {"format": "label_text"},
         "{path}:2: no separator ' ' between label and text; each line must be <label><separator><text> "
         "(set data.separator)"),
        ("d.txt", "__label__x text\n", {"format": "label_text", "label_regex": r"__label__(\d)"},
         "{path}:1: label '__label__x' does not match data.label_regex '__label__(\\\\d)'"),
        ("d.txt", "1 text\n", {"format": "label_text", "label_regex": r"__label__\d"},
         "data.label_regex '__label__\\\\d' has no group; put the label in the first group, e.g. '__label__(\\w+)'"),
        ("d.txt", "1 text\n", {"format": "label_text", "label_regex": r"(\d"},
         "data.label_regex '(\\\\d' is not a valid regular expression (missing ), unterminated subpattern at position 0)"),
        ("d.jsonl", "", {}, "{path}: no examples found (the file is empty: it has no non-blank lines)"),
        ("d.jsonl", "\n  \n", {}, "{path}: no examples found (the file is empty: it has no non-blank lines)"),
        ("d.csv", "text,label\n", {}, "{path}: no examples found (the file is empty: it has no rows below the header)"),
        ("d.txt", "1 x\n", {},
         "{path}: cannot tell the format from the extension '.txt'; set data.format to one of jsonl, csv, tsv, label_text, "
         "parquet, datasets"),
        ("d.jsonl", "", {"encoding": "no-such-codec"},
         "data.encoding: unknown encoding 'no-such-codec'; use e.g. utf-8 or latin-1"),
    ],
    ids=["malformed-json", "not-json", "json-list", "no-text-field", "no-label-field", "csv-no-text-field",
         "blank-text", "non-string-text", "null-label", "empty-csv-label", "csv-extra-field", "csv-missing-field",
         "no-separator", "regex-no-match", "regex-no-group", "regex-invalid", "empty-file", "blank-lines",
         "header-only", "unknown-extension", "unknown-encoding"],
)
def test_read_errors(tmp_path: Path, name: str, content: str, options: dict[str, Any], message: str) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as exc:
        read_examples(path, cfg(**options))
    assert str(exc.value) == message.replace("{path}", str(path))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.jsonl"
    with pytest.raises(DataError) as exc:
        read_examples(path, cfg())
    assert str(exc.value) == f"data file {path} does not exist; check data.train / data.test / data.dev"


def test_latin1_file_read_as_utf8_names_the_line_and_the_setting(tmp_path: Path) -> None:
    path = write(tmp_path / "d.txt", "1 plain ascii\n0 un caf\u00e9 froid\n".encode("latin-1"))
    with pytest.raises(DataError) as exc:
        read_examples(path, cfg(format="label_text"))
    assert str(exc.value) == (
        f"{path}:2: not valid utf-8 (invalid continuation byte at byte 8 of the line); "
        "set data.encoding to the file's encoding, e.g. latin-1"
    )
    # the fix the message names works
    assert triples(read_examples(path, cfg(format="label_text", encoding="latin-1"))) == [
        ("1", "plain ascii", "1"), ("2", "un caf\u00e9 froid", "0")]


# ---- labels --------------------------------------------------------------------------------


def test_label_outside_the_label_set() -> None:
    examples = [Example("a", "t", "pos"), Example("test:4", "t", "mixed")]
    with pytest.raises(DataError) as exc:
        check_labels(examples, ["neg", "pos"], "test.jsonl")
    assert str(exc.value) == (
        "test.jsonl: example test:4 has label 'mixed', which is not in the label set ['neg', 'pos']. "
        "Add it to data.labels, map it with data.label_map, or remove the example."
    )


def balanced(path: Path, n_per_class: int, labels: tuple[str, ...] = ("neg", "pos"), start: int = 0) -> Path:
    rows = [{"text": f"{lab} text {i}", "label": lab} for i in range(start, start + n_per_class) for lab in labels]
    return jsonl(path, rows)


def split_cfg(tmp_path: Path, n_train: int = 20, n_test: int = 5, **split: Any) -> DataConfig:
    train = balanced(tmp_path / "train.jsonl", n_train)
    test = balanced(tmp_path / "test.jsonl", n_test, start=1000)
    sizes: dict[str, Any] = {"labeled_per_class": 2, "dev_per_class": 2, "pool_size": None}
    sizes.update(split)
    return cfg(train=str(train), test=str(test), split=sizes)


def test_test_label_outside_the_train_labels(tmp_path: Path) -> None:
    c = split_cfg(tmp_path)
    jsonl(Path(c.test), [{"text": "t", "label": "neg"}, {"text": "u", "label": "neutral"}])
    with pytest.raises(DataError) as exc:
        make_splits(c, seed=0)
    assert str(exc.value) == (
        f"{c.test}: example test:2 has label 'neutral', which is not in the label set ['neg', 'pos']. "
        "Add it to data.labels, map it with data.label_map, or remove the example."
    )


def test_configured_labels_keep_their_order(tmp_path: Path) -> None:
    splits, _ = make_splits(split_cfg(tmp_path).model_copy(update={"labels": ["pos", "neg"]}), seed=0)
    assert splits.labels == ("pos", "neg")
    splits, _ = make_splits(split_cfg(tmp_path), seed=0)
    assert splits.labels == ("neg", "pos")  # from the data: sorted


# ---- splits --------------------------------------------------------------------------------


def test_split_sizes_and_disjointness(tmp_path: Path) -> None:
    splits, vault = make_splits(split_cfg(tmp_path, labeled_per_class=3, dev_per_class=2), seed=0)
    assert (len(splits.labeled), len(splits.dev), len(splits.pool), len(splits.test)) == (6, 4, 30, 10)
    assert sorted(e.label for e in splits.labeled) == ["neg"] * 3 + ["pos"] * 3
    assert sorted(e.label for e in splits.dev) == ["neg"] * 2 + ["pos"] * 2
    ids = [{e.id for e in part} for part in (splits.labeled, splits.pool, splits.dev, splits.test)]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 50  # pairwise disjoint
    assert ids[0] | ids[1] | ids[2] == {f"train:{i}" for i in range(1, 41)}  # together: the whole train file
    assert len(vault) == 30 and all(vault.label_of(u.id) in ("neg", "pos") for u in splits.pool)


def test_pool_keeps_gold_text_and_vault_keeps_gold_label(tmp_path: Path) -> None:
    c = split_cfg(tmp_path)
    gold = {e.id: e for e in read_examples(c.train, c, prefix="train:")}
    splits, vault = make_splits(c, seed=0)
    for u in splits.pool:
        assert (u.text, vault.label_of(u.id)) == (gold[u.id].text, gold[u.id].label)
    full = full_train(c, splits, vault)
    assert triples(list(full)) == triples(list(splits.labeled)) + [(u.id, u.text, vault.label_of(u.id)) for u in splits.pool]


def ids_of(splits: Splits) -> tuple[list[str], ...]:
    return tuple([e.id for e in part] for part in (splits.labeled, splits.pool, splits.dev, splits.test))


@pytest.mark.parametrize("sizes", [{}, {"labeled_per_class": None, "labeled_n": 5, "pool_size": 10, "test_size": 4}],
                         ids=["per-class", "labeled_n"])
def test_splits_are_deterministic_per_seed_and_differ_across_seeds(tmp_path: Path, sizes: dict[str, Any]) -> None:
    c = split_cfg(tmp_path, **sizes)
    a = ids_of(make_splits(c, seed=1)[0])
    assert ids_of(make_splits(c, seed=1)[0]) == a
    b = ids_of(make_splits(c, seed=2)[0])
    assert b != a
    assert (b[0], b[1]) != (a[0], a[1])


def test_pool_size_and_test_size_subsample(tmp_path: Path) -> None:
    splits, vault = make_splits(split_cfg(tmp_path, pool_size=7, test_size=3), seed=0)
    assert (len(splits.pool), len(vault), len(splits.test)) == (7, 7, 3)


def test_labeled_n_takes_n_in_total(tmp_path: Path) -> None:
    splits, _ = make_splits(split_cfg(tmp_path, labeled_per_class=None, labeled_n=5, dev_per_class=None), seed=0)
    assert (len(splits.labeled), len(splits.dev), len(splits.pool)) == (5, 0, 35)


def test_dev_file_is_used_instead_of_train(tmp_path: Path) -> None:
    c = split_cfg(tmp_path)
    dev = balanced(tmp_path / "dev.jsonl", 3, start=500)
    splits, _ = make_splits(c.model_copy(update={"dev": str(dev)}), seed=0)
    assert len(splits.dev) == 4 and all(e.id.startswith("dev:") for e in splits.dev)
    assert len(splits.pool) == 36  # nothing of train went to dev


def test_dev_file_without_dev_per_class_is_used_whole(tmp_path: Path) -> None:
    c = split_cfg(tmp_path, dev_per_class=None)
    dev = balanced(tmp_path / "dev.jsonl", 3, start=500)
    splits, _ = make_splits(c.model_copy(update={"dev": str(dev)}), seed=0)
    assert sorted(e.id for e in splits.dev) == [f"dev:{i}" for i in range(1, 7)]


NEG_10_POS_1 = [{"text": f"n{i}", "label": "neg"} for i in range(10)] + [{"text": "p", "label": "pos"}]
DUP_IDS = [{"id": 1, "text": "a", "label": "neg"}, {"id": 1, "text": "b", "label": "pos"}]


@pytest.mark.parametrize(
    "sizes, rows, message",
    [
        ({"n_train": 4, "labeled_per_class": 2, "dev_per_class": 2}, None,
         "{train}: the unlabeled pool is empty after taking the labeled and dev examples; "
         "use a larger train file or smaller data.split sizes"),
        ({}, NEG_10_POS_1,
         "{train}: class 'pos' has only 1 example left for the labeled set, but data.split.labeled_per_class=2; "
         "lower data.split.labeled_per_class or add examples of 'pos'"),
        ({"n_train": 3, "labeled_per_class": 2, "dev_per_class": 2}, None,
         "{train}: class 'neg' has only 1 example left for the dev set, but data.split.dev_per_class=2; "
         "lower data.split.dev_per_class or add examples of 'neg'"),
        ({"n_train": 3, "labeled_per_class": 1, "dev_per_class": 5}, None,
         "{train}: class 'neg' has only 2 examples left for the dev set, but data.split.dev_per_class=5; "
         "lower data.split.dev_per_class or add examples of 'neg'"),
        ({"labeled_per_class": None, "labeled_n": 40}, None,
         "{train}: data.split.labeled_n=40 leaves no unlabeled pool (40 examples)"),
        ({}, DUP_IDS, "{train}:2: example id '1' is used again (first at {train}:1); every example needs its own "
                      "id: change or remove one of the two 'id' values"),
    ],
    ids=["pool-empty", "labeled-per-class", "dev-per-class-1", "dev-per-class-2", "labeled-n", "duplicate-ids"],
)
def test_split_errors(tmp_path: Path, sizes: dict[str, Any], rows: list[dict[str, Any]] | None, message: str) -> None:
    c = split_cfg(tmp_path, **sizes)
    if rows is not None:
        jsonl(Path(c.train), rows)
    with pytest.raises(DataError) as exc:
        make_splits(c, seed=0)
    assert str(exc.value) == message.replace("{train}", c.train)


# ---- the gold guarantee: method code cannot reach the pool's labels ------------------------------


def mentions(hint: Any, target: type) -> bool:
    """Whether a type hint is ``target`` or has it inside (tuple[...], Callable[...], unions)."""
    return hint is target or any(mentions(arg, target) for arg in typing.get_args(hint))


def test_unlabeled_has_no_label() -> None:
    u = Unlabeled(id="1", text="t")
    assert not hasattr(u, "label")
    assert [f.name for f in dataclasses.fields(Unlabeled)] == ["id", "text"]


def test_splits_hold_no_pool_gold() -> None:
    hints = typing.get_type_hints(Splits)
    assert [f.name for f in dataclasses.fields(Splits)] == ["labels", "labeled", "pool", "dev", "test"]
    assert not any(mentions(h, GoldVault) for h in hints.values())
    assert hints["pool"] == tuple[Unlabeled, ...]


def test_run_context_holds_no_pool_gold(tmp_path: Path) -> None:
    from llmkd.methods import RunContext

    hints = typing.get_type_hints(RunContext)
    assert {f.name for f in dataclasses.fields(RunContext)} == set(hints)
    assert not any(mentions(h, GoldVault) for h in hints.values())
    assert hints["pool"] == tuple[Unlabeled, ...]
    splits, _ = make_splits(split_cfg(tmp_path), seed=0)
    ctx = RunContext(task=None, teacher=None, student_factory=lambda seed: None,  # type: ignore[arg-type, return-value]
                     student_loader=lambda path: None, labeled=splits.labeled, pool=splits.pool,  # type: ignore[arg-type, return-value]
                     dev=splits.dev, test=splits.test, shots=(), workdir=tmp_path)
    assert ctx.pool and all(type(u) is Unlabeled for u in ctx.pool)
    assert not any(isinstance(getattr(ctx, f.name), GoldVault) for f in dataclasses.fields(ctx))


def test_headerless_csv_and_tsv_take_their_column_names_from_data_columns(tmp_path: Path) -> None:
    """AG News: a header-less tsv train file (text, label) and a header-less csv test file
    (label, title, text) in one config; every line is a row."""
    train = write_file(tmp_path / "train.tsv", "a cat sat\tSci/Tech\nthe match ended\tSports\n")
    test = write_file(tmp_path / "test.csv", '"4","T","new chips"\n"2","U","a ""big"" win"\n')
    cfg = DataConfig(train=str(train), test=str(test), columns={"train": ["text", "label"], "test": ["label", "title", "text"]},
                     label_map={"2": "Sports", "4": "Sci/Tech"})
    assert [(e.text, e.label) for e in read_examples(train, cfg, prefix="train:")] == [("a cat sat", "Sci/Tech"), ("the match ended", "Sports")]
    assert [(e.text, e.label) for e in read_examples(test, cfg, prefix="test:")] == [("new chips", "Sci/Tech"), ('a "big" win', "Sports")]
    everywhere = DataConfig(train=str(train), test=str(train), columns=["text", "label"])
    assert everywhere.columns == {"train": ["text", "label"], "dev": ["text", "label"], "test": ["text", "label"]}
    assert len(read_examples(train, everywhere, prefix="test:")) == 2


def test_data_columns_errors(tmp_path: Path) -> None:
    short = write_file(tmp_path / "s.csv", "pos,good\nneg\n")
    cfg = DataConfig(train=str(short), test=str(short), columns=["label", "text"])
    with pytest.raises(DataError, match=r"s.csv:2: fewer fields than data.columns names \(no value for \['text'\]\)"):
        read_examples(short, cfg, prefix="train:")
    for bad in (["text", "text"], ["text", " "], []):
        with pytest.raises(ValueError, match="distinct, non-empty name"):
            DataConfig(train="a.csv", test="b.csv", columns=bad)
    with pytest.raises(ValueError, match="data.columns applies to data.format csv / tsv only"):
        DataConfig(train="a.jsonl", test="b.jsonl", format="jsonl", columns=["text", "label"])
