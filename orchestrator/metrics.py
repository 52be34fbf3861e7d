"""What a metric is: a per-run figure a workload reports, its label, unit and better direction.

Every workload declares its own metrics (``orchestrator/workloads``); a comparison carries
the set its results were measured with. Kept apart from :mod:`orchestrator.stats` (numpy,
scipy) so that checking an experiment's ``workload.headline`` costs no numerical imports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import UserError

# What a metric measures decides how a hung run counts and how zeros are treated on the log
# scale of the comparison: a latency or a count is "worse" upwards without bound, a share is
# bounded, a throughput's worst is zero, a pass/fail figure is the share of runs that failed.
KINDS = ("latency", "share", "throughput", "count", "pass/fail")


@dataclass(frozen=True)
class Metric:
    """A per-run figure: how to label it, which way is better, how to show it."""

    key: str
    label: str
    unit: str
    better: str  # "lower" or "higher"
    digits: int
    needs_histogram: bool
    description: str
    kind: str = "latency"  # one of KINDS
    # what a hung run counts as (None: the kind's worst, see worst()); a finite value keeps
    # two boots that both hung comparable instead of giving inf - inf
    worst_value: float | None = None
    # added before the log of the comparison scale, so that a zero stays finite
    log_offset: float = 0.0
    # takes few distinct values (a count, a pass/fail result, the hang rate), so that the
    # two sides often tie exactly: ties make the rank interval too narrow to show
    # equivalence (stats/verdicts.py, ci/bench/kinds.py)
    discrete: bool = False

    def worst(self) -> float:
        """What a hung run counts as for this metric."""
        if self.worst_value is not None:
            return self.worst_value
        if self.better == "higher":
            return 0.0
        return math.inf


def hang_rate() -> Metric:
    """The metric every workload has: the share of a boot's runs that hung."""
    return Metric(
        "hang_rate", "hung runs", "‰", "lower", 0, False,
        "per boot, the runs that hung (outlived their deadline), per mille",
        kind="share", worst_value=1000.0, log_offset=0.001, discrete=True,
    )  # fmt: skip


def by_key(metrics: Iterable[Metric]) -> dict[str, Metric]:
    """``metrics`` by key, in their order."""
    return {m.key: m for m in metrics}


def find(metrics: Iterable[Metric], key: str) -> Metric:
    """The metric named ``key`` among ``metrics``; :class:`UserError` listing them otherwise."""
    known = by_key(metrics)
    try:
        return known[key]
    except KeyError:
        raise UserError(
            f"no metric named '{key}'",
            hint="known metrics: " + ", ".join(known),
        ) from None
