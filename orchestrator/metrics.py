"""The metrics korch reports, by key: labels, units, which way is better.

Kept apart from :mod:`orchestrator.stats` (numpy, scipy) so that checking an experiment's
``workload.headline`` costs no numerical imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import UserError

TAIL_THRESHOLDS_MS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Metric:
    """A per-run figure: how to label it, which way is better, how to show it."""

    key: str
    label: str
    unit: str
    better: str  # "lower" or "higher"
    digits: int
    needs_histogram: bool
    description: str


def tail_key(kind: str, ms: float) -> str:
    """The key of the metric "share of ``kind`` operations at or above ``ms``"."""
    amount = f"{int(ms * 1000)}us" if ms < 1 else f"{ms:g}ms"
    return f"above_{amount}" if kind == "all" else f"{kind}_above_{amount}"


def _tail_metrics() -> list[Metric]:
    out = []
    for kind in ("all", "map", "unmap"):
        for ms in TAIL_THRESHOLDS_MS:
            what = "operations" if kind == "all" else f"{kind} operations"
            out.append(
                Metric(
                    key=tail_key(kind, ms),
                    label=f"{what} ≥ {ms:g} ms",
                    unit="‰",
                    better="lower",
                    digits=2,
                    needs_histogram=True,
                    description=f"per run, share of {what} taking {ms:g} ms or more, per mille",
                )
            )
    return out


METRICS: tuple[Metric, ...] = (
    Metric("max_ms", "per-run maximum", "ms", "lower", 3, False,
           "per run, the slowest map or unmap (the published test's headline)"),
    Metric("mean_ms", "per-run mean", "ms", "lower", 4, False,
           "per run, the mean latency of all operations"),
    Metric("ops_per_s", "operations per second", "ops/s", "higher", 0, True,
           "per run, maps plus unmaps over the measured time"),
    Metric("p50_ms", "per-run p50", "ms", "lower", 4, True,
           "per run, the median operation (bucket upper bound)"),
    Metric("p99_ms", "per-run p99", "ms", "lower", 3, True,
           "per run, the 99th percentile operation (bucket upper bound)"),
    Metric("p999_ms", "per-run p99.9", "ms", "lower", 3, True,
           "per run, the 99.9th percentile operation (bucket upper bound)"),
    *_tail_metrics(),
    Metric("hang_rate", "hung runs", "‰", "lower", 0, False,
           "per boot, the runs that hung (outlived their deadline), per mille"),
)  # fmt: skip
METRIC_BY_KEY: Mapping[str, Metric] = {m.key: m for m in METRICS}


def metric(key: str) -> Metric:
    """The metric named ``key``; :class:`UserError` listing the known names otherwise."""
    try:
        return METRIC_BY_KEY[key]
    except KeyError:
        raise UserError(
            f"no metric named '{key}'",
            hint="known metrics: " + ", ".join(METRIC_BY_KEY),
        ) from None
