"""A simulator of hierarchical results, for calibrating korch's verdicts.

Real measurements are nested: a *block* boots every variant once (in a random order), each
boot does a number of runs, and every run reports every metric. Noise enters at each level,
and :mod:`orchestrator.stats.verdicts` is built on that structure (one value per boot, boots
paired by block). This module draws such results with known truth, reduces them the way
:mod:`orchestrator.stats.boots` does, and hands them to the production code
(:func:`~orchestrator.stats.verdicts.compare_metric`,
:func:`~orchestrator.stats.verdicts.adjust_exploratory`,
:func:`~orchestrator.stats.verdicts.decide`), so that ``ci/bench/verdicts.py`` can measure
the false-alarm rate and the power of every design korch offers.

The model, per metric ``m``, side ``s`` (0 baseline, 1 candidate), block ``b``, run ``r``, on
the natural-log scale::

    y = mu_m + log(effect_m) * [s = candidate] + drift_mb + position * [s booted first in b]
        + boot_msb + run_msbr

* ``drift`` ~ N(0, block_sd²): the host's state while block ``b`` ran, shared by both of its
  boots (a paired comparison cancels it, an unpaired one does not);
* ``position``: a fixed shift of whichever boot goes first in a block (a warm or cold host
  cache); the order is drawn per block, balanced so that each variant goes first once in
  every pair of blocks;
* ``boot`` ~ N(0, between_share * total_sd²): what a boot fixes for all its runs (memory
  layout, the guest's state);
* ``run`` ~ N(0, (1 - between_share) * total_sd²): what varies from run to run.

The metrics are equicorrelated: every noise term is ``sqrt(rho) * common + sqrt(1 - rho) *
own`` with one common draw for all metrics, so any two metrics correlate by ``metric_corr``
at every level. A run hangs with probability ``hang_prob``; as in :mod:`~.boots` a hung run
counts as the metric's worst value, and a boot with a hang takes the median over its runs.

A boot's value is, like production's, the median over its runs of ``exp(y)`` for latency and
throughput metrics, and for shares of slow operations the mean over runs of the share capped
at 1000 per mille (production pools the boot's operation counts, which for runs of equal
length is the mean of their shares).

**Calibration against real data** (``ci/bench/data/tcg``, :func:`components_from_results`):
on the log of the headline ``above_1ms`` the seven results files split into between-boot
variance 0 to 0.16 and within-boot variance 0.005 to 0.17; their per-run total variance
(between + within) runs from 0.005 (a quiet machine, a high share of slow operations) to
0.32 (a loaded machine, a low share, where counting noise dominates), with median 0.037, i.e.
a per-run sd of 0.19. The default ``total_sd`` of 0.2 is that median file, rounded; the
between-boot shares measured (0.25 to 0.67 where estimable) bracket the 0.2 to 0.7 the bench
explores. ``block_sd`` (0.05, a variance of 0.0025) is not separately visible in unblocked
real data, where it is part of the between-boot component; it is kept small so that the
simulator's between-boot component stays within the real range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import Metric, by_key
from ..results import ResultsFile
from ..workloads.api import metric_set
from ..workloads.maps_contention.workload import WORKLOAD as MAPS_CONTENTION
from . import inference as inf
from .boots import BootValues, log_scale
from .options import Verdict
from .summary import variance_split
from .values import extract
from .verdicts import DECISIVE, MetricComparison, adjust_exploratory, compare_metric, decide

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

HEADLINE = "above_1ms"
DURATION_S = 10.0  # the default experiment's run length, for a hung run's worst latency
# the simulator models the default experiment's workload, maps-contention
METRICS = metric_set(MAPS_CONTENTION, {"duration_s": DURATION_S})
METRIC_BY_KEY = by_key(METRICS)
# typical levels of the metrics (only ratios matter; these keep shares below 1000 per mille)
LEVELS = {"‰": 100.0, "ms": 2.0, "ops/s": 5e4}
HEADLINE_LEVEL = 200.0


@dataclass(frozen=True)
class Scenario:
    """The truth a simulation draws from (see the module docstring for the model)."""

    between_share: float = 0.45  # share of a boot's noise variance between boots (0.2-0.7)
    total_sd: float = 0.2  # sd of one run's log value: between-boot and within-boot together
    block_sd: float = 0.05  # a drift shared by both boots of a block
    position_effect: float = 0.02  # log shift of the boot that goes first in a block
    effect: float = 1.0  # true ratio candidate / baseline of the headline (1.0: A/A)
    exploratory: int = len(METRICS) - 1  # how many other metrics (METRICS order)
    metric_corr: float = 0.5  # correlation of any two metrics' noise
    exploratory_effect: float = 1.0  # true ratio of every other metric
    hang_prob: float = 0.0  # chance that a run hangs
    # a machine effect: every value on the second runner multiplied by this. With
    # runner_per_variant False the blocks are split into two shards, the second half on
    # the second runner (both sides of a block on one machine); with True each side runs
    # on a runner of its own, the candidate on the second (one bench job per variant)
    runner_effect: float = 1.0
    runner_per_variant: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.between_share <= 1:
            raise ValueError(f"between_share must lie in [0, 1], not {self.between_share}")
        if not 0 <= self.metric_corr <= 1:
            raise ValueError(f"metric_corr must lie in [0, 1], not {self.metric_corr}")
        if self.effect <= 0 or self.exploratory_effect <= 0 or self.runner_effect <= 0:
            raise ValueError("effects are ratios and must be positive")
        if not 0 <= self.exploratory <= len(METRICS) - 1:
            raise ValueError(f"exploratory must lie in [0, {len(METRICS) - 1}]")


@dataclass(frozen=True)
class Design:
    """How the runs are laid out: ``blocks`` (unpaired: boots per side), ``runs`` per boot.

    ``paired`` designs compare per-block log ratios (signed-rank test); unpaired ones are the
    old "boots per side" design, compared with the rank-sum test over boot values (the
    boots are still interleaved in time, so they meet the same drifts and position effects,
    but the analysis does not use that). ``max_blocks`` marks a sequential design: the
    headline is tested at :func:`~orchestrator.stats.inference.sequential_level`.
    """

    blocks: int
    runs: int
    paired: bool = True
    max_blocks: int | None = None

    def __post_init__(self) -> None:
        if self.blocks < 1 or self.runs < 1:
            raise ValueError("a design needs at least one block and one run")

    @property
    def label(self) -> str:
        """How the bench names the design."""
        if self.paired:
            return f"{self.blocks} blocks x {self.runs} run{'s' if self.runs != 1 else ''} (paired)"
        return f"{self.blocks} boot{'s' if self.blocks != 1 else ''} x {self.runs} runs (unpaired)"


def _others(scenario: Scenario) -> list[Metric]:
    return [m for m in METRICS if m.key != HEADLINE][: scenario.exploratory]


def _level(m: Metric) -> float:
    return HEADLINE_LEVEL if m.key == HEADLINE else LEVELS.get(m.unit, 1.0)


@dataclass(frozen=True)
class _Draw:
    """Per-run log values of one simulation, before the reduction to boot values."""

    metrics: tuple[Metric, ...]  # the noisy ones (every simulated metric but hang_rate)
    y: FloatArray  # metric x side x block x run
    hung: np.ndarray[Any, np.dtype[np.bool_]]  # side x block x run
    hang_rate: bool  # whether hang_rate is among the simulated metrics


def _draw(scenario: Scenario, design: Design, rng: np.random.Generator) -> _Draw:
    sims = [METRIC_BY_KEY[HEADLINE], *_others(scenario)]
    noisy = tuple(m for m in sims if m.key != "hang_rate")
    k, b, r = len(noisy), design.blocks, design.runs
    rho = scenario.metric_corr
    a, c = math.sqrt(rho), math.sqrt(1 - rho)

    def correlated(shape: tuple[int, ...], sd: float) -> FloatArray:
        """``k`` metrics' noise, equicorrelated by rho: shape (k, *shape)."""
        common = rng.standard_normal(shape)
        own = rng.standard_normal((k, *shape))
        return np.asarray(sd * (a * common[None] + c * own), dtype=np.float64)

    var = scenario.total_sd**2
    mu = np.log([_level(m) for m in noisy])
    effect = np.array(
        [
            math.log(scenario.effect if m.key == HEADLINE else scenario.exploratory_effect)
            for m in noisy
        ]
    )
    # which side boots first in each block: balanced over every pair of blocks
    half = rng.random((b + 1) // 2) < 0.5
    cand_first = np.empty(b, dtype=bool)
    cand_first[0::2] = half
    cand_first[1::2] = ~half[: b // 2]
    first = np.stack([~cand_first, cand_first]).astype(np.float64)  # side x block

    y = (
        mu[:, None, None, None]
        + effect[:, None, None, None] * np.array([0.0, 1.0])[None, :, None, None]
        + correlated((b,), scenario.block_sd)[:, None, :, None]
        + scenario.position_effect * first[None, :, :, None]
        + correlated((2, b), math.sqrt(scenario.between_share * var))[..., None]
        + correlated((2, b, r), math.sqrt((1 - scenario.between_share) * var))
    )
    if scenario.runner_effect != 1.0:
        second = np.zeros((2, b))  # side x block: on the second runner
        if scenario.runner_per_variant:
            second[1, :] = 1.0
        else:
            second[:, b // 2 :] = 1.0
        y = y + math.log(scenario.runner_effect) * second[None, :, :, None]
    hung = (
        rng.random((2, b, r)) < scenario.hang_prob
        if scenario.hang_prob > 0
        else np.zeros((2, b, r), dtype=bool)
    )
    return _Draw(noisy, y, hung, any(m.key == "hang_rate" for m in sims))


def _reduce(draw: _Draw, design: Design) -> tuple[dict[str, BootValues], dict[str, BootValues]]:
    """One value per boot and metric, as :func:`~orchestrator.stats.boots.boot_values` does."""
    b, r = design.blocks, design.runs
    hung_count = draw.hung.sum(axis=2)  # side x block
    any_hung = hung_count > 0
    sides: list[dict[str, BootValues]] = [{}, {}]
    for s, name in enumerate(("baseline", "candidate")):
        if design.paired:
            units = tuple(f"block {i}" for i in range(b))
            blocks = np.arange(b, dtype=np.int64)
        else:
            units = tuple(f"{name}-{i + 1}" for i in range(b))
            blocks = np.full(b, -1, dtype=np.int64)
        for i, m in enumerate(draw.metrics):
            per_run = np.exp(draw.y[i, s])  # block x run
            if m.unit == "‰":
                per_run = np.minimum(per_run, 1000.0)
                values = per_run.mean(axis=1)  # pooled counts of equal-length runs
            else:
                values = np.median(per_run, axis=1)
            if any_hung[s].any():
                worst = m.worst()
                with_hangs = np.where(draw.hung[s], worst, per_run)
                values = np.where(any_hung[s], np.median(with_hangs, axis=1), values)
            sides[s][m.key] = BootValues(units, blocks, np.asarray(values, dtype=np.float64))
        if draw.hang_rate:
            rate = 1000.0 * hung_count[s] / r
            sides[s]["hang_rate"] = BootValues(units, blocks, rate.astype(np.float64))
    return sides[0], sides[1]


def simulate(
    scenario: Scenario, design: Design, rng: np.random.Generator
) -> tuple[dict[str, BootValues], dict[str, BootValues]]:
    """Boot values (baseline, candidate) per metric key for one simulated run of ``design``.

    Paired designs number their units ``block i`` with blocks 0..n-1; unpaired ones carry
    block -1, as results of separate runs do."""
    return _reduce(_draw(scenario, design, rng), design)


def head_level(design: Design, alpha: float) -> float:
    """The headline's level: ``alpha``, or the group-sequential level for ``max_blocks``."""
    if design.max_blocks is None:
        return alpha
    return inf.sequential_level(alpha, design.max_blocks)


def judge(
    base: Mapping[str, BootValues],
    cand: Mapping[str, BootValues],
    design: Design,
    alpha: float = 0.05,
    smallest: float = 0.05,
    headline_only: bool = False,
) -> list[MetricComparison]:
    """Every simulated metric's decided comparison, by production's path (as
    :func:`~orchestrator.stats.verdicts.compare` does it for one candidate): the headline at
    :func:`head_level`, every other metric at ``alpha``, Holm-adjusted together."""
    level = head_level(design, alpha)
    runs = (design.blocks * design.runs,) * 2
    found = []
    for m in METRICS:
        if m.key not in base or (headline_only and m.key != HEADLINE):
            continue
        family = "headline" if m.key == HEADLINE else "exploratory"
        mc = compare_metric(
            m,
            family,
            base[m.key],
            cand[m.key],
            design.paired,
            level if family == "headline" else alpha,
            runs=runs,
        )
        if mc is not None:
            found.append(mc)
    (adjusted,) = adjust_exploratory([found])
    return [decide(mc, smallest) for mc in adjusted]


def _outcome(decided: list[MetricComparison]) -> tuple[Verdict, bool]:
    head = next(mc for mc in decided if mc.family == "headline")
    called = any(
        mc.verdict in (Verdict.IMPROVED, Verdict.REGRESSED)
        for mc in decided
        if mc.family == "exploratory"
    )
    return head.verdict, called


def verdicts(
    scenario: Scenario,
    design: Design,
    rng: np.random.Generator,
    alpha: float = 0.05,
    smallest: float = 0.05,
) -> tuple[Verdict, bool]:
    """One simulated run of ``design``, judged as production would: the headline's verdict,
    and whether any exploratory metric was called improved or regressed."""
    base, cand = simulate(scenario, design, rng)
    return _outcome(judge(base, cand, design, alpha, smallest))


@dataclass(frozen=True)
class SequentialOutcome:
    """How a sequential run ended."""

    verdict: Verdict  # the headline's, at the last look
    blocks: int  # blocks run
    exploratory_called: bool  # any exploratory metric improved/regressed at the last look


def sequential_outcome(
    scenario: Scenario,
    max_blocks: int,
    rng: np.random.Generator,
    runs: int = 1,
    alpha: float = 0.05,
    smallest: float = 0.05,
) -> SequentialOutcome:
    """``korch run --until-decisive --max-blocks N``: add blocks one at a time, judge the
    headline after each (at the sequential level), stop at the first decisive verdict
    (:data:`~orchestrator.stats.verdicts.DECISIVE`) or at ``max_blocks``; then every metric
    is judged on the blocks run, as the final report would."""
    full = Design(blocks=max_blocks, runs=runs, paired=True, max_blocks=max_blocks)
    draw = _draw(scenario, full, rng)
    base, cand = _reduce(draw, full)

    def prefix(tabs: Mapping[str, BootValues], n: int) -> dict[str, BootValues]:
        return {k: BootValues(v.units[:n], v.blocks[:n], v.values[:n]) for k, v in tabs.items()}

    used = max_blocks
    for n in range(1, max_blocks + 1):
        design = replace(full, blocks=n)
        (head,) = judge(prefix(base, n), prefix(cand, n), design, alpha, smallest, True)
        if head.verdict in DECISIVE:
            used = n
            break
    design = replace(full, blocks=used)
    verdict, called = _outcome(
        judge(prefix(base, used), prefix(cand, used), design, alpha, smallest)
    )
    return SequentialOutcome(verdict, used, called)


# ---------------------------------------------------------------- calibration


def _components(values: FloatArray, groups: np.ndarray[Any, Any]) -> dict[str, Any]:
    split = variance_split(values, groups)
    total = (split.between or 0.0) + (split.within or 0.0)
    return {
        "boots": split.boots,
        "runs": split.runs,
        "between": split.between,
        "within": split.within,
        "between_share": split.between_share,
        "total_sd": math.sqrt(total) if split.within is not None else None,
    }


def components_from_results(
    paths: Iterable[Path | str], echo: bool = False
) -> list[dict[str, Any]]:
    """Between-boot and within-boot variance of log(above_1ms) in real results files.

    One dict per file: ``file``, ``variant``, ``boots``, ``runs``, ``between``, ``within``
    (one-way random-effects ANOVA, :func:`~orchestrator.stats.variance_split`, on the
    per-run log values), ``between_share`` and ``total_sd`` (sqrt of their sum). With
    ``echo`` each is printed as a line too."""
    out = []
    for path in paths:
        data = extract(ResultsFile.load(Path(path)))
        logs = log_scale(data.values[HEADLINE], METRIC_BY_KEY[HEADLINE])
        row = {"file": Path(path).name, "variant": data.variant}
        row.update(_components(logs, data.boot_codes))
        if echo:
            print(format_components(row))
        out.append(row)
    return out


def simulated_components(
    scenario: Scenario,
    rng: np.random.Generator,
    boots: int = 3,
    runs: int = 8,
    repeats: int = 200,
) -> dict[str, Any]:
    """The same components measured on simulated single-variant results of ``boots`` x
    ``runs`` (the real files' layout; each boot in its own block, so the drift counts as
    between boots, as it does in real unblocked data), averaged over ``repeats``."""
    design = Design(blocks=boots, runs=runs)
    groups = np.repeat(np.arange(boots), runs)
    between, within = [], []
    for _ in range(repeats):
        draw = _draw(replace(scenario, exploratory=0), design, rng)
        split = variance_split(draw.y[0, 0].ravel(), groups)
        between.append(split.between or 0.0)
        within.append(split.within or 0.0)
    b, w = float(np.mean(between)), float(np.mean(within))
    return {
        "file": f"simulated, between_share {scenario.between_share:g}",
        "variant": f"total_sd {scenario.total_sd:g}",
        "boots": boots,
        "runs": boots * runs,
        "between": b,
        "within": w,
        "between_share": b / (b + w) if b + w > 0 else None,
        "total_sd": math.sqrt(b + w),
    }


def format_components(row: Mapping[str, Any]) -> str:
    """One line of a components table."""

    def num(x: Any, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    return (
        f"{row['file']:36s} {row['boots']:>2} x {row['runs'] // max(1, row['boots']):<2}"
        f" between {num(row['between'], '7.4f')}  within {num(row['within'], '7.4f')}"
        f"  share {num(row['between_share'], '4.2f')}  sd/run {num(row['total_sd'], '5.3f')}"
    )
