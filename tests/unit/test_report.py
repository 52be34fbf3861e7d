"""Reports: golden Markdown and JUnit, JSON schema, self-contained HTML, the CLI and exit codes.

Set KORCH_UPDATE_GOLDEN=1 to rewrite the golden files after an intended change (then read
the diff before committing it).
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator import report, stats
from orchestrator.cli import FAIL_ON, main
from orchestrator.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION, EXIT_USAGE
from orchestrator.report import ReportOptions, exit_code, junit, markdown, terminal, write_reports
from orchestrator.report import html as html_report
from orchestrator.report.jsonout import to_json
from orchestrator.report.synthetic import provenance, synthetic_results
from orchestrator.results import ResultsFile
from orchestrator.stats import StatsOptions, Verdict

GOLDEN = Path(__file__).parent / "data" / "golden"


def golden_results() -> list[ResultsFile]:
    """Baseline, a faster candidate, a slower one with a failed boot, one with a single block.

    12 blocks of 2 runs: enough for the headline (at 0.05 over 3 candidates, 7 blocks) and for
    the exploratory metrics too (Holm over all 45 of them needs 11)."""
    common = {"baseline": "mmap-lock", "runs": 24, "boots": 12, "ops": 1000, "tail": 0.02}
    base = synthetic_results("mmap-lock", seed=11, **common)  # type: ignore[arg-type]
    fast = synthetic_results("per-vma", seed=12, scale=0.5, **common)  # type: ignore[arg-type]
    slow = synthetic_results("slower", seed=13, scale=2.0, **common)  # type: ignore[arg-type]
    slow.boots.append(
        {
            "id": "slower-5",
            "error": "boot timed out after 60 s (console: boot/slower-5/console.log)",
        }
    )
    few = synthetic_results(
        "few", baseline="mmap-lock", runs=3, boots=1, seed=14, ops=1000, tail=0.02
    )
    return [base, fast, slow, few]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("KORCH_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with KORCH_UPDATE_GOLDEN=1 once"
    assert text == path.read_text(), (
        f"{name} differs from the golden file (KORCH_UPDATE_GOLDEN=1 rewrites it)"
    )


@pytest.fixture(scope="module")
def golden_comparison() -> stats.Comparison:
    return stats.compare(golden_results())


def test_golden_markdown(golden_comparison: stats.Comparison) -> None:
    text = markdown.render(golden_comparison, reproduce="korch run synthetic.yaml")
    check_golden("summary.md", text)
    assert "**per-vma vs mmap-lock: improved;" in text
    assert "**slower vs mmap-lock: regressed;" in text
    assert "**few vs mmap-lock: inconclusive;" in text
    assert "12 blocks, paired)**" in text and "1 block, paired)**" in text
    assert "| **per-run maximum (ms)** (headline (confirmatory)) |" in text
    assert "| per-run mean (ms) (exploratory) |" in text
    assert "Holm-adjusted together at 0.05" in text and "split evenly over the candidates" in text


def test_markdown_is_inert(golden_comparison: stats.Comparison) -> None:
    # names come from results files: a variant called <script>... must not reach a step
    # summary or a pull-request comment as HTML
    evil = "<script>alert(1)</script>|x"
    results = [
        synthetic_results(v, baseline="mmap-lock", runs=8, boots=8, seed=n, ops=300)
        for n, v in enumerate(("mmap-lock", evil))
    ]
    text = markdown.render(stats.compare(results))
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;\\|x" in text


def test_golden_junit(golden_comparison: stats.Comparison) -> None:
    text = junit.render(golden_comparison)
    check_golden("junit.xml", text)
    root = ET.fromstring(text)
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    slower = suites["synthetic: slower vs mmap-lock"]
    assert slower.get("failures") != "0" and slower.get("errors") == "1"
    failed = [c.get("name") for c in slower.iter("testcase") if c.find("failure") is not None]
    assert "max_ms (headline)" in failed
    error = next(c for c in slower.iter("testcase") if c.find("error") is not None)
    assert "boot timed out" in (error.find("error").get("message") or "")  # type: ignore[union-attr]
    few = suites["synthetic: few vs mmap-lock"]
    assert few.get("skipped") == str(len(golden_comparison.candidates[2].metrics))
    skipped = next(c for c in few.iter("testcase") if c.get("name") == "max_ms (headline)")
    message = skipped.find("skipped").get("message") or ""  # type: ignore[union-attr]
    assert "1 block cannot reach p < 0.0167" in message and "at least 7 blocks" in message
    assert "mean_ms (exploratory)" in {c.get("name") for c in few.iter("testcase")}
    assert int(root.get("tests") or 0) == sum(int(s.get("tests") or 0) for s in suites.values())


def test_json_schema(golden_comparison: stats.Comparison) -> None:
    obj = json.loads(json.dumps(to_json(golden_comparison), allow_nan=False))
    assert obj["schema"] == 2 and obj["kind"] == "korch-comparison"
    assert obj["baseline"] == "mmap-lock" and obj["headline"] == "max_ms"
    assert obj["verdict"] == "regressed"
    assert [c["candidate"] for c in obj["candidates"]] == ["per-vma", "slower", "few"]
    first = obj["candidates"][0]["metrics"][0]
    assert set(first) == {
        "metric", "family", "post_hoc", "method", "blocks", "n_baseline", "n_candidate",
        "boots_baseline", "boots_candidate", "baseline_median", "candidate_median", "ratio",
        "change_pct", "ci_low", "ci_high", "p_value", "level", "p_adjusted", "more_blocks",
        "unpaired_boots", "log_ratios", "verdict", "reason", "noise_floor_pct",
    }  # fmt: skip
    assert first["metric"] == "max_ms" and first["family"] == "headline"
    assert first["method"] == "paired" and first["blocks"] == 12 and len(first["log_ratios"]) == 12
    assert first["level"] == pytest.approx(0.05 / 3) and first["p_adjusted"] == first["p_value"]
    assert first["verdict"] == "improved" and first["post_hoc"] is False
    assert {m["family"] for m in obj["candidates"][0]["metrics"][1:]} == {"exploratory"}
    assert all(m["level"] == 0.05 for m in obj["candidates"][0]["metrics"][1:])
    assert obj["headline_post_hoc"] is False and obj["declared_headline"] is None
    assert obj["smallest_effect"] == 0.05 and obj["sequential"] is None
    few = obj["candidates"][2]["metrics"][0]
    assert few["verdict"] == "inconclusive" and few["more_blocks"] == 6
    assert few["ci_high"] is None  # an unbounded interval
    assert len(few["unpaired_boots"]) == 11
    assert obj["candidates"][0]["design"]["blocks_for_smallest"] is not None
    assert obj["summaries"]["mmap-lock"]["operations"]["all"]["count"] == 24 * 1000
    assert obj["metrics"]["ops_per_s"]["better"] == "higher"
    assert obj["noise_floor"] is None


def test_terminal_layout(golden_comparison: stats.Comparison) -> None:
    console = Console(record=True, width=250, color_system=None)
    terminal.render(golden_comparison, console)
    out = console.export_text()
    header = next(line for line in out.splitlines() if "%change" in line)
    # 0-day order: baseline, then per candidate %change and the candidate's value
    assert (
        header.index("mmap-lock")
        < header.index("%change")
        < header.index("per-vma")
        < header.index("slower")
    )
    assert "per-run maximum (ms)  [headline]" in out
    assert re.search(r"-\d+\.\d% +\*+", out)  # a significant change carries its mark
    assert "'slower': 1 boot(s) failed" in out


def test_html_is_self_contained(golden_comparison: stats.Comparison) -> None:
    page = html_report.render(
        golden_comparison, reproduce="korch run x.yaml", report_command="korch report r"
    )
    assert not re.search(r"""(src|href)\s*=\s*["'][a-z]+://""", page)
    assert (
        "<link" not in page
        and "<script" not in page
        and "url(" not in page
        and "@import" not in page
    )
    assert page.count("<svg") >= 4
    assert 'id="chart-sorted-maxima"' in page and 'id="chart-latency-all"' in page
    assert "korch run x.yaml" in page and "korch report r" in page
    assert "Not comparable" not in page


def _rundir(tmp_path: Path, results: list[ResultsFile]) -> Path:
    for r in results:
        r.save(tmp_path / "results" / f"{r.variant}.json")
    return tmp_path


def test_write_reports_and_noise_floor(tmp_path: Path) -> None:
    results = golden_results()[:2]
    rundir = _rundir(tmp_path, results)
    for name, seed in (("a", 21), ("b", 22)):
        synthetic_results(
            "mmap-lock", baseline="mmap-lock", runs=16, boots=8, seed=seed, ops=400, tail=0.02
        ).save(rundir / "aa" / "results" / f"{name}.json")
    console = Console(record=True, width=200, color_system=None)
    comparison = write_reports(rundir, results, ReportOptions(console=console))
    for name in report.OUTPUTS.values():
        assert (rundir / name).stat().st_size > 0
    assert comparison.noise_floor is not None
    md = (rundir / "summary.md").read_text()
    assert "A/A noise" in md and "Noise floor (A/A run" in md
    assert "noise floor (A/A, baseline against itself)" in console.export_text()
    assert (
        "The baseline booted on both sides (A (mmap-lock), B (mmap-lock))"
        in (rundir / "report.html").read_text()
    )
    saved = json.loads((rundir / "comparison.json").read_text())
    assert saved["noise_floor"]["baseline"] == "A"
    assert saved["candidates"][0]["metrics"][0]["noise_floor_pct"] is not None


def test_not_comparable_report(tmp_path: Path) -> None:
    base, fast = golden_results()[:2]
    fast.provenance = provenance("per-vma", accel="tcg")
    comparison = write_reports(tmp_path, [base, fast])
    assert exit_code(comparison) == EXIT_INCONCLUSIVE
    md = (tmp_path / "summary.md").read_text()
    assert md.index("**Not comparable**") < md.index("per-vma vs mmap-lock")
    assert "accelerator differs: `kvm` (baseline) vs `tcg`" in md
    page = (tmp_path / "report.html").read_text()
    assert page.index("Not comparable") < page.index("<h2>Comparison</h2>")
    assert "Emulated timing (QEMU TCG)" in page
    forced = write_reports(tmp_path, [base, fast], ReportOptions(stats=StatsOptions(force=True)))
    assert forced.candidates[0].verdict == Verdict.IMPROVED
    assert "verdicts forced with --force" in (tmp_path / "report.html").read_text()


def test_exit_codes(golden_comparison: stats.Comparison) -> None:
    assert exit_code(golden_comparison, "regression") == EXIT_REGRESSION
    assert exit_code(golden_comparison, "never") == EXIT_OK
    assert FAIL_ON == report.FAIL_ON
    base, fast, _, few = golden_results()
    improved = stats.compare([base, fast])
    assert exit_code(improved, "regression") == EXIT_OK
    assert exit_code(stats.compare([base, few]), "regression") == EXIT_INCONCLUSIVE
    # an exploratory metric regresses while the headline improves: only --fail-on any trips
    mixed = stats.compare([base, fast])
    sped_up = next(m for m in mixed.candidates[0].metrics if m.metric == "ops_per_s")
    regressed = [
        m if m is not sped_up else replace(m, verdict=Verdict.REGRESSED)
        for m in mixed.candidates[0].metrics
    ]
    mixed = replace(mixed, candidates=(replace(mixed.candidates[0], metrics=tuple(regressed)),))
    assert exit_code(mixed, "regression") == EXIT_OK
    assert exit_code(mixed, "any") == EXIT_REGRESSION
    with pytest.raises(Exception, match="--fail-on"):
        exit_code(mixed, "sometimes")


# ---------------------------------------------------------------- the command line


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, fast, slow, _ = golden_results()
    rundir = _rundir(tmp_path / "run", [base, fast])
    assert main(["report", str(rundir)]) == EXIT_OK
    out = capsys.readouterr().out
    assert (
        "per-vma vs mmap-lock: improved" in out and f"reports written to {rundir.resolve()}" in out
    )
    assert (rundir / "report.html").exists()

    slow_dir = _rundir(tmp_path / "slow", [base, slow])
    assert main(["report", str(slow_dir)]) == EXIT_REGRESSION
    assert main(["report", str(slow_dir), "--fail-on", "never"]) == EXIT_OK
    files = [str(slow_dir / "results" / "mmap-lock.json"), str(rundir / "results" / "per-vma.json")]
    assert main(["report", *files]) == EXIT_USAGE
    assert "--out" in capsys.readouterr().err
    assert main(["report", *files, "--out", str(tmp_path / "out")]) == EXIT_OK
    assert (tmp_path / "out" / "junit.xml").exists()
    assert main(["report", str(rundir), "--headline", "p42"]) == EXIT_USAGE
    assert "known metrics: max_ms" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == EXIT_USAGE


def test_cli_report_step_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rundir = _rundir(tmp_path / "run", golden_results()[:2])
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main(["report", str(rundir), "--github-summary"]) == EXIT_OK
    assert summary.read_text().startswith("## korch: synthetic")


def test_aa_only_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run that was only 'korch run --aa': the report is side A against side B."""
    for name, seed in (("first", 31), ("second", 32)):
        synthetic_results(
            "mmap-lock", baseline="mmap-lock", runs=16, boots=8, seed=seed, ops=500
        ).save(tmp_path / "aa" / "results" / f"{name}.json")
    # the per-run maximum is too noisy for 8 blocks to call the sides equivalent
    assert main(["report", str(tmp_path)]) == EXIT_INCONCLUSIVE
    out = capsys.readouterr().out
    assert "B (mmap-lock) vs A (mmap-lock): inconclusive" in out
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["baseline"] == "A" and saved["candidates"][0]["candidate"] == "B"
    assert not {m["verdict"] for m in saved["candidates"][0]["metrics"]} & {"improved", "regressed"}
    # the median operation is precise enough: the sides are equivalent, and that passes
    assert main(["report", str(tmp_path), "--headline", "p50_ms"]) == EXIT_OK
    assert "B (mmap-lock) vs A (mmap-lock): equivalent; per-run p50 (ms)" in capsys.readouterr().out
    assert oct((tmp_path / "report.html").stat().st_mode & 0o777) == "0o644"


def test_a_cross_tree_comparison_is_marked_with_its_config_differences(tmp_path: Path) -> None:
    common = {"baseline": "old", "runs": 8, "boots": 8, "ops": 1000, "tail": 0.02}
    old = synthetic_results("old", seed=21, **common)  # type: ignore[arg-type]
    new = synthetic_results("new", seed=22, **common)  # type: ignore[arg-type]
    old.provenance["kernel_source"] = "debian:linux-source-6.12 from trixie"
    new.provenance["kernel_source"] = "debian:linux-source-7.2 from trixie-backports"
    old.provenance["config_symbols"] = {"CONFIG_A": "y", "CONFIG_OLD": "y", "CONFIG_N": "4"}
    new.provenance["config_symbols"] = {"CONFIG_A": "y", "CONFIG_NEW": "y", "CONFIG_N": "8"}
    comparison = stats.compare([old, new])
    (note,) = [w for w in comparison.warnings if w.startswith("Cross-tree comparison")]
    assert "'old' is built from debian:linux-source-6.12 from trixie" in note
    assert "'new' from debian:linux-source-7.2 from trixie-backports" in note
    assert "differ in 3 symbol(s)" in note
    assert "CONFIG_N 4 vs 8; CONFIG_NEW n vs y; CONFIG_OLD y vs n." in note
    # the notes reach the reports people read
    assert note in markdown.render(comparison)
    # one tree: no such note
    new.provenance["kernel_source"] = old.provenance["kernel_source"]
    assert not any(w.startswith("Cross-tree") for w in stats.compare([old, new]).warnings)


def test_a_busy_host_is_named_in_the_warnings() -> None:
    common = {"baseline": "old", "runs": 8, "boots": 8, "ops": 1000, "tail": 0.02}
    old = synthetic_results("old", seed=31, **common)  # type: ignore[arg-type]
    new = synthetic_results("new", seed=32, **common)  # type: ignore[arg-type]
    for res, shares in ((old, [0.6, 0.7, 0.5, 0.8]), (new, [0.65, 0.9, 0.55, 0.7])):
        for boot, share in zip(res.boots, shares * 2, strict=False):
            boot["host_others_cpu"] = share
    (note,) = [w for w in stats.compare([old, new]).warnings if w.startswith("Busy host")]
    assert "median 68% of the host's CPU" in note and "most 90%, over 16 boots" in note
    # a quiet host, a failed boot's figure, or results without the figure: no warning
    for res in (old, new):
        for boot in res.boots:
            boot["host_others_cpu"] = 0.03
    new.boots[0]["host_others_cpu"] = 1.0
    new.boots[0]["error"] = "guest RCU stall"
    assert not any(w.startswith("Busy host") for w in stats.compare([old, new]).warnings)
    for res in (old, new):
        for boot in res.boots:
            boot.pop("host_others_cpu")
    assert not any(w.startswith("Busy host") for w in stats.compare([old, new]).warnings)
