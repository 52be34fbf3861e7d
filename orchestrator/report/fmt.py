"""Text for numbers, shared by every report format so that they all say the same thing."""

from __future__ import annotations

import math

from ..metrics import Metric, by_key
from ..stats import (
    Comparison,
    Distribution,
    MetricComparison,
    Verdict,
)

MINUS = "-"


def _default_metrics() -> dict[str, Metric]:
    from ..workloads.api import metric_set
    from ..workloads.registry import MAPS_CONTENTION

    return by_key(metric_set(MAPS_CONTENTION, {}))


_DEFAULTS = _default_metrics()


def spec(m: Metric | str) -> Metric:
    """``m`` itself, or the metric a bare key names: the default workload's, else a plain
    figure shown with three decimals (a report that has the comparison passes the
    workload's own definition)."""
    if isinstance(m, Metric):
        return m
    return _DEFAULTS.get(m) or Metric(m, m, "", "lower", 3, False, m)


def op_latencies(comparison: Comparison) -> bool:
    """True when the workload declares per-run latency summaries and operation histograms
    (maps-contention: the per-variant table of maxima and operation percentiles)."""
    from ..workloads.registry import WORKLOADS

    declared = WORKLOADS.get(comparison.workload)
    return declared is not None and declared.operation_latencies


def metric_of(comparison: Comparison, key: str) -> Metric:
    """The comparison's definition of ``key`` (the default one when it carries none)."""
    for m in comparison.metrics:
        if m.key == key:
            return m
    return spec(key)


def value(m: Metric | str, v: float | None) -> str:
    """A metric's value with the metric's number of decimals; '-' when absent."""
    if v is None or math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf"
    return f"{v:.{spec(m).digits}f}"


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
    if low <= 0 and math.isinf(high):
        return "unbounded"
    return f"[{change(low)}, {change(high)}]"


def pvalue(p: float | None) -> str:
    """'<0.001', or two significant digits."""
    if p is None:
        return "-"
    if p < 0.001:
        return "<0.001"
    return f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def stars(mc: MetricComparison) -> str:
    """The significance mark: '*' / '**' / '***' for a change whose (Holm-adjusted) p is
    below 0.05 / 0.01 / 0.001; '=' for equivalent; '?' when inconclusive."""
    if mc.verdict == Verdict.INCONCLUSIVE:
        return "?"
    if mc.verdict == Verdict.EQUIVALENT:
        return "="
    if mc.verdict not in (Verdict.IMPROVED, Verdict.REGRESSED) or mc.p_adjusted is None:
        return ""
    p = mc.p_adjusted
    return "***" if p < 0.001 else "**" if p < 0.01 else "*"


def level_pct(level: float) -> str:
    """An interval's coverage for a test level: 0.05 -> '95%', 0.0156 -> '98.4%'."""
    return f"{100 * (1 - level):.3g}%"


def family(mc: MetricComparison) -> str:
    """'headline (confirmatory)', 'headline (exploratory: chosen after the run)' or
    'exploratory'."""
    if mc.family != "headline":
        return "exploratory"
    return (
        "headline (exploratory: chosen after the run)" if mc.post_hoc else "headline (confirmatory)"
    )


def label(comparison: Comparison, variant: str) -> str:
    """The name a report shows for a variant (A/A sides carry their file's variant too)."""
    return comparison.labels.get(variant, variant)


def metric_label(m: Metric | str) -> str:
    """'per-run maximum (ms)'."""
    d = spec(m)
    return f"{d.label} ({d.unit})" if d.unit else d.label


def noise(pct: float | None) -> str:
    """An A/A noise floor: '±4.1%'."""
    if pct is None:
        return "-"
    return "unbounded" if math.isinf(pct) else f"±{pct:.1f}%"


def rules(comparison: Comparison) -> str:
    """The verdict rules in one paragraph, with the thresholds in force."""
    options = comparison.options
    seq = comparison.sequential
    head_level = (
        f"at the group-sequential level {seq['level']:.3g} (the run looked after every block,"
        f" up to {seq['max_blocks']} blocks; the level keeps the chance of any false call over"
        f" all looks at most {options.alpha:g})"
        if seq
        else f"at {options.alpha:g}"
        + (" split evenly over the candidates" if len(comparison.candidates) > 1 else "")
    )
    return (
        "The unit is the boot: each boot gives one value per metric (shares of slow operations"
        " from its pooled operation counts; other metrics the median over its runs; a hung run"
        " counts as the worst value). When the sides come from one blocked run, the variants"
        " are compared per block (each block boots every variant once, in a random, balanced"
        " order): Wilcoxon's signed-rank test on the per-block log ratios, exact as a sign-flip"
        " randomization test, and its Hodges-Lehmann interval; otherwise an exact rank-sum"
        " test over boot values and its interval (unpaired). The headline metric, declared by"
        f" the experiment before the run, is the one confirmatory test, {head_level}; it alone"
        " decides the verdict and the exit code. Every other metric is exploratory: Holm-adjusted"
        f" together at {options.alpha:g}. Equivalent: the interval lies inside"
        f" ±{100 * comparison.smallest_effect:g}% (the smallest effect of interest). Improved or"
        " regressed: the test rejects no change. Anything else, and every design whose test"
        " cannot reach its level (fewer than 6 blocks at 0.05), is inconclusive; so are sides"
        " that are not comparable (without --force)."
    )


def headline_sentence(comparison: Comparison, candidate: str) -> str:
    """'per-vma vs mmap-lock: improved; operations ≥ 1 ms (‰) -97.4% (95% CI [..], p = 0.0001,
    16 blocks, paired)'."""
    c = next(c for c in comparison.candidates if c.candidate == candidate)
    head = c.headline
    who = f"{label(comparison, candidate)} vs {label(comparison, comparison.baseline)}"
    if head is None:
        return f"{who}: {c.verdict}; no values for the headline metric {comparison.headline}"
    p = head.p_adjusted
    p_text = "" if p is None else (", p < 0.001" if p < 0.001 else f", p = {pvalue(p)}")
    post = " (exploratory: headline chosen after the run)" if head.post_hoc else ""
    return (
        f"{who}: {c.verdict}{post}; {metric_label(head.spec)} {change(head.ratio)}"
        f" ({level_pct(head.level)} CI {interval(head.ci_low, head.ci_high)}{p_text},"
        f" {head.units}, {head.method})"
    )


def design_lines(comparison: Comparison) -> list[str]:
    """Per candidate: where the headline's variance lies and what the next run should do."""
    out = []
    for c in comparison.candidates:
        d = c.design
        if d is None:
            continue
        shares = d.shares()
        split = (
            ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items())
            if shares
            else ", ".join(
                f"{k} {v:.3g}"
                for k, v in (
                    ("between blocks", d.between_blocks),
                    ("between boots", d.between_boots),
                )
                if v is not None
            )
            + " (log-scale variances; within a boot not measured)"
        )
        out.append(
            f"{label(comparison, c.candidate)}: variance of {comparison.headline}: {split}."
            + (f" Next run: {d.text}." if d.text else "")
        )
    for c in comparison.candidates:
        if c.strata:
            parts = [
                f"shard {s.shard} (blocks {s.blocks[0]}-{s.blocks[1]}, {s.host_cpu}):"
                f" {change(s.ratio)} {interval(s.ci_low, s.ci_high)}"
                f" over {s.n} block{'' if s.n == 1 else 's'}"
                for s in c.strata
            ]
            out.append(
                f"{label(comparison, c.candidate)} vs {label(comparison, comparison.baseline)}"
                f", {comparison.headline} by shard (each machine's blocks alone; the verdict"
                f" pools them): " + "; ".join(parts) + "."
            )
    return out


# ---------------------------------------------------------------- correctness checks


def check_rows(comparison: Comparison) -> list[tuple[str, str, str, str, str]]:
    """One row per check and candidate: check, candidate, baseline's results, candidate's
    results, verdict (with its reason)."""
    rows = []
    for g in comparison.checks:
        for c in g.candidates:
            verdict = c.verdict.upper() if c.verdict == "regressed" else c.verdict
            rows.append(
                (
                    g.test,
                    label(comparison, c.candidate),
                    g.baseline.describe(),
                    c.tally.describe(),
                    verdict + (f": {c.reason}" if c.reason else ""),
                )
            )
    return rows


def check_alerts(comparison: Comparison) -> list[str]:
    """A sentence per check that passes on the baseline and fails on a candidate."""
    return [
        f"Correctness regression in {label(comparison, c.candidate)}: {g.test} {c.reason}."
        " A change that breaks a correctness check is a regression whatever its performance"
        " (exit 1)."
        for g in comparison.checks
        for c in g.candidates
        if c.verdict == "regressed"
    ]


CHECKS_NOTE = (
    "Correctness checks run in every boot, after the timed runs (or as the kselftest workload's"
    " runs). A check that passes on the"
    " baseline (no failing boot) and fails on any candidate boot is a regression: a test that sees a torn"
    " read reports a fact, not a noisy sample."
)
