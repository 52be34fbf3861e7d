"""A results file turned into arrays: every metric of its workload per completed run, the
histograms, the boot and block of every run, the hung runs (:func:`extract`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UserError
from ..metrics import Metric
from ..results import ResultsFile
from ..workloads import registry
from ..workloads.api import metric_set
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
    # the workload's metrics, the hang rate included (see orchestrator/workloads)
    metrics: tuple[Metric, ...] = ()


def extract(results: ResultsFile) -> VariantData:
    """Per-run values of every metric for one variant's results file.

    The workload its provenance names turns the completed runs' records into values
    (:meth:`orchestrator.workloads.api.Workload.extract`); hung runs are counted here.
    Raises :class:`UserError` naming the run.
    """
    try:
        workload = registry.of(results.provenance)
    except UserError as exc:
        raise UserError(
            f"results of '{results.variant}': {exc.message}",
            hint="this korch does not know the workload the results were measured with",
        ) from None
    metrics = metric_set(workload, registry.section(results.provenance))
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

    wheres = [
        f"results of '{results.variant}', boot {boot}, run {i}"
        for i, (boot, _) in enumerate(completed)
    ]
    try:
        got = workload.extract([rec for _, rec in completed], wheres)
    except ValueError as exc:
        raise UserError(str(exc), hint="a results file is written by 'korch run'") from None
    values: dict[str, FloatArray] = dict(got.values)
    for m in metrics:
        values.setdefault(m.key, np.full(n_runs, np.nan))
    return VariantData(
        variant=results.variant,
        results=results,
        boot_ids=boot_ids,
        boot_codes=codes,
        values=values,
        hist_map=got.hist_map,
        hist_unmap=got.hist_unmap,
        hangs=hangs,
        summary_only=got.summary_only,
        metrics=metrics,
        run_blocks=np.array(blocks, dtype=np.int64),
        hung_runs=tuple(hung),
    )
