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


def test_several_overrides_after_one_set(tmp_path: Path, monkeypatch) -> None:
    from llmkd.cli import expand_overrides

    monkeypatch.chdir(tmp_path)
    Path("a=b.yaml").write_text("")  # an existing file whose name looks like an override stays a path
    argv = ["run", "c.yaml", "--set", "seed=3", "student.epochs=1", "--quiet", "x=y",
            "--set=name=a", "data.split.pool_size=5", "a=b.yaml"]
    assert expand_overrides(argv) == ["run", "c.yaml", "--set", "seed=3", "--set", "student.epochs=1", "--quiet",
                                      "x=y", "--set=name=a", "--set", "data.split.pool_size=5", "a=b.yaml"]
    assert expand_overrides(["run", "--set", "seed=3", "c=d.yaml"]) == ["run", "--set", "seed=3", "--set", "c=d.yaml"]
    assert expand_overrides(["run", "--set", "--set", "a=1"]) == ["run", "--set", "--set", "a=1"]


def test_unknown_field_in_the_second_override_is_named(tmp_path: Path) -> None:
    from llmkd.cli import expand_overrides

    config = tmp_path / "c.yaml"
    config.write_text("seed: 1\n")
    res = CliRunner().invoke(app, expand_overrides(["run", str(config), "--set", "seed=2", "sed=3"]))
    text = res.output if res.stderr_bytes is None else res.stderr
    assert res.exit_code == 2
    assert "sed: unknown field" in text and "unexpected extra argument" not in text
