"""Docs that are generated from the code must match it."""

from pathlib import Path

from llmkd.configdoc import config_reference

ROOT = Path(__file__).resolve().parents[2]


def test_config_reference_is_up_to_date() -> None:
    doc = ROOT / "docs" / "config.md"
    assert doc.read_text() == config_reference(), "docs/config.md is stale: run `llmkd config-reference > docs/config.md`"


def test_every_registered_method_is_in_the_reference() -> None:
    from llmkd.methods import METHODS

    text = config_reference()
    for name in METHODS:
        assert f"| `{name}` |" in text
