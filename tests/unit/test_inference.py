"""Exact tests and intervals (orchestrator.stats.inference) against scipy and their own
definitions: p-values, test/interval duality, the sequential level's family-wise error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, wilcoxon

from orchestrator.stats import inference as inf

# ---------------------------------------------------------------- signed-rank test


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 12, 16, 25])
def test_signed_rank_matches_scipy_exact(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(20):
        d = rng.normal(0.3, 1.0, n)  # continuous: no ties, no zeros
        expected = float(wilcoxon(d, method="exact").pvalue)
        assert inf.signed_rank_test(d) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n", [1, 4, 6, 10, 16])
def test_signed_rank_all_signs_equal(n: int) -> None:
    d = np.linspace(0.1, 2.0, n)
    assert inf.signed_rank_test(d) == pytest.approx(min(1.0, 2 / 2**n))
    assert inf.signed_rank_test(-d) == pytest.approx(min(1.0, 2 / 2**n))
    assert inf.smallest_paired_p(n) == pytest.approx(min(1.0, 2 / 2**n))


def test_signed_rank_zeros_and_ties() -> None:
    assert inf.signed_rank_test(np.zeros(5)) == 1.0
    assert inf.signed_rank_test(np.array([])) == 1.0
    # zeros dropped: the same as the test on the non-zero values
    d = np.array([0.0, 0.5, -0.2, 0.9, 0.0, 1.3])
    assert inf.signed_rank_test(d) == pytest.approx(inf.signed_rank_test(d[d != 0]))
    # tied magnitudes: exact over the midranks, symmetric in the sign
    tied = np.array([1.0, 1.0, -1.0, 2.0, 2.0, 3.0])
    p = inf.signed_rank_test(tied)
    assert 0 < p <= 1
    assert inf.signed_rank_test(-tied) == pytest.approx(p)


@pytest.mark.parametrize("level", [0.01, 0.05, 0.1])
def test_paired_interval_excludes_zero_exactly_when_rejected(level: float) -> None:
    rng = np.random.default_rng(7)
    rejections = 0
    for _ in range(600):
        n = int(rng.integers(3, 21))
        d = rng.normal(rng.choice([0.0, 0.4, -0.7]), 1.0, n)
        p = inf.signed_rank_test(d)
        est, low, high = inf.paired_interval(d, level)
        assert low <= est <= high
        excludes = not (low <= 0.0 <= high)
        assert excludes == (p <= level), (n, p, low, high)
        rejections += excludes
    assert rejections > 50  # the check saw both outcomes often


def test_paired_interval_unbounded_below_blocks_to_reach() -> None:
    need = inf.blocks_to_reach(0.05)
    _, low, high = inf.paired_interval(np.arange(1.0, need), 0.05)
    assert (low, high) == (-math.inf, math.inf)
    _, low, high = inf.paired_interval(np.arange(1.0, need + 1), 0.05)
    assert math.isfinite(low) and math.isfinite(high) and low > 0


def test_blocks_to_reach() -> None:
    assert inf.blocks_to_reach(0.05) == 6
    assert inf.blocks_to_reach(0.1) == 5
    assert inf.blocks_to_reach(0.01) == 8


# ---------------------------------------------------------------- rank-sum test


@pytest.mark.parametrize(("n", "m"), [(1, 1), (2, 3), (3, 3), (4, 6), (6, 6), (8, 5), (10, 12)])
def test_rank_sum_matches_scipy_exact(n: int, m: int) -> None:
    rng = np.random.default_rng(100 * n + m)
    for _ in range(10):
        x = rng.normal(0.0, 1.0, n)
        y = rng.normal(0.8, 1.0, m)
        expected = float(mannwhitneyu(x, y, alternative="two-sided", method="exact").pvalue)
        assert inf.rank_sum_test(x, y) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_rank_sum_smallest_p() -> None:
    assert inf.rank_sum_test(np.arange(3.0), np.arange(3.0) + 10) == pytest.approx(0.1)
    assert inf.smallest_unpaired_p(3, 3) == pytest.approx(0.1)
    assert inf.smallest_unpaired_p(1, 1) == 1.0
    assert inf.boots_to_reach(0.05) == 4


@pytest.mark.parametrize("level", [0.01, 0.05, 0.1])
def test_unpaired_interval_excludes_zero_exactly_when_rejected(level: float) -> None:
    rng = np.random.default_rng(11)
    rejections = 0
    for _ in range(300):
        n, m = (int(k) for k in rng.integers(2, 11, size=2))
        x = rng.normal(0.0, 1.0, n)
        y = rng.normal(rng.choice([0.0, 1.0, -1.5]), 1.0, m)
        p = inf.rank_sum_test(x, y)
        est, low, high = inf.unpaired_interval(x, y, level)
        assert low <= est <= high
        excludes = not (low <= 0.0 <= high)
        assert excludes == (p <= level), (n, m, p, low, high)
        rejections += excludes
    assert rejections > 30


def test_unpaired_interval_covers_the_shift() -> None:
    rng = np.random.default_rng(3)
    covered = 0
    trials = 400
    for _ in range(trials):
        x = rng.normal(0.0, 1.0, 8)
        y = rng.normal(0.5, 1.0, 8)
        _, low, high = inf.unpaired_interval(x, y, 0.05)
        covered += low <= 0.5 <= high
    assert covered / trials >= 0.92  # nominal 95%, exact (conservative) coverage


# ---------------------------------------------------------------- sequential looks


def test_sequential_level_is_stricter_than_alpha() -> None:
    level = inf.sequential_level(0.05, 16)
    assert 0 < level <= 0.05
    assert level < 0.05  # 16 looks at 0.05 each would exceed 0.05 overall
    # attainable: the smallest p of some number of blocks, so not wasted
    assert inf.blocks_to_reach(level) <= 16


def test_sequential_family_wise_error() -> None:
    """Independent of the level's own simulation (another seed, heavy-tailed data, the
    public test itself): looking after every block up to 16 at the sequential level calls
    an A/A difference at most 5% of the time, up to the simulation's error."""
    alpha, max_blocks, paths = 0.05, 16, 1500
    level = inf.sequential_level(alpha, max_blocks)
    first = inf.blocks_to_reach(level)  # earlier looks cannot reject
    rng = np.random.default_rng(424242)
    d = rng.standard_t(3, size=(paths, max_blocks))
    false = 0
    for row in d:
        false += any(inf.signed_rank_test(row[:n]) <= level for n in range(first, max_blocks + 1))
    rate = false / paths
    se = math.sqrt(alpha * (1 - alpha) / paths)
    assert rate <= alpha + 3 * se, rate
    # and looking at every block at plain alpha would not have been safe
    naive = sum(
        any(inf.signed_rank_test(row[:n]) <= alpha for n in range(6, max_blocks + 1))
        for row in d[:500]
    )
    assert naive / 500 > alpha


def test_sequential_level_needs_a_block() -> None:
    with pytest.raises(ValueError):
        inf.sequential_level(0.05, 0)


# ---------------------------------------------------------------- planning


def test_blocks_for() -> None:
    assert inf.blocks_for(0.0, 0.1, 0.05) is None
    assert inf.blocks_for(0.3, 0.0, 0.05) is None
    small = inf.blocks_for(0.3, math.log(2), 0.05)
    large = inf.blocks_for(0.3, math.log(1.1), 0.05)
    assert small is not None and large is not None
    assert small == inf.blocks_to_reach(0.05)  # a large effect: the floor decides
    assert large > small


def test_optimal_runs_per_boot() -> None:
    # sqrt(c_boot * s_w^2 / (c_run * s_b^2)) = sqrt(60 * 0.04 / (10 * 0.01)) = sqrt(24) ~ 4.9
    assert inf.optimal_runs_per_boot(0.01, 0.04, 60.0, 10.0) == 5
    assert inf.optimal_runs_per_boot(0.04, 0.0, 60.0, 10.0) == 1
    assert inf.optimal_runs_per_boot(0.0, 0.0, 60.0, 10.0) is None
