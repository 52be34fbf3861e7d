"""Reports of a comparison: terminal table, HTML, Markdown, JSON and JUnit XML.

``korch report`` and ``korch run`` both end here::

    comparison = write_reports(rundir, results, ReportOptions(console=console))
    return exit_code(comparison, "regression")

Files written into the run directory (names from DESIGN.md): ``comparison.json``,
``report.html``, ``summary.md``, ``junit.xml``.

The noise floor: an A/A run (``korch run --aa``) writes two results files of the baseline
kernel to ``RUNDIR/aa/results/*.json`` (any two names; side A is the one whose variant is
its own baseline, else the first by name; their variant fields may even be equal). When
that directory exists, the report of RUNDIR compares A with B like any pair and shows how
far two runs of the same kernel land apart, next to every metric.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ..errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION, UserError
from ..fsutil import atomic_write, sweep_stale
from ..results import ResultsFile
from ..rundir import AA_DIR, collector_paused, load_noise_floor, load_results
from ..stats import Comparison, StatsOptions, Verdict, compare, compare_noise_floor
from . import html, jsonout, junit, markdown, terminal

FAIL_ON = ("regression", "any", "never")
FORMATS = ("json", "html", "md", "junit")
OUTPUTS = {
    "json": "comparison.json",
    "html": "report.html",
    "md": "summary.md",
    "junit": "junit.xml",
}
# reports are for sharing (CI artifacts, a web server); a temporary file starts at 0600
REPORT_MODE = 0o644

__all__ = [
    "AA_DIR",
    "FAIL_ON",
    "FORMATS",
    "OUTPUTS",
    "ReportOptions",
    "collector_paused",
    "exit_code",
    "load_noise_floor",
    "load_results",
    "write_reports",
]


@dataclass(frozen=True)
class ReportOptions:
    """What to compute and what to write.

    ``console``: print the terminal report there (nothing printed when ``None``).
    ``reproduce``: the command that reproduces the run (default: the baseline's
    ``provenance.reproduce``). ``report_command``: the command that made this report.
    ``source_dir``: the run directory the results came from, where ``aa/results`` is looked
    for (default: the output directory).
    """

    stats: StatsOptions = field(default_factory=StatsOptions)
    formats: tuple[str, ...] = FORMATS
    console: Console | None = None
    reproduce: str | None = None
    report_command: str | None = None
    source_dir: Path | None = None
    warnings: tuple[str, ...] = ()  # said by the caller (e.g. missing shards), shown first

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise UserError(
                f"unknown report format(s): {', '.join(unknown)}",
                hint=f"choose from {', '.join(FORMATS)}",
            )


def write_reports(
    rundir: Path, results: list[ResultsFile], options: ReportOptions | None = None
) -> Comparison:
    """Compare ``results`` and write every report format into ``rundir``.

    Reads the A/A noise floor from ``(options.source_dir or rundir)/aa/results`` when it
    exists. With no ``results`` at all (a run that was only ``korch run --aa``), the report
    is the A/A comparison itself, side A against side B. Prints the terminal report to
    ``options.console`` if given and returns the comparison for :func:`exit_code`. Raises
    :class:`UserError` for unusable results.
    """
    options = options or ReportOptions()
    with collector_paused():
        aa = load_noise_floor(options.source_dir or rundir)
        if results:
            comparison = compare(results, options.stats, noise_floor=aa)
        elif aa:
            comparison = compare_noise_floor(aa, options.stats)
        else:
            raise UserError(
                f"{options.source_dir or rundir}: no results to report",
                hint="a run directory holds results/*.json (and for an A/A run aa/results/*.json)",
            )
    if options.warnings:
        comparison = dataclasses.replace(
            comparison, warnings=(*options.warnings, *comparison.warnings)
        )
    baseline_prov = comparison.provenance.get(comparison.baseline, {})
    reproduce = options.reproduce or baseline_prov.get("reproduce")
    sweep_stale(rundir)  # a report cut short by SIGKILL left its temporary files
    if "json" in options.formats:
        text = json.dumps(jsonout.to_json(comparison), indent=2, sort_keys=True) + "\n"
        atomic_write(rundir / OUTPUTS["json"], text, mode=REPORT_MODE)
    if "html" in options.formats:
        page = html.render(comparison, reproduce=reproduce, report_command=options.report_command)
        atomic_write(rundir / OUTPUTS["html"], page, mode=REPORT_MODE)
    if "md" in options.formats:
        atomic_write(
            rundir / OUTPUTS["md"],
            markdown.render(comparison, reproduce=reproduce),
            mode=REPORT_MODE,
        )
    if "junit" in options.formats:
        atomic_write(rundir / OUTPUTS["junit"], junit.render(comparison), mode=REPORT_MODE)
    if options.console is not None:
        terminal.render(comparison, options.console)
    return comparison


def exit_code(comparison: Comparison, fail_on: str = "regression") -> int:
    """The CLI's exit code for a comparison.

    ``regression``: 1 when a correctness check passes on the baseline and fails on a
    candidate, or a candidate's headline metric regressed; else 3 when a candidate
    is inconclusive (too few runs, or not comparable without --force); else 0.
    ``any``: 1 when any metric of any candidate regressed; else as ``regression``.
    ``never``: always 0 (report only).
    """
    if fail_on not in FAIL_ON:
        raise UserError(f"--fail-on {fail_on!r}: choose one of {', '.join(FAIL_ON)}")
    if fail_on == "never":
        return EXIT_OK
    if comparison.checks_regressed:  # faster but wrong is not an improvement
        return EXIT_REGRESSION
    if any(c.verdict == Verdict.REGRESSED for c in comparison.candidates):
        return EXIT_REGRESSION
    if fail_on == "any" and any(
        mc.verdict == Verdict.REGRESSED for c in comparison.candidates for mc in c.metrics
    ):
        return EXIT_REGRESSION
    if any(c.verdict == Verdict.INCONCLUSIVE for c in comparison.candidates):
        return EXIT_INCONCLUSIVE
    return EXIT_OK


def append_step_summary(comparison: Comparison, reproduce: str | None = None) -> Path | None:
    """Append the Markdown report to ``$GITHUB_STEP_SUMMARY`` when it is set; the path or None."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(markdown.render(comparison, reproduce=reproduce) + "\n")
    return Path(target)
