"""Markdown reference of every run-config field, generated from the pydantic models, so the docs
cannot drift from the code: ``llmkd config-reference > docs/config.md`` (a test checks it)."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    text = text.replace("llmkd.config.", "")
    text = re.sub(r"Annotated\[(\w+), [^\]]*\)\]", r"\1", text)
    return text.replace("|", "\\|")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(section)"
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{json.dumps(value)}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{json.dumps(field.default)}`"


def _section(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    out += [f"### `{prefix or '(top level)'}`", ""]
    if model.__doc__ and not model.__doc__.startswith("!!!") and "Usage docs" not in model.__doc__:
        out += [model.__doc__.strip().splitlines()[0], ""]
    out += ["| field | type | default | meaning |", "|---|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            nested.append((f"{prefix}.{name}" if prefix else name, ann))
            out.append(f"| `{name}` | section | | see `{prefix + '.' if prefix else ''}{name}` below |")
            continue
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        out.append(f"| `{name}` | {_type_name(ann)} | {_default(field)} | {desc} |")
    out.append("")
    for path, sub in nested:
        _section(sub, path, out)


def config_reference() -> str:
    from .config import RunConfig
    from .methods import METHODS

    out = ["# Run config reference", "",
           "Generated from the code by `llmkd config-reference` (do not edit by hand). A config is YAML;",
           "relative data paths are resolved against the config file's folder; any field can be overridden",
           "with `--set a.b=c` (the value is parsed as YAML; `--set a=1 --set b=2` and `--set a=1 b=2` both",
           "give two). Examples: [`examples/`](../examples/).", ""]
    _section(RunConfig, "", out)
    out += ["### `methods` and `method_options`", "",
            "| method | teacher | options | what it does |", "|---|---|---|---|"]
    for spec in METHODS.values():
        opts = ", ".join(f"`{k}`" for k in spec.options.model_fields) if spec.options else "—"
        out.append(f"| `{spec.name}` | {'yes' if spec.uses_teacher else 'no'} | {opts} | {spec.summary} |")
    out.append("")
    for spec in METHODS.values():
        if spec.options:
            _section(spec.options, f"method_options.{spec.name}", out)
    return "\n".join(out).rstrip() + "\n"
