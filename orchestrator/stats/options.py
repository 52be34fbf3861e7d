"""How comparisons decide (:class:`StatsOptions`) and what they answer (:class:`Verdict`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from ..errors import UserError

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
