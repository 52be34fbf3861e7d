"""Statistics: per-boot values, per-variant summaries, verdicts against the baseline.

Input is one results file per variant (:mod:`orchestrator.results`). This module turns a
results file into arrays (:func:`extract`: per-run values of every metric, histograms, the
block and boot of every run, hung runs) and describes each variant over its runs
(:func:`summarize`: distributions, the between/within-boot variance split, merged
per-operation latency).

The verdicts are not computed over runs: runs inside one boot are sub-samples of that boot,
not independent replicates. :mod:`~orchestrator.stats.boots` reduces each boot to one value
per metric, :mod:`~orchestrator.stats.inference` holds the exact tests, intervals and the
sequential level, and :mod:`~orchestrator.stats.verdicts` decides (see its docstring for the
rules). :mod:`~orchestrator.stats.simulate` generates hierarchical results for calibrating
them (``ci/bench/verdicts.py``).

The run-level helpers further down (the two-level bootstrap, the clustered Mann-Whitney) serve
the nightly history's check, which pools nights rather than pairing blocks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from functools import cache
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import mannwhitneyu, norm, rankdata
from scipy.stats import t as student_t

from ..errors import UserError
from ..metrics import METRIC_BY_KEY, METRICS, TAIL_THRESHOLDS_MS, Metric, metric, tail_key
from ..results import ResultsFile
from ..workloads.maps_contention.histogram import (
    MIN_NS,
    NBUCKETS,
    OCTAVES,
    SUB,
    bucket_lower,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_HEADLINE = "max_ms"
RUN_MAX_THRESHOLDS_MS = (0.5, 1.0)
OP_PERCENTILES = (("p50", "50"), ("p99", "99"), ("p99.9", "99.9"))


class Verdict(StrEnum):
    """The answer for one metric (or one candidate, by its headline metric)."""

    IMPROVED = "improved"
    REGRESSED = "regressed"
    EQUIVALENT = "equivalent"
    INCONCLUSIVE = "inconclusive"
    NO_CHANGE = "no significant change"  # the nightly history's check only


@dataclass(frozen=True)
class StatsOptions:
    """How comparisons decide. ``seed`` makes every interval reproducible."""

    alpha: float = 0.05
    min_effect: float = 0.05
    min_runs: int = 5
    resamples: int = 2000
    seed: int = 1
    headline: str | None = None
    force: bool = False
    baseline: str | None = None
    # the smallest change that matters (a fraction); None: the experiment's, else 5%
    smallest_effect: float | None = None
    # looked after every block up to this many (--until-decisive); None: as the results say
    max_blocks: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.alpha < 1:
            problems.append(f"alpha must lie between 0 and 1, not {self.alpha}")
        if self.min_effect < 0:
            problems.append(f"the minimum effect must not be negative, not {self.min_effect}")
        if self.min_runs < 2:
            problems.append(f"the minimum number of runs must be at least 2, not {self.min_runs}")
        if self.smallest_effect is not None and not 0 < self.smallest_effect < 1:
            problems.append(
                f"the smallest effect must lie between 0 and 1, not {self.smallest_effect}"
            )
        if self.resamples < 100:
            problems.append(f"use at least 100 bootstrap resamples, not {self.resamples}")
        if problems:
            raise UserError("; ".join(problems))


# ---------------------------------------------------------------- per-run values


@dataclass(frozen=True, eq=False)
class VariantData:
    """A results file turned into arrays: one entry per completed run (hangs excluded).

    ``values[key]`` holds the metric for every completed run (NaN where the run has no such
    figure, e.g. summary-only imported runs); ``boot_codes`` numbers each run's boot.
    ``hist_map``/``hist_unmap`` are dense per-run histograms (runs x buckets), or ``None``
    when no run has one.
    """

    variant: str
    results: ResultsFile
    boot_ids: tuple[str, ...]
    boot_codes: IntArray
    values: Mapping[str, FloatArray]
    hist_map: IntArray | None
    hist_unmap: IntArray | None
    hangs: int
    summary_only: int
    # per completed run, its block (-1 when the results carry none); per hung run, its
    # boot id and block: a hang is the worst value, not a missing one
    run_blocks: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hung_runs: tuple[tuple[str, int], ...] = ()


def _check_layout(obj: Any, where: str) -> list[Any]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: the histogram is not an object")
    for key, expected in (("min_ns", MIN_NS), ("sub", SUB), ("octaves", OCTAVES)):
        if obj.get(key) != expected:
            raise ValueError(f"{where}: histogram {key} is {obj.get(key)!r}, expected {expected}")
    pairs = obj.get("counts")
    if not isinstance(pairs, list):
        raise ValueError(f"{where}: histogram 'counts' is not a list")
    return pairs


def _fill_histogram(row: IntArray, obj: Any, count: Any, where: str) -> None:
    """Decode a sparse histogram into ``row``.

    The same rules as ``Histogram.from_json``, checked with numpy over the whole list: a
    report reads thousands of runs, and the per-pair Python checks would dominate its time.
    """
    pairs = _check_layout(obj, where)
    held = 0
    if pairs:
        try:
            if set(map(len, pairs)) != {2}:
                raise ValueError
            flat = np.fromiter(chain.from_iterable(pairs), dtype=np.float64, count=2 * len(pairs))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: histogram counts are not [index, count] pairs") from None
        if not np.array_equal(flat, np.floor(flat)):
            raise ValueError(f"{where}: histogram counts hold a number that is not whole")
        arr = flat.astype(np.int64).reshape(-1, 2)
        index, counts = arr[:, 0], arr[:, 1]
        if index[0] < 0 or index[-1] >= NBUCKETS or np.any(np.diff(index) <= 0):
            raise ValueError(
                f"{where}: histogram indices must ascend strictly in 0..{NBUCKETS - 1}"
            )
        if np.any(counts <= 0):
            raise ValueError(f"{where}: histogram counts must be positive")
        row[index] = counts
        held = int(counts.sum())
    if held != count:
        raise ValueError(f"{where}: the histogram holds {held} operations, count is {count!r}")


class _Pending:
    """Sparse histograms collected run by run, decoded together: one numpy pass over every
    pair of every run instead of thousands of small ones."""

    def __init__(self) -> None:
        self.runs: list[int] = []
        self.pairs: list[list[Any]] = []
        self.counts: list[Any] = []
        self.wheres: list[str] = []
        self.objects: list[Any] = []

    def add(self, run: int, obj: Any, count: Any, where: str) -> None:
        self.pairs.append(_check_layout(obj, where))
        self.runs.append(run)
        self.counts.append(count)
        self.wheres.append(where)
        self.objects.append(obj)

    def fill(self, rows: IntArray) -> None:
        """Write every histogram into its run's row; ``ValueError`` naming the first bad one."""
        if not self.pairs:
            return
        lengths = np.fromiter(map(len, self.pairs), dtype=np.int64, count=len(self.pairs))
        total = int(lengths.sum())
        try:
            if total and set(map(len, chain.from_iterable(self.pairs))) != {2}:
                raise ValueError
            flat = np.fromiter(
                chain.from_iterable(chain.from_iterable(self.pairs)),
                dtype=np.float64,
                count=2 * total,
            )
            expected = np.array(self.counts, dtype=np.float64)
        except (TypeError, ValueError):
            self._explain(rows)
            raise
        pairs = flat.reshape(-1, 2)
        index, counts = pairs[:, 0], pairs[:, 1]
        owner = np.repeat(np.arange(len(self.pairs)), lengths)
        rising = np.diff(index) > 0
        rising |= np.diff(owner) != 0  # a new histogram may start anywhere
        whole = np.array_equal(flat, np.floor(flat)) and np.array_equal(
            expected, np.floor(expected)
        )
        sums = np.bincount(owner, weights=counts, minlength=len(self.pairs))
        if not (
            whole
            and rising.all()
            and (total == 0 or (index.min() >= 0 and index.max() < NBUCKETS and counts.min() > 0))
            and np.array_equal(sums, expected)
        ):
            self._explain(rows)
        rows[np.asarray(self.runs)[owner], index.astype(np.int64)] = counts.astype(np.int64)

    def _explain(self, rows: IntArray) -> None:
        # the bulk check found a problem: find it one histogram at a time, for its message
        scratch = np.zeros(NBUCKETS, dtype=np.int64)
        for obj, count, where in zip(self.objects, self.counts, self.wheres, strict=True):
            scratch[:] = 0
            _fill_histogram(scratch, obj, count, where)
        raise ValueError("histograms: inconsistent data")


def _number(obj: Mapping[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: '{key}' is {value!r}, not a finite number")
    return float(value)


def extract(results: ResultsFile) -> VariantData:
    """Per-run values of every metric for one variant's results file.

    A run's ``record`` is either the mapper's full line (checked by ``korch run`` when it was
    parsed; here only what the statistics use is re-checked) or a summary-only
    ``{"max_ms", "mean_ms"}`` pair (imported data). Raises :class:`UserError` naming the run.
    """
    completed: list[tuple[str, Mapping[str, Any]]] = []
    blocks: list[int] = []
    hung: list[tuple[str, int]] = []
    block_of_boot = {
        (str(b.get("id")), int(b.get("attempt") or 1)): b.get("block")
        for b in results.boots
        if isinstance(b, Mapping)
    }
    for n, run in enumerate(results.runs):
        if not isinstance(run, Mapping):
            raise UserError(f"results of '{results.variant}': runs[{n}] is not an object")
        record = run.get("record")
        boot = str(run.get("boot", f"{results.variant}-?"))
        attempt = run.get("attempt") or 1
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise UserError(f"results of '{results.variant}': runs[{n}].attempt is {attempt!r}")
        block = run.get("block", block_of_boot.get((boot, attempt)))
        if block is not None and (not isinstance(block, int) or isinstance(block, bool)):
            raise UserError(f"results of '{results.variant}': runs[{n}].block is {block!r}")
        # a boot booted again (a resumed run) is another boot: its own cluster
        key = boot if attempt == 1 else f"{boot}#{attempt}"
        if run.get("hang") or record is None:
            hung.append((key, -1 if block is None else block))
            continue
        if not isinstance(record, Mapping):
            raise UserError(f"results of '{results.variant}': runs[{n}].record is not an object")
        completed.append((key, record))
        blocks.append(-1 if block is None else block)
    hangs = len(hung)

    n_runs = len(completed)
    index_of: dict[str, int] = {}
    codes = np.array(
        [index_of.setdefault(boot, len(index_of)) for boot, _ in completed], dtype=np.int64
    )
    boot_ids = tuple(index_of)

    full = [i for i, (_, rec) in enumerate(completed) if "map" in rec]
    hist_map = hist_unmap = None
    elapsed = np.full(n_runs, np.nan)
    max_ms = np.full(n_runs, np.nan)
    mean_ms = np.full(n_runs, np.nan)
    if full:
        hist_map = np.zeros((n_runs, NBUCKETS), dtype=np.int64)
        hist_unmap = np.zeros((n_runs, NBUCKETS), dtype=np.int64)
    pending: dict[str, _Pending] = {"map": _Pending(), "unmap": _Pending()}
    try:
        for i, (boot, rec) in enumerate(completed):
            where = f"results of '{results.variant}', boot {boot}, run {i}"
            max_ms[i] = _number(rec, "max_ms", where)
            mean_ms[i] = _number(rec, "mean_ms", where)
            if "map" in rec:
                for kind in ("map", "unmap"):
                    op = rec.get(kind)
                    if not isinstance(op, Mapping):
                        raise ValueError(f"{where}: '{kind}' is not an object")
                    pending[kind].add(i, op.get("hist"), op.get("count"), f"{where}, {kind}")
                elapsed[i] = _number(rec, "elapsed_s", where)
        if hist_map is not None and hist_unmap is not None:
            pending["map"].fill(hist_map)
            pending["unmap"].fill(hist_unmap)
    except ValueError as exc:
        raise UserError(str(exc), hint="a results file is written by 'korch run'") from None

    values: dict[str, FloatArray] = {"max_ms": max_ms, "mean_ms": mean_ms}
    if hist_map is not None and hist_unmap is not None:
        has = np.zeros(n_runs, dtype=bool)
        has[full] = True
        both = hist_map + hist_unmap
        ops = both.sum(axis=1).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            values["ops_per_s"] = np.where(has & (elapsed > 0), ops / elapsed, np.nan)
        for name, row in zip(
            ("p50_ms", "p99_ms", "p999_ms"),
            percentiles_rows(both, ["50", "99", "99.9"]),
            strict=True,
        ):
            values[name] = np.where(has, row / 1e6, np.nan)
        for kind, rows in (("all", both), ("map", hist_map), ("unmap", hist_unmap)):
            for ms in TAIL_THRESHOLDS_MS:
                values[tail_key(kind, ms)] = np.where(
                    has, share_above_rows(rows, ms * 1e6) * 1000, np.nan
                )
    for m in METRICS:
        values.setdefault(m.key, np.full(n_runs, np.nan))
    return VariantData(
        variant=results.variant,
        results=results,
        boot_ids=boot_ids,
        boot_codes=codes,
        values=values,
        hist_map=hist_map,
        hist_unmap=hist_unmap,
        hangs=hangs,
        summary_only=n_runs - len(full),
        run_blocks=np.array(blocks, dtype=np.int64),
        hung_runs=tuple(hung),
    )


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
    for m in METRICS:
        d = distribution(data.values[m.key])
        if d is not None:
            metrics[m.key] = d
            variance[m.key] = variance_split(data.values[m.key], data.boot_codes)
    maxima = data.values["max_ms"]
    max_above = {f"{t:g}": int(np.sum(maxima > t)) for t in RUN_MAX_THRESHOLDS_MS}
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


# ---------------------------------------------------------------- bootstrap and tests


def resample_counts(
    groups: IntArray, resamples: int, rng: np.random.Generator
) -> npt.NDArray[np.int32]:
    """Two-level bootstrap of runs nested in boots, as multiplicities.

    Each of ``resamples`` rows draws as many boots as there are, with replacement, and
    inside each drawn boot as many runs as it holds, with replacement. Row ``r`` holds how
    often each run (in the order of ``groups``) was drawn. Counting instead of gathering
    values lets every metric reuse one resampling and find its median by a cumulative sum.
    """
    g = np.asarray(groups, dtype=np.int64)
    n = g.size
    order = np.argsort(g, kind="stable")
    sizes = np.bincount(g)
    sizes = sizes[sizes > 0]
    k = sizes.size
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    chosen = rng.integers(0, k, size=resamples * k)
    if np.all(sizes == sizes[0]):
        # the usual case, boots of equal size: one block of draws, no ragged bookkeeping
        m = int(sizes[0])
        within = rng.integers(0, m, size=(resamples * k, m))
        run = order[starts[chosen][:, None] + within].reshape(resamples, k * m)
        flat = (run + (np.arange(resamples) * n)[:, None]).ravel()
    else:
        drawn = sizes[chosen]
        # one entry per drawn run, so memory stays O(resamples x runs) however unequal the boots
        slot = np.repeat(np.arange(chosen.size), drawn)
        within_ragged = (rng.random(slot.size) * drawn[slot]).astype(np.int64)
        run_ragged = order[starts[chosen][slot] + within_ragged]
        flat = (slot // k) * n + run_ragged
    counts = np.bincount(flat, minlength=resamples * n).reshape(resamples, n)
    return counts.astype(np.int32)


def resampled_medians(values: FloatArray, counts: npt.NDArray[np.int32]) -> FloatArray:
    """Median of every resample described by ``counts`` (rows of multiplicities of ``values``)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    by_value = counts[:, order]
    total = by_value.sum(axis=1, dtype=np.int64)
    low, high = first_reaching(by_value, [(total + 1) // 2, total // 2 + 1])
    with np.errstate(invalid="ignore"):
        return (ordered[low] + ordered[high]) / 2


def expanded_tail(alpha: float, units: float) -> float:
    """The tail probability for a bootstrap percentile interval with coverage 1 - alpha,
    expanded for few independent units (Hesterberg's "expanded percentile interval").

    A percentile interval from ``units`` resampled units is too narrow when they are few
    (its spread is the plug-in spread, without the t distribution's heavier tails). The
    expanded interval takes the tail where a normal quantile equals
    sqrt(n / (n - 1)) * t(1 - alpha/2, n - 1). Here the units are boots, the level the
    hierarchical bootstrap resamples first; one unit gets the plain percentile interval.
    """
    if units <= 1:
        return alpha / 2
    z = math.sqrt(units / (units - 1)) * float(student_t.ppf(1 - alpha / 2, units - 1))
    return float(norm.sf(z))


def median_ratio(candidate: FloatArray | float, baseline: FloatArray | float) -> FloatArray:
    """candidate / baseline, with 0/0 = 1 (no change) and x/0 = inf."""
    c = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(b == 0, np.where(c == 0, 1.0, math.inf), c / b)
    return np.asarray(ratio, dtype=np.float64)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest p times (m - i + 1), made monotone
    and capped at 1. Controls the family-wise error rate without assuming independence."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def design_effect(
    candidate: FloatArray, candidate_boots: IntArray, baseline: FloatArray, baseline_boots: IntArray
) -> float:
    """Kish's design effect 1 + (m - 1) * ICC for a rank test over runs nested in boots.

    The intraclass correlation is that of the pooled ranks (the scale the rank test works
    on), estimated within each side (boots nested in sides, one-way random effects, as in
    :func:`variance_split`); m = sum(m_i^2) / sum(m_i) over the boots' run counts. 1 when it
    cannot be estimated: one run per boot (runs are boots), or one boot per side.
    """
    ranks = rankdata(np.concatenate([candidate, baseline]))
    sides = ((ranks[: candidate.size], candidate_boots), (ranks[candidate.size :], baseline_boots))
    ssw = ssb = n0_sum = 0.0
    dfw = dfb = 0
    sizes_all: list[FloatArray] = []
    for r, boots in sides:
        _, codes = np.unique(boots, return_inverse=True)
        k = int(codes.max()) + 1
        sizes = np.bincount(codes, minlength=k).astype(np.float64)
        means = np.bincount(codes, weights=r, minlength=k) / sizes
        ssw += float(np.sum((r - means[codes]) ** 2))
        ssb += float(np.sum(sizes * (means - r.mean()) ** 2))
        dfw += r.size - k
        dfb += k - 1
        n0_sum += r.size - float(np.sum(sizes**2)) / r.size
        sizes_all.append(sizes)
    if dfb == 0 or dfw == 0:
        return 1.0
    msw, msb = ssw / dfw, ssb / dfb
    between = max(0.0, (msb - msw) / (n0_sum / dfb))
    icc = between / (between + msw) if between + msw > 0 else 0.0
    sizes = np.concatenate(sizes_all)
    m = float(np.sum(sizes**2) / np.sum(sizes))
    return 1.0 + (m - 1.0) * icc


def mann_whitney_p(candidate: FloatArray, baseline: FloatArray, deff: float = 1.0) -> float:
    """Two-sided Mann-Whitney U p-value from scipy over runs, corrected for clustering.

    With ``deff`` 1 (independent runs) it is scipy's p (exact for small samples without
    ties, else the normal approximation with tie and continuity correction). Otherwise the
    normal approximation's z is divided by sqrt(deff): runs that share a boot carry less
    information than independent ones (the large-sample idea of Rosner, Glynn and Lee,
    2003, with Kish's design effect).
    """
    if np.all(candidate == candidate[0]) and np.all(baseline == candidate[0]):
        return 1.0  # every value equal: no evidence of any difference
    if deff <= 1.0:
        return float(mannwhitneyu(candidate, baseline, alternative="two-sided").pvalue)
    p = float(
        mannwhitneyu(candidate, baseline, alternative="two-sided", method="asymptotic").pvalue
    )
    z = float(norm.isf(p / 2))
    return min(1.0, float(2 * norm.sf(z / math.sqrt(deff))))


# ---------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class Difference:
    """A provenance field that differs between the baseline and a candidate."""

    field: str
    label: str
    baseline: Any
    candidate: Any


COMPARABILITY_FIELDS: tuple[tuple[str, str], ...] = (
    ("accel", "accelerator"),
    ("vcpus", "vCPU count"),
    ("memory", "guest memory"),
    ("qemu_version", "QEMU version"),
    ("host_cpu", "host CPU model"),
)
# The sample size is the statistics' business, not a reason the sides measure different things.
WORKLOAD_FIELDS_IGNORED = frozenset({"runs", "boots", "blocks", "headline", "smallest_effect_pct"})


def comparability(baseline: ResultsFile, candidate: ResultsFile) -> tuple[Difference, ...]:
    """The fields that make two sides incomparable: experiment, accelerator, vCPUs, memory,
    QEMU version, host CPU model, and every workload parameter except the run and boot
    counts. A field recorded on one side only counts as a difference; one recorded on
    neither does not."""
    out: list[Difference] = []
    if baseline.experiment != candidate.experiment:
        out.append(
            Difference("experiment", "experiment", baseline.experiment, candidate.experiment)
        )
    bp, cp = baseline.provenance, candidate.provenance
    for key, label in COMPARABILITY_FIELDS:
        if bp.get(key) != cp.get(key):
            out.append(Difference(key, label, bp.get(key), cp.get(key)))
    bw = bp.get("workload") or {}
    cw = cp.get("workload") or {}
    for key in sorted(set(bw) | set(cw)):
        if key not in WORKLOAD_FIELDS_IGNORED and bw.get(key) != cw.get(key):
            out.append(
                Difference(f"workload.{key}", f"workload parameter {key}", bw.get(key), cw.get(key))
            )
    return tuple(out)


def _is_emulated(provenance: Mapping[str, Any]) -> bool:
    return "tcg" in str(provenance.get("accel") or "").lower()


def _baseline(results: Sequence[ResultsFile], options: StatsOptions) -> str:
    names = [r.variant for r in results]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(
            f"more than one results file for variant {', '.join(duplicates)}",
            hint="give each variant's results once",
        )
    if options.baseline:
        chosen = options.baseline
    else:
        named = sorted({r.baseline for r in results})
        if len(named) != 1:
            raise UserError(
                f"the results files name different baselines: {', '.join(named)}",
                hint="choose one with --baseline",
            )
        chosen = named[0]
    if chosen not in names:
        raise UserError(
            f"the baseline '{chosen}' has no results file (given: {', '.join(names)})",
            hint="add its results/<variant>.json or choose another with --baseline",
        )
    if len(results) < 2:
        raise UserError("a comparison needs results of at least two variants")
    return chosen


# the verdicts build on everything above
from .verdicts import (  # noqa: E402
    DECISIVE,
    CandidateComparison,
    Comparison,
    DesignAdvice,
    MetricComparison,
    compare,
    compare_noise_floor,
    describe_headline,
    noise_floor_pct,
)

__all__ = [
    "DECISIVE",
    "METRICS",
    "METRIC_BY_KEY",
    "TAIL_THRESHOLDS_MS",
    "CandidateComparison",
    "Comparison",
    "DesignAdvice",
    "Difference",
    "Metric",
    "MetricComparison",
    "StatsOptions",
    "Verdict",
    "compare",
    "compare_noise_floor",
    "describe_headline",
    "extract",
    "metric",
    "noise_floor_pct",
    "summarize",
    "tail_key",
]
