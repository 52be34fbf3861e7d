"""Statistics: hand-computed values on small fixtures, and verdicts on seeded data with known truth."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator import stats
from orchestrator.errors import UserError
from orchestrator.report.synthetic import provenance, summary_only_results, synthetic_results
from orchestrator.results import ResultsFile
from orchestrator.stats import StatsOptions, Verdict
from orchestrator.workloads.maps_contention.histogram import NBUCKETS, Histogram
from orchestrator.workloads.maps_contention.result import record_from_json

# ---------------------------------------------------------------- hand-computed values


def test_distribution_by_hand() -> None:
    d = stats.distribution([4, 1, 10, 3, 2, float("nan")])
    assert d is not None
    assert d.n == 5
    assert d.median == 3
    assert d.mean == 4
    assert d.minimum == 1 and d.maximum == 10
    # linear interpolation between order statistics: rank 0.4 -> 1 + 0.4 * (2 - 1)
    assert d.p10 == pytest.approx(1.4)
    # rank 3.6 -> 4 + 0.6 * (10 - 4)
    assert d.p90 == pytest.approx(7.6)
    # squared deviations 9 + 4 + 1 + 0 + 36 = 50, over n - 1 = 4
    assert d.std == pytest.approx(math.sqrt(12.5))
    assert d.relative_spread == pytest.approx(100 * math.sqrt(12.5) / 4)
    assert stats.distribution([]) is None


def test_variance_split_by_hand() -> None:
    # boot A: 1, 3 (mean 2); boot B: 5, 7 (mean 6); grand mean 4
    # SSW = 1 + 1 + 1 + 1 = 4 over N - k = 2 -> MSW 2
    # SSB = 2 * 4 + 2 * 4 = 16 over k - 1 = 1 -> MSB 16; n0 = (4 - 8/4) / 1 = 2
    # between = (16 - 2) / 2 = 7; share 7 / 9
    split = stats.variance_split([1, 3, 5, 7], [0, 0, 1, 1])
    assert split.within == pytest.approx(2)
    assert split.between == pytest.approx(7)
    assert split.between_share == pytest.approx(7 / 9)
    assert split.boots == 2 and split.runs == 4


def test_variance_split_edge_cases() -> None:
    one_boot = stats.variance_split([1, 2, 3], [5, 5, 5])
    assert one_boot.between is None and one_boot.within == pytest.approx(1)
    assert one_boot.between_share is None
    one_run_each = stats.variance_split([1, 2, 3], [0, 1, 2])
    assert one_run_each.within is None and one_run_each.between_share is None
    # boots that differ less than their runs do: the between component is clamped at 0
    alike = stats.variance_split([1, 9, 2, 8], [0, 0, 1, 1])
    assert alike.between == 0 and alike.between_share == 0


def test_holm_by_hand() -> None:
    # sorted 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1, kept monotone: 0.06)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_mann_whitney_exact_small_sample() -> None:
    # complete separation of 5 and 5: 2 of the C(10, 5) = 252 arrangements are as extreme
    p = stats.mann_whitney_p(np.array([6.0, 7, 8, 9, 10]), np.array([1.0, 2, 3, 4, 5]))
    assert p == pytest.approx(2 / 252)
    assert stats.mann_whitney_p(np.array([1.0, 1, 1]), np.array([1.0, 1, 1])) == 1.0


def test_design_effect_by_hand() -> None:
    # ranks are the values themselves here; each side's boots differ completely and runs in a
    # boot are identical, so ICC = 1 and the design effect is the boot size, 2
    cand = np.array([1.0, 1, 2, 2])
    base = np.array([3.0, 3, 4, 4])
    boots = np.array([0, 0, 1, 1])
    assert stats.design_effect(cand, boots, base, boots) == pytest.approx(2.0, rel=0.01)
    # one run per boot: runs are boots, nothing to correct
    assert stats.design_effect(cand, np.arange(4), base, np.arange(4)) == 1.0
    # a single boot per side: cannot be estimated
    assert stats.design_effect(cand, np.zeros(4), base, np.zeros(4)) == 1.0
    # the correction shrinks z by sqrt(deff)
    c, b = np.arange(10.0, 20), np.arange(10.0)
    p1 = stats.mann_whitney_p(c, b)
    p4 = stats.mann_whitney_p(c, b, deff=4.0)
    assert p4 > p1 and p4 < 0.1


def test_median_ratio_rules() -> None:
    assert stats.median_ratio(1.0, 2.0) == 0.5
    assert stats.median_ratio(0.0, 0.0) == 1.0
    assert math.isinf(stats.median_ratio(1.0, 0.0))


def test_expanded_tail() -> None:
    assert stats.expanded_tail(0.05, 1) == 0.025
    # many units: close to the plain percentile interval
    assert stats.expanded_tail(0.05, 1000) == pytest.approx(0.025, abs=0.001)
    # few units: much further out
    assert stats.expanded_tail(0.05, 4) < 0.001


def _random_histograms(rng: np.random.Generator, n: int) -> list[Histogram]:
    out = []
    for _ in range(n):
        samples = rng.lognormal(np.log(20_000), 1.2, int(rng.integers(1, 400))).astype(int)
        out.append(Histogram.from_samples(samples.tolist()))
    return out


def test_vectorised_histogram_figures_agree_with_histogram() -> None:
    rng = np.random.default_rng(3)
    hists = _random_histograms(rng, 12)
    rows = np.array([h.counts for h in hists], dtype=np.int64)
    for q in ("50", "99", "99.9", "0", "100"):
        assert stats.percentile_rows(rows, q).tolist() == [h.percentile(float(q)) for h in hists]
    for threshold in (500_000.0, 1_000_000.0, 123_456.0, 100.0):
        assert stats.share_above_rows(rows, threshold) == pytest.approx(
            [h.share_above(threshold) for h in hists], rel=1e-12
        )
    empty = np.zeros((1, NBUCKETS), dtype=np.int64)
    assert np.isnan(stats.percentile_rows(empty, "50")[0])
    assert np.isnan(stats.share_above_rows(empty, 1e6)[0])


def test_hierarchical_resampling_draws_whole_boots() -> None:
    groups = np.array([0, 0, 0, 1, 2, 2])  # boots of 3, 1 and 2 runs
    counts = stats.resample_counts(groups, 500, np.random.default_rng(1))
    assert counts.shape == (500, 6)
    for row in counts:
        # a drawn boot contributes as many runs as it holds, so each boot's share of a row is a
        # multiple of its size, and a row has three boots' worth of runs
        per_boot = [row[:3].sum(), row[3:4].sum(), row[4:].sum()]
        assert per_boot[0] % 3 == 0 and per_boot[2] % 2 == 0
        assert per_boot[0] // 3 + per_boot[1] + per_boot[2] // 2 == 3
    values = np.array([5.0, 1.0, 3.0, 2.0, 8.0, 4.0])
    medians = stats.resampled_medians(values, counts)
    expected = [np.median(np.repeat(values, row)) for row in counts]
    assert medians == pytest.approx(expected)


def test_resampling_is_seeded() -> None:
    groups = np.repeat(np.arange(4), 5)
    a = stats.resample_counts(groups, 200, np.random.default_rng(7))
    b = stats.resample_counts(groups, 200, np.random.default_rng(7))
    assert (a == b).all()


# ---------------------------------------------------------------- summaries


def test_summary_by_hand() -> None:
    rf = summary_only_results(
        "a",
        baseline="a",
        maxima_by_boot=[[0.4, 0.6, 1.2], [2.0, 0.3]],
        means_by_boot=[[0.01] * 3, [0.02] * 2],
    )
    rf.runs.append(
        {"boot": "a-2", "index": 2, "seed": None, "hang": True, "note": "", "record": None}
    )
    s = stats.summarize(stats.extract(rf))
    assert s.runs == 5 and s.hangs == 1 and s.boots == 2
    assert s.runs_per_boot == (3, 2)
    assert s.max_above_ms == {"0.5": 3, "1": 2}
    assert s.metrics["max_ms"].median == pytest.approx(0.6)
    assert s.metrics["max_ms"].maximum == 2.0
    assert s.metrics["mean_ms"].median == pytest.approx(0.01)
    assert s.operations == {}
    assert s.summary_only_runs == 5
    assert set(s.metrics) == {"max_ms", "mean_ms"}


def test_summary_merges_histograms() -> None:
    rf = synthetic_results("a", baseline="a", runs=4, boots=2, seed=5, ops=500)
    for run in rf.runs:
        record_from_json(run["record"])  # the synthetic records follow the mapper's schema
    data = stats.extract(rf)
    s = stats.summarize(data)
    merged = Histogram.merge_all(
        Histogram.from_json(r["record"][kind]["hist"]) for r in rf.runs for kind in ("map", "unmap")
    )
    assert s.operations["all"].count == merged.count == 2000
    assert s.operations["all"].p99_ms == pytest.approx(merged.percentile(99) / 1e6)
    assert s.operations["all"].above_ms["1"] == pytest.approx(merged.share_above(1e6) * 1000)
    first = Histogram.from_json(rf.runs[0]["record"]["map"]["hist"])
    assert data.values["map_above_500us"][0] == pytest.approx(first.share_above(5e5) * 1000)
    assert data.values["ops_per_s"][0] == pytest.approx(500 / rf.runs[0]["record"]["elapsed_s"])


def test_bad_histogram_is_a_user_error() -> None:
    rf = synthetic_results("a", baseline="a", runs=2, boots=1, seed=1, ops=50)
    rf.runs[1]["record"]["map"]["hist"]["counts"] = [[5, 1], [3, 1]]
    with pytest.raises(UserError, match="boot a-1, run 1, map: histogram indices must ascend"):
        stats.extract(rf)
    rf.runs[1]["record"]["map"]["hist"]["counts"] = [[5, 1]]
    with pytest.raises(UserError, match="holds 1 operations"):
        stats.extract(rf)


# ---------------------------------------------------------------- verdicts with known truth


def _lognormal_side(
    name: str,
    rng: np.random.Generator,
    scale: float = 1.0,
    boots: int = 8,
    runs: int = 3,
    blocked: bool = True,
) -> ResultsFile:
    """``runs`` per-run maxima per boot around 1.5 ms, log-normal (sd 0.3 in log), each boot
    shifted a little; boot n in block n of one run (paired with another side made alike),
    or without blocks (compared unpaired) unless ``blocked``."""
    maxima = []
    for _ in range(boots):
        factor = float(np.exp(rng.normal(0.0, 0.1)))  # a boot shifts all its runs a little
        maxima.append(list(rng.lognormal(np.log(1.5), 0.3, runs) * factor * scale))
    rf = summary_only_results(name, baseline="base", maxima_by_boot=maxima)
    if blocked:
        for boot in rf.boots:
            boot["block"] = int(boot["id"].rsplit("-", 1)[1])
        for run in rf.runs:
            run["block"] = int(run["boot"].rsplit("-", 1)[1])
    return rf


def _side(
    name: str, seed: int, *, blocks: int = 8, runs: int = 2, ops: int = 300, **kw: Any
) -> ResultsFile:
    """Synthetic results with histograms: ``blocks`` boots of ``runs`` runs, boot n in block n."""
    return synthetic_results(
        name, baseline="base", runs=runs * blocks, boots=blocks, seed=seed, ops=ops, **kw
    )


def _hang(rf: ResultsFile, every: bool = True) -> ResultsFile:
    """Mark every run hung (or the first run of every boot)."""
    seen: set[str] = set()
    for run in rf.runs:
        if every or run["boot"] not in seen:
            seen.add(run["boot"])
            run.update(hang=True, record=None)
    return rf


CHANGES = (Verdict.IMPROVED, Verdict.REGRESSED)


def test_identical_distributions_rarely_differ() -> None:
    """A/A over 8 blocks: in at least 95 of 100 seeded draws no change is called."""
    outcomes = []
    for draw in range(100):
        rng = np.random.default_rng(10_000 + draw)
        c = stats.compare([_lognormal_side("base", rng), _lognormal_side("cand", rng)])
        head = c.candidates[0].headline
        assert head is not None and head.method == "paired" and head.blocks == 8
        outcomes.append(c.candidates[0].verdict)
    assert sum(v in CHANGES for v in outcomes) <= 5, outcomes


def test_identical_distributions_all_metrics_with_histograms() -> None:
    """The whole family of metrics: the headline at alpha and the exploratory metrics
    Holm-adjusted at alpha call some change in an A/A run at most about 2 alpha of the time."""
    quiet = 0
    for draw in range(40):
        a = synthetic_results(
            "base", baseline="base", runs=20, boots=8, seed=2 * draw, ops=600, boot_sd=0.1
        )
        b = synthetic_results(
            "cand", baseline="base", runs=20, boots=8, seed=2 * draw + 1, ops=600, boot_sd=0.1
        )
        c = stats.compare([a, b])
        quiet += not any(mc.verdict in CHANGES for mc in c.candidates[0].metrics)
    assert quiet >= 36


def test_twofold_shift_is_an_improvement() -> None:
    for draw in range(10):
        rng = np.random.default_rng(500 + draw)
        c = stats.compare([_lognormal_side("base", rng), _lognormal_side("cand", rng, scale=0.5)])
        head = c.candidates[0].headline
        assert head is not None and head.metric == "max_ms"
        assert c.candidates[0].verdict == Verdict.IMPROVED, head.reason
        assert head.method == "paired" and head.blocks == 8 and len(head.log_ratios) == 8
        assert head.ratio == pytest.approx(0.5, abs=0.2)
        assert head.ci_low is not None and head.ci_high is not None and head.ci_high < 1
        assert "8 blocks, paired" in head.reason
        # and the other way round it is a regression
        worse = stats.compare(
            [_lognormal_side("base", rng), _lognormal_side("cand", rng, scale=2.0)]
        )
        assert worse.candidates[0].verdict == Verdict.REGRESSED


def test_twofold_shift_with_histograms() -> None:
    # 12 blocks: enough for an exploratory metric to pass Holm's adjustment over 15 (10 are)
    a = synthetic_results("base", baseline="base", runs=24, boots=12, seed=1, boot_sd=0.05)
    b = synthetic_results(
        "cand", baseline="base", runs=24, boots=12, seed=2, boot_sd=0.05, scale=0.5
    )
    c = stats.compare([a, b], StatsOptions(headline="mean_ms"))
    assert c.candidates[0].verdict == Verdict.IMPROVED
    assert c.candidates[0].metric("p50_ms").verdict == Verdict.IMPROVED  # type: ignore[union-attr]
    # operations per second did not change: the precision shows it did not
    assert c.candidates[0].metric("ops_per_s").verdict == Verdict.EQUIVALENT  # type: ignore[union-attr]


def test_exploratory_metrics_need_more_blocks_than_the_headline() -> None:
    """8 blocks decide the headline, but no exploratory metric can pass Holm's adjustment
    over 15 of them (8 blocks' smallest p, 2/256, times 15 is above 0.05)."""
    c = stats.compare([_side("base", 1, boot_sd=0.05), _side("cand", 2, boot_sd=0.05, scale=0.5)])
    cand = c.candidates[0]
    assert cand.verdict == Verdict.IMPROVED
    assert not any(mc.verdict in CHANGES for mc in cand.metrics if mc.family == "exploratory")


def test_higher_is_better_metric_direction() -> None:
    a = _side("base", 1)
    b = _side("cand", 2)
    for run in b.runs:  # same work in half the time: twice the operations per second
        run["record"]["elapsed_s"] /= 2
    for headline in ("ops_per_s", None):  # confirmatory at 8 blocks; exploratory needs 10
        c = stats.compare([a, b], StatsOptions(headline=headline))
        mc = c.candidates[0].metric("ops_per_s")
        assert mc is not None
        assert mc.verdict == (Verdict.IMPROVED if headline else Verdict.INCONCLUSIVE), mc.reason
    a, b = _side("base", 1, blocks=12), _side("cand", 2, blocks=12)
    for run in b.runs:
        run["record"]["elapsed_s"] /= 2
    mc = stats.compare([a, b]).candidates[0].metric("ops_per_s")
    assert mc is not None and mc.family == "exploratory" and mc.verdict == Verdict.IMPROVED


def test_too_few_blocks_is_inconclusive() -> None:
    a = _side("base", 1, blocks=4)
    b = _side("cand", 2, blocks=4, scale=0.1)
    c = stats.compare([a, b])
    head = c.candidates[0].headline
    assert head is not None and head.verdict == Verdict.INCONCLUSIVE
    assert "4 blocks cannot reach p < 0.05" in head.reason
    assert "at least 6 blocks are needed, 2 more" in head.reason
    assert head.more_blocks == 2
    assert head.ratio is not None and head.ratio < 0.2  # the figures are still shown
    assert c.verdict == Verdict.INCONCLUSIVE


def test_too_few_unpaired_boots_is_inconclusive() -> None:
    a = summary_only_results("base", baseline="base", maxima_by_boot=[[1, 2], [1.5, 2.5]])
    b = summary_only_results("cand", baseline="base", maxima_by_boot=[[0.1, 0.2], [0.15, 0.25]])
    c = stats.compare([a, b])
    head = c.candidates[0].headline
    assert head is not None and head.method == "unpaired"
    assert head.verdict == Verdict.INCONCLUSIVE
    assert "2 + 2 boots cannot reach p < 0.05" in head.reason
    assert "at least 4 boots a side are needed" in head.reason
    assert head.ratio == pytest.approx(0.1, rel=1e-4)  # the figures are still shown
    # 3 boots against 3 cannot reach 0.05 either (the smallest p is 2/20)
    three = [[1.0, 2.0]] * 3
    c = stats.compare(
        [
            summary_only_results("base", baseline="base", maxima_by_boot=three),
            summary_only_results("cand", baseline="base", maxima_by_boot=[[0.1, 0.2]] * 3),
        ]
    )
    head = c.candidates[0].headline
    assert head is not None and head.verdict == Verdict.INCONCLUSIVE
    assert "3 + 3 boots cannot reach p < 0.05" in head.reason


def test_five_blocks_cannot_decide_six_can() -> None:
    """However large the effect, 5 blocks' smallest p is 2/32 > 0.05; 6 blocks' is 2/64."""
    five = stats.compare([_side("base", 1, blocks=5), _side("cand", 2, blocks=5, scale=0.1)])
    head = five.candidates[0].headline
    assert head is not None and head.blocks == 5 and head.ratio is not None and head.ratio < 0.2
    assert head.verdict == Verdict.INCONCLUSIVE
    assert "at least 6 blocks are needed, 1 more" in head.reason and head.more_blocks == 1
    assert all(mc.verdict not in CHANGES for mc in five.candidates[0].metrics)
    six = stats.compare([_side("base", 1, blocks=6), _side("cand", 2, blocks=6, scale=0.1)])
    head = six.candidates[0].headline
    assert head is not None and head.blocks == 6
    assert head.verdict == Verdict.IMPROVED, head.reason
    assert head.p_value == pytest.approx(2 / 64)


@pytest.mark.parametrize("blocked", [True, False])
def test_one_boot_a_side_never_decides(blocked: bool) -> None:
    rng = np.random.default_rng(5)
    a = _lognormal_side("base", rng, boots=1, runs=50, blocked=blocked)
    b = _lognormal_side("cand", rng, scale=0.01, boots=1, runs=50, blocked=blocked)
    c = stats.compare([a, b])
    cand = c.candidates[0]
    assert cand.headline is not None
    assert cand.headline.method == ("paired" if blocked else "unpaired")
    assert cand.verdict == Verdict.INCONCLUSIVE
    assert all(mc.verdict not in CHANGES for mc in cand.metrics)
    assert any("'cand' rests on a single boot" in w for w in c.warnings)


def test_a_hung_run_is_the_worst_value() -> None:
    # 12 blocks, so that the exploratory latency metrics can pass Holm's adjustment too
    base = _side("base", 1, blocks=12)
    # a candidate twice as fast whose runs all hang: regressed, never improved
    hung = stats.compare([base, _hang(_side("cand", 2, blocks=12, scale=0.5))])
    cand = hung.candidates[0]
    assert cand.verdict == Verdict.REGRESSED
    for key in ("max_ms", "mean_ms", "p50_ms", "p99_ms", "above_1ms", "hang_rate"):
        mc = cand.metric(key)
        assert mc is not None and mc.verdict == Verdict.REGRESSED, (key, mc)
    assert not any(mc.verdict == Verdict.IMPROVED for mc in cand.metrics)
    assert any("'cand' hung in 24 of 24 runs" in w for w in hung.warnings)
    # one hung run of two in every boot: the boot's maximum is the hung run's, the worst
    half = stats.compare([base, _hang(_side("cand", 2, blocks=12, scale=0.5), every=False)])
    head = half.candidates[0].headline
    assert head is not None and head.method == "paired" and head.verdict == Verdict.REGRESSED


def test_a_side_that_always_hung_is_still_paired_by_block() -> None:
    c = stats.compare([_side("base", 1), _hang(_side("cand", 2))])
    head = c.candidates[0].headline
    assert head is not None and head.method == "paired"


def test_smallest_effect_and_equivalence() -> None:
    rng = np.random.default_rng(3)
    base = [list(rng.normal(10, 0.01, 3)) for _ in range(10)]
    other = [list(rng.normal(10, 0.01, 3)) for _ in range(10)]

    def compare(cand: list[list[float]], **options: Any) -> stats.MetricComparison:
        sides = [
            summary_only_results("base", baseline="base", maxima_by_boot=base),
            summary_only_results("cand", baseline="base", maxima_by_boot=cand),
        ]
        for rf in sides:
            for boot in rf.boots:
                boot["block"] = int(boot["id"].rsplit("-", 1)[1])
            for run in rf.runs:
                run["block"] = int(run["boot"].rsplit("-", 1)[1])
        head = stats.compare(sides, StatsOptions(**options)).candidates[0].headline
        assert head is not None and head.blocks == 10
        return head

    # A/A with tiny noise over 10 blocks: the interval lies well inside ±5%
    aa = compare(other)
    assert aa.verdict == Verdict.EQUIVALENT
    assert "lies inside ±5% (the smallest effect of interest)" in aa.reason
    # a real 2% change: within the smallest effect of 5%, a change beyond one of 1%
    two = [[v * 0.98 for v in boot] for boot in base]
    assert compare(two).verdict == Verdict.EQUIVALENT
    small = compare(two, smallest_effect=0.01)
    assert small.verdict == Verdict.IMPROVED and small.ratio == pytest.approx(0.98, abs=0.001)
    # a 10% change is no equivalence
    assert compare([[v * 0.9 for v in boot] for boot in base]).verdict == Verdict.IMPROVED
    with pytest.raises(UserError, match="smallest effect"):
        StatsOptions(smallest_effect=1.5)


def test_smallest_effect_from_the_experiment() -> None:
    a, b = _side("base", 1), _side("cand", 2)
    for rf in (a, b):
        rf.provenance["workload"] = {**rf.provenance["workload"], "smallest_effect_pct": 2}
    c = stats.compare([a, b])
    assert c.smallest_effect == pytest.approx(0.02)
    assert stats.compare([a, b], StatsOptions(smallest_effect=0.1)).smallest_effect == 0.1


def test_unpaired_when_the_run_ids_differ() -> None:
    a = _side("base", 1)
    b = _side("cand", 2, scale=0.5, prov=provenance("cand", run_id="another-run"))
    c = stats.compare([a, b])
    head = c.candidates[0].headline
    assert head is not None and head.method == "unpaired" and head.blocks == 0
    assert head.units == "8 + 8 boots" and head.log_ratios == ()
    assert head.verdict == Verdict.IMPROVED, head.reason
    assert any("The sides are not paired by block" in w for w in c.warnings)
    assert not c.candidates[0].differences  # a run id is no reason to refuse a comparison
    paired = stats.compare([a, _side("cand", 2, scale=0.5)])
    assert paired.candidates[0].headline.method == "paired"  # type: ignore[union-attr]
    assert not any("not paired" in w for w in paired.warnings)


# ---------------------------------------------------------------- comparability, options


def _pair(**cand_prov: object) -> list:
    rng = np.random.default_rng(1)
    a = _lognormal_side("base", rng)
    b = _lognormal_side("cand", rng, scale=0.5)
    b.provenance = provenance("cand", **cand_prov)
    return [a, b]


def test_not_comparable_is_inconclusive_unless_forced() -> None:
    pair = _pair(accel="tcg", vcpus=2)
    c = stats.compare(pair)
    cand = c.candidates[0]
    assert not c.comparable and not c.forced
    assert {d.field for d in cand.differences} == {"accel", "vcpus"}
    assert all(mc.verdict == Verdict.INCONCLUSIVE for mc in cand.metrics)
    assert cand.verdict == Verdict.INCONCLUSIVE
    assert c.emulated and any("Emulated timing" in w for w in c.warnings)
    forced = stats.compare(pair, StatsOptions(force=True))
    assert forced.forced and forced.candidates[0].verdict == Verdict.IMPROVED


def test_workload_parameters_matter_but_run_counts_do_not() -> None:
    workload = dict(provenance("x")["workload"])
    assert (
        not stats.compare(_pair(workload={**workload, "runs": 99, "boots": 9}))
        .candidates[0]
        .differences
    )
    diffs = stats.compare(_pair(workload={**workload, "busy_ms": 4})).candidates[0].differences
    assert [(d.field, d.baseline, d.candidate) for d in diffs] == [("workload.busy_ms", 2, 4)]
    qemu = stats.compare(_pair(qemu_version="QEMU 8.0", host_cpu="Other CPU")).candidates[0]
    assert {d.label for d in qemu.differences} == {"QEMU version", "host CPU model"}


def test_single_boot_warning() -> None:
    rng = np.random.default_rng(2)
    c = stats.compare(
        [_lognormal_side("base", rng, boots=1), _lognormal_side("cand", rng, boots=4)]
    )
    assert any("'base' rests on a single boot" in w for w in c.warnings)
    assert not any("'cand' rests on a single boot" in w for w in c.warnings)


def test_headline_choice() -> None:
    pair = _pair()
    assert stats.compare(pair).headline == "max_ms"
    chosen = stats.compare(pair, StatsOptions(headline="mean_ms"))
    assert chosen.headline == "mean_ms"
    assert not chosen.post_hoc  # nothing was declared, so nothing was chosen after the run
    named = [replace(r) for r in pair]
    for r in named:
        r.provenance = {
            **r.provenance,
            "workload": {**r.provenance["workload"], "headline": "mean_ms"},
        }
    declared = stats.compare(named)
    assert declared.headline == declared.declared_headline == "mean_ms"
    assert not declared.post_hoc and not declared.candidates[0].headline.post_hoc  # type: ignore[union-attr]
    assert not stats.compare(named, StatsOptions(headline="mean_ms")).post_hoc
    with pytest.raises(UserError, match="no metric named 'p42'"):
        stats.compare(pair, StatsOptions(headline="p42"))


def test_a_headline_chosen_after_the_run_is_marked() -> None:
    a, b = _side("base", 1), _side("cand", 2, scale=0.5)
    for rf in (a, b):
        rf.provenance["workload"] = {**rf.provenance["workload"], "headline": "mean_ms"}
    c = stats.compare([a, b], StatsOptions(headline="max_ms"))
    assert c.headline == "max_ms" and c.declared_headline == "mean_ms" and c.post_hoc
    cand = c.candidates[0]
    head = cand.headline
    assert head is not None and head.metric == "max_ms" and head.post_hoc
    assert head.family == "headline"
    assert not any(mc.post_hoc for mc in cand.metrics if mc is not head)
    assert cand.metric("mean_ms").family == "exploratory"  # type: ignore[union-attr]
    assert any(
        "'max_ms' was chosen after the run" in w and "declared 'mean_ms'" in w for w in c.warnings
    )


def test_options_are_checked() -> None:
    with pytest.raises(UserError, match="alpha"):
        StatsOptions(alpha=1.5)
    with pytest.raises(UserError, match="at least 2"):
        StatsOptions(min_runs=1)


def test_baseline_must_have_results() -> None:
    pair = _pair()
    with pytest.raises(UserError, match="the baseline 'nope' has no results file"):
        stats.compare(pair, StatsOptions(baseline="nope"))
    with pytest.raises(UserError, match="more than one results file for variant base"):
        stats.compare([pair[0], pair[0], pair[1]])
    with pytest.raises(UserError, match="at least two variants"):
        stats.compare([pair[0]])


def test_several_candidates_each_against_the_baseline() -> None:
    common: dict[str, Any] = {"blocks": 12, "boot_sd": 0.05, "ops": 1000}
    base = synthetic_results("base", baseline="base", runs=24, boots=12, seed=1, ops=1000)
    same = _side("same", 2, **common)
    better = _side("better", 3, scale=0.4, **common)
    c = stats.compare([same, better, base])
    assert c.baseline == "base"
    assert [s.variant for s in c.summaries] == ["base", "same", "better"]
    assert [x.candidate for x in c.candidates] == ["same", "better"]
    assert c.candidates[1].verdict == Verdict.IMPROVED, c.candidates[1].headline
    assert c.candidates[0].verdict not in CHANGES
    # one error budget: each headline is tested at alpha split over the candidates, unadjusted
    for x in c.candidates:
        head = x.headline
        assert head is not None and head.family == "headline"
        assert head.level == pytest.approx(0.025)
        assert head.p_adjusted == head.p_value
    # every exploratory metric of every candidate is one Holm family
    exploratory = [mc for x in c.candidates for mc in x.metrics if mc.family == "exploratory"]
    assert len(exploratory) == 2 * (len(c.candidates[0].metrics) - 1)
    ps = [mc.p_value for mc in exploratory]
    assert all(p is not None for p in ps)
    assert [mc.p_adjusted for mc in exploratory] == pytest.approx(stats.holm(ps))  # type: ignore[arg-type]
    assert all(mc.p_adjusted >= mc.p_value for mc in exploratory)  # type: ignore[operator]
    assert all(mc.level == 0.05 for mc in exploratory)
    # so the same metric of 'better' is adjusted less against the baseline alone
    alone = stats.compare([base, better]).candidates[0]
    together = c.candidates[1]
    p50 = alone.metric("p50_ms"), together.metric("p50_ms")
    assert p50[0] is not None and p50[1] is not None and p50[0].p_value == p50[1].p_value
    assert p50[0].p_adjusted < p50[1].p_adjusted  # type: ignore[operator]


def test_noise_floor_comparison() -> None:
    rng = np.random.default_rng(4)
    pair = _pair()
    aa = [_lognormal_side("base", rng), _lognormal_side("base", rng)]
    c = stats.compare(pair, noise_floor=aa)
    assert c.noise_floor is not None
    assert [s.variant for s in c.noise_floor.summaries] == ["A", "B"]
    assert c.noise_floor.labels["A"] == "A (base)"
    pct = stats.noise_floor_pct(c, "max_ms")
    assert pct is not None and pct > 0
    lonely = stats.compare(pair, noise_floor=aa[:1])
    assert lonely.noise_floor is None
    assert any("noise floor is not shown" in w for w in lonely.warnings)


def test_noise_floor_sides_follow_korch_run_naming() -> None:
    """'korch run --aa' names its sides <baseline> and <baseline>-aa; A is the baseline's."""
    rng = np.random.default_rng(6)
    first = _lognormal_side("base", rng)
    second = _lognormal_side("base", rng)
    second.variant = "base-aa"
    nf = stats.compare_noise_floor([second, first], StatsOptions())
    assert nf.labels == {"A": "A (base)", "B": "B (base-aa)"}
    assert nf.headline == "max_ms" and nf.baseline == "A"


def test_a_hang_on_a_summary_only_side_does_not_invent_tail_shares() -> None:
    # imported data carry only maxima and means: a hung run there is the worst maximum,
    # but no share of slow operations can be made up for it
    from orchestrator.stats.boots import boot_values

    rf = summary_only_results("a", baseline="a", maxima_by_boot=[[1.0, 2.0], [1.5, 1.2]])
    rf.runs.append({"boot": "a-1", "index": 2, "hang": True, "record": None})
    tabs = boot_values(stats.extract(rf), by_block=False)
    assert np.all(np.isnan(tabs["above_1ms"].values))
    assert tabs["max_ms"].values[0] == pytest.approx(2.0)  # median of 1, 2 and the hang
    assert tabs["hang_rate"].values[0] == pytest.approx(1000 / 3)


def test_unpaired_when_the_hosts_differ() -> None:
    # one plan benched a variant per machine (a CI job each): the block numbers match but
    # a block's boots did not share a host, so the per-block ratio would not cancel it
    a = _side("base", 1)
    b = _side("cand", 2, scale=0.5, prov=provenance("cand", host="another-runner"))
    head = stats.compare([a, b]).candidates[0].headline
    assert head is not None and head.method == "unpaired"


def test_a_percentile_beyond_the_histogram_on_both_sides_is_a_tie_not_a_crash() -> None:
    """Results of korch run on a starved host (both cores busy, two other guests): the
    p99.9 of a boot on each side lay above the histogram's last bucket (infinite), which
    gave inf - inf in the block's ratio and crashed the report."""
    from orchestrator.stats import StatsOptions, compare
    from orchestrator.stats import inference as inf

    data = Path(__file__).parent / "data" / "starved"
    sides = [ResultsFile.load(data / f"{v}.json") for v in ("mmap-lock", "per-vma")]
    comparison = compare(sides, StatsOptions(baseline="mmap-lock"))
    p999 = comparison.candidates[0].metric("p999_ms")
    assert p999 is not None and p999.p_value == 1.0  # one block, both sides censored: a tie
    assert inf.signed_rank_test(np.array([np.nan, 0.5, -0.2, 0.3])) <= 1.0
