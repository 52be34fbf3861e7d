"""The HTML report in a real browser: a person must see the charts, and the page must load
without console errors. Needs Debian's ``chromium`` (ci/debian-packages.txt); skipped
without it. Set KORCH_SCREENSHOT_DIR to keep the screenshots for a look.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from orchestrator.report import ReportOptions, write_reports
from orchestrator.report.svg import PALETTE
from orchestrator.report.synthetic import synthetic_results
from tests.unit.browser import Browser, decode_png, find_chromium, tinted

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium; see ci/debian-packages.txt)",
)

SVG_BOXES = """[...document.querySelectorAll('svg')].map(s => {
  const r = s.getBoundingClientRect();
  return {id: s.id, x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height,
          lines: s.querySelectorAll('polyline').length, dots: s.querySelectorAll('circle').length};
})"""


def _keep(name: str, png: bytes, tmp_path: Path) -> None:
    (tmp_path / name).write_bytes(png)
    target = os.environ.get("KORCH_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, Path(target) / name)


def test_report_renders_its_charts(tmp_path: Path) -> None:
    common = {"baseline": "mmap-lock", "runs": 12, "boots": 3, "ops": 1500, "tail": 0.015}
    results = [
        synthetic_results("mmap-lock", seed=1, **common),  # type: ignore[arg-type]
        synthetic_results("per-vma", seed=2, scale=0.6, **common),  # type: ignore[arg-type]
    ]
    write_reports(tmp_path, results, ReportOptions(formats=("html",)))
    assert CHROMIUM is not None
    with Browser(CHROMIUM, width=1280, height=900) as browser:
        page = browser.open((tmp_path / "report.html").as_uri())
        boxes = browser.evaluate(SVG_BOXES)
        title = browser.evaluate("document.title")
        full = browser.screenshot()
        shots = {
            box["id"]: browser.screenshot({k: box[k] for k in ("x", "y", "width", "height")})
            for box in boxes
        }
        assert page.errors == [], page.errors

    assert title == "korch report: synthetic"
    _keep("report-full.png", full, tmp_path)
    by_id = {b["id"]: b for b in boxes}
    assert {
        "chart-sorted-maxima",
        "chart-latency-all",
        "chart-latency-map-unmap",
        "chart-runs-mean_ms",
    } <= set(by_id)
    assert (
        by_id["chart-sorted-maxima"]["lines"] == 2
        and by_id["chart-latency-map-unmap"]["lines"] == 4
    )
    assert by_id["chart-runs-mean_ms"]["dots"] == 24
    baseline_colour, candidate_colour = PALETTE[0], PALETTE[1]
    for chart_id, png in shots.items():
        box = by_id[chart_id]
        assert box["width"] >= 600 and box["height"] >= 150, box  # laid out at a readable size
        pixels = decode_png(png)
        _keep(f"{chart_id}.png", png, tmp_path)
        assert pixels.shape[0] >= 150 and pixels.shape[1] >= 600
        inked = int((pixels < 235).any(axis=2).sum())
        assert inked > 0.02 * pixels.shape[0] * pixels.shape[1], f"{chart_id}: almost blank"
        # both variants' curves (or dots) are drawn in their colours, well beyond the legend's
        # swatches (3 x 24 pixels each) and beyond what a colour no variant uses picks up
        unused = tinted(pixels, PALETTE[2])
        for colour in (baseline_colour, candidate_colour):
            assert tinted(pixels, colour) > max(200, 1.5 * unused), (chart_id, colour, unused)
