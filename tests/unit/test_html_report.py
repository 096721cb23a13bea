"""``report.html`` (issue 30): written with every run, self-contained (every figure an inline PNG,
no script, nothing fetched), with the comparison table, per-class F1 and confusion matrices, the
teacher's calibration on dev and (report-only) on the pool, every student's dev curve, MCKD's
stages, LLKD's selection and EvoKD's rounds, and labeling time and tokens; drawn again by
``llmkd report RUN_DIR``, and tolerant of records of another shape. Runs: tests/report_runs.py
(scripted teacher, fake students: no model is loaded)."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmkd import html_report
from llmkd.config import parse_config
from llmkd.io import read_json, read_jsonl
from tests.report_runs import classification_run, ner_run


class Page(HTMLParser):
    """The parts of a page the tests check: sections (id -> text), images, tables (caption ->
    rows of cell texts), and every tag that could fetch something."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self.images: list[dict[str, str]] = []
        self.tables: list[list[list[str]]] = []
        self.captions: list[str] = []
        self.fetching: list[tuple[str, dict[str, str]]] = []
        self._section: str | None = None
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self._section = a["id"]
            self.sections[a["id"]] = []
        elif tag == "img":
            self.images.append(a)
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "figcaption":
            self._caption = []
        if tag in ("script", "link", "iframe", "object", "embed") or any(
                k in ("src", "href") and not v.startswith(("data:", "#")) for k, v in a.items()):
            self.fetching.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "figcaption" and self._caption is not None:
            self.captions.append(" ".join("".join(self._caption).split()))
            self._caption = None

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.sections[self._section].append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._caption is not None:
            self._caption.append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.sections[section]).split())


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return classification_run(tmp_path_factory.mktemp("cls"))


@pytest.fixture(scope="module")
def ner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ner_run(tmp_path_factory.mktemp("ner"))


def check_self_contained(page: Page) -> None:
    assert page.fetching == []  # no script, stylesheet or image from elsewhere
    assert page.images
    for img in page.images:
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") and img["alt"]


def test_classification_run_report(cls_run: Path) -> None:
    html = (cls_run / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    check_self_contained(page)
    assert "could not be drawn" not in html
    metrics = read_json(cls_run / "metrics.json")
    methods = ["teacher", "supervised", "vanilla", "mckd", "llkd", "evokd"]
    assert list(page.sections) == ["results", "labeling", "calibration", *[f"method-{m}" for m in methods], "config"]
    # the comparison table: the same numbers as report.md
    results = page.tables[0]
    assert results[0][:3] == ["method", "macro-F1", "accuracy"]
    for row, m in zip(results[1:], methods):
        assert row[0] == m and row[1] == f"{metrics['results'][m]['metrics']['macro_f1']:.4f}"
    # labeling: prompts and tokens of every method that asked the teacher
    labeling = next(t for t in page.tables if t[0][:2] == ["method", "prompts"])
    assert [r[0] for r in labeling[1:]] == ["teacher", "vanilla", "mckd", "llkd", "evokd"]
    tokens = labeling[0].index("prompt tokens")
    assert labeling[1][tokens] == str(metrics["results"]["teacher"]["timings"]["prompt_tokens"])
    # calibration on the dev set (the gate's labels) and, report-only, on the pool
    dev = read_jsonl(cls_run / "gate" / "dev_labels.jsonl")
    assert len(dev) == 12 and "dev_labels" not in metrics["gate"]
    captions = page.captions
    assert "teacher calibration on the dev set (labeled by the teacher gate)" in captions
    assert "teacher calibration on the pool, against the pool's gold report-only" in captions
    right = sum(r["label"] == r["gold"] for r in dev)
    assert f"12 examples, 0 abstentions; accuracy of the answers {right / 12:.3f}" in page.text("calibration")
    # every method: per-class F1 and a confusion matrix; every trained student's dev curve
    for m in methods:
        assert f"{m}: confusion matrix (test)" in {i["alt"] for i in page.images}
    assert "dev curve of every student (1)" in captions  # supervised, vanilla, LLKD
    assert "selection score per epoch of every student (7)" in captions  # MCKD (fidelity): 2 x 2 parts + 3 finals


def test_mckd_stage_table_scores_the_pool_labels(cls_run: Path) -> None:
    page = Page((cls_run / "report.html").read_text(encoding="utf-8"))
    metrics = read_json(cls_run / "metrics.json")
    stages = next(t for t in page.tables if t[0][:2] == ["stage", "labeled by"])
    assert [r[0] for r in stages[1:]] == ["0", "1", "2"]
    teacher_acc = metrics["pool"]["pseudo-label accuracy (answered)"]
    assert stages[1][6] == f"{teacher_acc:.4f}"  # stage 0: the teacher's labels, as the pool stats say
    churn = [s["churn"] for s in metrics["results"]["mckd"]["extra"]["stages"]]
    assert [r[2] for r in stages[2:]] == [f"{c:.1%}" for c in churn]


def test_llkd_and_evokd_sections(cls_run: Path) -> None:
    html = (cls_run / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    extra = read_json(cls_run / "llkd" / "result.json")["extra"]
    record = next(t for t in page.tables if t[0][:3] == ["epoch", "selected", "ever selected"])
    assert len(record) - 1 == len(extra["epochs"])
    assert record[1][4] == f"{extra['epochs'][0]['tau_teacher']:.4f}"
    assert "selection per epoch" in page.captions
    assert extra["trace"]["step"] and "selection per step" in page.captions  # the per-step trace, drawn
    assert f"{extra['batch_kept_fraction']:.1%} of each selection batch" in page.text("method-llkd")
    kept = next(t for t in page.tables if t[0][0] == "teacher labels")
    assert kept[1][:2] == ["ever selected", str(extra["n_train"])]
    evokd = page.text("method-evokd")
    rounds = read_json(cls_run / "evokd" / "result.json")["extra"]["rounds"]
    assert "negated praise" in evokd and "a synthetic review" in evokd
    table = next(t for t in page.tables if t[0][:4] == ["round", "dev", "generated", "kept"])
    assert [r[0] for r in table[1:]] == [str(r["round"]) for r in rounds]
    # the EvoKD learning curve file is drawn by matplotlib now, as an <svg> element
    assert (cls_run / "evokd" / "learning_curve.svg").read_text().startswith("<svg")


def test_ner_run_report(ner_dir: Path) -> None:
    html = (ner_dir / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    check_self_contained(page)
    assert "could not be drawn" not in html
    metrics = read_json(ner_dir / "metrics.json")["results"]["vanilla"]["metrics"]
    per_type = [t for t in page.tables if t[0][0] == "entity type"]
    assert len(per_type) == 3  # teacher, supervised, vanilla
    vanilla = per_type[2]
    assert [r[0] for r in vanilla[1:]] == ["person", "place"]
    assert vanilla[2][3] == f"{metrics['f1[place]']:.4f}"
    assert "vanilla: entity type per word (test)" in {i["alt"] for i in page.images}
    # the teacher gave no confidence: said so, no plot
    assert "gave no confidence with its answers" in page.text("calibration")


def test_llmkd_report_draws_the_page_again(cls_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from llmkd.cli import app

    before = Page((cls_run / "report.html").read_text(encoding="utf-8"))
    (cls_run / "report.html").unlink()
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    done = CliRunner().invoke(app, ["report", str(cls_run), "--open"])
    assert done.exit_code == 0, done.output
    again = Page((cls_run / "report.html").read_text(encoding="utf-8"))
    assert again.tables == before.tables and again.captions == before.captions
    assert opened == [(cls_run / "report.html").resolve().as_uri()]
    assert str(cls_run / "report.html") in done.output


def test_llmkd_report_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmkd.cli import app

    done = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert done.exit_code == 2 and "is not a run directory (no config.yaml)" in done.output


def test_records_of_another_shape_still_draw(cls_run: Path, tmp_path: Path) -> None:
    """Keys added or missing in a method's records (another version of a method) are skipped; a
    record that cannot be read at all costs its own section only, which says so."""
    cfg = parse_config(yaml.safe_load((cls_run / "config.yaml").read_text()))
    results = read_json(cls_run / "metrics.json")["results"]
    llkd = json.loads(json.dumps(results["llkd"]))
    for i, r in enumerate(llkd["extra"]["epochs"]):  # a per-step record without thresholds, with new keys
        r.update(step=10 * (i + 1), budget_left=5 - i)
        r.pop("teacher_thresholds")
    evokd = json.loads(json.dumps(results["evokd"]))
    evokd["extra"]["rounds"].insert(0, {"round": 0, "dev": {"macro_f1": 0.5}, "kind": "seeds"})  # no counts
    evokd["extra"]["rounds"][1]["counts"].pop("dropped")
    mckd = json.loads(json.dumps(results["mckd"]))
    mckd["extra"]["stages"] = [{"stage": 1, "students": "not a list of students"}]
    teacher = json.loads(json.dumps(results["teacher"]))
    teacher["timings"].update(cost_usd=0.0123, cached_tokens=77)  # a backend's new labeling counters
    html = html_report.render_html(cls_run, cfg, {"teacher": teacher, "llkd": llkd, "evokd": evokd, "mckd": mckd},
                                   {}, [], task=None, gold=None)
    page = Page(html)
    check_self_contained(page)
    assert "selection per step" in page.captions
    assert "could not be drawn" not in page.text("method-llkd") + page.text("method-evokd")
    assert "This section could not be drawn (AttributeError" in page.text("method-mckd")
    labeling = next(t for t in page.tables if t[0][:2] == ["method", "prompts"])
    assert labeling[0][-2:] == ["cached_tokens", "cost_usd"] and labeling[1][-2:] == ["77", "0.0123"]
    priced = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"price_per_mtok": {"input": 2, "output": 10}})})
    teacher["timings"].update(prompt_tokens=1000, completion_tokens=100)
    page = Page(html_report.render_html(cls_run, priced, {"teacher": teacher}, {}, [], task=None, gold=None))
    labeling = next(t for t in page.tables if t[0][:2] == ["method", "prompts"])
    assert labeling[0][-1] == "US$ (labels)" and labeling[1][-1] == "0.003"  # (1000 * 2 + 100 * 10) / 1e6
    assert "the pool's gold is not available here" in page.text("calibration")


# -- in a real browser ----------------------------------------------------------------------------
def chromium() -> str:
    """Debian's chromium (``.ci/run`` installs it); the test skips, saying why, only without it."""
    import shutil

    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on this machine: apt-get install -y chromium (.ci/run does it)")
    return path


def test_report_in_headless_chromium(cls_run: Path, tmp_path: Path) -> None:
    """The page in headless Chromium, offline: no console error or warning, no page error, nothing
    fetched but the file itself, every image decoded; a full-page screenshot is saved."""
    from playwright.sync_api import sync_playwright

    page_url = (cls_run / "report.html").resolve().as_uri()
    console: list[str] = []
    fetched: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: console.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: console.append(f"failed: {r.url}"))

            def route(r: Any) -> None:  # offline: anything but the page and its data URIs is refused (and noted)
                url = r.request.url
                if url.startswith(("file:", "data:")):
                    r.continue_()
                else:
                    fetched.append(url)
                    r.abort()

            page.route("**/*", route)
            page.goto(page_url, wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
            title = page.title()
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert console == [] and fetched == []
    assert title == "llmkd run report-cls"
    assert len(images) == len(Page((cls_run / "report.html").read_text(encoding="utf-8")).images) >= 15
    assert all(done and w > 100 and h > 100 for _, done, w, h in images), images
    from PIL import Image

    with Image.open(shot) as im:
        assert im.width == 1280 and im.height > 4000  # the whole page, every section


def test_a_run_still_going_gets_a_page(cls_run: Path, tmp_path: Path) -> None:
    """Without metrics.json (the run has not finished), ``llmkd report`` draws the methods that have
    a result.json; a folder with none is a clear error."""
    import shutil

    from llmkd.errors import ConfigError

    run = tmp_path / "going"
    shutil.copytree(cls_run, run, ignore=shutil.ignore_patterns("metrics.json", "report.html", "evokd", "llkd"))
    page = Page(html_report.rebuild(run).read_text(encoding="utf-8"))
    assert list(page.sections) == ["results", "labeling", "calibration", "method-teacher", "method-supervised",
                                   "method-vanilla", "method-mckd", "config"]
    for m in ("teacher", "supervised", "vanilla", "mckd"):
        shutil.rmtree(run / m)
    with pytest.raises(ConfigError, match="holds no finished method yet"):
        html_report.rebuild(run)
