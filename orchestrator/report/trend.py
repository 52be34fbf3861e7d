"""The nightly history on screen: a trend table in the terminal, trend charts in HTML,
and the outcome of ``korch history check``."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from rich.console import Console
from rich.table import Table

from ..history import CheckResult, Night, Trend
from ..stats import Verdict
from . import fmt, svg

SPARKS = "▁▂▃▄▅▆▇█"
VERDICT_STYLE = {
    Verdict.REGRESSED: "bold red",
    Verdict.IMPROVED: "green",
    Verdict.NO_CHANGE: "",
    Verdict.INCONCLUSIVE: "yellow",
}


def sparkline(values: Sequence[float], width: int = 30) -> str:
    """The last ``width`` values as block characters, lowest to highest."""
    vals = list(values)[-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi == lo:
        return SPARKS[len(SPARKS) // 2] * len(vals)
    return "".join(SPARKS[round((v - lo) / (hi - lo) * (len(SPARKS) - 1))] for v in vals)


def _label(t: Trend, cells: int) -> str:
    return t.variant if cells <= 1 else f"{t.cell}/{t.variant}"


def render_trends(
    experiment: str, nights: list[Night], trends: list[Trend], console: Console, baseline: int
) -> None:
    """One row per (cell, variant, metric): nights, a sparkline of nightly medians, the
    first and newest median and the newest against the median of the nights before it."""
    cells = len({t.cell for t in trends})
    table = Table(
        "variant",
        "metric",
        "nights",
        "trend (nightly median)",
        "first",
        "newest",
        f"vs last {baseline}",
        box=None,
        title=f"{experiment}: {len(nights)} nights, {nights[0].started_at} to {nights[-1].started_at}",
    )
    for t in trends:
        vals = [v for _, v in t.points]
        base = t.baseline(baseline)
        ratio = vals[-1] / base if base else None
        table.add_row(
            _label(t, cells),
            fmt.metric_label(t.spec or t.metric),
            str(len(vals)),
            sparkline(vals),
            fmt.value(t.spec or t.metric, vals[0]),
            fmt.value(t.spec or t.metric, vals[-1]),
            fmt.change(ratio) if len(vals) > 1 else "-",
        )
    console.print(table)


def render_html(experiment: str, nights: list[Night], trends: list[Trend]) -> str:
    """A self-contained page: a trend chart per (cell, metric), a line per variant, and the
    list of nights."""
    cells = sorted({t.cell for t in trends})
    index = {n.run_id: i + 1 for i, n in enumerate(nights)}
    charts = []
    for cell in cells:
        specs = {t.metric: t.spec or fmt.spec(t.metric) for t in trends}
        for metric in dict.fromkeys(t.metric for t in trends if t.cell == cell):
            lines = [
                svg.Line(
                    t.variant,
                    [(float(index[n.run_id]), v) for n, v in t.points],
                    svg.PALETTE[i % len(svg.PALETTE)],
                )
                for i, t in enumerate(x for x in trends if x.cell == cell and x.metric == metric)
            ]
            title = fmt.metric_label(specs[metric]) + (f" ({cell})" if len(cells) > 1 else "")
            charts.append(
                svg.line_chart(
                    lines,
                    title=title,
                    x=svg.Axis("night (1 = oldest)"),
                    y=svg.Axis(f"median over the night's runs ({specs[metric].unit})"),
                    chart_id=f"trend-{cell}-{metric}",
                    note="each point: the median of one night's runs",
                )
            )
    rows = []
    for n in nights:
        kernels = ", ".join(
            f"{variant}: {side.get('kernel_release') or '?'}"
            for (_, variant), side in sorted(n.sides.items())
        )
        rows.append(
            f"<tr><td>{index[n.run_id]}</td><td>{escape(n.started_at)}</td>"
            f"<td><code>{escape(n.run_id)}</code></td><td>{escape(kernels)}</td></tr>"
        )
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>korch history: {escape(experiment)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#333}"
        "table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left}"
        "figure{margin:1.5em 0}</style></head><body>"
        f"<h1>korch history: {escape(experiment)}</h1>"
        f"<p>{len(nights)} nights from {escape(nights[0].started_at)}"
        f" to {escape(nights[-1].started_at)}.</p>"
        + "".join(f"<figure>{c}</figure>" for c in charts)
        + "<h2>Nights</h2><table><tr><th>#</th><th>planned</th><th>run id</th>"
        "<th>kernels</th></tr>" + "".join(rows) + "</table></body></html>\n"
    )


def render_check(result: CheckResult, console: Console) -> None:
    """The verdict per (cell, variant) and metric; the headline metric first."""
    cells = len({c.cell for c in result.checks})
    console.print(
        f"[bold]{result.experiment}[/]: night {result.newest.run_id} ({result.newest.started_at})"
        f" against up to {result.nights} earlier comparable nights; headline {result.headline}"
    )
    table = Table(
        "variant", "metric", "nights", "baseline", "newest", "change", "95% interval", "p (Holm)",
        "verdict", box=None,
    )  # fmt: skip
    ordered = sorted(result.checks, key=lambda c: (c.family != "headline", c.cell, c.variant))
    for c in ordered:
        style = VERDICT_STYLE[c.verdict]
        table.add_row(
            c.variant if cells <= 1 else f"{c.cell}/{c.variant}",
            fmt.metric_label(c.spec or c.metric) + (" *" if c.family == "headline" else ""),
            str(len(c.baseline_nights)),
            fmt.value(c.spec or c.metric, c.baseline_median),
            fmt.value(c.spec or c.metric, c.newest_median),
            fmt.change(c.ratio),
            fmt.interval(c.ci_low, c.ci_high),
            fmt.pvalue(c.p_adjusted),
            f"[{style}]{c.verdict}[/]" if style else str(c.verdict),
        )
    console.print(table)
    for c in ordered:
        if c.family == "headline":
            console.print(f"{c.cell}/{c.variant}: {c.verdict}: {c.reason}")
    for k in result.correctness:
        where = k.variant if cells <= 1 else f"{k.cell}/{k.variant}"
        if k.regressed:
            console.print(f"[bold red]Correctness regression in {where}: {k.test} {k.reason}[/]")
        else:
            console.print(
                f"{where}: {k.test} {k.reason}", style=None if k.newest.get("fail") else "dim"
            )
    for side, skipped in sorted(result.skipped.items()):
        console.print(
            f"{side}: {len(skipped)} earlier night(s) not comparable, e.g. {skipped[0][0]}:"
            f" {skipped[0][1]}",
            style="dim",
        )
