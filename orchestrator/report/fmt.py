"""Text for numbers, shared by every report format so that they all say the same thing."""

from __future__ import annotations

import math

from ..stats import (
    METRIC_BY_KEY,
    Comparison,
    Distribution,
    MetricComparison,
    StatsOptions,
    Verdict,
)

MINUS = "-"


def value(key: str, v: float | None) -> str:
    """A metric's value with the metric's number of decimals; '-' when absent."""
    if v is None or math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf"
    return f"{v:.{METRIC_BY_KEY[key].digits}f}"


def spread(d: Distribution | None) -> str:
    """The 0-day robot's relative standard deviation: '±12%'; empty when undefined."""
    if d is None or d.relative_spread is None:
        return ""
    return f"±{d.relative_spread:.0f}%"


def change(ratio: float | None) -> str:
    """A ratio as a signed percent change: 0.161 -> '-83.9%'."""
    if ratio is None or math.isnan(ratio):
        return "-"
    if math.isinf(ratio):
        return "+inf%"
    return f"{100 * (ratio - 1):+.1f}%"


def interval(low: float | None, high: float | None) -> str:
    """A ratio interval as percent changes: '[-87.1%, -80.2%]'."""
    if low is None or high is None:
        return "-"
    return f"[{change(low)}, {change(high)}]"


def pvalue(p: float | None) -> str:
    """'<0.001', or two significant digits."""
    if p is None:
        return "-"
    if p < 0.001:
        return "<0.001"
    return f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def stars(mc: MetricComparison) -> str:
    """The significance mark: '*' / '**' / '***' for a change whose Holm-adjusted p is below
    0.05 / 0.01 / 0.001; '?' when inconclusive; nothing otherwise."""
    if mc.verdict == Verdict.INCONCLUSIVE:
        return "?"
    if mc.verdict not in (Verdict.IMPROVED, Verdict.REGRESSED) or mc.p_adjusted is None:
        return ""
    p = mc.p_adjusted
    return "***" if p < 0.001 else "**" if p < 0.01 else "*"


def label(comparison: Comparison, variant: str) -> str:
    """The name a report shows for a variant (A/A sides carry their file's variant too)."""
    return comparison.labels.get(variant, variant)


def metric_label(key: str) -> str:
    """'per-run maximum (ms)'."""
    m = METRIC_BY_KEY[key]
    return f"{m.label} ({m.unit})"


def noise(pct: float | None) -> str:
    """An A/A noise floor: '±4.1%'."""
    if pct is None:
        return "-"
    return "unbounded" if math.isinf(pct) else f"±{pct:.1f}%"


def rules(options: StatsOptions) -> str:
    """The verdict rules in one paragraph, with the thresholds in force."""
    return (
        "Per metric: two-sided Mann-Whitney U test over runs (scipy), its z divided by the"
        " square root of the design effect 1 + (m - 1) ICC when runs of one boot are alike"
        " (ICC of the ranks within boots, m the boot size); p-values Holm-adjusted within two"
        " families (the headline metric across candidates; all other metrics across all"
        " candidates). The 95% interval of the ratio of medians comes from a hierarchical"
        f" bootstrap (boots resampled, then runs within each boot; {options.resamples}"
        f" resamples, seed {options.seed}), expanded for few effective units (Hesterberg's"
        " expanded percentile interval). A change (improved or regressed) needs an adjusted p"
        f" below {options.alpha:g}, an interval that excludes 1 and a median change of at"
        f" least {100 * options.min_effect:g}%. Fewer than {options.min_runs} runs on a side,"
        " or sides that are not comparable (without --force), give 'inconclusive'."
    )


def headline_sentence(comparison: Comparison, candidate: str) -> str:
    """'per-vma vs mmap-lock: improved; per-run maximum (ms) -83.9% [..], p < 0.001'."""
    c = next(c for c in comparison.candidates if c.candidate == candidate)
    head = c.headline
    who = f"{label(comparison, candidate)} vs {label(comparison, comparison.baseline)}"
    if head is None:
        return f"{who}: {c.verdict}; no values for the headline metric {comparison.headline}"
    p = head.p_adjusted
    p_text = "" if p is None else (", p < 0.001" if p < 0.001 else f", p = {pvalue(p)}")
    return (
        f"{who}: {c.verdict}; {metric_label(head.metric)} {change(head.ratio)}"
        f" (95% CI {interval(head.ci_low, head.ci_high)}{p_text})"
    )
