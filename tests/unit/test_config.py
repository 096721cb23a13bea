"""Run config: YAML loading, validation messages (field path, allowed values, value given),
``--set`` overrides and path resolution. Messages are checked word for word."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmkd.methods import METHODS
from llmkd.config import RunConfig, apply_overrides, dump_config, load_config, parse_config
from llmkd.errors import ConfigError

MINIMAL = "data:\n  train: train.jsonl\n  test: test.jsonl\n"


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def raw(**sections: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"data": {"train": "/d/train.jsonl", "test": "/d/test.jsonl"}}
    out.update(sections)
    return out


# ---- loading -------------------------------------------------------------------------------


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert isinstance(cfg, RunConfig)
    assert cfg.student.epochs == 8 and cfg.teacher.backend == "llamacpp"
    assert cfg.data.split.labeled_per_class == 8 and cfg.data.split.labeled_n is None
    assert cfg.methods == ["teacher", "supervised", "vanilla", "supervised_full"]


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"config file {path} does not exist"


@pytest.mark.parametrize(
    "text, where, problem",
    [
        # a key indented deeper than its sibling
        ("data:\n  train: a.jsonl\n   test: b.jsonl\n", "3:8", "mapping values are not allowed here"),
        # an unclosed flow list
        ("data: [a, b\n", "2:1", "expected ',' or ']', but got '<stream end>'"),
        # a tab used for indentation
        ("data:\n\ttrain: a.jsonl\n", "2:1", "found character '\\t' that cannot start any token"),
    ],
    ids=["indentation", "unclosed-list", "tab"],
)
def test_bad_yaml_names_file_line_and_column(tmp_path: Path, text: str, where: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}:{where}: invalid YAML: {problem}. Check indentation and quoting there."


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("hello\n", "str")], ids=["list", "scalar"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, ["student.epochs=3"])
    assert str(exc.value) == (
        f"invalid config {path}: the top level must be a mapping of fields (data:, teacher:, ...), got a {kind}"
    )


def test_empty_file_reports_the_missing_data_section(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"invalid config {path}:\n  data: field required"


# ---- validation messages -------------------------------------------------------------------

RUN_FIELDS = "['name', 'seed', 'data', 'task', 'teacher', 'student', 'methods', 'method_options', 'output_dir', 'cache', 'progress']"
TEACHER_FIELDS = ("['backend', 'model', 'gguf_file', 'labeling', 'confidence', 'constrained', 'chat', 'max_tokens', "
                  "'temperature', 'n_ctx', 'n_threads', 'repack', 'seed', 'gate', 'gate_max_dev', 'openai', 'vllm', 'price_per_mtok']")


@pytest.mark.parametrize(
    "sections, line",
    [
        ({"student": {"epochs": 0}}, "student.epochs: Input should be greater than or equal to 1 (got 0)"),
        ({"student": {"lr": 0}}, "student.lr: Input should be greater than 0 (got 0)"),
        ({"student": {"epochs": "abc"}},
         "student.epochs: Input should be a valid integer, unable to parse string as an integer (got 'abc')"),
        ({"teacher": {"backend": "foo"}},
         "teacher.backend: allowed values are 'llamacpp', 'hf', 'openai' or 'vllm' (got 'foo')"),
        ({"teacher": {"labeling": "vote"}}, "teacher.labeling: allowed values are 'generate' or 'score' (got 'vote')"),
        ({"methods": ["vanilla", "nosuch"]},
         "methods.1: unknown method; allowed values are " + ", ".join(sorted(METHODS)) + " (got 'nosuch')"),
        ({"studnet": {"epochs": 3}}, f"studnet: unknown field (check the spelling; the fields here are {RUN_FIELDS})"),
        ({"teacher": {"modle": "x"}},
         f"teacher.modle: unknown field (check the spelling; the fields here are {TEACHER_FIELDS}) (got 'x')"),
        ({"data": {"train": "/a"}}, "data.test: field required"),
        ({"name": "../../x"}, "name: must be a plain folder name (no '/', '\\', ':', '.' or '..'): the run directory "
                              "is output_dir/name and must stay inside output_dir. Use e.g. 'x', and output_dir to "
                              "choose where runs go (got '../../x')"),
        ({"data": {"train": "/a", "test": "/b", "split": {"labeled_per_class": 4, "labeled_n": 10}}},
         "data.split: set either labeled_per_class or labeled_n, not both "
         "(got labeled_per_class=4, labeled_n=10); set the other one to null"),
        ({"data": {"train": "/a", "test": "/b", "split": {"labeled_per_class": None}}},
         "data.split: set labeled_per_class (k per class) or labeled_n (n in total)"),
    ],
    ids=["epochs-0", "lr-0", "epochs-str", "backend", "labeling", "method", "unknown-top", "unknown-nested",
         "missing", "name-up", "both-sizes", "no-size"],
)
def test_validation_error_names_path_rule_and_value(sections: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(raw(**sections), source="run.yaml")
    assert str(exc.value) == f"invalid config run.yaml:\n  {line}"


@pytest.mark.parametrize("name, fix", [("/tmp/abs", "tmp-abs"), (".", "run"), ("..", "run"), ("a\\b", "a-b"),
                                       ("C:x", "C-x"), ("  ", "run")])
def test_the_run_directory_stays_inside_output_dir(name: str, fix: str) -> None:
    with pytest.raises(ConfigError, match=f"name: must be a plain folder name .* Use e.g. '{fix}'"):
        parse_config(raw(name=name), source="run.yaml")
    assert parse_config(raw(name="sst2-run_1.v2"), source="run.yaml").name == "sst2-run_1.v2"


def test_every_error_is_listed() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(raw(student={"epochs": 0, "batch_size": 0}))
    assert str(exc.value) == (
        "invalid config:\n"
        "  student.batch_size: Input should be greater than or equal to 1 (got 0)\n"
        "  student.epochs: Input should be greater than or equal to 1 (got 0)"
    )


def test_parse_config_rejects_a_non_mapping_without_source() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config([1, 2])  # type: ignore[arg-type]
    assert str(exc.value) == "invalid config: the top level must be a mapping of fields (data:, teacher:, ...), got a list"


def test_labeled_n_alone_is_accepted() -> None:
    cfg = parse_config(raw(data={"train": "/a", "test": "/b", "split": {"labeled_per_class": None, "labeled_n": 20}}))
    assert (cfg.data.split.labeled_per_class, cfg.data.split.labeled_n) == (None, 20)


# ---- --set overrides -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, expected",
    [
        ("name=exp1", {"name": "exp1"}),
        ("seed=7", {"seed": 7}),
        ("progress=false", {"progress": False}),
        ("cache=null", {"cache": None}),
        ("student.lr=0.001", {"student": {"epochs": 5, "lr": 0.001}}),
        ("student.epochs=3", {"student": {"epochs": 3}}),
        ("teacher.openai.concurrency=2", {"teacher": {"openai": {"concurrency": 2}}}),
        ("methods=[teacher, vanilla]", {"methods": ["teacher", "vanilla"]}),
        ("data.label_map={'0': negative}", {"data": {"train": "t", "label_map": {"0": "negative"}}}),
        ("task.instruction=Is it: good?", {"task": {"instruction": "Is it: good?"}}),
        ("task.instruction=- be brief", {"task": {"instruction": "- be brief"}}),
        ("name=a=b", {"name": "a=b"}),
        (" seed =1", {"seed": 1}),
    ],
    ids=["str", "int", "bool", "null", "float-nested", "replace-nested", "deep", "list", "dict", "colon", "dash",
         "equals-in-value", "spaces-in-key"],
)
def test_apply_overrides(override: str, expected: dict[str, Any]) -> None:
    base = {"student": {"epochs": 5}, "data": {"train": "t"}}
    before = {"student": {"epochs": 5}, "data": {"train": "t"}}
    out = apply_overrides(base, [override])
    for key, value in expected.items():
        assert out[key] == value
    assert base == before  # the input dict is not modified


def test_unparseable_yaml_value_is_kept_as_text() -> None:
    assert apply_overrides({}, ["task.instruction=[unclosed"]) == {"task": {"instruction": "[unclosed"}}


def test_later_overrides_win() -> None:
    assert apply_overrides({}, ["seed=1", "seed=2"]) == {"seed": 2}


@pytest.mark.parametrize(
    "override, message",
    [
        ("student.epochs", "--set 'student.epochs': expected KEY=VALUE, e.g. --set student.epochs=3"),
        ("=3", "--set '=3': empty field name in ''; expected e.g. --set student.epochs=3"),
        ("student..epochs=3", "--set 'student..epochs=3': empty field name in 'student..epochs'; "
                              "expected e.g. --set student.epochs=3"),
    ],
    ids=["no-equals", "empty-key", "empty-part"],
)
def test_bad_override(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        apply_overrides({}, [override])
    assert str(exc.value) == message


def test_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    cfg = load_config(path, ["student.epochs=3", "teacher.backend=openai", "teacher.openai.base_url=[http://a/v1, http://b/v1]"])
    assert cfg.student.epochs == 3 and cfg.teacher.backend == "openai"
    assert cfg.teacher.openai.base_url == ["http://a/v1", "http://b/v1"]
    with pytest.raises(ConfigError) as exc:
        load_config(path, ["student.epochs=0"])
    assert str(exc.value) == f"invalid config {path}:\n  student.epochs: Input should be greater than or equal to 1 (got 0)"


# ---- paths -------------------------------------------------------------------------------


def test_relative_data_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    path = write(folder, "data:\n  train: data/train.jsonl\n  test: ../test.jsonl\n  dev: /abs/dev.jsonl\n")
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    cfg = load_config(Path("configs") / "run.yaml")
    assert cfg.data.train == str((folder / "data" / "train.jsonl").resolve())
    assert cfg.data.test == str((tmp_path / "test.jsonl").resolve())
    assert cfg.data.dev == "/abs/dev.jsonl"
    assert path.exists()


def test_no_dev_file_stays_none(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.data.dev is None
    assert cfg.data.train == str((tmp_path / "train.jsonl").resolve())


def test_parse_config_without_base_dir_keeps_paths() -> None:
    cfg = parse_config({"data": {"train": "rel/train.jsonl", "test": "test.jsonl"}})
    assert (cfg.data.train, cfg.data.test) == ("rel/train.jsonl", "test.jsonl")


def test_dump_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL), ["student.epochs=2", "data.split.labeled_per_class=null",
                                                  "data.split.labeled_n=16"])
    again = load_config(write(tmp_path, dump_config(cfg), "dumped.yaml"))
    assert again == cfg


def test_a_run_directory_keeps_its_config_once_it_holds_results(tmp_path: Path) -> None:
    from llmkd.api import _check_same_config

    run_dir = tmp_path / "runs" / "r"
    (run_dir / "teacher").mkdir(parents=True)  # made before the method failed on bad input
    first = parse_config(raw(teacher={"model": "no-such-model"}), base_dir=tmp_path)
    (run_dir / "config.yaml").write_text(dump_config(first))
    fixed = parse_config(raw(teacher={"model": "smollm2-135m-instruct"}), base_dir=tmp_path)
    _check_same_config(run_dir, fixed)  # nothing computed yet: the corrected config may take over
    (run_dir / "teacher" / "result.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        _check_same_config(run_dir, fixed)
    assert str(err.value) == (f"{run_dir} holds a run made with a different config (differs in: teacher). "
                              f"Give this run another name (--set name=...) or delete {run_dir} to start over.")
    _check_same_config(run_dir, first)  # the same config resumes
    faster = parse_config(raw(teacher={"model": "no-such-model", "n_threads": 1, "repack": "off"}), base_dir=tmp_path)
    _check_same_config(run_dir, faster)  # how llama.cpp runs on this machine is not what the run computes
    threads = parse_config(raw(teacher={"model": "no-such-model"}, student={"threads": 1}), base_dir=tmp_path)
    _check_same_config(run_dir, threads)  # nor how many cores torch uses for the students


def test_teacher_repack_reads_yaml_on_off(tmp_path) -> None:
    from llmkd.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("data: {train: /a, test: /b}\nteacher: {repack: off}\n")
    assert load_config(path).teacher.repack == "off"
    assert load_config(path, ["teacher.repack=on"]).teacher.repack == "on"
    assert load_config(path, ["teacher.repack=auto"]).teacher.repack == "auto"


def test_vanilla_mix_gold_option_loads_and_builds(tmp_path: Path) -> None:
    from llmkd.methods import VanillaKD

    cfg = load_config(write(tmp_path, MINIMAL + "method_options:\n  vanilla:\n    mix_gold: true\n"))
    assert cfg.method_options == {"vanilla": {"mix_gold": True}}
    method = METHODS["vanilla"].build(cfg.method_options.get("vanilla"))
    assert isinstance(method, VanillaKD) and method.mix_gold is True
    assert METHODS["vanilla"].build(None).mix_gold is False
    with pytest.raises(ConfigError, match=r"method_options\.vanilla\.mix_gld: unknown field"):
        parse_config(raw(method_options={"vanilla": {"mix_gld": True}}))
