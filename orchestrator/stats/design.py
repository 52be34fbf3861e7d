"""What the next run should spend its repetitions on: the headline's variance components
and the measured costs of a boot and of a run (:func:`design_advice`), and the headline per
shard of blocks, one machine each (:func:`strata`)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ..metrics import Metric
from . import inference as inf
from .boots import BootValues, log_scale, pair
from .values import VariantData

if TYPE_CHECKING:
    from .verdicts import MetricComparison


def _duration(data: VariantData) -> float:
    w = data.results.provenance.get("workload")
    value = w.get("duration_s") if isinstance(w, Mapping) else None
    return float(value) if isinstance(value, int | float) and value > 0 else 10.0


@dataclass(frozen=True)
class DesignAdvice:
    """Where the headline's noise lies and what the next run should spend repetitions on
    (Kalibera and Jones 2013): variance components on the log scale, the measured costs of a
    boot and of a run, the runs per boot that minimise the cost of a given precision, and
    the blocks needed to detect the observed change and the smallest effect of interest."""

    between_blocks: float | None
    between_boots: float | None
    within_boot: float | None
    boot_cost_s: float | None
    run_cost_s: float | None
    runs_per_boot: int
    recommended_runs: int | None
    blocks_for_observed: int | None
    blocks_for_smallest: int | None
    text: str

    def shares(self) -> dict[str, float] | None:
        """Each component's share of their sum, when all three are known."""
        parts = {
            "between blocks": self.between_blocks,
            "between boots": self.between_boots,
            "within a boot": self.within_boot,
        }
        if any(v is None for v in parts.values()):
            return None
        total = sum(v for v in parts.values() if v is not None)
        return {k: (v or 0.0) / total for k, v in parts.items()} if total > 0 else None


@dataclass(frozen=True)
class Stratum:
    """The headline's change within one shard of blocks (one machine): what a reader needs
    to see whether machines disagree. Information only: the verdict pools every block."""

    shard: int
    blocks: tuple[int, int]  # first and last block of the shard
    host_cpu: str
    n: int  # paired blocks in the shard
    ratio: float | None
    ci_low: float | None
    ci_high: float | None


def _seconds(a: Any, b: Any) -> float | None:
    try:
        t0 = datetime.fromisoformat(str(a).replace("Z", "+00:00"))
        t1 = datetime.fromisoformat(str(b).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t1 - t0).total_seconds()


def _costs(datas: Sequence[VariantData]) -> tuple[float | None, float | None]:
    """(seconds per boot, seconds per run) from the results' timestamps."""
    run_gaps: list[float] = []
    boot_spans: list[tuple[float, int]] = []
    for d in datas:
        by_boot: dict[tuple[str, int], list[str]] = {}
        for r in d.results.runs:
            if isinstance(r, Mapping) and r.get("finished_at"):
                by_boot.setdefault((str(r.get("boot")), r.get("attempt") or 1), []).append(
                    str(r["finished_at"])
                )
        for stamps in by_boot.values():
            stamps.sort()
            run_gaps += [g for a, b in itertools.pairwise(stamps) if (g := _seconds(a, b))]
        for b in d.results.boots:
            if not isinstance(b, Mapping):
                continue
            span = _seconds(b.get("started_at"), b.get("ended_at"))
            runs = len(by_boot.get((str(b.get("id")), b.get("attempt") or 1), []))
            if span and runs:
                boot_spans.append((span, runs))
    duration = _duration(datas[0])
    run_cost = float(np.median(run_gaps)) if run_gaps else (duration + 2.0 if boot_spans else None)
    if not boot_spans or run_cost is None:
        return None, run_cost
    boot_cost = float(np.median([max(1.0, s - n * run_cost) for s, n in boot_spans]))
    return boot_cost, run_cost


def _within_boot(datas: Sequence[VariantData], m: Metric) -> tuple[float | None, int]:
    """Pooled within-boot variance of the per-run log values, and the runs per boot."""
    ss, df = 0.0, 0
    sizes: list[int] = []
    for d in datas:
        v = d.values[m.key]
        logs = log_scale(v, m)
        for code in range(len(d.boot_ids)):
            mine = logs[(d.boot_codes == code) & ~np.isnan(logs)]
            sizes.append(int(mine.size))
            if mine.size > 1:
                ss += float(np.sum((mine - mine.mean()) ** 2))
                df += mine.size - 1
    runs = int(np.median(sizes)) if sizes else 1
    return (ss / df if df else None), max(1, runs)


def strata(
    base: VariantData, btab: BootValues, ctab: BootValues, m: Metric, level: float
) -> tuple[Stratum, ...]:
    """The headline per shard, when the results were merged from shards (``provenance.
    shards``); the change and interval from that shard's paired blocks alone."""
    shards = base.results.provenance.get("shards")
    if not isinstance(shards, list) or len(shards) < 2:
        return ()
    pairing = pair(btab, ctab, m, "baseline", "candidate")
    d = pairing.candidate - pairing.baseline
    out = []
    for s in shards:
        first, last = (int(x) for x in s["blocks"])
        mine = np.array([x for b, x in zip(pairing.blocks, d, strict=True) if first <= b <= last])
        est = low = high = None
        if mine.size:
            e, lo, hi = inf.paired_interval(mine, level)
            est, low, high = inf.ratio(e), inf.ratio(lo), inf.ratio(hi)
        out.append(
            Stratum(int(s["index"]), (first, last), str(s.get("host_cpu")), int(mine.size),
                    est, low, high)
        )  # fmt: skip
    return tuple(out)


def design_advice(
    mc: MetricComparison,
    m: Metric,
    base: VariantData,
    cand: VariantData,
    btab: BootValues,
    ctab: BootValues,
    smallest: float,
) -> DesignAdvice | None:
    if mc.method != "paired" or mc.blocks < 3:
        return None
    pairing = pair(btab, ctab, m, base.variant, cand.variant)
    y = np.stack([pairing.baseline, pairing.candidate], axis=1)  # blocks x 2
    n = y.shape[0]
    block_means = y.mean(axis=1)
    resid = y - block_means[:, None] - y.mean(axis=0)[None, :] + y.mean()
    ms_resid = float(np.sum(resid**2) / (n - 1))
    ms_block = float(2 * np.sum((block_means - y.mean()) ** 2) / (n - 1))
    between_blocks = max(0.0, (ms_block - ms_resid) / 2)
    within, runs = _within_boot((base, cand), m)
    between_boots = max(0.0, ms_resid - (within or 0.0) / runs)
    boot_cost, run_cost = _costs((base, cand))
    recommended = (
        inf.optimal_runs_per_boot(between_boots, within, boot_cost, run_cost)
        if within is not None and boot_cost is not None and run_cost is not None
        else None
    )
    sd = float(np.std(mc.log_ratios, ddof=1))
    observed = abs(math.log(mc.ratio)) if mc.ratio and mc.ratio > 0 else 0.0
    for_observed = inf.blocks_for(sd, observed, mc.level)
    for_smallest = inf.blocks_for(sd, math.log1p(smallest), mc.level)
    parts = []
    if within is None:
        parts.append(
            f"with {runs} run per boot the variance within a boot cannot be told from the"
            " variance between boots; run 2 or more runs per boot once to measure it"
        )
    elif recommended is not None:
        parts.append(
            f"a boot costs about {boot_cost:.0f} s and a run {run_cost:.0f} s; for these"
            f" variance components the cheapest precision comes from {recommended} run(s)"
            f" per boot (now {runs}), Kalibera and Jones' optimum"
        )
    if for_observed is not None and observed >= math.log1p(smallest):
        parts.append(f"{for_observed} blocks detect a change of the observed size 80% of the time")
    if for_smallest is not None:
        parts.append(f"{for_smallest} blocks detect a ±{100 * smallest:g}% change 80% of the time")
    return DesignAdvice(
        between_blocks=between_blocks,
        between_boots=between_boots,
        within_boot=within,
        boot_cost_s=boot_cost,
        run_cost_s=run_cost,
        runs_per_boot=runs,
        recommended_runs=recommended,
        blocks_for_observed=for_observed,
        blocks_for_smallest=for_smallest,
        text="; ".join(parts),
    )
