"""The terminal report: the 0-day robot's comparison layout, drawn with rich.

Kernel engineers read ``base ±%stddev  %change  candidate ±%stddev  metric`` rows at a
glance (the 0-day robot's and mmtests' compare reports); the same layout here, with the
significance mark mmtests uses and the verdict as colour.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..stats import Comparison, Verdict, noise_floor_pct
from . import fmt

STYLE = {
    Verdict.IMPROVED: "bold green",
    Verdict.REGRESSED: "bold red",
    Verdict.INCONCLUSIVE: "yellow",
    Verdict.EQUIVALENT: "",
    Verdict.NO_CHANGE: "",
}


def comparison_table(comparison: Comparison) -> Table:
    """Rows of metrics: baseline ± spread, then per candidate %change with its mark and
    value ± spread; with one candidate also the 95% interval and the adjusted p."""
    single = len(comparison.candidates) == 1
    has_noise = comparison.noise_floor is not None
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    base = comparison.summary(comparison.baseline)
    table.add_column(fmt.label(comparison, comparison.baseline), justify="right")
    table.add_column("±%stddev", justify="left", style="dim")
    for c in comparison.candidates:
        table.add_column("%change", justify="right")
        table.add_column("", justify="left")
        table.add_column(fmt.label(comparison, c.candidate), justify="right")
        table.add_column("±%stddev", justify="left", style="dim")
    if single:
        table.add_column("interval", justify="left")
        table.add_column("p", justify="right")
    if has_noise:
        table.add_column("A/A noise", justify="right", style="dim")
    table.add_column("metric", justify="left")

    keys = [mc.metric for mc in comparison.candidates[0].metrics] if comparison.candidates else []
    for key in keys:
        m = fmt.metric_of(comparison, key)
        row: list[Text | str] = [
            fmt.value(m, base.metrics[key].median if key in base.metrics else None),
            fmt.spread(base.metrics.get(key)),
        ]
        for c in comparison.candidates:
            mc = c.metric(key)
            s = comparison.summary(c.candidate)
            if mc is None:
                row += ["-", "", "-", ""]
                continue
            style = STYLE[mc.verdict]
            row += [
                Text(fmt.change(mc.ratio), style=style),
                Text(fmt.stars(mc), style=style),
                fmt.value(m, s.metrics[key].median if key in s.metrics else None),
                fmt.spread(s.metrics.get(key)),
            ]
        if single:
            mc = comparison.candidates[0].metric(key)
            row += (
                [fmt.interval(mc.ci_low, mc.ci_high), fmt.pvalue(mc.p_adjusted)] if mc else ["", ""]
            )
        if has_noise:
            row.append(fmt.noise(noise_floor_pct(comparison, key)))
        name = fmt.metric_label(m) + (
            "  [headline]" if key == comparison.headline else "  (exploratory)"
        )
        row.append(Text(name, style="bold") if key == comparison.headline else name)
        table.add_row(*row)
    return table


def summary_table(comparison: Comparison) -> Table:
    """One row per variant: runs, boots, hangs, the published summaries, merged percentiles
    (for a workload without them: the headline's median, best and worst)."""
    if not fmt.op_latencies(comparison):
        return _headline_table(comparison)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in (
        ("variant", "left"),
        ("runs", "right"),
        ("boots", "right"),
        ("hangs", "right"),
        ("median max", "right"),
        ("best", "right"),
        ("worst", "right"),
        ("max>0.5ms", "right"),
        ("max>1ms", "right"),
        ("median mean", "right"),
        ("op p50", "right"),
        ("op p99", "right"),
        ("op p99.9", "right"),
        ("between boots", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in comparison.summaries:
        mx = s.metrics.get("max_ms")
        mean = s.metrics.get("mean_ms")
        ops = s.operations.get("all")
        split = s.variance.get(comparison.headline)
        share = split.between_share if split else None
        table.add_row(
            fmt.label(comparison, s.variant),
            str(s.runs),
            str(s.boots),
            str(s.hangs),
            fmt.value("max_ms", mx.median if mx else None) + " ms",
            fmt.value("max_ms", mx.minimum if mx else None),
            fmt.value("max_ms", mx.maximum if mx else None),
            f"{s.max_above_ms['0.5']}/{s.runs}",
            f"{s.max_above_ms['1']}/{s.runs}",
            fmt.value("mean_ms", mean.median if mean else None) + " ms",
            fmt.value("p50_ms", ops.p50_ms if ops else None),
            fmt.value("p99_ms", ops.p99_ms if ops else None),
            fmt.value("p999_ms", ops.p999_ms if ops else None),
            "-" if share is None else f"{100 * share:.0f}%",
        )
    return table


def _headline_table(comparison: Comparison) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    head = fmt.metric_of(comparison, comparison.headline)
    names = ("variant", "runs", "boots", "hangs", f"median {head.key}", "best", "worst",
             "between boots")  # fmt: skip
    for name in names:
        table.add_column(name, justify="left" if name == "variant" else "right")
    lower = head.better == "lower"
    for s in comparison.summaries:
        d = s.metrics.get(head.key)
        split = s.variance.get(head.key)
        share = split.between_share if split else None
        best = (d.minimum if lower else d.maximum) if d else None
        worst = (d.maximum if lower else d.minimum) if d else None
        table.add_row(
            fmt.label(comparison, s.variant),
            str(s.runs),
            str(s.boots),
            str(s.hangs),
            fmt.value(head, d.median if d else None) + (f" {head.unit}" if head.unit else ""),
            fmt.value(head, best),
            fmt.value(head, worst),
            "-" if share is None else f"{100 * share:.0f}%",
        )
    return table


def checks_table(comparison: Comparison) -> Table:
    """The correctness checks: results per side and the gate's verdict."""
    table = Table(title="correctness checks", title_justify="left")
    for name in ("check", "candidate", "baseline", "candidate's boots", "verdict"):
        table.add_column(name, overflow="fold")
    for test, cand, base, tally, verdict in fmt.check_rows(comparison):
        style = "bold red" if verdict.startswith("REGRESSED") else None
        table.add_row(test, cand, base, tally, Text(verdict, style=style or ""))
    return table


def render(comparison: Comparison, console: Console) -> None:
    """Print the whole terminal report to ``console``."""
    title = f"korch report: {comparison.experiment}, baseline {fmt.label(comparison, comparison.baseline)}"
    console.print(Text(title, style="bold"))
    if not comparison.comparable:
        lines = [
            f"{c.candidate}: {d.label} differs: {d.baseline!r} (baseline) vs {d.candidate!r}"
            for c in comparison.candidates
            for d in c.differences
        ]
        head = "NOT COMPARABLE" + (
            " (verdicts forced with --force)" if comparison.options.force else ""
        )
        console.print(Panel("\n".join(lines), title=head, border_style="red", expand=False))
    for c in comparison.candidates:
        console.print(
            Text(fmt.headline_sentence(comparison, c.candidate), style=STYLE[c.verdict] or "bold")
        )
    for alert in fmt.check_alerts(comparison):
        console.print(Text(alert, style="bold red"))
    console.print()
    console.print(comparison_table(comparison))
    console.print(
        Text(
            "median ±%stddev (stddev/mean of per-run values); %change: Hodges-Lehmann estimate of"
            " the ratio over boots (per block when paired); interval at the headline's level"
            " (95% for exploratory metrics); * ** *** p < 0.05 0.01 0.001 for a change (Holm-"
            "adjusted for exploratory metrics), = equivalent, ? inconclusive",
            style="dim",
        )
    )
    console.print()
    console.print(summary_table(comparison))
    console.print(
        Text(
            (
                "max>X: runs whose maximum exceeds X; op pNN: per-operation percentiles in ms,"
                " all runs merged; "
                if fmt.op_latencies(comparison)
                else ""
            )
            + f"between boots: share of the variance of {comparison.headline}"
            " that lies between boots",
            style="dim",
        )
    )
    if comparison.checks:
        console.print()
        console.print(checks_table(comparison))
        console.print(Text(fmt.CHECKS_NOTE, style="dim"))
    for line in fmt.design_lines(comparison):
        console.print(Text(line, style="dim"))
    if comparison.noise_floor is not None:
        nf = comparison.noise_floor
        aa = nf.candidates[0].headline if nf.candidates else None
        ab = comparison.candidates[0].headline if comparison.candidates else None
        if aa is not None:
            beside = (
                f"; A/B: {fmt.change(ab.ratio)} {fmt.interval(ab.ci_low, ab.ci_high)}"
                if ab is not None
                else ""
            )
            console.print(
                f"noise floor (A/A, baseline against itself): {fmt.metric_label(aa.spec)}"
                f" {fmt.change(aa.ratio)} {fmt.interval(aa.ci_low, aa.ci_high)} over"
                f" {aa.units}: {aa.verdict}{beside}"
            )
    if comparison.warnings:
        console.print()
        console.print(Group(*(Text("warning: " + w, style="yellow") for w in comparison.warnings)))
