"""A simulator of ``korch bisect``: series with known truth, judged by the real search.

Each patch of a simulated series multiplies the headline by a known ratio (1.0: the patch
changes nothing), so prefix ``k``'s true log level is the sum of the first ``k`` patches'
log ratios. A block boots the round's points once each, in a random order; a boot's log
value is::

    level_k + drift_b + position * [first in block b] + noise

with ``drift`` ~ N(0, block_sd²) shared by the block, ``noise`` the boot's own (normal, or
Student t with ``df`` degrees of freedom scaled to the same sd, for heavy tails), and the
noise parameters those of :class:`~orchestrator.stats.simulate.Scenario` (one run a boot,
so a boot's sd is the scenario's ``total_sd``). Every simulated patch changes the kernel
image, the search's hardest case (identical images are excluded exactly, before any boot).
:func:`run` hands the values to :func:`orchestrator.stats.attribution.search`, the code
``korch bisect`` runs, and tallies its answers.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import attribution as attr
from .attribution import Round
from .simulate import Scenario


@dataclass(frozen=True)
class Series:
    """The truth: one ratio per patch (prefix k's level is the product of the first k)."""

    ratios: tuple[float, ...]
    df: float | None = None  # Student t noise with these degrees of freedom; None: normal

    @property
    def movers(self) -> tuple[int, ...]:
        """The patches (1-based) that move the metric."""
        return tuple(i + 1 for i, r in enumerate(self.ratios) if r != 1.0)

    def levels(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.concatenate([[0.0], np.cumsum(np.log(self.ratios))])


@dataclass
class Tally:
    """How ``repeats`` searches of one series ended."""

    repeats: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    right: int = 0  # named exactly the patches that move it
    partial: int = 0  # named some of the patches that move it, and no other
    wrong: int = 0  # named a patch that moves nothing: a false attribution
    boots: list[int] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)


def run(
    series: Series,
    scenario: Scenario,
    levels: attr.Levels,
    repeats: int,
    seed: int,
) -> Tally:
    """Search ``series`` ``repeats`` times with fresh noise; tally the answers."""
    rng = np.random.default_rng(seed)
    level = series.levels()
    effective = list(range(len(series.ratios) + 1))
    sd = scenario.total_sd
    tally = Tally()
    movers = set(series.movers)

    def noise(n: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        if series.df is None:
            return rng.normal(0.0, sd, n)
        scale = sd / math.sqrt(series.df / (series.df - 2)) if series.df > 2 else sd
        return rng.standard_t(series.df, n) * scale

    def block(rnd: Round, n: int) -> dict[int, float]:
        points = list(rnd.points)
        first = points[int(rng.integers(len(points)))]
        drift = rng.normal(0.0, scenario.block_sd)
        values = level[points] + drift + noise(len(points))
        return {
            p: float(v) + (scenario.position_effect if p == first else 0.0)
            for p, v in zip(points, values, strict=True)
        }

    for _ in range(repeats):
        out = attr.search(effective, block, levels)
        tally.repeats += 1
        tally.answers[out.answer] += 1
        tally.boots.append(out.boots)
        tally.rounds.append(len(out.rounds))
        named = set(out.named)
        if named - movers:
            tally.wrong += 1
        elif named and named == movers:
            tally.right += 1
        elif named:
            tally.partial += 1
    return tally
