"""The published per-run data (../shared/data beside the repository): imported, reported,
and the report must show the summaries its README lists and call the series an improvement."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import EXIT_OK, EXIT_USAGE
from orchestrator.report import published
from orchestrator.results import ResultsFile

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "published-mmap-lock.dat").is_file(),
    reason=f"published data not found at {SHARED_DATA} (CI puts a copy of shared/ beside the clone)",
)


@pytest.fixture(scope="module")
def rundir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SHARED_DATA / "published-mmap-lock.dat").is_file():
        pytest.skip(f"published data not found at {SHARED_DATA}")
    out = tmp_path_factory.mktemp("published")
    assert main(["import-published", str(SHARED_DATA), str(out)]) == EXIT_OK
    return out


@needs_data
def test_import_records_the_choices(rundir: Path) -> None:
    base = ResultsFile.load(rundir / "results" / "mmap-lock.json")
    series = ResultsFile.load(rundir / "results" / "series.json")
    assert base.baseline == series.baseline == "mmap-lock"
    assert len(base.runs) == len(series.runs) == 100
    # every run its own boot: independent runs
    assert len({r["boot"] for r in base.runs}) == 100 == len(base.boots)
    assert base.runs[0]["record"] == {"max_ms": 0.161, "mean_ms": 0.012}
    assert "sorted independently" in base.provenance["pairing"]
    assert "its own boot" in base.provenance["independence"]
    assert "mmap_lock" in base.provenance["description"]


@needs_data
def test_report_shows_the_published_summaries(
    rundir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(rundir)]) == EXIT_OK
    terminal = capsys.readouterr().out
    comparison = json.loads((rundir / "comparison.json").read_text())
    base = comparison["summaries"]["mmap-lock"]
    series = comparison["summaries"]["series"]
    assert f"{base['metrics']['max_ms']['median']:.3f}" == "1.476"
    assert f"{series['metrics']['max_ms']['median']:.3f}" == "0.238"
    assert base["max_above_ms"] == {"0.5": 79, "1": 55}
    assert series["max_above_ms"] == {"0.5": 2, "1": 2}
    assert base["metrics"]["max_ms"]["max"] == 4.588 and series["metrics"]["max_ms"]["max"] == 3.108
    assert base["metrics"]["max_ms"]["min"] == 0.161 and series["metrics"]["max_ms"]["min"] == 0.068
    assert f"{base['metrics']['mean_ms']['median']:.4f}" == "0.0130"
    assert f"{series['metrics']['mean_ms']['median']:.4f}" == "0.0100"

    head = comparison["candidates"][0]["metrics"][0]
    assert head["metric"] == "max_ms" and head["family"] == "headline"
    assert head["verdict"] == "improved" and head["p_adjusted"] < 0.001
    assert comparison["verdict"] == "improved"
    # every run its own boot, no blocks: an unpaired rank-sum test over 100 + 100 boot values
    assert head["method"] == "unpaired" and head["blocks"] == 0
    assert head["boots_baseline"] == head["boots_candidate"] == 100
    assert any("not paired by block" in w for w in comparison["warnings"])

    md = html.unescape((rundir / "summary.md").read_text())  # Markdown escapes "<"
    page = html.unescape((rundir / "report.html").read_text())
    for text in (terminal, md, page):
        for figure in ("1.476", "0.238", "4.588", "3.108"):
            assert figure in text
        assert "p < 0.001" in text
        # the Hodges-Lehmann estimate: the median of all 100 x 100 ratios of boot values
        assert "series vs mmap-lock: improved; per-run maximum (ms) -82.5%" in text
        assert "100 + 100 boots, unpaired" in text
    assert "| mmap-lock | 100 | 100 | 0 | 1.476 | 0.161 | 4.588 | 79 | 55 |" in md
    assert "| series | 100 | 100 | 0 | 0.238 | 0.068 | 3.108 | 2 | 2 |" in md
    assert "79 (79%)" in page and "55 (55%)" in page
    assert "sorted independently" in md and "sorted independently" in page
    assert "one run per boot" in page


def test_import_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "published-mmap-lock.dat").write_text("1 0.013 0.012 0.2\n2 0.013 0.013 0.1\n")
    (tmp_path / "published-series.dat").write_text("1 0.010 0.009 0.068\n")
    assert main(["import-published", str(tmp_path), str(tmp_path / "out")]) == EXIT_USAGE
    with pytest.raises(Exception, match="maxima column is not sorted"):
        published.read_published(tmp_path / "published-mmap-lock.dat")
    (tmp_path / "published-series.dat").write_text("1 0.010 0.009\n")
    with pytest.raises(Exception, match=r"published-series\.dat:1: expected 4 columns"):
        published.read_published(tmp_path / "published-series.dat")
    with pytest.raises(Exception, match=r"no published-base\.dat"):
        published.import_published(tmp_path, tmp_path / "out", baseline="base")
