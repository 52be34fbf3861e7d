"""The comparison as JSON (``comparison.json``), for machines.

Schema 1 (numbers are ``null`` where undefined, e.g. a ratio over a zero median)::

    {"schema": 1, "kind": "korch-comparison",
     "experiment": str, "baseline": str, "headline": str,
     "verdict": "improved" | "regressed" | "no significant change" | "inconclusive",
     "comparable": bool, "forced": bool, "emulated": bool,
     "options": {"alpha", "min_effect", "min_runs", "resamples", "seed", "force"},
     "warnings": [str],
     "provenance": {variant: <the results file's provenance, as written by korch run>},
     "metrics": {key: {"label", "unit", "better": "lower"|"higher", "description"}},
     "summaries": {variant: {
         "runs", "hangs", "boots", "runs_per_boot": [int], "summary_only_runs", "status",
         "interruption", "boot_errors": [str],
         "max_above_ms": {"0.5": int, "1": int},
         "metrics": {key: {"n", "median", "mean", "std", "min", "max", "p10", "p90",
                           "relative_spread_pct",
                           "variance": {"boots", "runs", "between", "within", "between_share"}}},
         "operations": {"all"|"map"|"unmap": {"count", "p50_ms", "p99_ms", "p999_ms",
                                              "above_ms": {"0.5": permille, "1": ..., "2": ...}}}}},
     "candidates": [{"candidate": str, "verdict": str, "comparable": bool,
                     "differences": [{"field", "label", "baseline", "candidate"}],
                     "metrics": [{"metric", "family": "headline"|"secondary",
                                  "n_baseline", "n_candidate", "boots_baseline", "boots_candidate",
                                  "baseline_median", "candidate_median", "ratio", "change_pct",
                                  "ci_low", "ci_high", "p_value", "p_adjusted", "design_effect",
                                  "verdict", "reason", "noise_floor_pct"}]}],
     "noise_floor": null | <the A/A comparison, this schema without "noise_floor">}
"""

from __future__ import annotations

import math
from typing import Any

from ..stats import METRICS, Comparison, Summary, noise_floor_pct

SCHEMA = 1
KIND = "korch-comparison"


def _n(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return float(v)


def _summary(s: Summary) -> dict[str, Any]:
    metrics = {}
    for key, d in s.metrics.items():
        split = s.variance.get(key)
        metrics[key] = {
            "n": d.n,
            "median": _n(d.median),
            "mean": _n(d.mean),
            "std": _n(d.std),
            "min": _n(d.minimum),
            "max": _n(d.maximum),
            "p10": _n(d.p10),
            "p90": _n(d.p90),
            "relative_spread_pct": _n(d.relative_spread),
            "variance": None
            if split is None
            else {
                "boots": split.boots,
                "runs": split.runs,
                "between": _n(split.between),
                "within": _n(split.within),
                "between_share": _n(split.between_share),
            },
        }
    return {
        "runs": s.runs,
        "hangs": s.hangs,
        "boots": s.boots,
        "runs_per_boot": list(s.runs_per_boot),
        "summary_only_runs": s.summary_only_runs,
        "status": s.status,
        "interruption": s.interruption,
        "boot_errors": list(s.boot_errors),
        "max_above_ms": dict(s.max_above_ms),
        "metrics": metrics,
        "operations": {
            kind: {
                "count": op.count,
                "p50_ms": _n(op.p50_ms),
                "p99_ms": _n(op.p99_ms),
                "p999_ms": _n(op.p999_ms),
                "above_ms": {k: _n(v) for k, v in op.above_ms.items()},
            }
            for kind, op in s.operations.items()
        },
    }


def to_json(comparison: Comparison, *, nested: bool = False) -> dict[str, Any]:
    """The comparison as a JSON-ready dict (see the module docstring for the schema)."""
    o = comparison.options
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": KIND,
        "experiment": comparison.experiment,
        "baseline": comparison.baseline,
        "headline": comparison.headline,
        "verdict": str(comparison.verdict),
        "comparable": comparison.comparable,
        "forced": comparison.forced,
        "emulated": comparison.emulated,
        "options": {
            "alpha": o.alpha,
            "min_effect": o.min_effect,
            "min_runs": o.min_runs,
            "resamples": o.resamples,
            "seed": o.seed,
            "force": o.force,
        },
        "warnings": list(comparison.warnings),
        "provenance": {k: dict(v) for k, v in comparison.provenance.items()},
        "metrics": {
            m.key: {
                "label": m.label,
                "unit": m.unit,
                "better": m.better,
                "description": m.description,
            }
            for m in METRICS
        },
        "summaries": {s.variant: _summary(s) for s in comparison.summaries},
        "candidates": [
            {
                "candidate": c.candidate,
                "verdict": str(c.verdict),
                "comparable": c.comparable,
                "differences": [
                    {
                        "field": d.field,
                        "label": d.label,
                        "baseline": d.baseline,
                        "candidate": d.candidate,
                    }
                    for d in c.differences
                ],
                "metrics": [
                    {
                        "metric": mc.metric,
                        "family": mc.family,
                        "n_baseline": mc.n_baseline,
                        "n_candidate": mc.n_candidate,
                        "boots_baseline": mc.boots_baseline,
                        "boots_candidate": mc.boots_candidate,
                        "baseline_median": _n(mc.baseline_median),
                        "candidate_median": _n(mc.candidate_median),
                        "ratio": _n(mc.ratio),
                        "change_pct": _n(mc.change_pct),
                        "ci_low": _n(mc.ci_low),
                        "ci_high": _n(mc.ci_high),
                        "p_value": _n(mc.p_value),
                        "p_adjusted": _n(mc.p_adjusted),
                        "design_effect": _n(mc.design_effect),
                        "verdict": str(mc.verdict),
                        "reason": mc.reason,
                        "noise_floor_pct": _n(noise_floor_pct(comparison, mc.metric)),
                    }
                    for mc in c.metrics
                ],
            }
            for c in comparison.candidates
        ],
    }
    if not nested:
        out["noise_floor"] = (
            None if comparison.noise_floor is None else to_json(comparison.noise_floor, nested=True)
        )
    return out
