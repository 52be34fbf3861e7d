"""Exact tests and intervals at the level of boots and blocks.

The unit of replication is the boot (see :mod:`orchestrator.stats.boots`). A run boots every
variant once per *block*, in an order drawn at random for that block, so inside a block the
variants share the host's state, and the per-block difference of log values
``d_b = log(candidate_b) - log(baseline_b)`` carries the variant's effect with the block's
drift cancelled. Everything here works on such arrays:

* :func:`signed_rank_test` is Wilcoxon's signed-rank test computed exactly as a sign-flip
  randomization test over the observed magnitudes (midranks for ties, zeros dropped): under
  "no effect", which variant booted first in a block was a coin toss, so each ``d_b`` is as
  likely to be positive as negative given its size. No normal approximation, no assumption
  about the shape of the noise beyond that symmetry.
* :func:`paired_interval` inverts the same test (Hodges-Lehmann: order statistics of the Walsh
  averages), so the interval excludes 0 exactly when the test rejects.
* :func:`rank_sum_test` and :func:`unpaired_interval` are the two-sample counterparts on boot
  values, for results that are not paired by block.
* :func:`sequential_level` is the nominal level for looking after every block (group
  sequential, Pocock-type constant boundary on the exact p-value scale, calibrated by
  simulating the test's null distribution, which does not depend on the data's distribution).

With ``n`` blocks the smallest two-sided p-value any paired test can give is ``2 / 2**n``:
5 blocks can never reach 0.05. :func:`blocks_to_reach` says how many are needed.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import numpy.typing as npt
from scipy.stats import mannwhitneyu, norm, rankdata

FloatArray = npt.NDArray[np.float64]

# simulated null paths for :func:`sequential_level` (fewer for many looks, to bound the
# work): at 200,000 paths the estimate's standard error at 0.05 is 0.0005, and the level
# chosen keeps the estimate two standard errors below alpha
SEQUENTIAL_PATHS = 200_000
SEQUENTIAL_WORK = 4_000_000  # paths x looks
SEQUENTIAL_SEED = 20_131_017
# beyond this many boots in all, rank-sum tests use the normal approximation (the exact
# distributions' tables grow with the square of the sample)
EXACT_RANK_SUM_MAX = 60


def ratio(x: float) -> float | None:
    """A log-scale estimate or bound back on the ratio scale: None for NaN, exp otherwise
    (an unbounded end stays unbounded: inf, or 0 below)."""
    if math.isnan(x):
        return None
    if x == math.inf:
        return math.inf
    if x == -math.inf:
        return 0.0
    return math.exp(x)


def smallest_paired_p(n: int) -> float:
    """The smallest two-sided p-value a sign-flip test on ``n`` blocks can give."""
    return min(1.0, 2.0 / 2.0**n) if n > 0 else 1.0


def blocks_to_reach(level: float) -> int:
    """The fewest blocks whose paired test can reach ``level`` (two-sided)."""
    n = 1
    while smallest_paired_p(n) > level:
        n += 1
    return n


def _flip_distribution(weights: npt.NDArray[np.int64]) -> FloatArray:
    """Probability of every value of sum(w_i * s_i), s_i independent fair 0/1 coins."""
    total = int(weights.sum())
    pmf = np.zeros(total + 1)
    pmf[0] = 1.0
    for w in weights:
        w = int(w)
        shifted = np.zeros_like(pmf)
        shifted[w:] = pmf[: total + 1 - w]
        pmf = 0.5 * (pmf + shifted)
    return pmf


def signed_rank_test(d: FloatArray) -> float:
    """Two-sided exact p-value of Wilcoxon's signed-rank test of "d is symmetric about 0".

    Zeros are dropped (they carry no sign); ties among the magnitudes get midranks, and the
    null distribution is that of the observed (mid)ranks under independent sign flips, so the
    p-value is exact with ties too. 1 when every difference is zero.
    """
    d = np.asarray(d, dtype=np.float64)
    d = d[(d != 0) & ~np.isnan(d)]  # no sign: neither a zero nor an undefined difference
    n = d.size
    if n == 0:
        return 1.0
    doubled = np.rint(2 * rankdata(np.abs(d))).astype(np.int64)  # midranks are halves
    pmf = _flip_distribution(doubled)
    observed = int(doubled[d > 0].sum())
    centre = doubled.sum() / 2
    distance = abs(observed - centre)
    values = np.arange(pmf.size)
    # a small tolerance for the float centre; the values are integers
    p = float(pmf[np.abs(values - centre) >= distance - 1e-9].sum())
    return min(1.0, p)


@cache
def _untied_cdf(n: int) -> tuple[float, ...]:
    """P(T+ <= t) for t = 0 .. n(n+1)/2, T+ the signed-rank statistic of ``n`` untied values."""
    pmf = _flip_distribution(np.arange(1, n + 1, dtype=np.int64))
    return tuple(np.cumsum(pmf))


def paired_interval(d: FloatArray, level: float) -> tuple[float, float, float]:
    """Hodges-Lehmann estimate and exact ``1 - level`` interval for the centre of ``d``.

    The estimate is the median of the Walsh averages (d_i + d_j) / 2, i <= j; the interval's
    ends are the C-th smallest and C-th largest of them, C the largest count with
    P(T+ <= C - 1) <= level / 2 (Hollander and Wolfe). Too few values for that give an
    unbounded interval (-inf, inf): no number of blocks below :func:`blocks_to_reach` can
    bound it.
    """
    d = np.sort(np.asarray(d, dtype=np.float64))
    n = d.size
    if n == 0:
        return math.nan, -math.inf, math.inf
    i, j = np.triu_indices(n)
    with np.errstate(invalid="ignore"):  # inf + -inf: a hang on opposite sides is NaN
        walsh = np.sort((d[i] + d[j]) / 2)
    estimate = float(np.median(walsh))
    cdf = _untied_cdf(n)
    c = 0
    while c < len(cdf) and cdf[c] <= level / 2 + 1e-12:
        c += 1  # P(T+ <= c - 1) <= level / 2 holds for this c
    if c == 0:
        return estimate, -math.inf, math.inf
    return estimate, float(walsh[c - 1]), float(walsh[walsh.size - c])


@cache
def _rank_sum_cdf(n: int, m: int) -> tuple[float, ...]:
    """P(U <= u) for the Mann-Whitney U of samples of ``n`` and ``m`` untied values."""
    # ways[k][u]: arrangements of k of the first values with U = u, built by the usual
    # recursion over the largest element
    table = np.zeros((n + 1, m + 1, n * m + 1))
    table[0, :, 0] = 1.0
    table[:, 0, 0] = 1.0
    for a in range(1, n + 1):
        for b in range(1, m + 1):
            # the largest value belongs to the first sample (adds b) or to the second
            table[a, b, b:] += table[a - 1, b, : n * m + 1 - b]
            table[a, b, :] += table[a, b - 1, :]
    counts = table[n, m]
    return tuple(np.cumsum(counts) / counts.sum())


def smallest_unpaired_p(n: int, m: int) -> float:
    """The smallest two-sided p-value of a rank-sum test with ``n`` and ``m`` boots."""
    if n == 0 or m == 0:
        return 1.0
    return min(1.0, 2.0 / math.comb(n + m, n))


def rank_sum_test(x: FloatArray, y: FloatArray) -> float:
    """Two-sided exact Mann-Whitney p-value of "x and y come from one distribution",
    computed as a permutation test over the observed (mid)ranks."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, m = x.size, y.size
    if n == 0 or m == 0:
        return 1.0
    if n + m > EXACT_RANK_SUM_MAX:
        return float(mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").pvalue)
    ranks = rankdata(np.concatenate([x, y]))
    doubled = np.rint(2 * ranks).astype(np.int64)
    # distribution of the doubled rank sum of a random subset of size n: DP over elements
    total = int(doubled.sum())
    dist = np.zeros((n + 1, total + 1))
    dist[0, 0] = 1.0
    for w in doubled:
        w = int(w)
        dist[1:, w:] = dist[1:, w:] + dist[:-1, : total + 1 - w]
    pmf = dist[n] / dist[n].sum()
    observed = int(doubled[:n].sum())
    centre = n * (total / (n + m))
    values = np.arange(total + 1)
    p = float(pmf[np.abs(values - centre) >= abs(observed - centre) - 1e-9].sum())
    return min(1.0, p)


def unpaired_interval(x: FloatArray, y: FloatArray, level: float) -> tuple[float, float, float]:
    """Hodges-Lehmann estimate and exact ``1 - level`` interval for the shift y - x: the
    median of all differences y_j - x_i and their order statistics at the Mann-Whitney
    critical count; unbounded when the samples are too small to reach ``level``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, m = x.size, y.size
    if n == 0 or m == 0:
        return math.nan, -math.inf, math.inf
    diffs = np.sort((y[None, :] - x[:, None]).ravel())
    estimate = float(np.median(diffs))
    if n + m > EXACT_RANK_SUM_MAX:
        # large samples: the normal approximation of U's critical count
        half = float(norm.isf(level / 2)) * math.sqrt(n * m * (n + m + 1) / 12)
        c = max(0, math.floor(n * m / 2 - half))
    else:
        cdf = _rank_sum_cdf(n, m)
        c = 0
        while c < len(cdf) and cdf[c] <= level / 2 + 1e-12:
            c += 1
    if c == 0:
        return estimate, -math.inf, math.inf
    return estimate, float(diffs[c - 1]), float(diffs[diffs.size - c])


def boots_to_reach(level: float, have: tuple[int, int] = (0, 0)) -> int:
    """The fewest boots per side (equal sides, at least ``have``) whose unpaired test can
    reach ``level``."""
    k = max(1, *have)
    while smallest_unpaired_p(k, k) > level:
        k += 1
    return k


# ---------------------------------------------------------------- looking after every block


def _null_paths(max_blocks: int, paths: int, seed: int) -> FloatArray:
    """Exact signed-rank p-values after blocks 1..max_blocks of simulated null sequences.

    Under "no effect" the signs are fair coins independent of the magnitudes, and the ranks
    of continuous magnitudes are a uniformly random order whatever their distribution, so
    these paths are the test's own null distribution, not a model of the data.
    """
    rng = np.random.default_rng(seed)
    magnitude = rng.random((paths, max_blocks))
    positive = rng.random((paths, max_blocks)) < 0.5
    out = np.ones((paths, max_blocks))
    for n in range(1, max_blocks + 1):
        cdf = np.asarray(_untied_cdf(n))
        top = n * (n + 1) // 2
        ranks = magnitude[:, :n].argsort(axis=1).argsort(axis=1) + 1
        t = (ranks * positive[:, :n]).sum(axis=1)
        low = cdf[t]
        high = 1.0 - np.concatenate(([0.0], cdf))[t]  # P(T+ >= t)
        p = np.minimum(1.0, 2 * np.minimum(low, high))
        out[:, n - 1] = np.where(t * 2 == top, 1.0, p)
    return out


@cache
def sequential_level(alpha: float, max_blocks: int) -> float:
    """The nominal level for testing after every block, up to ``max_blocks`` blocks, so that
    the chance of any false call over all those looks stays at most ``alpha``.

    A Pocock-type group-sequential boundary: the same nominal level at every look, chosen as
    the largest attainable p-value whose simulated family-wise error (plus two standard
    errors of the simulation) is at most ``alpha``. The simulation is seeded, so the level is
    a fixed function of (alpha, max_blocks). Intervals at ``1 - level`` are then valid at
    every look at once (repeated confidence intervals), so stopping for equivalence is
    covered too.
    """
    if max_blocks < 1:
        raise ValueError("max_blocks must be at least 1")
    paths = max(20_000, min(SEQUENTIAL_PATHS, SEQUENTIAL_WORK // max_blocks))
    mins = _null_paths(max_blocks, paths, SEQUENTIAL_SEED).min(axis=1)
    se = math.sqrt(alpha * (1 - alpha) / paths)
    candidates = np.unique(mins[mins <= alpha])
    best = 0.0
    for a in candidates:  # ascending; the error rate only grows with a
        if float(np.mean(mins <= a + 1e-12)) + 2 * se <= alpha:
            best = float(a)
        else:
            break
    # nothing attainable fits (too few looks to ever reach alpha): the first attainable
    # level below alpha is useless too, so return the fixed-design level
    return best if best > 0 else alpha


# ---------------------------------------------------------------- planning the next run


def blocks_for(sd: float, effect_log: float, level: float, power: float = 0.8) -> int | None:
    """Blocks a paired test needs to detect a change of ``effect_log`` (log ratio) with
    ``power``, given the per-block differences' standard deviation ``sd``: the normal
    approximation with the signed-rank test's efficiency 3/pi against the t test, and at
    least :func:`blocks_to_reach` blocks. ``None`` when the effect is 0 or sd unknown."""
    if not (sd > 0 and math.isfinite(sd)) or effect_log == 0 or not math.isfinite(effect_log):
        return None
    z = float(norm.isf(level / 2) + norm.isf(1 - power))
    n = (z * sd / abs(effect_log)) ** 2 / (3 / math.pi)
    return max(blocks_to_reach(level), math.ceil(n))


def optimal_runs_per_boot(
    between_boots: float, within_boot: float, boot_cost_s: float, run_cost_s: float
) -> int | None:
    """Kalibera and Jones' optimum number of runs per boot: sqrt(c_boot * s_w^2 /
    (c_run * s_b^2)), rounded, at least 1 (a boot's variance cannot be averaged away by
    runs, a run's can). ``None`` when a component is unknown."""
    if not (within_boot >= 0 and between_boots >= 0 and boot_cost_s > 0 and run_cost_s > 0):
        return None
    if between_boots == 0:
        return None if within_boot == 0 else 8  # boots do not differ: runs are as good
    r = math.sqrt(boot_cost_s * within_boot / (run_cost_s * between_boots))
    return max(1, min(64, round(r)))
