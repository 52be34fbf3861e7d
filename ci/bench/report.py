#!/usr/bin/env python3
"""Report benchmark: prints figures, asserts nothing.

Two variants with 1000 runs each (10 boots of 100 runs), every run with its per-operation
histograms (12,000 operations per run, about what a 5 s run does under TCG), written as
results files; then the time to turn them into every report format (goal: at most 2 s
from reading the results files to the last file written).

Run with the virtualenv's python: ``.venv/bin/python ci/bench/report.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from orchestrator import stats
from orchestrator.report import (
    ReportOptions,
    collector_paused,
    html,
    jsonout,
    junit,
    load_results,
    markdown,
    terminal,
    write_reports,
)
from orchestrator.report.synthetic import synthetic_results


def timed(label: str, fn, figures: dict[str, float]):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    figures[label] = time.perf_counter() - t0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000, help="runs per variant (default 1000)")
    parser.add_argument("--boots", type=int, default=10, help="boots per variant (default 10)")
    parser.add_argument(
        "--ops", type=int, default=12_000, help="operations per run (default 12000)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="korch-bench-report-"))
    try:
        t0 = time.perf_counter()
        common = {
            "baseline": "mmap-lock",
            "runs": args.runs,
            "boots": args.boots,
            "ops": args.ops,
            "tail": 0.01,
        }
        for name, seed, scale in (("mmap-lock", 1, 1.0), ("per-vma", 2, 0.8)):
            synthetic_results(name, seed=seed, scale=scale, boot_sd=0.05, **common).save(  # type: ignore[arg-type]
                work / "results" / f"{name}.json"
            )
        sizes = {p.name: p.stat().st_size for p in sorted((work / "results").glob("*.json"))}
        print(f"generated in {time.perf_counter() - t0:.1f}s (not part of the timings):")
        for name, size in sizes.items():
            print(f"  results/{name}: {size / 1e6:.1f} MB")

        # -- one pass per stage, to see where the time goes ---------------------
        stages: dict[str, float] = {}
        results, _ = timed("read results files", lambda: load_results([work]), stages)
        with collector_paused():  # as write_reports does
            comparison = timed("statistics (compare)", lambda: stats.compare(results), stages)
            timed("json", lambda: jsonout.to_json(comparison), stages)
            timed("html", lambda: html.render(comparison), stages)
            timed("markdown", lambda: markdown.render(comparison), stages)
            timed("junit", lambda: junit.render(comparison), stages)
            sink = Console(file=io.StringIO(), width=160, color_system=None)
            timed("terminal", lambda: terminal.render(comparison, sink), stages)
        print(
            f"\nstages, first pass ({args.runs} runs x 2 variants, {comparison.options.resamples} bootstrap resamples):"
        )
        for label, seconds in stages.items():
            print(f"  {label:24s} {seconds:6.3f} s")

        # -- end to end, as 'korch report RUNDIR' and 'korch run' do it ----------
        from_files, in_memory = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            found, _ = load_results([work])
            write_reports(
                work, found, ReportOptions(console=Console(file=io.StringIO(), width=160))
            )
            from_files.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            write_reports(
                work, found, ReportOptions(console=Console(file=io.StringIO(), width=160))
            )
            in_memory.append(time.perf_counter() - t0)
        print("\nend to end, every format (json, html, md, junit, terminal), 3 repetitions:")
        print(
            f"  korch report RUNDIR (read files + compare + write): best {min(from_files):.3f} s, worst {max(from_files):.3f} s"
        )
        print(
            f"  korch run's call (results in memory: compare + write): best {min(in_memory):.3f} s, worst {max(in_memory):.3f} s"
        )
        print(f"goal at most 2 s: {'met' if max(from_files) <= 2.0 else 'NOT met'}")
        print(
            f"outputs: {', '.join(f'{p.name} {p.stat().st_size / 1e3:.0f} kB' for p in sorted(work.glob('*.*')))}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
