"""A results file turned into arrays: every metric per completed run, the histograms,
the boot and block of every run, the hung runs (:func:`extract`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from ..errors import UserError
from ..metrics import METRICS, TAIL_THRESHOLDS_MS, tail_key
from ..results import ResultsFile
from ..workloads.maps_contention.histogram import (
    MIN_NS,
    NBUCKETS,
    OCTAVES,
    SUB,
)
from .histograms import percentiles_rows, share_above_rows
from .options import FloatArray, IntArray

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
