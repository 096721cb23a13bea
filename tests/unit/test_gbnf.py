"""The GBNF recognizer that checks replies generated under a grammar constraint (issue 31)."""

from __future__ import annotations

import pytest

from llmkd.teachers.gbnf import GbnfError, compile_gbnf, matches

GRAMMAR = r'''
# a comment line
root ::= greeting (", " name)? "!"{1,3}  # a trailing comment
greeting ::= "hi" | "hello"
name ::= [A-Z] [a-z\-]* | "\x41\u00e9"
'''


@pytest.mark.parametrize(("text", "ok"), [
    ("hi!", True), ("hello, Ann!!!", True), ("hi, Jean-luc!", True), ("hi, A\u00e9!", True),
    ("hi!!!!", False), ("hi, ann!", False), ("hey!", False), ("hi", False), ("", False),
])
def test_matches(text: str, ok: bool) -> None:
    assert matches(GRAMMAR, text) is ok


def test_nested_rules_span_lines_and_recursion_works() -> None:
    grammar = 'root ::= (\n  "(" root* ")"\n  | "x"\n)'
    assert matches(grammar, "(x(xx)())") and not matches(grammar, "(x")


def test_any_char_and_negated_class() -> None:
    assert matches('root ::= . [^\\n]+', "ab c") and not matches('root ::= . [^\\n]+', "a\nb")


@pytest.mark.parametrize("bad", ['root ::= "open', "root ::= [a-", "nothing", 'other ::= "x"', "root ::= undefined"])
def test_unreadable_grammars_raise(bad: str) -> None:
    with pytest.raises(GbnfError):
        compile_gbnf(bad)
