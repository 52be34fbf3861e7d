"""The HTML report (``report.html``): one self-contained file, charts inline as SVG.

Nothing in it is fetched: no scripts, fonts, style sheets or images from elsewhere, so it
opens the same from a CI artifact, an e-mail attachment or a laptop without network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jinja2
from markupsafe import Markup

from .. import __version__
from ..stats import COMPARABILITY_FIELDS, Comparison, Summary, Verdict, noise_floor_pct
from . import charts, fmt

CSS = {
    Verdict.IMPROVED: "improved",
    Verdict.REGRESSED: "regressed",
    Verdict.INCONCLUSIVE: "inconclusive",
    Verdict.EQUIVALENT: "",
    Verdict.NO_CHANGE: "",
}
BANNER = {
    Verdict.IMPROVED: "v-improved",
    Verdict.REGRESSED: "v-regressed",
    Verdict.INCONCLUSIVE: "v-inconclusive",
    Verdict.EQUIVALENT: "v-no-change",
    Verdict.NO_CHANGE: "v-no-change",
}
INCOMPARABLE_KEYS = {key for key, _ in COMPARABILITY_FIELDS} | {"experiment"}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("orchestrator.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _tables(comparison: Comparison) -> list[dict[str, Any]]:
    base = comparison.summary(comparison.baseline)
    out = []
    for c in comparison.candidates:
        cand = comparison.summary(c.candidate)
        rows = []
        for mc in c.metrics:
            key = mc.metric
            rows.append(
                {
                    "label": fmt.metric_label(mc.spec),
                    "headline": mc.family == "headline",
                    "family": fmt.family(mc),
                    "base": fmt.value(mc.spec, mc.baseline_median),
                    "base_spread": fmt.spread(base.metrics.get(key)),
                    "cand": fmt.value(mc.spec, mc.candidate_median),
                    "cand_spread": fmt.spread(cand.metrics.get(key)),
                    "change": fmt.change(mc.ratio),
                    "stars": fmt.stars(mc),
                    "ci": f"{fmt.level_pct(mc.level)} {fmt.interval(mc.ci_low, mc.ci_high)}",
                    "p": fmt.pvalue(mc.p_value),
                    "p_adj": fmt.pvalue(mc.p_adjusted),
                    "units": f"{mc.units}, {mc.method}",
                    "noise": fmt.noise(noise_floor_pct(comparison, key)),
                    "verdict": str(mc.verdict),
                    "css": CSS[mc.verdict],
                    "reason": mc.reason,
                    # a change's row already shows its change, interval and p; say why otherwise
                    "explain": mc.verdict not in (Verdict.IMPROVED, Verdict.REGRESSED),
                }
            )
        out.append(
            {
                "title": f"{fmt.label(comparison, c.candidate)} against {fmt.label(comparison, comparison.baseline)}",
                "candidate": fmt.label(comparison, c.candidate),
                "rows": rows,
            }
        )
    return out


def _counts(s: Summary) -> list[str]:
    """The first rows of a variant's summary column: runs, boots, runs per boot, hangs."""
    per_boot = sorted(set(s.runs_per_boot))
    return [
        str(s.runs),
        str(s.boots),
        "-" if not per_boot else "/".join(str(n) for n in per_boot),
        str(s.hangs),
    ]


def _headline_summary(comparison: Comparison) -> dict[str, Any]:
    head = fmt.metric_of(comparison, comparison.headline)
    unit = f" ({head.unit})" if head.unit else ""
    names = ["runs (completed)", "boots", "runs per boot", "hangs", f"median {head.label}{unit}",
             f"lowest {head.label}{unit}", f"highest {head.label}{unit}"]  # fmt: skip
    columns = []
    for s in comparison.summaries:
        d = s.metrics.get(head.key)
        columns.append(
            [
                *_counts(s),
                fmt.value(head, d.median if d else None),
                fmt.value(head, d.minimum if d else None),
                fmt.value(head, d.maximum if d else None),
            ]
        )
    rows = [[name, *(col[i] for col in columns)] for i, name in enumerate(names)]
    return {
        "head": ["", *(fmt.label(comparison, s.variant) for s in comparison.summaries)],
        "rows": rows,
    }


def _summary(comparison: Comparison) -> dict[str, Any]:
    """Variants as columns, figures as rows: long names and many figures stay readable."""
    if not fmt.op_latencies(comparison):
        return _headline_summary(comparison)
    names = ["runs (completed)", "boots", "runs per boot", "hangs", "median of maxima (ms)", "best maximum (ms)",
             "worst maximum (ms)", "runs with max > 0.5 ms", "runs with max > 1 ms", "median of means (ms)",
             "operations per second (median)", "operation p50 (ms)", "operation p99 (ms)",
             "operation p99.9 (ms)", "operations ≥ 0.5 / 1 / 2 ms (‰)", "map p99 / unmap p99 (ms)"]  # fmt: skip
    columns = []
    for s in comparison.summaries:
        mx, mean, rate = (
            s.metrics.get("max_ms"),
            s.metrics.get("mean_ms"),
            s.metrics.get("ops_per_s"),
        )
        ops = s.operations.get("all")
        maps, unmaps = s.operations.get("map"), s.operations.get("unmap")
        columns.append(
            [
                *_counts(s),
                fmt.value("max_ms", mx.median if mx else None),
                fmt.value("max_ms", mx.minimum if mx else None),
                fmt.value("max_ms", mx.maximum if mx else None),
                f"{s.max_above_ms['0.5']} ({100 * s.max_above_ms['0.5'] / s.runs:.0f}%)"
                if s.runs
                else "-",
                f"{s.max_above_ms['1']} ({100 * s.max_above_ms['1'] / s.runs:.0f}%)"
                if s.runs
                else "-",
                fmt.value("mean_ms", mean.median if mean else None),
                fmt.value("ops_per_s", rate.median if rate else None),
                fmt.value("p50_ms", ops.p50_ms if ops else None),
                fmt.value("p99_ms", ops.p99_ms if ops else None),
                fmt.value("p999_ms", ops.p999_ms if ops else None),
                " / ".join(f"{v:.2f}" for v in ops.above_ms.values()) if ops else "-",
                f"{fmt.value('p99_ms', maps.p99_ms)} / {fmt.value('p99_ms', unmaps.p99_ms)}"
                if maps and unmaps
                else "-",
            ]
        )
    rows = [[name, *(col[i] for col in columns)] for i, name in enumerate(names)]
    return {
        "head": ["", *(fmt.label(comparison, s.variant) for s in comparison.summaries)],
        "rows": rows,
    }


def _distributions(comparison: Comparison) -> list[list[str]]:
    out = []
    keys = [m for m in comparison.metrics if any(m.key in s.metrics for s in comparison.summaries)]
    for m in keys:
        for s in comparison.summaries:
            d = s.metrics.get(m.key)
            if d is None:
                continue
            spread = d.relative_spread
            out.append(
                [
                    fmt.metric_label(m),
                    fmt.label(comparison, s.variant),
                    str(d.n),
                    fmt.value(m, d.median),
                    fmt.value(m, d.p10),
                    fmt.value(m, d.p90),
                    fmt.value(m, d.minimum),
                    fmt.value(m, d.maximum),
                    fmt.value(m, d.mean),
                    "-" if spread is None else f"{spread:.0f}%",
                ]
            )
    return out


def _variance(comparison: Comparison) -> dict[str, Any]:
    keys = [
        m.key for m in comparison.metrics if any(m.key in s.variance for s in comparison.summaries)
    ]
    rows = []
    for key in keys:
        row = [fmt.metric_label(fmt.metric_of(comparison, key))]
        for s in comparison.summaries:
            split = s.variance.get(key)
            if split is None:
                row.append("-")
            elif split.between is None:
                row.append("single boot")
            elif split.within is None:
                row.append("one run per boot")
            elif split.between_share is None:
                row.append("no spread")
            else:
                row.append(f"{100 * split.between_share:.0f}%")
        rows.append(row)
    return {
        "variants": [fmt.label(comparison, s.variant) for s in comparison.summaries],
        "rows": rows,
    }


def _noise(comparison: Comparison) -> dict[str, Any] | None:
    nf = comparison.noise_floor
    if nf is None or not nf.candidates:
        return None
    c = nf.candidates[0]
    rows = [
        {
            "label": fmt.metric_label(mc.spec),
            "change": fmt.change(mc.ratio),
            "ci": fmt.interval(mc.ci_low, mc.ci_high),
            "p_adj": fmt.pvalue(mc.p_adjusted),
            "verdict": str(mc.verdict),
            "css": CSS[mc.verdict],
        }
        for mc in c.metrics
    ]
    ab = comparison.candidates[0].headline if comparison.candidates else None
    aa = c.headline
    return {
        "sides": ", ".join(fmt.label(nf, s.variant) for s in nf.summaries),
        "sentence": fmt.headline_sentence(nf, c.candidate) + ".",
        "beside": (
            f"Headline interval, A/A {fmt.interval(aa.ci_low, aa.ci_high)} against A/B"
            f" {fmt.interval(ab.ci_low, ab.ci_high)}."
            if aa is not None and ab is not None
            else ""
        ),
        "rows": rows,
    }


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list):
        if all(isinstance(v, Mapping) for v in value):
            out[prefix] = (
                "; ".join(str(v.get("subject") or v.get("file") or json.dumps(v)) for v in value)
                or "(none)"
            )
        else:
            out[prefix] = ", ".join(str(v) for v in value) or "(none)"
    else:
        out[prefix] = "-" if value is None else str(value)


def _provenance(comparison: Comparison) -> dict[str, Any]:
    variants = [s.variant for s in comparison.summaries]
    flat: dict[str, dict[str, str]] = {}
    for v in variants:
        flat[v] = {}
        _flatten("", comparison.provenance.get(v, {}), flat[v])
    keys: list[str] = []
    for v in variants:
        keys += [k for k in flat[v] if k not in keys]
    rows = []
    for key in keys:
        cells = [flat[v].get(key, "-") for v in variants]
        varies = len(set(cells)) > 1
        incomparable = key in INCOMPARABLE_KEYS or (
            key.startswith("workload.")
            and key
            not in ("workload.runs", "workload.boots", "workload.blocks", "workload.headline")
        )
        css = "differs" if varies and incomparable else "varies" if varies else ""
        rows.append({"key": key, "cells": cells, "css": css})
    return {"variants": [fmt.label(comparison, v) for v in variants], "rows": rows}


def render(
    comparison: Comparison,
    *,
    reproduce: str | None = None,
    report_command: str | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The HTML report as text."""
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    verdicts = [
        {
            "word": str(c.verdict),
            "css": BANNER[c.verdict],
            "sentence": fmt.headline_sentence(comparison, c.candidate),
        }
        for c in comparison.candidates
    ]
    differences = [
        f"{c.candidate}: {d.label} differs: {d.baseline!r} (baseline) vs {d.candidate!r}"
        for c in comparison.candidates
        for d in c.differences
    ]
    reproduce_rows = []
    if reproduce:
        reproduce_rows.append(
            {"what": "The run (builds, boots and benchmarks every variant):", "command": reproduce}
        )
    if report_command:
        reproduce_rows.append(
            {"what": "This report, from the run's results:", "command": report_command}
        )
    context = {
        "experiment": comparison.experiment,
        "baseline": fmt.label(comparison, comparison.baseline),
        "candidates": [fmt.label(comparison, c.candidate) for c in comparison.candidates],
        "headline": fmt.metric_label(fmt.metric_of(comparison, comparison.headline)),
        "comparable": comparison.comparable,
        "forced": comparison.forced,
        "differences": differences,
        "verdicts": verdicts,
        "warnings": list(comparison.warnings),
        "check_alerts": fmt.check_alerts(comparison),
        "checks": fmt.check_rows(comparison),
        "checks_note": fmt.CHECKS_NOTE,
        "tables": _tables(comparison),
        "has_noise": comparison.noise_floor is not None,
        # the SVG is built by our own code from numbers and escaped labels
        "charts": [
            {"title": title, "caption": caption, "svg": Markup(svg)}
            for title, caption, svg in charts.all_charts(comparison)
        ],
        "summary": _summary(comparison),
        "distributions": _distributions(comparison),
        "variance": _variance(comparison),
        "noise": _noise(comparison),
        "rules": fmt.rules(comparison),
        "design": fmt.design_lines(comparison),
        "provenance": _provenance(comparison),
        "reproduce": reproduce_rows,
        "version": __version__,
        "generated_at": when,
    }
    return _environment().get_template("report.html.j2").render(**context)
