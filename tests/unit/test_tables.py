"""Issue 30 item 4: parquet and ``datasets`` data (reading, with every error word for word), the
table writer (jsonl / parquet / datasets folder) and ``llmkd label --output`` / ``llmkd
export-labels`` with confidence and provenance. pyarrow and datasets are the ``formats`` extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")
datasets = pytest.importorskip("datasets")
import pyarrow.parquet as pq  # noqa: E402
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value  # noqa: E402

from llmkd.config import DataConfig  # noqa: E402
from llmkd.data import check_task_data, make_splits, read_examples  # noqa: E402
from llmkd.data.writers import output_format, write_rows  # noqa: E402
from llmkd.errors import ConfigError, DataError, MissingExtraError  # noqa: E402
from tests.fake_openai_server import FakeOpenAIServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _quiet_datasets() -> Any:
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def cfg(path: Path | str, **kw: Any) -> DataConfig:
    return DataConfig(**{"train": str(path), "test": str(path), **kw})


def triples(examples: list[Any]) -> list[tuple[str, str, Any]]:
    return [(e.id, e.text, e.label) for e in examples]


CLASS_ROWS = [{"id": "a", "text": "a fine film", "label": "pos"}, {"id": "b", "text": "dull , long", "label": "neg"},
              {"id": "c", "text": "ok \u00e9t\u00e9", "label": "pos"}]
NER_ROWS = [{"id": "s1", "text": "John Smith visits Paris", "label": ("B-PER", "I-PER", "O", "B-LOC")},
            {"id": "s2", "text": "nothing here", "label": ("O", "O")}]


# ---- round trips: the writer's output read back ------------------------------------------------


@pytest.mark.parametrize("name", ["d.parquet", "d_dataset", "d.jsonl"])
@pytest.mark.parametrize("rows", [CLASS_ROWS, NER_ROWS], ids=["classification", "ner"])
def test_written_rows_read_back_unchanged(tmp_path: Path, name: str, rows: list[dict[str, Any]]) -> None:
    path = write_rows(tmp_path / name, rows)
    c = cfg(path, format="jsonl" if name.endswith("jsonl") else "auto")
    if name.endswith("jsonl") and rows is NER_ROWS:  # jsonl holds classification data: tag lists are refused
        with pytest.raises(DataError) as err:
            read_examples(path, c)
        assert str(err.value) == (f"{path}:1: field 'label' is a list, but a class label is one value; token tags "
                                  "(NER) are read from conll, or from parquet / datasets (a list of tags per row)")
        return
    assert triples(read_examples(path, c)) == [(r["id"], r["text"], r["label"]) for r in rows]


def test_parquet_and_datasets_splits_make_the_same_splits_as_jsonl(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "text": f"text number {i}", "label": "pos" if i % 2 else "neg"} for i in range(40)]
    sizes = {"split": {"labeled_per_class": 2, "dev_per_class": 2, "pool_size": 10}}
    made = []
    for name in ("d.jsonl", "d.parquet", "d_ds"):
        path = write_rows(tmp_path / name, rows)
        splits, vault = make_splits(cfg(path, format="jsonl" if name.endswith("jsonl") else "auto", **sizes), seed=3)
        made.append((splits, [vault.label_of(u.id) for u in splits.pool]))
    assert made[0] == made[1] == made[2]


# ---- what datasets writes: ClassLabel names, DatasetDict splits, load_dataset folders -------------


def sst(labels: list[int]) -> Dataset:
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    return Dataset.from_dict({"sentence": [f"sentence {i}" for i in range(len(labels))], "label": labels},
                             features=features)


def conll() -> Dataset:
    features = Features({"tokens": Sequence(Value("string")),
                         "ner_tags": Sequence(ClassLabel(names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]))})
    return Dataset.from_dict({"tokens": [["EU", "rejects", "John", "Smith"], ["Paris"]],
                              "ner_tags": [[0, 0, 1, 2], [4]]}, features=features)


def test_class_ids_are_read_as_their_classlabel_names(tmp_path: Path) -> None:
    DatasetDict({"train": sst([0, 1, 1]), "validation": sst([1]), "test": sst([0])}).save_to_disk(tmp_path / "sst2")
    sst([0, 1, 1]).to_parquet(tmp_path / "sst2.parquet")  # datasets keeps the features in the file's metadata
    fields = {"text_field": "sentence"}
    want = [("train:1", "sentence 0", "negative"), ("train:2", "sentence 1", "positive"),
            ("train:3", "sentence 2", "positive")]
    assert triples(read_examples(tmp_path / "sst2", cfg(tmp_path / "sst2", **fields), prefix="train:")) == want
    assert triples(read_examples(tmp_path / "sst2.parquet", cfg(tmp_path, **fields), prefix="train:")) == want
    dev = read_examples(tmp_path / "sst2", cfg(tmp_path / "sst2", **fields), prefix="dev:")  # dev: 'validation'
    assert triples(dev) == [("dev:1", "sentence 0", "positive")]


def test_class_ids_without_names_are_text_for_label_map(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["x", "y"], "label": [0, 1]}), tmp_path / "d.parquet")
    path = tmp_path / "d.parquet"
    assert [e.label for e in read_examples(path, cfg(path))] == ["0", "1"]
    assert [e.label for e in read_examples(path, cfg(path, label_map={"0": "neg", "1": "pos"}))] == ["neg", "pos"]
    assert [e.label for e in read_examples(path, cfg(path, label_map={0: "neg", 1: "pos"}))] == ["neg", "pos"]  # YAML
    assert [e.label for e in read_examples(path, cfg(path, label_regex=r"(\d)"))] == ["0", "1"]


def test_ner_tags_of_classlabel_ids_are_read_as_iob2(tmp_path: Path) -> None:
    conll().save_to_disk(tmp_path / "conll")
    conll().to_parquet(tmp_path / "conll.parquet")
    fields = {"text_field": "tokens", "label_field": "ner_tags"}
    want = [("1", "EU rejects John Smith", ("O", "O", "B-PER", "I-PER")), ("2", "Paris", ("B-LOC",))]  # IOB1 -> IOB2
    for path in (tmp_path / "conll", tmp_path / "conll.parquet"):
        assert triples(read_examples(path, cfg(path, **fields))) == want
        check_task_data("ner", None, cfg(path, **fields))
    mapped = read_examples(tmp_path / "conll", cfg(tmp_path / "conll", label_map={"PER": "person", "LOC": "O"}, **fields))
    assert [e.label for e in mapped] == [("O", "O", "B-person", "I-person"), ("O",)]


def test_dataset_split_names_the_split_of_each_llmkd_split(tmp_path: Path) -> None:
    DatasetDict({"train": sst([0, 1]), "validation_matched": sst([1])}).save_to_disk(tmp_path / "mnli")
    c = cfg(tmp_path / "mnli", text_field="sentence", dataset_split={"test": "validation_matched"})
    assert [e.label for e in read_examples(tmp_path / "mnli", c, prefix="test:")] == ["positive"]
    with pytest.raises(DataError) as err:
        read_examples(tmp_path / "mnli", c, prefix="dev:")
    assert str(err.value) == (
        f"{tmp_path / 'mnli'}: the dataset's splits are ['train', 'validation_matched'], none named validation or dev "
        "or valid for the dev data; set data.dataset_split.dev to one of them")
    with pytest.raises(DataError) as err:
        read_examples(tmp_path / "mnli", cfg(tmp_path, text_field="sentence", dataset_split={"train": "trian"}),
                      prefix="train:")
    assert str(err.value) == (f"{tmp_path / 'mnli'}: data.dataset_split.train is 'trian', but the dataset's splits are "
                              "['train', 'validation_matched']; set it to one of them")
    sst([0]).save_to_disk(tmp_path / "one")
    with pytest.raises(DataError) as err:
        read_examples(tmp_path / "one", cfg(tmp_path, text_field="sentence", dataset_split={"train": "train"}))
    assert str(err.value) == (f"{tmp_path / 'one'}: data.dataset_split.train is 'train', but this folder holds one "
                              "dataset, not a DatasetDict of splits; remove data.dataset_split")


def test_a_load_dataset_folder_of_data_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    folder = tmp_path / "raw"
    folder.mkdir()
    sst([0, 1]).to_parquet(folder / "train.parquet")
    sst([1]).to_parquet(folder / "test.parquet")
    c = cfg(folder, format="datasets", text_field="sentence")
    assert [e.label for e in read_examples(folder, c, prefix="test:")] == ["positive"]
    assert [e.label for e in read_examples(folder, c, prefix="train:")] == ["negative", "positive"]


def test_auto_format_by_extension_and_saved_folder(tmp_path: Path) -> None:
    from llmkd.data import data_format

    sst([0]).save_to_disk(tmp_path / "saved")
    (tmp_path / "plain").mkdir()
    assert data_format(cfg(tmp_path / "d.parquet")) == "parquet"
    assert data_format(cfg(tmp_path / "d.pq")) == "parquet"
    assert data_format(cfg(tmp_path / "saved")) == "datasets"
    with pytest.raises(DataError) as err:
        data_format(cfg(tmp_path / "plain"))
    assert str(err.value) == (f"{tmp_path / 'plain'}: a folder, so the format cannot be told from an extension; set "
                              "data.format (datasets, parquet for a folder of .parquet files, seq_in_out, brackets or "
                              "slots)")


def test_a_folder_of_parquet_files(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    write_rows(tmp_path / "shards" / "a.parquet", CLASS_ROWS[:2])
    write_rows(tmp_path / "shards" / "b.parquet", CLASS_ROWS[2:])
    path = tmp_path / "shards"
    assert [e.id for e in read_examples(path, cfg(path, format="parquet"))] == ["a", "b", "c"]


# ---- errors, word for word ----------------------------------------------------------------------


def _parquet(path: Path, columns: dict[str, Any]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize(
    "columns, options, message",
    [
        ({"sentence": ["x"], "label": ["a"]}, {},
         "column 'text' not found; columns are ['sentence', 'label']; set data.text_field"),
        ({"text": ["x"], "y": ["a"]}, {},
         "column 'label' not found; columns are ['text', 'y']; set data.label_field"),
        ({"text": [1], "label": ["a"]}, {},
         "column 'text' holds int64 values, but the text column must hold strings; set data.text_field to such a "
         "column (columns: ['text', 'label'])"),
        ({"text": [["a", "b"]], "label": ["a"]}, {},
         "column 'text' holds list<string> values, but the text column must hold strings (a list per row: NER "
         "tokens need a list of tags in the label column too; parallel lists of texts and class labels are read from "
         "jsonl); set data.text_field to such a column (columns: ['text', 'label'])"),
        ({"text": ["x"], "label": [0.5]}, {},
         "column 'label' holds double values, but a class label is a name (string) or a class id (integer); a float "
         "column is a score, not a class; set data.label_field to such a column (columns: ['text', 'label'])"),
        ({"text": ["x", "y"], "label": ["a", None]}, {},
         "row 2: column 'label' is empty (null); every example needs a label"),
        ({"text": ["x"], "label": ["a"], "abstained": [True]}, {"label_field": "label"},
         None),  # fine: the hint only comes with a null label
        ({"text": ["x", None], "label": ["a", "b"]}, {},
         "row 2: column 'text' must be a non-empty string, got None"),
        ({"text": ["x", "  "], "label": ["a", "b"]}, {},
         "row 2: column 'text' must be a non-empty string, got '  '"),
        ({"text": ["x", "y"], "label": ["a", " "]}, {},
         "row 2: column 'label' is empty; every example needs a label"),
        ({"id": [7, 7], "text": ["x", "y"], "label": ["a", "b"]}, {},
         "row 2: example id '7' is used again (first at row 1); every example needs its own id: change or remove one "
         "of the two 'id' values"),
        ({"id": ["p", None], "text": ["x", "y"], "label": ["a", "b"]}, {},
         "row 2: column 'id' is empty; give every row an id, or drop the id column"),
        ({"text": ["x"], "label": ["pos"]}, {"label_regex": r"__label__(\w+)"},
         "row 1: label 'pos' does not match data.label_regex '__label__(\\\\w+)'"),
        ({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}, {},
         "no examples found (the table has no rows)"),
        ({"text": [["a", "b"]], "label": [["O"]]}, {},
         "row 1: 2 tokens in column 'text' but 1 tags in column 'label'; every token needs exactly one tag"),
        ({"text": ["a b"], "label": [["O", "S-PER"]]}, {},
         "row 1: tag 'S-PER' is not a BIO tag; expected 'O', 'B-<type>' or 'I-<type>' (IOBES/BILOU are not supported)"),
        ({"text": ["a"], "label": [[1]]}, {},
         "column 'label' holds integer tags (list<int64>) without their names (no ClassLabel feature in the "
         "data); write the tags as strings (O, B-PER, I-PER, ...), or save the data with datasets and its ClassLabel "
         "features (save_to_disk and to_parquet keep them)"),
        ({"text": [1], "label": [["O"]]}, {},
         "column 'text' holds int64 values, but NER text is a list of tokens (strings) or a string of "
         "whitespace-separated tokens; set data.text_field to such a column (columns: ['text', 'label'])"),
        ({"text": [[]], "label": [[]]}, {},
         "row 1: column 'text' holds no tokens; every sentence needs at least one"),
    ],
    ids=["no-text", "no-label", "int-text", "list-text", "float-label", "null-label", "abstained-ok", "null-text",
         "blank-text", "blank-label", "repeated-id", "null-id", "regex", "no-rows", "token-count", "iobes",
         "int-tags-unnamed", "int-ner-text", "no-tokens"],
)
def test_parquet_errors(tmp_path: Path, columns: dict[str, Any], options: dict[str, Any], message: str | None) -> None:
    path = _parquet(tmp_path / "d.parquet", columns)
    if message is None:
        read_examples(path, cfg(path, **options))
        return
    with pytest.raises(DataError) as err:
        read_examples(path, cfg(path, **options))
    assert str(err.value) == f"{path}: {message}"


def test_classlabel_errors_name_the_row_and_the_fix(tmp_path: Path) -> None:
    DatasetDict({"train": sst([0]), "test": sst([1, -1])}).save_to_disk(tmp_path / "glue")
    with pytest.raises(DataError) as err:
        read_examples(tmp_path / "glue", cfg(tmp_path, text_field="sentence"), prefix="test:")
    assert str(err.value) == (
        f"{tmp_path / 'glue'} (split 'test'): row 2: column 'label' is -1, which datasets uses for 'no label' (GLUE's "
        "test splits are unlabeled); use a split with labels, e.g. data.dataset_split.test: validation")
    table = pa.table({"text": ["x"], "label": [5]}).replace_schema_metadata({b"huggingface": json.dumps(
        {"info": {"features": {"label": {"_type": "ClassLabel", "names": ["a", "b"]}}}}).encode()})
    pq.write_table(table, tmp_path / "ids.parquet")
    with pytest.raises(DataError) as err:
        read_examples(tmp_path / "ids.parquet", cfg(tmp_path))
    assert str(err.value) == (f"{tmp_path / 'ids.parquet'}: row 1: column 'label' holds the class id 5, but its "
                              "ClassLabel names are ['a', 'b'] (ids 0 to 1); fix the id or the features")


def test_an_abstained_row_of_an_export_names_the_export_option(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "pool.parquet", [{"id": "1", "text": "x", "label": None, "abstained": True}])
    with pytest.raises(DataError) as err:
        read_examples(path, cfg(path))
    assert str(err.value) == (f"{path}: row 1: column 'label' is empty (null); every example needs a label (an llmkd "
                              "label export: its abstained rows have no label; export with --answered-only)")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        read_examples(tmp_path / "nope.parquet", cfg(tmp_path))
    assert str(err.value) == f"data file {tmp_path / 'nope.parquet'} does not exist; check data.train / data.test / data.dev"
    with pytest.raises(DataError) as err:
        read_examples(tmp_path / "glue_sst2", cfg(tmp_path, format="datasets"))
    assert str(err.value) == (f"data file {tmp_path / 'glue_sst2'} does not exist; check data.train / data.test / "
                              "data.dev (data.format datasets reads local folders: load a hub dataset once and "
                              "save_to_disk it)")
    fake = tmp_path / "fake.parquet"
    fake.write_text("text,label\nx,a\n")
    with pytest.raises(DataError, match=r"fake.parquet: not a parquet file \(.*\); set data.format to the file's format"):
        read_examples(fake, cfg(fake))
    sst([0]).save_to_disk(tmp_path / "saved")
    with pytest.raises(DataError) as err:
        read_examples(tmp_path / "saved", cfg(tmp_path, format="parquet"))
    assert str(err.value) == f"{tmp_path / 'saved'}: a datasets folder (written by save_to_disk), not parquet; set data.format: datasets"
    write_rows(tmp_path / "d.parquet", CLASS_ROWS)
    with pytest.raises(DataError) as err:
        read_examples(tmp_path / "d.parquet", cfg(tmp_path, format="datasets"))
    assert str(err.value) == f"{tmp_path / 'd.parquet'}: a parquet file, not a datasets folder; set data.format: parquet"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: datasets cannot load this \(.*\); give a folder written by "
                                        r"Dataset.save_to_disk / DatasetDict.save_to_disk, or a folder of data files"):
        read_examples(tmp_path / "empty", cfg(tmp_path, format="datasets"))


def test_task_kind_is_checked_against_the_label_column_before_reading_rows(tmp_path: Path) -> None:
    write_rows(tmp_path / "c.parquet", CLASS_ROWS)
    write_rows(tmp_path / "n.parquet", NER_ROWS)
    check_task_data("classification", None, cfg(tmp_path / "c.parquet"))
    with pytest.raises(ConfigError) as err:
        check_task_data("ner", None, cfg(tmp_path / "c.parquet"))
    assert str(err.value) == (
        f"task.kind is 'ner', but the label column 'label' of data.train {tmp_path / 'c.parquet'} holds one value per "
        "row: classification data; NER data needs a column of tag lists (e.g. ner_tags: [B-PER, I-PER, O]): set "
        "data.label_field to it, or set task.kind: classification")
    with pytest.raises(ConfigError) as err:
        check_task_data("classification", None, cfg(tmp_path / "n.parquet"))
    assert str(err.value) == (
        f"task.kind is 'classification', but the label column 'label' of data.train {tmp_path / 'n.parquet'} holds a "
        "list per row: token-tagged NER data; set task.kind: ner, or set data.label_field to a column of class labels")
    with pytest.raises(ConfigError) as err:
        check_task_data("seq2seq", "tree", cfg(tmp_path / "c.parquet"))
    assert str(err.value) == (
        "task.kind is 'seq2seq', but data.format 'parquet' is read as classification or NER data; seq2seq data is "
        "read from brackets (task.target: tree) or slots (task.target: slots) files")
    with pytest.raises(DataError, match="column 'text ' not found"):
        check_task_data("classification", None, cfg(tmp_path / "c.parquet", text_field="text "))


def test_dataset_split_applies_to_datasets_only() -> None:
    with pytest.raises(Exception, match=r"data.dataset_split applies to data.format datasets only, but data.format is "
                                        r"'parquet'; remove data.dataset_split"):
        DataConfig(train="x", test="y", format="parquet", dataset_split={"test": "validation"})


def test_without_the_formats_extra_the_error_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_rows(tmp_path / "d.parquet", CLASS_ROWS)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # an import of it raises ImportError
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtraError) as err:
        read_examples(tmp_path / "d.parquet", cfg(tmp_path))
    assert str(err.value) == ("data.format: parquet needs the Python package 'pyarrow', which is not installed. Install "
                              "it with: pip install 'llmkd[formats]'")
    with pytest.raises(MissingExtraError, match=r"needs the Python package 'datasets'.*llmkd\[formats\]"):
        read_examples(tmp_path / "d.parquet", cfg(tmp_path, format="datasets"))
    with pytest.raises(MissingExtraError, match=r"writing parquet / datasets needs .*'pyarrow'.*llmkd\[formats\]"):
        write_rows(tmp_path / "out.parquet", CLASS_ROWS)


def test_importing_llmkd_imports_neither_pyarrow_nor_datasets() -> None:
    code = ("import sys, llmkd.cli, llmkd.api, llmkd.data, llmkd.data.tables, llmkd.data.writers, llmkd.label_export; "
            "print(sorted(m for m in ('pyarrow', 'datasets', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


# ---- the writer -----------------------------------------------------------------------------------


def test_output_format_by_extension() -> None:
    assert [output_format(p) for p in ("a.jsonl", "a.json", "a.parquet", "a.pq", "pool")] == \
        ["jsonl", "jsonl", "parquet", "parquet", "datasets"]
    assert output_format("a.bin", "parquet") == "parquet"
    with pytest.raises(ConfigError) as err:
        output_format("a.csv")
    assert str(err.value) == ("a.csv: cannot tell the output format from the extension '.csv'; name the file .jsonl or "
                              ".parquet, a folder without an extension for datasets, or give the format (jsonl, "
                              "parquet, datasets)")
    with pytest.raises(ConfigError, match=r"the output format must be one of auto, jsonl, parquet, datasets. Got 'csv'."):
        output_format("a.parquet", "csv")


def test_dicts_become_json_text_in_tables_and_stay_dicts_in_jsonl(tmp_path: Path) -> None:
    rows = [{"id": "1", "probs": {"pos": 0.75, "neg": 0.25}, "tags": ("O", "B-X")}, {"id": "2", "probs": None, "tags": None}]
    table = pq.read_table(write_rows(tmp_path / "d.parquet", rows))
    assert table.column("probs").to_pylist() == ['{"neg": 0.25, "pos": 0.75}', None]
    assert table.column("tags").to_pylist() == [["O", "B-X"], None]
    assert datasets.load_from_disk(str(write_rows(tmp_path / "d", rows)))["probs"] == table.column("probs").to_pylist()
    lines = (write_rows(tmp_path / "d.jsonl", rows)).read_text().splitlines()
    assert json.loads(lines[0]) == {"id": "1", "probs": {"pos": 0.75, "neg": 0.25}, "tags": ["O", "B-X"]}


def test_writer_refuses_mixed_columns_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^column 'label': its values have no common type \(list, str: .*\); give every "
                                        r"row the same kind of value \(or None\)$"):
        write_rows(tmp_path / "d.parquet", [{"label": "a"}, {"label": ["b"]}])
    assert not list(tmp_path.iterdir())  # nothing half-written
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError) as err:
        write_rows(tmp_path / "mine", CLASS_ROWS)
    assert str(err.value) == (f"{tmp_path / 'mine'} exists and is not a datasets folder; give a new path (a datasets "
                              "folder there would be replaced, never another folder or file)")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match=r"mine is a folder; give a file name for parquet"):
        write_rows(tmp_path / "mine", CLASS_ROWS, "parquet")


def test_writer_replaces_a_datasets_folder_whole(tmp_path: Path) -> None:
    write_rows(tmp_path / "pool", CLASS_ROWS)
    write_rows(tmp_path / "pool", CLASS_ROWS[:1])
    assert datasets.load_from_disk(str(tmp_path / "pool"))["id"] == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool"]  # no temporary folders left


# ---- llmkd label --output / llmkd export-labels -----------------------------------------------------


def _run_config(tmp_path: Path, url: str) -> Path:
    import yaml

    rows = [{"text": f"{'good' if i % 2 else 'bad'} film number {i}", "label": "positive" if i % 2 else "negative"}
            for i in range(40)]
    write_rows(tmp_path / "train.parquet", rows)
    write_rows(tmp_path / "test.parquet", rows)
    config = {
        "name": "pool", "seed": 0,
        "data": {"train": str(tmp_path / "train.parquet"), "test": str(tmp_path / "test.parquet"),
                 "split": {"labeled_per_class": 2, "dev_per_class": 2, "pool_size": 8}},
        "teacher": {"backend": "openai", "model": "fake", "confidence": False, "gate": "off",
                    "openai": {"base_url": url, "api_key_env": None, "max_retries": 0}},
        "methods": ["vanilla"], "output_dir": str(tmp_path / "runs"), "cache": str(tmp_path / "cache.sqlite"),
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _script(prompt: str) -> str:
    text = prompt.rstrip().rsplit("Text:", 1)[-1]
    if "number 1" in text:  # numbers 1, 10-19: an unparseable reply, so an abstention
        return "no idea"
    return "positive" if "good" in text else "negative"


def test_label_output_and_export_labels_write_the_pool_with_provenance(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmkd.cli import app

    with FakeOpenAIServer(script=_script) as server:
        config = _run_config(tmp_path, server.base_url)
        res = CliRunner().invoke(app, ["label", str(config), "-q", "--output", str(tmp_path / "pool.parquet")])
    assert res.exit_code == 0, res.output
    run_dir = tmp_path / "runs" / "pool"
    table = pq.read_table(tmp_path / "pool.parquet").to_pylist()
    splits, vault = make_splits(cfg(tmp_path / "train.parquet", split={"labeled_per_class": 2, "dev_per_class": 2,
                                                                          "pool_size": 8}), seed=0)
    assert [r["id"] for r in table] == [u.id for u in splits.pool]
    assert [r["text"] for r in table] == [u.text for u in splits.pool]
    answered = [r for r in table if not r["abstained"]]
    abstained = [r for r in table if r["abstained"]]
    assert abstained and answered  # the script abstains on some texts
    assert all(r["label"] is None and r["raw"] == "no idea" and r["error"] for r in abstained)
    assert all(r["label"] == vault.label_of(r["id"]) for r in answered)  # the fake teacher is always right
    manifest = json.loads((run_dir / "manifest.json").read_text())
    first = table[0]
    assert {k: first[k] for k in ("source", "stage", "teacher_backend", "teacher_model", "teacher_fingerprint",
                                  "labeling", "constrained", "template")} == {
        "source": "teacher", "stage": "teacher-pool", "teacher_backend": "openai", "teacher_model": "fake",
        "teacher_fingerprint": manifest["models"]["teacher"], "labeling": "generate", "constrained": False,
        "template": "classify.v2"}
    assert len(first["prompt_id"]) == 16 and first["labeled_at"].endswith("+00:00")
    schema = pq.read_schema(tmp_path / "pool.parquet")
    assert {str(schema.field(c).type) for c in ("probs", "meta", "error")} == {"string"}  # even where all are null
    assert "vault" not in json.dumps(table) and "gold" not in {r["source"] for r in table}

    res = CliRunner().invoke(app, ["export-labels", str(run_dir), "--to", str(tmp_path / "answered"), "--answered-only"])
    assert res.exit_code == 0, res.output
    assert f"{len(answered)} pool labels -> {tmp_path / 'answered'}" in res.output
    back = read_examples(tmp_path / "answered", cfg(tmp_path / "answered"))  # the export is training data
    assert [(e.id, e.text, e.label) for e in back] == [(r["id"], r["text"], r["label"]) for r in answered]
    res = CliRunner().invoke(app, ["export-labels", str(run_dir), "--to", str(tmp_path / "all.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert res.exit_code == 0 and [r["id"] for r in rows] == [r["id"] for r in table]
    assert rows[0].keys() == first.keys()


def test_export_labels_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmkd.cli import app

    with FakeOpenAIServer(script=_script) as server:
        res = CliRunner().invoke(app, ["label", str(_run_config(tmp_path, server.base_url)), "-q", "-o", "pool.csv"])
    assert res.exit_code == 2 and "cannot tell the output format from the extension '.csv'" in res.output
    assert server.requests == [] and not (tmp_path / "runs").exists()  # refused before any labeling

    res = CliRunner().invoke(app, ["export-labels", str(tmp_path), "--to", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2
    assert " ".join(res.output.split()) == (f"error: {tmp_path} is not a run directory (no config.yaml); give the "
                                            "folder `llmkd label` or `llmkd run` printed")
    (tmp_path / "config.yaml").write_text("name: x\n")
    res = CliRunner().invoke(app, ["export-labels", str(tmp_path), "--to", str(tmp_path / "x.parquet")])
    assert " ".join(res.output.split()) == (
        f"error: {tmp_path} has no pool labels ({tmp_path / 'vanilla' / 'labels.jsonl'} is missing); label the pool "
        "first: `llmkd label CONFIG`, or `llmkd run` with the vanilla method")
    res = CliRunner().invoke(app, ["export-labels", str(tmp_path), "--to", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "cannot tell the output format from the extension '.csv'" in res.output
