"""The bad-input corpus: configs and data files a careless user (or an attacker) gives ``llmkd
run``, each with the exact fragment of the one-line error it must get. Run by
``tests/unit/test_bad_inputs.py`` (every case: exit code 2, the message, no traceback) and
counted by ``bench/reliability.py`` (section ``bad_inputs``).

A case writes its ``files`` into a fresh folder beside a small valid data set (``train.jsonl``,
``test.jsonl``: the shipped demo data) and runs ``llmkd run config.yaml`` with ``config`` merged
into a valid base config (``None`` deletes a key) and ``args`` appended. No case reaches a model:
each must be refused before anything is loaded or computed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEMO = Path(__file__).resolve().parent.parent / "src" / "llmkd" / "demo_data"


@dataclass(frozen=True)
class BadInput:
    id: str
    message: str  #: a fragment of the error line, exactly as printed
    config: dict[str, Any] = field(default_factory=dict)  #: merged into BASE ("a.b" keys; None deletes)
    files: dict[str, str | bytes] = field(default_factory=dict)  #: written into the case folder
    args: tuple[str, ...] = ()  #: appended to ``llmkd run config.yaml``
    raw_config: str | None = None  #: the whole config file instead of BASE + config
    config_name: str = "config.yaml"  #: the config file given to ``llmkd run`` (one not written: missing)


def base_config(folder: Path) -> dict[str, Any]:
    return {
        "name": "bad", "seed": 0,
        "data": {"train": str(folder / "train.jsonl"), "test": str(folder / "test.jsonl"),
                 "split": {"labeled_per_class": 2, "dev_per_class": 2, "pool_size": 12, "test_size": 8}},
        "task": {"instruction": "Classify the sentiment of the movie review."},
        "teacher": {"backend": "llamacpp", "model": "smollm2-135m-instruct", "labeling": "score"},
        "student": {"epochs": 1},
        "methods": ["teacher", "vanilla"],
        "output_dir": str(folder / "runs"), "cache": str(folder / "cache.sqlite"), "progress": False,
    }


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    node = cfg
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value


def write_case(case: BadInput, folder: Path) -> Path:
    """Write the case's data and config into ``folder``; returns the config path."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.jsonl", "test.jsonl"):
        (folder / name).write_text((DEMO / f"sst2_{name.split('.')[0]}.jsonl").read_text())
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    cfg_path = folder / "config.yaml"
    if case.raw_config is not None:
        cfg_path.write_text(case.raw_config)
        return cfg_path
    cfg = base_config(folder)
    for key, value in case.config.items():
        _set(cfg, key, str(folder / value[len("FILE:"):]) if isinstance(value, str) and value.startswith("FILE:") else value)
    cfg_path.write_text(yaml.safe_dump(cfg))
    return cfg_path


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _reviews(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"text": f"review number {i} was {'good' if i % 2 else 'bad'} .", "label": "positive" if i % 2 else "negative",
             **extra} for i in range(n)]


CORPUS: list[BadInput] = [
    # -- the config file itself ------------------------------------------------------------------
    BadInput("config-not-yaml", "config.yaml", raw_config="name: [unclosed\nseed: 0\n"),
    BadInput("config-a-list", "config.yaml", raw_config="- name: x\n"),
    BadInput("config-missing", "missing.yaml", config_name="missing.yaml"),
    BadInput("unknown-top-field", "studnet: unknown field (check the spelling", config={"studnet": {"epochs": 3}}),
    BadInput("unknown-nested-field", "teacher.modle: unknown field", config={"teacher.modle": "x"}),
    BadInput("epochs-zero", "student.epochs: Input should be greater than or equal to 1 (got 0)",
             config={"student.epochs": 0}),
    BadInput("epochs-string", "student.epochs: Input should be a valid integer", config={"student.epochs": "many"}),
    BadInput("unknown-method", "methods.1: unknown method; allowed values are", config={"methods": ["teacher", "vanila"]}),
    BadInput("unknown-backend", "teacher.backend: allowed values are 'llamacpp', 'hf', 'openai' or 'vllm' (got 'ollama')",
             config={"teacher.backend": "ollama"}),
    BadInput("unknown-labeling", "teacher.labeling: allowed values are 'generate' or 'score' (got 'vote')",
             config={"teacher.labeling": "vote"}),
    BadInput("name-traversal", "name: must be a plain folder name", config={"name": "../../escaped"}),
    BadInput("name-absolute", "name: must be a plain folder name", config={"name": "/tmp/llmkd-escaped"}),
    BadInput("name-dot", "name: must be a plain folder name", config={"name": "."}),
    BadInput("markup-in-value", "[/INST] :100: [red]", config={"seed": "[/INST] :100: [red]"}),
    BadInput("options-unknown-method", "method_options for unknown method(s) ['mkcd']",
             config={"method_options": {"mkcd": {"stages": 2}}}),
    BadInput("options-unknown-field", "method_options.mckd.stagez", config={"methods": ["mckd"],
                                                                           "method_options": {"mckd": {"stagez": 2}}}),
    BadInput("llkd-topk-without-fraction", "selection=topk needs fraction",
             config={"methods": ["llkd"], "method_options": {"llkd": {"selection": "topk"}}}),
    BadInput("ner-score-mode", "teacher.labeling: 'score' ranks a fixed label set",
             config={"task.kind": "ner", "teacher.labeling": "score"}),
    BadInput("both-split-sizes", "data.split: set either labeled_per_class or labeled_n, not both",
             config={"data.split.labeled_n": 10}),
    BadInput("set-without-value", "--set", args=("--set", "student.epochs")),
    BadInput("set-unknown-path", "studnt", args=("--set", "studnt.epochs=3")),
    # -- data files ------------------------------------------------------------------------------
    BadInput("train-missing", "does not exist; check data.train", config={"data.train": "FILE:nope.jsonl"}),
    BadInput("test-missing", "does not exist", config={"data.test": "FILE:nope.jsonl"}),
    BadInput("train-empty", "empty.jsonl", config={"data.train": "FILE:empty.jsonl"}, files={"empty.jsonl": ""}),
    BadInput("jsonl-broken-line", "broken.jsonl:3", config={"data.train": "FILE:broken.jsonl"},
             files={"broken.jsonl": _jsonl(_reviews(2)) + '{"text": "oops", "label": \n' + _jsonl(_reviews(20))}),
    BadInput("jsonl-no-text-field", "nofield.jsonl:1", config={"data.train": "FILE:nofield.jsonl"},
             files={"nofield.jsonl": _jsonl([{"sentence": "x", "label": "positive"}] * 20)}),
    BadInput("label-not-in-labels", "neutral", config={"data.labels": ["negative", "positive"],
                                                       "data.train": "FILE:three.jsonl"},
             files={"three.jsonl": _jsonl(_reviews(20) + [{"text": "meh", "label": "neutral"}])}),
    BadInput("too-few-per-class", "labeled_per_class", config={"data.split.labeled_per_class": 500}),
    BadInput("csv-stray-quote", "stray.csv:4: the quote (\") at column 1 opens a value that does not close on this line",
             config={"data.train": "FILE:stray.csv"},
             files={"stray.csv": "text,label\n" + "".join(f"review {i} ok,{'positive' if i % 2 else 'negative'}\n"
                                                          for i in range(2)) + '"a stray quote,negative\n'
                    + "".join(f"review {i} ok,{'positive' if i % 2 else 'negative'}\n" for i in range(2, 200))}),
    BadInput("duplicate-id", "dup.jsonl:2: example id 'a' is used again (first at ",
             config={"data.train": "FILE:dup.jsonl"},
             files={"dup.jsonl": _jsonl([{"id": "a", **r} for r in _reviews(2)] + _reviews(20))}),
    BadInput("label-regex-empty", "gives an empty label", config={
        "data.train": "FILE:lt.txt", "data.test": "FILE:lt.txt", "data.format": "label_text", "data.separator": " ",
        "data.label_regex": "(\\d*)", "data.labels": None},
        files={"lt.txt": "".join(f"{'pos' if i % 2 else 'neg'} review {i}\n" for i in range(40))}),
    BadInput("ner-on-classification-data", "task.kind is 'ner', but data.format",
             config={"task.kind": "ner", "teacher.labeling": "generate", "data.train": "FILE:c.csv",
                     "data.test": "FILE:c.csv"},
             files={"c.csv": "text,label\n" + "".join(f"review {i},{'positive' if i % 2 else 'negative'}\n"
                                                      for i in range(40))}),
    BadInput("conll-chunk-column", "holds chunk tags (types NP, VP), not NER tags", config={
        "task.kind": "ner", "teacher.labeling": "generate", "data.train": "FILE:d.conll", "data.test": "FILE:d.conll",
        "data.labels": None},
        files={"d.conll": "".join(f"EU{i} NNP B-NP\nrejects VBZ B-VP\n\n" for i in range(20))}),
]


def run_case(case: BadInput, folder: Path) -> dict[str, Any]:
    """Run ``llmkd run`` on the case in-process; its exit code, output and whether an exception
    other than the CLI's exit escaped (a traceback)."""
    from typer.testing import CliRunner

    from llmkd.cli import app

    write_case(case, folder)
    res = CliRunner().invoke(app, ["run", str(folder / case.config_name), "-q", *case.args])
    try:
        text = res.stdout + res.stderr
    except ValueError:  # an older click mixes stderr into stdout
        text = res.output
    escaped = res.exception is not None and not isinstance(res.exception, SystemExit)
    return {"exit": res.exit_code, "output": text, "traceback": escaped or "Traceback" in text}


def verdict(case: BadInput, outcome: dict[str, Any]) -> str:
    """``clear`` (exit 2, the error with the expected fragment), ``traceback``, ``silent``
    (exit 0: the run went on) or ``unclear`` (refused, but not with the expected message)."""
    if outcome["traceback"]:
        return "traceback"
    if outcome["exit"] == 0:
        return "silent"
    text = outcome["output"]
    error = text[text.find("error: "):] if "error: " in text else ""
    return "clear" if outcome["exit"] == 2 and case.message in error else "unclear"
