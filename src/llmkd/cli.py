"""Command-line interface: thin wrappers over :mod:`llmkd.api`."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from .errors import LlmkdError

app = typer.Typer(
    help="Distil a large language model into a small, fast task model.\n\n"
    "Examples:\n\n"
    "  llmkd demo                                   # embedded SST-2 demo, offline\n\n"
    "  llmkd run examples/sst2.yaml --set student.epochs=3\n\n"
    "  llmkd label examples/sst2.yaml --dry-run\n\n"
    "  llmkd eval runs/sst2\n\n"
    "  llmkd export runs/sst2-demo --to my-model\n\n"
    "  llmkd review export runs/sst2-demo --n 100 --format labelstudio --to review.json\n\n"
    "  llmkd models list",
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
)
models_app = typer.Typer(help="The offline model zoo (packaged GGUF teachers and encoder students).", no_args_is_help=True)
cache_app = typer.Typer(help="The teacher cache (SQLite).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(cache_app, name="cache")
# Plain text: messages carry user data (labels like "[/INST]", paths with "[red]", "file:100:"),
# which Rich would read as markup or emoji codes. Only the "error:" prefix is styled.
console = Console(stderr=True, markup=False, emoji=False, highlight=False)
out = Console(markup=False, emoji=False, highlight=False)

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config field: --set student.epochs=3 (repeatable; --set a=1 b=2 takes both)")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars")]


def _setup(verbose: bool = False, quiet: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _load(config: Path, overrides: list[str] | None, quiet: bool):
    from .config import load_config

    ov = list(overrides or [])
    if quiet:
        ov.append("progress=false")
    return load_config(config, ov)


def _fail(exc: Exception) -> None:
    console.print(Text("error: ", style="bold red") + Text(str(exc)), soft_wrap=True)  # never broken into lines
    raise typer.Exit(2)


@app.command()
def run(config: Annotated[Path, typer.Argument(help="YAML run config")], set_: SetOpt = None, quiet: QuietOpt = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
        executor: Annotated[str, typer.Option(help="local, or ray: independent students (MCKD's part students) as "
                                                   "parallel Ray tasks (pip install 'llmkd[ray]')")] = "local",
        address: Annotated[Optional[str], typer.Option(help="the Ray cluster (--executor ray; default: RAY_ADDRESS, "
                                                            "else a local one)")] = None) -> None:
    """Run the methods of CONFIG (teacher, supervised, vanilla, supervised_full) and write a run
    directory with labels, metrics and a report. Rerunning the same command resumes it.

    Example: llmkd run examples/sst2.yaml --set teacher.model=qwen2.5-coder-1.5b-instruct

    Example: llmkd run examples/mckd_sst2.yaml --executor ray --address 10.0.0.1:6379
    """
    _setup(verbose, quiet)
    try:
        from . import api

        summary = api.run(_load(config, set_, quiet), executor=executor, address=address)
    except LlmkdError as exc:
        _fail(exc)
        return
    from .distributed import is_main

    if not is_main():  # accelerate launch: the main process reports
        return
    typer.echo(summary.report)
    console.print(f"run directory: {summary.run_dir}", highlight=False)


LabelsFormatOpt = Annotated[str, typer.Option("--format", help="auto (by extension; no extension: a datasets "
                                                                "folder), jsonl, parquet or datasets")]
AnsweredOpt = Annotated[bool, typer.Option("--answered-only", help="leave out the examples the teacher abstained on")]


@app.command()
def label(config: Annotated[Path, typer.Argument(help="YAML run config")], set_: SetOpt = None, quiet: QuietOpt = False,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count prompts and tokens and estimate the time")] = False,
          output: Annotated[Optional[Path], typer.Option("--output", "-o", help="also write the labeled pool with texts "
                                                         "and provenance here (as `llmkd export-labels`)")] = None,
          format_: LabelsFormatOpt = "auto", answered_only: AnsweredOpt = False,
          executor: Annotated[str, typer.Option(help="local, or ray: the cache misses on a Ray cluster (pip install 'llmkd[ray]')")] = "local",
          address: Annotated[Optional[str], typer.Option(help="the Ray cluster (--executor ray; default: RAY_ADDRESS, else a local one)")] = None) -> None:
    """Pseudo-label the unlabeled pool with the teacher (cached), without training.

    Example: llmkd label examples/sst2.yaml --dry-run

    Example: llmkd label examples/sst2.yaml --output pool.parquet

    Example: llmkd label examples/sst2.yaml --executor ray --address 10.0.0.1:6379
    """
    _setup(False, quiet)
    try:
        from . import api

        cfg = _load(config, set_, quiet)
        if output is not None:  # a wrong format name fails before the teacher is asked
            from .data.writers import output_format

            output_format(output, format_)
        if dry_run:
            est = api.dry_run(cfg)
            for k, v in est.items():
                out.print(f"{k:>34}: {v}", highlight=False)
            return
        run_dir, labels = api.label(cfg, executor=executor, address=address)
        n_abs = sum(lab.abstained for lab in labels)
        out.print(f"labeled {len(labels)} examples ({n_abs} abstentions) -> {run_dir / 'vanilla' / 'labels.jsonl'}",
                  highlight=False, soft_wrap=True)
        if output is not None:
            export_labels_cmd(run_dir, output, format_, answered_only)
    except LlmkdError as exc:
        _fail(exc)
        return


@app.command("export-labels")
def export_labels_cmd(run_dir: Annotated[Path, typer.Argument(help="a run directory of `llmkd label` or `llmkd run`")],
                      to: Annotated[Path, typer.Option("--to", help="the file (.jsonl, .parquet) or datasets folder to write")],
                      format_: LabelsFormatOpt = "auto", answered_only: AnsweredOpt = False) -> None:
    """Write a run's pseudo-labeled pool (texts, labels, confidence, provenance) as jsonl, parquet
    or a datasets folder (docs/data.md).

    Example: llmkd export-labels runs/sst2-demo --to pool.parquet --answered-only
    """
    _setup()
    from .label_export import export_labels

    try:
        path, n = export_labels(run_dir, to, format_, answered_only=answered_only)
    except LlmkdError as exc:
        _fail(exc)
        return
    out.print(f"{n} pool labels -> {path}", highlight=False, soft_wrap=True)


@app.command("eval")
def eval_(run_dir: Annotated[Path, typer.Argument(help="a run directory written by `llmkd run`")]) -> None:
    """Re-score a run's saved test predictions and print its comparison table.

    Example: llmkd eval runs/sst2-demo
    """
    _setup()
    try:
        from . import api

        summary = api.evaluate(run_dir)
    except LlmkdError as exc:
        _fail(exc)
        return
    typer.echo(summary.report)


@app.command("report")
def report_cmd(run_dir: Annotated[Path, typer.Argument(help="a run directory written by `llmkd run`")],
               open_: Annotated[bool, typer.Option("--open", help="open the page in the default browser")] = False) -> None:
    """Draw RUN_DIR/report.html again from the run folder (one self-contained page: every table
    and figure of the run) and print its path.

    Example: llmkd report runs/sst2-demo --open
    """
    _setup()
    try:
        from .html_report import rebuild

        path = rebuild(run_dir)
    except LlmkdError as exc:
        _fail(exc)
        return
    out.print(str(path), highlight=False, soft_wrap=True)
    if open_:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


@app.command()
def demo(quiet: QuietOpt = False, set_: SetOpt = None,
         output_dir: Annotated[Path, typer.Option(help="where the run directory goes")] = Path("runs")) -> None:
    """Run the embedded demo: SST-2 (shipped with llmkd, MIT), Qwen2.5-0.5B teacher (pulled from
    PyPI on first use), MiniLM student. About 10-15 minutes on 2 CPU cores."""
    from .demo import demo_config_path

    overrides = [f"output_dir={output_dir}", *(set_ or [])]
    run(demo_config_path(), overrides, quiet)


@app.command("export")
def export_cmd(run_dir: Annotated[Path, typer.Argument(help="a run directory written by `llmkd run`")],
               to: Annotated[Path, typer.Option("--to", help="the folder to write (a Hugging Face model folder)")],
               method: Annotated[Optional[str], typer.Option(help="whose student (default: the run's best by its test metric)")] = None,
               onnx: Annotated[bool, typer.Option("--onnx", help="also write onnx/model.onnx, checked on the test set")] = False,
               quantize: Annotated[Optional[str], typer.Option(help="also an int8 ONNX file (with --onnx): int8 (dynamic; smallest, fastest) or int8-block (block-wise; closest to fp32)")] = None,
               force: Annotated[bool, typer.Option("--force", help="replace a non-empty --to folder")] = False,
               check: Annotated[bool, typer.Option("--check/--no-check", help="re-check on the run's test set")] = True) -> None:
    """Export a run's student to a folder that transformers.pipeline loads, with a model card.

    Example: llmkd export runs/sst2-demo --to my-model --onnx --quantize int8
    """
    _setup()
    from .export import ExportCheckFailed, export

    try:
        report = export(run_dir, to, method=method, onnx=onnx, quantize=quantize, force=force, check=check)
    except ExportCheckFailed as exc:
        console.print(Text("error: ", style="bold red") + Text(str(exc)), soft_wrap=True)
        raise typer.Exit(1)
    except LlmkdError as exc:
        _fail(exc)
        return
    for line in report.lines():
        out.print(line, highlight=False, soft_wrap=True)


@app.command("predict")
def predict_cmd(model: Annotated[Path, typer.Argument(help="an exported model folder or a run directory")],
                input_: Annotated[str, typer.Option("--input", "-i", help="jsonl / csv / tsv / text file, or - for stdin")],
                output: Annotated[Optional[Path], typer.Option("--output", "-o", help="output file (default: stdout)")] = None,
                format_: Annotated[str, typer.Option("--format", help="output format: jsonl or csv")] = "jsonl",
                text_field: Annotated[str, typer.Option(help="the text field of jsonl / csv / tsv records")] = "text",
                input_format: Annotated[str, typer.Option(help="auto (by extension), jsonl, csv, tsv or text")] = "auto",
                method: Annotated[Optional[str], typer.Option(help="a run directory's method (default: its best)")] = None,
                onnx: Annotated[Optional[str], typer.Option(help="fp32 or int8: predict with the exported ONNX file")] = None,
                batch_size: Annotated[int, typer.Option(help="inputs per batch")] = 64,
                quiet: QuietOpt = False) -> None:
    """Predict labels (with probabilities) or entity spans for every input.

    Example: llmkd predict my-model --input reviews.csv --output predictions.csv --format csv
    """
    _setup()
    from . import predict as p

    try:
        if format_ not in ("jsonl", "csv"):
            raise p.ConfigError(f"--format must be jsonl or csv. Got {format_!r}.")
        items = p.read_inputs(input_, text_field=text_field, fmt=input_format)
        student, what = p.load_predictor(model, method=method, onnx=onnx)
        console.print(what, highlight=False, soft_wrap=True)
        rows = p.prediction_rows(student, items, batch_size=batch_size, progress=not quiet and sys.stderr.isatty())
        p.write_rows(rows, output, format_)
    except LlmkdError as exc:
        _fail(exc)
        return
    if output is not None:
        console.print(f"{len(rows)} predictions -> {output}", highlight=False, soft_wrap=True)


@models_app.command("list")
def models_list() -> None:
    """List zoo models, their packages, size and whether they are installed."""
    from . import zoo

    for m in zoo.ZOO.values():
        mark = "installed" if zoo.is_installed(m) else "not installed"
        out.print(f"{m.name:<30} {m.kind:<8} {m.size_mb:>5} MB  {mark:<13} {m.description}", highlight=False)


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument(help="a zoo name from `llmkd models list`")]) -> None:
    """Install a zoo model from PyPI, assemble it and verify its sha256."""
    _setup()
    from . import zoo

    try:
        path = zoo.pull(name)
    except LlmkdError as exc:
        _fail(exc)
        return
    out.print(f"{name}: {path}", highlight=False, soft_wrap=True)


def _cache_file(path: Optional[Path]) -> Path:
    from .zoo import home

    return path or home() / "teacher.sqlite"


@cache_app.command("stats")
def cache_stats(path: Annotated[Optional[Path], typer.Option(help="cache file (default: ~/.cache/llmkd/teacher.sqlite)")] = None) -> None:
    """Entries, teacher calls, hits and repeated calls (always 0 unless entries were re-asked)."""
    from .teachers.cache import TeacherCache

    try:
        stats = TeacherCache(_cache_file(path)).stats()
    except LlmkdError as exc:
        _fail(exc)
        return
    typer.echo(json.dumps(stats, indent=1))  # plain: rich would wrap long strings inside the JSON


@cache_app.command("check")
def cache_check(path: Annotated[Optional[Path], typer.Option(help="cache file (default: ~/.cache/llmkd/teacher.sqlite)")] = None,
                repair: Annotated[bool, typer.Option("--repair", help="copy the readable, well-formed rows into a fresh "
                                                     "file and keep the damaged one as <file>.corrupt-<time>")] = False) -> None:
    """Check the cache file: SQLite's integrity check, rows that cannot be read or do not parse,
    counts per request kind. Exits 1 when it is damaged (and --repair was not given). Never writes
    without --repair; run --repair while no llmkd process uses the cache.

    Example: llmkd cache check --repair
    """
    from .teachers.cache import check_cache_file, repair_cache_file

    file = _cache_file(path)
    report = check_cache_file(file)
    typer.echo(json.dumps(report, indent=1, default=str))
    if not repair:
        if not report["ok"]:
            typer.echo(f"{file} is damaged: `llmkd cache check --path {file} --repair` keeps its readable entries, "
                       f"`llmkd cache clear --path {file}` starts an empty cache", err=True)
            raise typer.Exit(1)
        return
    if not report["exists"] or (report["ok"] and not report.get("all_-inf_scores (never used)")):
        typer.echo(f"{file}: nothing to repair")
        return
    try:
        done = repair_cache_file(file)
    except (LlmkdError, OSError) as exc:
        _fail(exc)
        return
    typer.echo(json.dumps(done, indent=1))


@cache_app.command("clear")
def cache_clear(path: Annotated[Optional[Path], typer.Option(help="cache file")] = None,
                fingerprint: Annotated[Optional[str], typer.Option(help="only this teacher's entries (prefix)")] = None,
                yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False) -> None:
    """Delete cached teacher answers (all, or one teacher's). A damaged cache file is deleted
    as a whole (without --fingerprint); the next run starts an empty cache."""
    from .errors import StateError
    from .teachers.cache import TeacherCache, reset_cache_file

    file = _cache_file(path)
    ask = not yes and sys.stdin.isatty()
    try:
        cache = TeacherCache(file)
        if ask:
            typer.confirm(f"delete {'all' if not fingerprint else fingerprint} entries of {cache.path}?", abort=True)
        deleted = cache.clear(fingerprint)
    except StateError as exc:
        if fingerprint:
            _fail(StateError(f"{exc} One teacher's entries cannot be picked out of a damaged file: run "
                             f"`llmkd cache check --path {file} --repair` first, or clear it all (no --fingerprint)."))
            return
        if ask:
            typer.confirm(f"{file} is damaged; delete the whole file?", abort=True)
        reset_cache_file(file)
        typer.echo(f"{file} was damaged; deleted it (and its -wal / -shm files): the next run starts an empty cache")
        return
    out.print(f"deleted {deleted} entries", highlight=False)


@app.command()
def doctor(model: Annotated[Optional[str], typer.Option(help="GGUF to test-generate with: a zoo name or a path "
                                                              "(default: the default teacher if installed, else the smallest installed zoo teacher)")] = None,
           no_generate: Annotated[bool, typer.Option("--no-generate", help="skip the llama.cpp generation check")] = False,
           cache: Annotated[Optional[Path], typer.Option(help="cache file (default: ~/.cache/llmkd/teacher.sqlite)")] = None) -> None:
    """Check this machine: CPU features, torch, the llama.cpp build, one generation per weight-repacking
    setting (in a child process), the zoo models, the cache and free disk. Exits 1 when a check fails.

    Example: llmkd doctor --model qwen2.5-coder-1.5b-instruct
    """
    _setup()
    from .doctor import run_checks

    checks = run_checks(model, generate=not no_generate, cache=cache)
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    for c in checks:
        out.print(f"{marks[c.status]} {c.name:<28} {c.detail}", highlight=False, markup=False, soft_wrap=True)
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        console.print(f"{len(failed)} check(s) failed: {', '.join(failed)}", highlight=False, markup=False)
        raise typer.Exit(1)


@app.command("config-reference")
def config_reference_cmd() -> None:
    """Print the markdown reference of every config field and method option (docs/config.md)."""
    from .configdoc import config_reference

    typer.echo(config_reference(), nl=False)


@app.command("methods")
def methods_cmd() -> None:
    """List the registered methods and their options."""
    from .methods import METHODS

    for spec in METHODS.values():
        opts = ", ".join(spec.options.model_fields) if spec.options else "-"
        typer.echo(f"{spec.name:16s} {'teacher' if spec.uses_teacher else '       '}  {spec.summary}  [options: {opts}]")


# ---- llmkd review (docs/review.md) --------------------------------------------------------------
review_app = typer.Typer(help="Human review of a run's pool labels: export the items most worth a look to Label "
                         "Studio / Argilla / JSONL, import the corrections as gold labels.", no_args_is_help=True)
app.add_typer(review_app, name="review")


@review_app.command("export")
def review_export(run_dir: Annotated[Path, typer.Argument(help="a run directory (llmkd run / llmkd label)")],
                  to: Annotated[Optional[Path], typer.Option("--to", "-o", help="the file to write (default: "
                                                             "RUN_DIR/review/to_review.json, .jsonl for jsonl)")] = None,
                  format_: Annotated[str, typer.Option("--format", help="labelstudio, argilla or jsonl")] = "labelstudio",
                  n: Annotated[int, typer.Option("--n", help="how many pool items")] = 100,
                  method: Annotated[Optional[str], typer.Option(help="whose student gives the disagreement signal "
                                                                "(default: vanilla where it finished)")] = None,
                  strategy: Annotated[str, typer.Option(help="uncertain (abstained, student disagrees, low "
                                                        "agreement), confidence (the teacher's alone) or random")] = "uncertain",
                  seed: Annotated[int, typer.Option(help="tie-break / random sample seed")] = 0) -> None:
    """Write the pool items most worth a human look, with the teacher's label as the pre-annotation.

    Example: llmkd review export runs/sst2 --method vanilla --n 100 --format labelstudio
    """
    _setup()
    from .review import export_review

    try:
        if to is None:
            to = run_dir / "review" / f"to_review.{'jsonl' if format_ == 'jsonl' else 'json'}"
        rep = export_review(run_dir, to, fmt=format_, n=n, method=method, strategy=strategy, seed=seed)
    except LlmkdError as exc:
        _fail(exc)
        return
    why = ", ".join(f"{k} {v}" for k, v in sorted(rep.counts().items()))
    out.print(f"{len(rep.items)} pool items ({why}; student: {rep.student or 'none'}; {rep.excluded} already "
              f"labeled by a person left out) -> {rep.path}", highlight=False, soft_wrap=True)
    for extra in rep.extra_files:
        what = "labeling config" if extra.suffix == ".xml" else "dataset settings (Python)"
        out.print(f"{what} -> {extra}", highlight=False, soft_wrap=True)


@review_app.command("import")
def review_import(file: Annotated[Path, typer.Argument(help="the labeling tool's export (JSON / JSONL)")],
                  run_dir: Annotated[Path, typer.Argument(help="the run directory the items were exported from")],
                  format_: Annotated[str, typer.Option("--format", help="auto, labelstudio, argilla or jsonl")] = "auto") -> None:
    """Add a person's labels to RUN_DIR/review/human_labels.jsonl and print the command that reruns
    with them (data.human_labels; teacher answers come from the cache).

    Example: llmkd review import project-1-export.json runs/sst2
    """
    _setup()
    from .review import import_review

    try:
        rep = import_review(file, run_dir, fmt=format_)
    except LlmkdError as exc:
        _fail(exc)
        return
    skipped = ", ".join(f"{v} {k}" for k, v in rep.skipped.items()) or "none"
    out.print(f"{rep.added + rep.replaced} human labels read ({rep.format}): {rep.changed} differ from the teacher, "
              f"{rep.confirmed} agree; {rep.added} new, {rep.replaced} replace earlier ones; skipped: {skipped}. "
              f"{rep.total} in {rep.human_file}", highlight=False, soft_wrap=True)
    name = f"{Path(run_dir).resolve().name}-reviewed"
    out.print(f"rerun with them: llmkd run {Path(run_dir).resolve() / 'config.yaml'} --set "
              f"data.human_labels={rep.human_file.resolve()} --set name={name}", highlight=False, soft_wrap=True)


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def expand_overrides(argv: list[str]) -> list[str]:
    """``--set a=1 b=2`` as ``--set a=1 --set b=2``: each ``key=value`` word right after a
    ``--set`` value is one more override (the form ``bench/*.py`` takes). A word that names an
    existing file, or is not ``dotted.key=...``, is left as it is (a config path, say)."""
    out: list[str] = []
    state = 0  # 0: elsewhere; 1: the value of a --set comes next; 2: right after a --set value
    for tok in argv:
        if state == 2 and _OVERRIDE.match(tok) and not Path(tok).exists():
            out += ["--set", tok]
            continue
        out.append(tok)
        state = 2 if state == 1 else 0
        if tok == "--set":
            state = 1
        elif tok.startswith("--set="):
            state = 2
    return out


def main() -> None:
    import faulthandler

    # A crash inside a native library (llama.cpp, torch) then prints where it happened instead of
    # a bare "Segmentation fault"; `llmkd doctor` names the cause where llmkd can probe for it.
    faulthandler.enable()
    app(args=expand_overrides(sys.argv[1:]), prog_name="llmkd")


if __name__ == "__main__":
    main()
