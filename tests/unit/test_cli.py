"""The CLI prints messages as plain text: user data in an error is never read as Rich markup."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from llmkd.cli import app


def test_errors_are_plain_text_not_markup(tmp_path: Path) -> None:
    folder = tmp_path / "runs[red]" / "x:100:"
    folder.mkdir(parents=True)
    config = folder / "bad[INST].yaml"
    config.write_text('seed: "[/INST] :100:"\n')
    res = CliRunner().invoke(app, ["run", str(config)])
    assert res.exit_code == 2
    text = res.output if res.stderr_bytes is None else res.stderr
    assert "error: " in text and "Traceback" not in text
    assert "[red]" in text and "[/INST]" in text and ":100:" in text and "\N{HUNDRED POINTS SYMBOL}" not in text
