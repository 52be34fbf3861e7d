"""Per-run values of the maps-contention metrics from the mapper's records
(:func:`extract`): the summary figures, and the map/unmap histograms decoded in bulk."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from ...stats.histograms import percentiles_rows, share_above_rows
from ...stats.options import IntArray
from ..api import Extracted
from .histogram import MIN_NS, NBUCKETS, OCTAVES, SUB
from .metrics import TAIL_THRESHOLDS_MS, tail_key


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


def extract(records: Sequence[Mapping[str, Any]], wheres: Sequence[str]) -> Extracted:
    """Per-run values of every metric from completed runs' records.

    A record is either the mapper's full line (checked by ``korch run`` when it was parsed;
    here only what the statistics use is re-checked) or a summary-only ``{"max_ms",
    "mean_ms"}`` pair (imported data). ``ValueError`` names the run.
    """
    n_runs = len(records)
    full = [i for i, rec in enumerate(records) if "map" in rec]
    hist_map = hist_unmap = None
    elapsed = np.full(n_runs, np.nan)
    max_ms = np.full(n_runs, np.nan)
    mean_ms = np.full(n_runs, np.nan)
    if full:
        hist_map = np.zeros((n_runs, NBUCKETS), dtype=np.int64)
        hist_unmap = np.zeros((n_runs, NBUCKETS), dtype=np.int64)
    pending: dict[str, _Pending] = {"map": _Pending(), "unmap": _Pending()}
    for i, (rec, where) in enumerate(zip(records, wheres, strict=True)):
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

    values = {"max_ms": max_ms, "mean_ms": mean_ms}
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
    return Extracted(values, hist_map, hist_unmap, summary_only=n_runs - len(full))
