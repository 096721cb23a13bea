"""The README's picture of report.html: the top of a run's report, in headless Chromium.

    python scripts/report_screenshot.py RUN_DIR [--out docs/img/report.png] [--height 1800]

Draws the run's page again into a temporary file (the run folder is not touched: the same page
as ``llmkd report RUN_DIR``), opens it in Debian's chromium through playwright, offline, and
saves the top ``--height`` pixels at 1280 px wide as a 256-colour PNG (kept under 300 KB: the
height shrinks until it fits). Needs ``apt-get install -y chromium`` and the dev extra.

docs/img/report.png was made from a real run on this repository's 2-core machine (2026-12-06; the
run took 36 min beside other jobs; the three students collapsed to one class, as its warnings say):

    D=/work/shared/data/sst2
    llmkd run examples/mckd_sst2.yaml -q --set name=report-demo --set output_dir=/tmp/report_runs \
        --set data.train=$D/stsa.binary.train --set data.dev=$D/stsa.binary.dev \
        --set data.test=$D/stsa.binary.test --set teacher.confidence=true --set teacher.n_threads=1 \
        --set 'methods=[teacher,supervised,vanilla,mckd,llkd]'
    python scripts/report_screenshot.py /tmp/report_runs/report-demo
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

LIMIT = 300_000  #: bytes


def screenshot(run_dir: Path, out: Path, *, width: int = 1280, height: int = 1800) -> int:
    """Write the PNG; returns its size in bytes."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from llmkd.html_report import rebuild

    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        sys.exit("no chromium on this machine: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as tmp:
        page_path = rebuild(run_dir, out=Path(tmp) / "report.html")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:")) else r.abort())
                page.goto(page_path.resolve().as_uri(), wait_until="load")
                raw = page.screenshot(full_page=False)
            finally:
                browser.close()
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    while True:
        buf = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
        if buf.tell() <= LIMIT or image.height <= 600:
            break
        image = image.crop((0, 0, image.width, int(image.height * 0.9)))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return buf.tell()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "img" / "report.png")
    ap.add_argument("--height", type=int, default=1800)
    args = ap.parse_args()
    size = screenshot(args.run_dir, args.out, height=args.height)
    print(f"{args.out}: {size / 1000:.0f} KB")


if __name__ == "__main__":
    main()
