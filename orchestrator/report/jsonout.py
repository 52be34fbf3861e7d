"""The comparison as JSON (``comparison.json``), for machines.

Schema 2 (numbers are ``null`` where undefined, e.g. an unbounded interval's end)::

    {"schema": 2, "kind": "korch-comparison",
     "experiment": str, "baseline": str, "headline": str,
     "declared_headline": str | null,   # the experiment's; differs when chosen after the run
     "headline_post_hoc": bool,
     "verdict": "improved" | "regressed" | "equivalent" | "inconclusive",
     "comparable": bool, "forced": bool, "emulated": bool,
     "smallest_effect": float,           # a fraction: 0.05 is ±5%
     "sequential": null | {"max_blocks": int, "level": float},
     "options": {"alpha", "seed", "force"},
     "warnings": [str],
     "checks": [{"test": str, "regressed": bool,          # correctness checks (checks.py)
                 "baseline": {"boots", "pass", "fail", "skip", "timeout", "failed_tests",
                              "boots_failed"},
                 "candidates": [{"candidate", "verdict", "reason", "results": {...}}]}],
     "provenance": {variant: <the results file's provenance, as written by korch run>},
     "workload": str,                                     # the workload's name
     "metrics": {key: {"label", "unit", "better": "lower"|"higher", "description",
                       "kind": "latency"|"share"|"throughput"|"count"|"pass/fail"}},
     "summaries": {variant: {
         "runs", "hangs", "boots", "runs_per_boot": [int], "summary_only_runs", "status",
         "interruption", "boot_errors": [str],
         "max_above_ms": {"0.5": int, "1": int},        # {} for a workload without max_ms
         "metrics": {key: {"n", "median", "mean", "std", "min", "max", "p10", "p90",
                           "relative_spread_pct",
                           "variance": {"boots", "runs", "between", "within", "between_share"}}},
         "operations": {"all"|"map"|"unmap": {"count", "p50_ms", "p99_ms", "p999_ms",
                                              "above_ms": {"0.5": permille, "1": ..., "2": ...}}}}},
     "candidates": [{"candidate": str, "verdict": str, "comparable": bool,
                     "differences": [{"field", "label", "baseline", "candidate"}],
                     "design": null | {"between_blocks", "between_boots", "within_boot",
                                       "boot_cost_s", "run_cost_s", "runs_per_boot",
                                       "recommended_runs", "blocks_for_observed",
                                       "blocks_for_smallest", "text"},
                     "metrics": [{"metric", "family": "headline"|"exploratory", "post_hoc",
                                  "method": "paired"|"unpaired"|"none", "blocks",
                                  "n_baseline", "n_candidate",      # completed runs
                                  "boots_baseline", "boots_candidate",  # boots with a value
                                  "baseline_median", "candidate_median",  # over boots
                                  "ratio", "change_pct", "ci_low", "ci_high", "level",
                                  "p_value", "p_adjusted", "more_blocks", "unpaired_boots",
                                  "log_ratios", "verdict", "reason", "noise_floor_pct"}]}],
     "noise_floor": null | <the A/A comparison, this schema without "noise_floor">}
"""

from __future__ import annotations

import math
from typing import Any

from ..stats import Comparison, DesignAdvice, Summary, noise_floor_pct

SCHEMA = 2
KIND = "korch-comparison"


def _n(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return float(v)


def _design(d: DesignAdvice | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {
        "between_blocks": _n(d.between_blocks),
        "between_boots": _n(d.between_boots),
        "within_boot": _n(d.within_boot),
        "boot_cost_s": _n(d.boot_cost_s),
        "run_cost_s": _n(d.run_cost_s),
        "runs_per_boot": d.runs_per_boot,
        "recommended_runs": d.recommended_runs,
        "blocks_for_observed": d.blocks_for_observed,
        "blocks_for_smallest": d.blocks_for_smallest,
        "text": d.text,
    }


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
        "declared_headline": comparison.declared_headline,
        "headline_post_hoc": comparison.post_hoc,
        "verdict": str(comparison.verdict),
        "smallest_effect": comparison.smallest_effect,
        "sequential": None if comparison.sequential is None else dict(comparison.sequential),
        "comparable": comparison.comparable,
        "forced": comparison.forced,
        "emulated": comparison.emulated,
        "options": {
            "alpha": o.alpha,
            "seed": o.seed,
            "force": o.force,
        },
        "warnings": list(comparison.warnings),
        "checks": [
            {
                "test": g.test,
                "regressed": g.regressed,
                "baseline": g.baseline.to_json(),
                "candidates": [
                    {
                        "candidate": c.candidate,
                        "verdict": c.verdict,
                        "reason": c.reason,
                        "results": c.tally.to_json(),
                    }
                    for c in g.candidates
                ],
            }
            for g in comparison.checks
        ],
        "provenance": {k: dict(v) for k, v in comparison.provenance.items()},
        "workload": comparison.workload,
        "metrics": {
            m.key: {
                "label": m.label,
                "unit": m.unit,
                "better": m.better,
                "description": m.description,
                "kind": m.kind,
            }
            for m in comparison.metrics
        },
        "summaries": {s.variant: _summary(s) for s in comparison.summaries},
        "candidates": [
            {
                "candidate": c.candidate,
                "verdict": str(c.verdict),
                "comparable": c.comparable,
                "design": _design(c.design),
                "strata": [
                    {
                        "shard": s.shard,
                        "blocks": list(s.blocks),
                        "host_cpu": s.host_cpu,
                        "n": s.n,
                        "ratio": s.ratio,
                        "ci_low": s.ci_low,
                        "ci_high": s.ci_high,
                    }
                    for s in c.strata
                ],
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
                        "post_hoc": mc.post_hoc,
                        "method": mc.method,
                        "blocks": mc.blocks,
                        "n_baseline": mc.n_baseline,
                        "n_candidate": mc.n_candidate,
                        "boots_baseline": mc.boots_baseline,
                        "boots_candidate": mc.boots_candidate,
                        "baseline_median": _n(mc.baseline_median),
                        "candidate_median": _n(mc.candidate_median),
                        "ratio": _n(mc.ratio),
                        "change_pct": _n(mc.change_pct),
                        # an unbounded interval (too few blocks) has no ends
                        "ci_low": None if _n(mc.ci_high) is None else _n(mc.ci_low),
                        "ci_high": _n(mc.ci_high),
                        "p_value": _n(mc.p_value),
                        "level": mc.level,
                        "p_adjusted": _n(mc.p_adjusted),
                        "more_blocks": mc.more_blocks,
                        "unpaired_boots": list(mc.unpaired_boots),
                        "log_ratios": [_n(x) for x in mc.log_ratios],
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
