"""Run-level helpers for the nightly history's check, which pools nights rather than
pairing blocks: the two-level bootstrap, Holm's adjustment, the clustered Mann-Whitney."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.stats import mannwhitneyu, norm, rankdata
from scipy.stats import t as student_t

from .histograms import first_reaching
from .options import FloatArray, IntArray

# ---------------------------------------------------------------- bootstrap and tests


def resample_counts(
    groups: IntArray, resamples: int, rng: np.random.Generator
) -> npt.NDArray[np.int32]:
    """Two-level bootstrap of runs nested in boots, as multiplicities.

    Each of ``resamples`` rows draws as many boots as there are, with replacement, and
    inside each drawn boot as many runs as it holds, with replacement. Row ``r`` holds how
    often each run (in the order of ``groups``) was drawn. Counting instead of gathering
    values lets every metric reuse one resampling and find its median by a cumulative sum.
    """
    g = np.asarray(groups, dtype=np.int64)
    n = g.size
    order = np.argsort(g, kind="stable")
    sizes = np.bincount(g)
    sizes = sizes[sizes > 0]
    k = sizes.size
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    chosen = rng.integers(0, k, size=resamples * k)
    if np.all(sizes == sizes[0]):
        # the usual case, boots of equal size: one block of draws, no ragged bookkeeping
        m = int(sizes[0])
        within = rng.integers(0, m, size=(resamples * k, m))
        run = order[starts[chosen][:, None] + within].reshape(resamples, k * m)
        flat = (run + (np.arange(resamples) * n)[:, None]).ravel()
    else:
        drawn = sizes[chosen]
        # one entry per drawn run, so memory stays O(resamples x runs) however unequal the boots
        slot = np.repeat(np.arange(chosen.size), drawn)
        within_ragged = (rng.random(slot.size) * drawn[slot]).astype(np.int64)
        run_ragged = order[starts[chosen][slot] + within_ragged]
        flat = (slot // k) * n + run_ragged
    counts = np.bincount(flat, minlength=resamples * n).reshape(resamples, n)
    return counts.astype(np.int32)


def resampled_medians(values: FloatArray, counts: npt.NDArray[np.int32]) -> FloatArray:
    """Median of every resample described by ``counts`` (rows of multiplicities of ``values``)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    by_value = counts[:, order]
    total = by_value.sum(axis=1, dtype=np.int64)
    low, high = first_reaching(by_value, [(total + 1) // 2, total // 2 + 1])
    with np.errstate(invalid="ignore"):
        return (ordered[low] + ordered[high]) / 2


def expanded_tail(alpha: float, units: float) -> float:
    """The tail probability for a bootstrap percentile interval with coverage 1 - alpha,
    expanded for few independent units (Hesterberg's "expanded percentile interval").

    A percentile interval from ``units`` resampled units is too narrow when they are few
    (its spread is the plug-in spread, without the t distribution's heavier tails). The
    expanded interval takes the tail where a normal quantile equals
    sqrt(n / (n - 1)) * t(1 - alpha/2, n - 1). Here the units are boots, the level the
    hierarchical bootstrap resamples first; one unit gets the plain percentile interval.
    """
    if units <= 1:
        return alpha / 2
    z = math.sqrt(units / (units - 1)) * float(student_t.ppf(1 - alpha / 2, units - 1))
    return float(norm.sf(z))


def median_ratio(candidate: FloatArray | float, baseline: FloatArray | float) -> FloatArray:
    """candidate / baseline, with 0/0 = 1 (no change) and x/0 = inf."""
    c = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(b == 0, np.where(c == 0, 1.0, math.inf), c / b)
    return np.asarray(ratio, dtype=np.float64)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest p times (m - i + 1), made monotone
    and capped at 1. Controls the family-wise error rate without assuming independence."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def design_effect(
    candidate: FloatArray, candidate_boots: IntArray, baseline: FloatArray, baseline_boots: IntArray
) -> float:
    """Kish's design effect 1 + (m - 1) * ICC for a rank test over runs nested in boots.

    The intraclass correlation is that of the pooled ranks (the scale the rank test works
    on), estimated within each side (boots nested in sides, one-way random effects, as in
    :func:`variance_split`); m = sum(m_i^2) / sum(m_i) over the boots' run counts. 1 when it
    cannot be estimated: one run per boot (runs are boots), or one boot per side.
    """
    ranks = rankdata(np.concatenate([candidate, baseline]))
    sides = ((ranks[: candidate.size], candidate_boots), (ranks[candidate.size :], baseline_boots))
    ssw = ssb = n0_sum = 0.0
    dfw = dfb = 0
    sizes_all: list[FloatArray] = []
    for r, boots in sides:
        _, codes = np.unique(boots, return_inverse=True)
        k = int(codes.max()) + 1
        sizes = np.bincount(codes, minlength=k).astype(np.float64)
        means = np.bincount(codes, weights=r, minlength=k) / sizes
        ssw += float(np.sum((r - means[codes]) ** 2))
        ssb += float(np.sum(sizes * (means - r.mean()) ** 2))
        dfw += r.size - k
        dfb += k - 1
        n0_sum += r.size - float(np.sum(sizes**2)) / r.size
        sizes_all.append(sizes)
    if dfb == 0 or dfw == 0:
        return 1.0
    msw, msb = ssw / dfw, ssb / dfb
    between = max(0.0, (msb - msw) / (n0_sum / dfb))
    icc = between / (between + msw) if between + msw > 0 else 0.0
    sizes = np.concatenate(sizes_all)
    m = float(np.sum(sizes**2) / np.sum(sizes))
    return 1.0 + (m - 1.0) * icc


def mann_whitney_p(candidate: FloatArray, baseline: FloatArray, deff: float = 1.0) -> float:
    """Two-sided Mann-Whitney U p-value from scipy over runs, corrected for clustering.

    With ``deff`` 1 (independent runs) it is scipy's p (exact for small samples without
    ties, else the normal approximation with tie and continuity correction). Otherwise the
    normal approximation's z is divided by sqrt(deff): runs that share a boot carry less
    information than independent ones (the large-sample idea of Rosner, Glynn and Lee,
    2003, with Kish's design effect).
    """
    if np.all(candidate == candidate[0]) and np.all(baseline == candidate[0]):
        return 1.0  # every value equal: no evidence of any difference
    if deff <= 1.0:
        return float(mannwhitneyu(candidate, baseline, alternative="two-sided").pvalue)
    p = float(
        mannwhitneyu(candidate, baseline, alternative="two-sided", method="asymptotic").pvalue
    )
    z = float(norm.isf(p / 2))
    return min(1.0, float(2 * norm.sf(z / math.sqrt(deff))))
