"""The maps-contention workload's metrics: the mapper's per-run maximum and mean, and the
figures read from its map/unmap histograms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...metrics import Metric

TAIL_THRESHOLDS_MS = (0.5, 1.0, 2.0)
HANG_GRACE_S = 5.0  # the driver's watchdog: a mapper alive this long after its deadline hung
DEFAULT_DURATION_S = 10.0
MS_OFFSET, SHARE_OFFSET, RATE_OFFSET = 1e-6, 0.001, 1e-3


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
                    kind="share",
                    worst_value=1000.0,
                    log_offset=SHARE_OFFSET,
                )
            )
    return out


def duration_of(workload: Mapping[str, Any]) -> float:
    """The run duration a results file's workload section records (10 s when it has none)."""
    value = workload.get("duration_s")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_DURATION_S


def metrics(workload: Mapping[str, Any]) -> tuple[Metric, ...]:
    """Every metric; a hung run counts as its deadline for the latencies."""
    worst_ms = (duration_of(workload) + HANG_GRACE_S) * 1000.0

    def latency(key: str, label: str, digits: int, histogram: bool, description: str) -> Metric:
        return Metric(key, label, "ms", "lower", digits, histogram, description,
                      kind="latency", worst_value=worst_ms, log_offset=MS_OFFSET)  # fmt: skip

    return (
        latency("max_ms", "per-run maximum", 3, False,
                "per run, the slowest map or unmap (the published test's headline)"),
        latency("mean_ms", "per-run mean", 4, False,
                "per run, the mean latency of all operations"),
        Metric("ops_per_s", "operations per second", "ops/s", "higher", 0, True,
               "per run, maps plus unmaps over the measured time",
               kind="throughput", worst_value=0.0, log_offset=RATE_OFFSET),
        latency("p50_ms", "per-run p50", 4, True,
                "per run, the median operation (bucket upper bound)"),
        latency("p99_ms", "per-run p99", 3, True,
                "per run, the 99th percentile operation (bucket upper bound)"),
        latency("p999_ms", "per-run p99.9", 3, True,
                "per run, the 99.9th percentile operation (bucket upper bound)"),
        *_tail_metrics(),
    )  # fmt: skip
