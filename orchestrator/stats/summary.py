"""Each variant described over its runs (:func:`summarize`): distributions, the
between/within-boot variance split, merged per-operation latency."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..workloads.maps_contention.metrics import TAIL_THRESHOLDS_MS
from .histograms import percentile_rows, share_above_rows
from .options import OP_PERCENTILES, RUN_MAX_THRESHOLDS_MS, FloatArray, IntArray
from .values import VariantData

# ---------------------------------------------------------------- per-variant summary


@dataclass(frozen=True)
class Distribution:
    """Distribution of one metric over runs. Percentiles interpolate linearly between order
    statistics (numpy's default, Hyndman and Fan type 7); ``std`` uses n - 1."""

    n: int
    median: float
    mean: float
    std: float
    minimum: float
    maximum: float
    p10: float
    p90: float

    @property
    def relative_spread(self) -> float | None:
        """Standard deviation over mean in percent (the 0-day robot's ``%stddev``)."""
        if self.n < 2 or self.mean == 0 or not math.isfinite(self.mean):
            return None
        return 100.0 * self.std / abs(self.mean)


def distribution(values: Sequence[float] | FloatArray) -> Distribution | None:
    """Summary of the finite-or-infinite, non-NaN ``values``; ``None`` when there are none."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return None
    with np.errstate(invalid="ignore"):
        p10, median, p90 = np.percentile(arr, [10, 50, 90])
        std = float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0
    return Distribution(
        n=int(arr.size),
        median=float(median),
        mean=float(np.mean(arr)),
        std=std,
        minimum=float(arr.min()),
        maximum=float(arr.max()),
        p10=float(p10),
        p90=float(p90),
    )


@dataclass(frozen=True)
class VarianceSplit:
    """Variance components of a metric: between boots and within a boot.

    One-way random-effects ANOVA: ``within`` = MSW, ``between`` = max(0, (MSB - MSW) / n0)
    with n0 = (N - Σ n_i² / N) / (k - 1). ``between`` is ``None`` with a single boot,
    ``within`` is ``None`` when every boot has a single run.
    """

    boots: int
    runs: int
    between: float | None
    within: float | None

    @property
    def between_share(self) -> float | None:
        """Share of the total variance that lies between boots (0..1), when both are known."""
        if self.between is None or self.within is None:
            return None
        total = self.between + self.within
        return self.between / total if total > 0 else None


def variance_split(
    values: Sequence[float] | FloatArray, groups: Sequence[int] | IntArray
) -> VarianceSplit:
    """Split the variance of ``values`` (NaN ignored) into between- and within-group parts."""
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups, dtype=np.int64)
    keep = np.isfinite(v)
    v, g = v[keep], g[keep]
    _, g = np.unique(g, return_inverse=True)
    k = int(g.max()) + 1 if g.size else 0
    n = int(v.size)
    if n == 0:
        return VarianceSplit(0, 0, None, None)
    sizes = np.bincount(g, minlength=k).astype(np.float64)
    means = np.bincount(g, weights=v, minlength=k) / sizes
    grand = float(v.mean())
    ssw = float(np.sum((v - means[g]) ** 2))
    ssb = float(np.sum(sizes * (means - grand) ** 2))
    within = ssw / (n - k) if n > k else None
    between = None
    if k > 1:
        msb = ssb / (k - 1)
        n0 = (n - float(np.sum(sizes**2)) / n) / (k - 1)
        between = max(0.0, (msb - (within or 0.0)) / n0)
    return VarianceSplit(boots=k, runs=n, between=between, within=within)


@dataclass(frozen=True)
class OpSummary:
    """Per-operation latency of one kind (``all``, ``map``, ``unmap``), all runs merged."""

    kind: str
    count: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    above_ms: Mapping[str, float]  # threshold in ms as text -> per mille of operations


@dataclass(frozen=True)
class Summary:
    """One variant's figures: run distributions, run counts, merged per-operation latency."""

    variant: str
    runs: int
    hangs: int
    boots: int
    runs_per_boot: tuple[int, ...]
    summary_only_runs: int
    status: str
    interruption: Mapping[str, Any] | None
    boot_errors: tuple[str, ...]
    metrics: Mapping[str, Distribution]
    variance: Mapping[str, VarianceSplit]
    max_above_ms: Mapping[str, int]  # threshold in ms as text -> runs whose maximum exceeds it
    operations: Mapping[str, OpSummary]
    # the raw material of the charts: per metric the completed runs' values in run order, and
    # per kind of operation the merged histogram as sparse (bucket, count) pairs
    run_values: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    histograms: Mapping[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    @property
    def single_boot(self) -> bool:
        """True when every completed run came from one boot."""
        return self.boots == 1


def summarize(data: VariantData) -> Summary:
    """The per-variant summary of :class:`VariantData`."""
    metrics: dict[str, Distribution] = {}
    variance: dict[str, VarianceSplit] = {}
    for m in data.metrics:
        d = distribution(data.values[m.key])
        if d is not None:
            metrics[m.key] = d
            variance[m.key] = variance_split(data.values[m.key], data.boot_codes)
    # runs whose slowest operation passed a threshold: for workloads that report one
    maxima = data.values.get("max_ms")
    max_above = (
        {f"{t:g}": int(np.sum(maxima > t)) for t in RUN_MAX_THRESHOLDS_MS}
        if maxima is not None
        else {}
    )
    operations: dict[str, OpSummary] = {}
    histograms: dict[str, tuple[tuple[int, int], ...]] = {}
    if data.hist_map is not None and data.hist_unmap is not None:
        merged_map = data.hist_map.sum(axis=0)
        merged_unmap = data.hist_unmap.sum(axis=0)
        for kind, row in (
            ("all", merged_map + merged_unmap),
            ("map", merged_map),
            ("unmap", merged_unmap),
        ):
            count = int(row.sum())
            if count == 0:
                continue
            rows = row[None, :]
            histograms[kind] = tuple((int(i), int(row[i])) for i in np.flatnonzero(row))
            p50, p99, p999 = (float(percentile_rows(rows, q)[0]) / 1e6 for _, q in OP_PERCENTILES)
            operations[kind] = OpSummary(
                kind=kind,
                count=count,
                p50_ms=p50,
                p99_ms=p99,
                p999_ms=p999,
                above_ms={
                    f"{t:g}": float(share_above_rows(rows, t * 1e6)[0]) * 1000
                    for t in TAIL_THRESHOLDS_MS
                },
            )
    sizes = (
        np.bincount(data.boot_codes, minlength=len(data.boot_ids))
        if data.boot_ids
        else np.zeros(0, dtype=np.int64)
    )
    errors = tuple(
        f"{b.get('id', '?')}: {b['error']}"
        for b in data.results.boots
        if isinstance(b, Mapping) and b.get("error")
    )
    return Summary(
        variant=data.variant,
        runs=int(data.boot_codes.size),
        hangs=data.hangs,
        boots=len(data.boot_ids),
        runs_per_boot=tuple(int(s) for s in sizes),
        summary_only_runs=data.summary_only,
        status=data.results.status,
        interruption=data.results.interruption,
        boot_errors=errors,
        metrics=metrics,
        variance=variance,
        max_above_ms=max_above,
        operations=operations,
        run_values={
            key: tuple(float(v) for v in data.values[key] if not math.isnan(v)) for key in metrics
        },
        histograms=histograms,
    )
