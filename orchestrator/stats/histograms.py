"""Arithmetic on the workload's log-linear latency histograms, vectorised over runs:
shares above a threshold and percentiles, as ``Histogram`` defines them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from ..workloads.maps_contention.histogram import (
    NBUCKETS,
    bucket_lower,
)
from .options import FloatArray, IntArray

# ---------------------------------------------------------------- histogram arithmetic


@cache
def bucket_bounds() -> tuple[FloatArray, FloatArray]:
    """Lower (inclusive) and upper (exclusive) bound in ns of every histogram bucket."""
    lower = np.array([float(bucket_lower(i)) for i in range(NBUCKETS)])
    upper = np.append(lower[1:], math.inf)
    return lower, upper


@cache
def _tail_weights(threshold_ns: float) -> FloatArray:
    """Per bucket, the share of its samples counted at or above ``threshold_ns``, with the
    same even-spread rule as ``Histogram.count_above``."""
    lower, upper = bucket_bounds()
    weights = np.where(lower >= threshold_ns, 1.0, 0.0)
    inside = (lower < threshold_ns) & (upper > threshold_ns) & np.isfinite(upper)
    weights[inside] = (upper[inside] - threshold_ns) / (upper[inside] - lower[inside])
    return weights


def share_above_rows(rows: IntArray, threshold_ns: float) -> FloatArray:
    """Per row (one histogram each), the share of samples at or above ``threshold_ns``
    (NaN for an empty row); agrees with ``Histogram.share_above``."""
    total = rows.sum(axis=1).astype(np.float64)
    above = rows.astype(np.float64) @ _tail_weights(threshold_ns)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, above / total, np.nan)


def first_reaching(
    rows: npt.NDArray[np.integer[Any]], targets: Sequence[IntArray]
) -> list[IntArray]:
    """Per row of non-negative counts, the first column where the running total reaches the
    row's target (1 <= target <= the row's total; rows outside that get an arbitrary column).

    One cumulative sum over the flattened rows is non-decreasing across row ends, so every
    row is answered by one binary search; cheaper than a cumulative sum per row and a
    comparison of every cell, which matters when rows are thousands of bootstrap resamples.
    """
    n_rows, width = rows.shape
    totals = rows.sum(axis=1, dtype=np.int64)
    big = int(totals.sum()) >= np.iinfo(np.int32).max
    dtype = np.int64 if big else np.int32
    running = np.cumsum(rows.ravel(), dtype=dtype)
    before = np.concatenate(([0], np.cumsum(totals)[:-1]))
    starts = np.arange(n_rows, dtype=np.int64) * width
    # targets in the same type as the running total: otherwise numpy converts all of it
    return [
        np.clip(
            np.searchsorted(running, (before + t).astype(dtype), side="left") - starts, 0, width - 1
        )
        for t in targets
    ]


def percentiles_rows(rows: IntArray, qs: Sequence[str]) -> FloatArray:
    """Per row (one histogram each) and per ``q`` in ``qs``, the q-th percentile in ns as
    ``Histogram.percentile`` defines it (nearest rank, bucket upper bound); ``q`` is decimal
    text so that ranks are exact. Shape (len(qs), rows); NaN for an empty row."""
    rows = np.atleast_2d(rows)
    total = rows.sum(axis=1)
    ranks = []
    for q in qs:
        frac = Fraction(q) / 100
        ranks.append(np.maximum(1, -((-frac.numerator * total) // frac.denominator)))
    _, upper = bucket_bounds()
    found = first_reaching(rows, ranks)
    return np.array([np.where(total > 0, upper[index], np.nan) for index in found])


def percentile_rows(rows: IntArray, q: str) -> FloatArray:
    """Per row, the ``q``-th percentile in ns (see :func:`percentiles_rows`)."""
    return percentiles_rows(rows, [q])[0]
