"""The Markdown report (``summary.md``): for a GitHub step summary or a pull-request comment.

Deterministic (no times, no versions, no paths beyond the reproduce command) so that a
golden file can pin it and a bot comment changes only when the results do.
"""

from __future__ import annotations

from ..stats import CandidateComparison, Comparison, Verdict, noise_floor_pct
from . import fmt

ICON = {
    Verdict.IMPROVED: "improved",
    Verdict.REGRESSED: "**REGRESSED**",
    Verdict.INCONCLUSIVE: "_inconclusive_",
    Verdict.EQUIVALENT: "equivalent",
    Verdict.NO_CHANGE: "no significant change",
}


def _cell(text: str) -> str:
    """Text from results files (variant names, reasons) as inert Markdown: HTML characters
    as entities (GitHub renders raw HTML in a step summary or a comment), table pipes
    escaped, one line."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


def _code(value: object) -> str:
    """A value in a code span; backticks inside it cannot end the span early."""
    text = str(value).replace("\n", " ")
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def _alert(kind: str, lines: list[str]) -> list[str]:
    return [f"> [!{kind}]", *(f"> {_cell(line)}" for line in lines), ""]


def _candidate_table(comparison: Comparison, c: CandidateComparison) -> list[str]:
    base = comparison.summary(comparison.baseline)
    cand = comparison.summary(c.candidate)
    has_noise = comparison.noise_floor is not None
    head = ["metric", fmt.label(comparison, comparison.baseline), fmt.label(comparison, c.candidate),
            "change", "interval", "p", "verdict"]  # fmt: skip
    align = ["---", "---:", "---:", "---:", "---", "---:", "---"]
    if has_noise:
        head.insert(6, "A/A noise")
        align.insert(6, "---:")
    out = ["| " + " | ".join(_cell(h) for h in head) + " |", "| " + " | ".join(align) + " |"]
    for mc in c.metrics:
        key = mc.metric
        name = fmt.metric_label(mc.spec)
        name = (
            f"**{name}** ({fmt.family(mc)})" if mc.family == "headline" else f"{name} (exploratory)"
        )
        b, k = base.metrics.get(key), cand.metrics.get(key)
        cells = [
            name,
            f"{fmt.value(mc.spec, mc.baseline_median)} {fmt.spread(b)}".strip(),
            f"{fmt.value(mc.spec, mc.candidate_median)} {fmt.spread(k)}".strip(),
            f"{fmt.change(mc.ratio)} {fmt.stars(mc)}".strip(),
            f"{fmt.level_pct(mc.level)} {fmt.interval(mc.ci_low, mc.ci_high)}",
            fmt.pvalue(mc.p_adjusted),
            ICON[mc.verdict],
        ]
        if has_noise:
            cells.insert(6, fmt.noise(noise_floor_pct(comparison, key)))
        out.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return out


def _headline_table(comparison: Comparison) -> list[str]:
    head = fmt.metric_of(comparison, comparison.headline)
    unit = f" ({head.unit})" if head.unit else ""
    out = [
        f"| variant | runs | boots | hangs | median {_cell(head.key)}{_cell(unit)} | min | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in comparison.summaries:
        d = s.metrics.get(head.key)
        cells = [
            fmt.label(comparison, s.variant),
            str(s.runs),
            str(s.boots),
            str(s.hangs),
            fmt.value(head, d.median if d else None),
            fmt.value(head, d.minimum if d else None),
            fmt.value(head, d.maximum if d else None),
        ]
        out.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return out


def _summary_table(comparison: Comparison) -> list[str]:
    if not fmt.op_latencies(comparison):
        return _headline_table(comparison)
    out = [
        "| variant | runs | boots | hangs | median of maxima (ms) | best | worst | runs max > 0.5 ms"
        " | runs max > 1 ms | median of means (ms) | op p50 (ms) | op p99 (ms) | op p99.9 (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in comparison.summaries:
        mx, mean, ops = s.metrics.get("max_ms"), s.metrics.get("mean_ms"), s.operations.get("all")
        cells = [
            fmt.label(comparison, s.variant),
            str(s.runs),
            str(s.boots),
            str(s.hangs),
            fmt.value("max_ms", mx.median if mx else None),
            fmt.value("max_ms", mx.minimum if mx else None),
            fmt.value("max_ms", mx.maximum if mx else None),
            str(s.max_above_ms["0.5"]),
            str(s.max_above_ms["1"]),
            fmt.value("mean_ms", mean.median if mean else None),
            fmt.value("p50_ms", ops.p50_ms if ops else None),
            fmt.value("p99_ms", ops.p99_ms if ops else None),
            fmt.value("p999_ms", ops.p999_ms if ops else None),
        ]
        out.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return out


def _variance_table(comparison: Comparison) -> list[str]:
    keys = [mc.metric for mc in comparison.candidates[0].metrics] if comparison.candidates else []
    names = [fmt.label(comparison, s.variant) for s in comparison.summaries]
    out = [
        "| metric | " + " | ".join(_cell(n) for n in names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for key in keys:
        cells = [fmt.metric_label(fmt.metric_of(comparison, key))]
        for s in comparison.summaries:
            split = s.variance.get(key)
            share = split.between_share if split else None
            cells.append("-" if share is None else f"{100 * share:.0f}%")
        out.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return out


def render(comparison: Comparison, *, reproduce: str | None = None) -> str:
    """The Markdown report as text."""
    out = [f"## korch: {_cell(comparison.experiment)}", ""]
    if not comparison.comparable:
        lines = [
            "**Not comparable**"
            + (" (verdicts forced with `--force`)" if comparison.options.force else "")
            + ":"
        ]
        lines += [
            f"- {_cell(c.candidate)}: {d.label} differs: {_code(d.baseline)} (baseline) vs"
            f" {_code(d.candidate)}"
            for c in comparison.candidates
            for d in c.differences
        ]
        out += _alert("CAUTION", lines)
    for c in comparison.candidates:
        out += [f"**{_cell(fmt.headline_sentence(comparison, c.candidate))}**", ""]
    alerts = fmt.check_alerts(comparison)
    if alerts:
        out += _alert("CAUTION", alerts)
    if comparison.warnings:
        out += _alert("WARNING", [w for w in comparison.warnings])
    for c in comparison.candidates:
        out += [
            f"### {_cell(fmt.label(comparison, c.candidate))} vs"
            f" {_cell(fmt.label(comparison, comparison.baseline))}",
            "",
        ]
        out += _candidate_table(comparison, c)
        out.append("")
        if c.headline is not None:
            out += [f"Headline: {c.headline.verdict}: {_cell(c.headline.reason)}", ""]
    if comparison.checks:
        out += [
            "### Correctness checks",
            "",
            "| check | candidate | baseline | candidate's boots | verdict |",
            "|---|---|---|---|---|",
            *[
                "| " + " | ".join(_cell(x) for x in row) + " |"
                for row in fmt.check_rows(comparison)
            ],
            "",
            fmt.CHECKS_NOTE,
            "",
        ]
    out += [
        "Values are medians over boots ± the relative standard deviation of per-run values;"
        " change is the Hodges-Lehmann estimate of the ratio over boots (per block when"
        " paired); * / ** / *** mark a change at p < 0.05 / 0.01 / 0.001 (Holm-adjusted for"
        " exploratory metrics), = equivalent.",
        "",
        *[f"- {_cell(line)}" for line in fmt.design_lines(comparison)],
        "",
        "<details><summary>Per-variant summary</summary>",
        "",
        *_summary_table(comparison),
        "",
        "</details>",
        "",
        "<details><summary>Spread between boots (share of each metric's variance)</summary>",
        "",
        *_variance_table(comparison),
        "",
        "</details>",
        "",
        "<details><summary>How the verdict is reached</summary>",
        "",
        fmt.rules(comparison),
        "",
        "</details>",
        "",
    ]
    if comparison.noise_floor is not None and comparison.noise_floor.candidates:
        head = comparison.noise_floor.candidates[0].headline
        ab = comparison.candidates[0].headline if comparison.candidates else None
        if head is not None:
            beside = (
                f" (A/B: {fmt.change(ab.ratio)}, {fmt.interval(ab.ci_low, ab.ci_high)})"
                if ab is not None
                else ""
            )
            out += [
                f"Noise floor (A/A run, the baseline against itself): {fmt.metric_label(head.spec)}"
                f" {fmt.change(head.ratio)}, {fmt.level_pct(head.level)} CI"
                f" {fmt.interval(head.ci_low, head.ci_high)} over {head.units}: {head.verdict}{beside}.",
                "",
            ]
    if reproduce:
        out += ["Reproduce:", "", "```sh", reproduce, "```", ""]
    return "\n".join(out)
