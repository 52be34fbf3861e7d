"""The report's charts, built from a :class:`~orchestrator.stats.Comparison`."""

from __future__ import annotations

from ..stats import TAIL_THRESHOLDS_MS, Comparison, bucket_bounds
from . import fmt
from .svg import PALETTE, Axis, Line, Strip, line_chart, strip_chart


def colors(comparison: Comparison) -> dict[str, str]:
    """One colour per variant, the baseline first, stable across every chart."""
    return {s.variant: PALETTE[i % len(PALETTE)] for i, s in enumerate(comparison.summaries)}


def sorted_maxima(comparison: Comparison) -> str:
    """Per-run maxima sorted ascending, one curve per variant (the published test's plot)."""
    color = colors(comparison)
    counts = {len(s.run_values.get("max_ms", ())) for s in comparison.summaries}
    by_rank = len(counts) == 1
    lines = []
    for s in comparison.summaries:
        ys = sorted(s.run_values.get("max_ms", ()))
        n = len(ys)
        xs = [i + 1 for i in range(n)] if by_rank else [100 * (i + 0.5) / n for i in range(n)]
        lines.append(
            Line(fmt.label(comparison, s.variant), list(zip(xs, ys, strict=True)), color[s.variant])
        )
    return line_chart(
        lines,
        title="Per-run maximum latency, runs sorted ascending",
        x=Axis(
            "run (sorted by its maximum)" if by_rank else "share of runs (%), sorted by maximum",
            lo=0,
        ),
        y=Axis("per-run maximum (ms)", lo=0, refs=((0.5, "0.5 ms"), (1.0, "1 ms"))),
        chart_id="chart-sorted-maxima",
    )


def latency_tail(comparison: Comparison, kinds: tuple[str, ...] = ("all",)) -> str | None:
    """Per-operation latency of all runs merged, as the share of operations at or above
    each latency (1 - CDF) on log-log axes, so that the tail that separates variants is
    visible; ``None`` when no variant has histograms."""
    lower, upper = bucket_bounds()
    color = colors(comparison)
    lines = []
    for s in comparison.summaries:
        for kind in kinds:
            pairs = s.histograms.get(kind)
            if not pairs:
                continue
            total = sum(c for _, c in pairs)
            remaining = total
            points = []
            for index, count in pairs:
                points.append((float(lower[index]) / 1e6, remaining / total))
                remaining -= count
            last = pairs[-1][0]
            edge = (
                float(upper[last]) / 1e6
                if upper[last] != float("inf")
                else float(lower[last]) / 1e6
            )
            points.append((edge, pairs[-1][1] / total))
            name = fmt.label(comparison, s.variant) + ("" if kind == "all" else f" ({kind})")
            lines.append(Line(name, points, color[s.variant], dashed=kind == "unmap", step=True))
    if not lines:
        return None
    what = "all operations" if kinds == ("all",) else "map (solid) and unmap (dashed)"
    return line_chart(
        lines,
        title=f"Per-operation latency, {what}: share of operations at or above x",
        x=Axis(
            "operation latency (ms, log)",
            log=True,
            refs=tuple((t, f"{t:g} ms") for t in TAIL_THRESHOLDS_MS),
        ),
        y=Axis("share of operations ≥ x (1 - CDF, log)", log=True),
        chart_id="chart-latency-" + "-".join(kinds),
        note="all runs of a variant merged; histogram buckets are 1/64 of an octave wide",
        legend="bottom-left",
    )


def run_distribution(comparison: Comparison, key: str) -> str | None:
    """Per-run values of metric ``key`` as a strip chart with boxes, one row per variant."""
    color = colors(comparison)
    strips = [
        Strip(fmt.label(comparison, s.variant), s.run_values.get(key, ()), color[s.variant])
        for s in comparison.summaries
    ]
    if not any(s.values for s in strips):
        return None
    m = fmt.metric_of(comparison, key)
    return strip_chart(
        strips,
        title=f"Distribution of the {m.label} over runs",
        x=Axis(fmt.metric_label(m)),
        chart_id=f"chart-runs-{key}",
    )


def all_charts(comparison: Comparison) -> list[tuple[str, str, str]]:
    """Every chart the report shows, as (title, caption, svg)."""
    out = []
    if fmt.op_latencies(comparison):
        out.append(
            (
                "Per-run maxima",
                "Each curve is one variant's per-run maximum latencies sorted ascending, as in"
                " the published maps-contention plots; the dashed lines mark 0.5 ms and 1 ms.",
                sorted_maxima(comparison),
            )
        )
    tail = latency_tail(comparison)
    if tail:
        out.append(
            (
                "Per-operation latency",
                "Share of all operations taking at least x (the CDF's complement), all runs"
                " merged. On emulated machines the per-operation tail separates variants"
                " where per-run maxima do not.",
                tail,
            )
        )
        split = latency_tail(comparison, ("map", "unmap"))
        if split:
            out.append(("Map and unmap apart", "Solid: map; dashed: unmap.", split))
    means = run_distribution(comparison, "mean_ms") if fmt.op_latencies(comparison) else None
    if means:
        out.append(
            (
                "Per-run means",
                "Every dot is one run; the box spans the middle half of the runs, the"
                " whiskers p10 to p90, the coloured bar is the median.",
                means,
            )
        )
    if not fmt.op_latencies(comparison) or comparison.headline not in ("max_ms", "mean_ms"):
        head = run_distribution(comparison, comparison.headline)
        if head:
            label = fmt.metric_label(fmt.metric_of(comparison, comparison.headline))
            out.append(("Headline metric per run", label, head))
    return out
