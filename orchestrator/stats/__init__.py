"""Statistics: per-boot values, per-variant summaries, verdicts against the baseline.

Input is one results file per variant (:mod:`orchestrator.results`). The package's sections:

- :mod:`~.options`: how comparisons decide (:class:`StatsOptions`), the :class:`Verdict`;
- :mod:`~.values`: a results file turned into arrays (:func:`extract`: per-run values of
  every metric, histograms, the block and boot of every run, hung runs);
- :mod:`~.histograms`: shares and percentiles of the latency histograms, over many runs;
- :mod:`~.summary`: each variant over its runs (:func:`summarize`: distributions, the
  between/within-boot variance split, merged per-operation latency);
- :mod:`~.comparability`: whether two sides may be compared, and the baseline;
- :mod:`~.resampling`: the run-level bootstrap and tests of the nightly history.

The verdicts are not computed over runs: runs inside one boot are sub-samples of that boot,
not independent replicates. :mod:`~orchestrator.stats.boots` reduces each boot to one value
per metric, :mod:`~orchestrator.stats.inference` holds the exact tests, intervals and the
sequential level, and :mod:`~orchestrator.stats.verdicts` decides (see its docstring for the
rules); :mod:`~orchestrator.stats.design` advises the next run's design and
:mod:`~orchestrator.stats.caveats` says what a reader must know before trusting a comparison. :mod:`~orchestrator.stats.simulate` generates hierarchical results for calibrating
them (``ci/bench/verdicts.py``).

"""

from __future__ import annotations

from ..metrics import Metric, by_key, find
from ..workloads.maps_contention.metrics import TAIL_THRESHOLDS_MS, tail_key
from .comparability import COMPARABILITY_FIELDS, Difference, comparability
from .histograms import bucket_bounds, percentile_rows, percentiles_rows, share_above_rows
from .options import DEFAULT_HEADLINE, StatsOptions, Verdict
from .resampling import (
    design_effect,
    expanded_tail,
    holm,
    mann_whitney_p,
    median_ratio,
    resample_counts,
    resampled_medians,
)
from .summary import Distribution, Summary, distribution, summarize, variance_split
from .values import VariantData, extract
from .verdicts import (
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
    "COMPARABILITY_FIELDS",
    "DECISIVE",
    "DEFAULT_HEADLINE",
    "TAIL_THRESHOLDS_MS",
    "CandidateComparison",
    "Comparison",
    "DesignAdvice",
    "Difference",
    "Distribution",
    "Metric",
    "MetricComparison",
    "StatsOptions",
    "Summary",
    "VariantData",
    "Verdict",
    "bucket_bounds",
    "by_key",
    "comparability",
    "compare",
    "compare_noise_floor",
    "describe_headline",
    "design_effect",
    "distribution",
    "expanded_tail",
    "extract",
    "find",
    "holm",
    "mann_whitney_p",
    "median_ratio",
    "noise_floor_pct",
    "percentile_rows",
    "percentiles_rows",
    "resample_counts",
    "resampled_medians",
    "share_above_rows",
    "summarize",
    "tail_key",
    "variance_split",
]
