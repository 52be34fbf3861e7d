"""One value per boot: the level at which korch's verdicts are computed.

Runs inside one boot share the kernel's memory layout, the guest's state and the host's
condition at that time; they are sub-samples of the boot, not independent replicates
(Kalibera and Jones, "Rigorous benchmarking in reasonable time", 2013). So each boot (or, in
a blocked run, each variant's boot in a block) is reduced to one value per metric:

* shares of slow operations from the boot's pooled operation counts (every operation of
  every run of the boot; a run with more operations weighs more, as it should);
* maxima, means, percentiles and throughput as the median over the boot's runs.

A hung run is not a missing value but the worst one, as its metric declares it
(:meth:`orchestrator.metrics.Metric.worst`): for maps-contention its latency is censored at
the run's deadline (duration plus the hang grace), its share of slow operations at 1000 per
mille, its throughput at 0. With a hung run in a boot, every metric of that boot is the median over its
runs with the hung ones at the worst value, and the boot's hang rate counts them.

Values are compared on the log scale (ratios are what a kernel developer reads); a metric
that can be 0 (a share, a hang rate, a count) declares a small offset added before the log
so that 0 against 0 is no change and 0 against x is a large one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..metrics import Metric
from .histograms import share_above_rows
from .values import VariantData

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BootValues:
    """One metric of one variant: a value per boot (unit) and the unit's block."""

    units: tuple[str, ...]
    blocks: IntArray  # -1 when the results carry no block
    values: FloatArray  # NaN where the boot has no value for the metric

    def log(self, m: Metric) -> FloatArray:
        """The values on the comparison scale (see :func:`log_scale`)."""
        return log_scale(self.values, m)


def log_scale(values: FloatArray, m: Metric) -> FloatArray:
    """``values`` of metric ``m`` on the comparison scale: the natural log, after the
    metric's offset for zeros (NaN stays NaN)."""
    return np.log(values + m.log_offset)


def boot_values(data: VariantData, by_block: bool) -> dict[str, BootValues]:
    """Per metric, one value per unit: per block (every run of the variant in that block,
    whatever boot attempt) when ``by_block``, else per boot. Units in first-seen order."""
    run_units = (
        [f"block {b}" for b in data.run_blocks]
        if by_block
        else [data.boot_ids[c] for c in data.boot_codes]
    )
    hung_units = [f"block {b}" if by_block else key for key, b in data.hung_runs]
    order: dict[str, int] = {}
    unit_block: list[int] = []
    for unit, block in [
        *zip(run_units, data.run_blocks.tolist(), strict=True),
        *zip(hung_units, [b for _, b in data.hung_runs], strict=True),
    ]:
        if unit not in order:
            order[unit] = len(order)
            unit_block.append(int(block))
    k = len(order)
    codes = np.array([order[u] for u in run_units], dtype=np.int64)
    hung = np.bincount(np.array([order[u] for u in hung_units], dtype=np.int64), minlength=k)
    done = np.bincount(codes, minlength=k)
    both = (
        data.hist_map + data.hist_unmap
        if data.hist_map is not None and data.hist_unmap is not None
        else None
    )
    out: dict[str, BootValues] = {}
    for m in data.metrics:
        vals = np.full(k, np.nan)
        if m.key == "hang_rate":
            with np.errstate(invalid="ignore", divide="ignore"):
                vals = np.where(done + hung > 0, 1000.0 * hung / (done + hung), np.nan)
        elif m.needs_histogram and both is None and data.boot_codes.size:
            pass  # summary-only runs (imported data): the side does not measure this metric
        else:
            per_run = data.values[m.key]
            worst = m.worst()
            if m.kind == "latency" and math.isfinite(worst):
                # a percentile beyond the histogram's last bucket is infinite (seen on a
                # starved host: p99.9 above every bucket); it counts as a hang's value,
                # censored like one, so that two such boots tie instead of giving inf - inf
                per_run = np.where(np.isposinf(per_run), worst, per_run)
            for u in range(k):
                mine = per_run[codes == u]
                mine = mine[~np.isnan(mine)]
                if hung[u]:
                    mine = np.concatenate([mine, np.full(hung[u], worst)])
                    vals[u] = float(np.median(mine)) if mine.size else np.nan
                elif mine.size == 0:
                    continue
                elif m.unit == "‰" and m.needs_histogram and both is not None:
                    rows = both if m.key.startswith("above_") else _kind_rows(data, m.key)
                    pooled = rows[codes == u].sum(axis=0)[None, :]
                    vals[u] = float(share_above_rows(pooled, _threshold_ns(m.key))[0]) * 1000
                else:
                    vals[u] = float(np.median(mine))
        out[m.key] = BootValues(
            units=tuple(order), blocks=np.array(unit_block, dtype=np.int64), values=vals
        )
    return out


def _kind_rows(data: VariantData, key: str) -> IntArray:
    rows = data.hist_map if key.startswith("map_") else data.hist_unmap
    assert rows is not None
    return rows


def _threshold_ns(key: str) -> float:
    amount = key.rsplit("_", 1)[1]
    if amount.endswith("us"):
        return float(amount[:-2]) * 1e3
    return float(amount[:-2]) * 1e6


@dataclass(frozen=True)
class Pairing:
    """The blocks in which both sides booted, and the boots left without a partner."""

    blocks: tuple[int, ...]
    baseline: FloatArray  # log values, one per paired block
    candidate: FloatArray
    unpaired: tuple[str, ...]  # "variant block n" of boots whose block lacks the other side


def pair(base: BootValues, cand: BootValues, m: Metric, base_name: str, cand_name: str) -> Pairing:
    """Match the two sides' values by block (blocks where a side has no value are left out
    and named in :attr:`Pairing.unpaired`)."""
    bl = dict(zip(base.blocks.tolist(), base.log(m).tolist(), strict=True))
    cl = dict(zip(cand.blocks.tolist(), cand.log(m).tolist(), strict=True))
    bl = {b: v for b, v in bl.items() if not math.isnan(v)}
    cl = {b: v for b, v in cl.items() if not math.isnan(v)}
    common = tuple(sorted(set(bl) & set(cl)))
    # both sides at the same unbounded worst (a hang on each side of a block, for a metric
    # whose worst value is infinite): a tie, not inf - inf
    for b in common:
        if math.isinf(bl[b]) and bl[b] == cl[b]:
            bl[b] = cl[b] = 0.0
    unpaired = tuple(
        [f"{base_name} block {b}" for b in sorted(set(bl) - set(cl))]
        + [f"{cand_name} block {b}" for b in sorted(set(cl) - set(bl))]
    )
    return Pairing(
        blocks=common,
        baseline=np.array([bl[b] for b in common]),
        candidate=np.array([cl[b] for b in common]),
        unpaired=unpaired,
    )
