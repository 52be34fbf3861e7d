"""The verdict simulator (orchestrator.stats.simulate): its model, and seeded, small versions
of the calibration bounds that ci/bench/verdicts.py measures at 1000 repeats."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from orchestrator.stats import DECISIVE, Verdict
from orchestrator.stats import inference as inf
from orchestrator.stats import simulate as sim
from orchestrator.stats.simulate import METRICS

DATA = Path(__file__).resolve().parents[2] / "ci" / "bench" / "data" / "tcg"
DEFAULT = sim.Design(blocks=16, runs=1)  # korch's default: 16 blocks of 1 run, paired
CALLED = (Verdict.IMPROVED, Verdict.REGRESSED)

# ---------------------------------------------------------------- the model


def test_simulate_shapes_and_units() -> None:
    rng = np.random.default_rng(1)
    base, cand = sim.simulate(sim.Scenario(), sim.Design(5, 3), rng)
    assert set(base) == set(cand) == {m.key for m in METRICS}
    head = base[sim.HEADLINE]
    assert head.units == tuple(f"block {i}" for i in range(5))
    assert head.blocks.tolist() == [0, 1, 2, 3, 4]
    assert np.all(head.values > 0) and np.all(head.values <= 1000)
    assert np.all(base["hang_rate"].values == 0)
    base, _ = sim.simulate(sim.Scenario(exploratory=3), sim.Design(4, 2, paired=False), rng)
    assert len(base) == 4
    assert base[sim.HEADLINE].blocks.tolist() == [-1] * 4
    assert base[sim.HEADLINE].units == tuple(f"baseline-{i}" for i in range(1, 5))


def test_orders_are_balanced_per_pair_of_blocks() -> None:
    # no noise, no effect: the per-block log ratio is +-position, by who went first
    quiet = sim.Scenario(total_sd=0.0, block_sd=0.0, position_effect=0.1, exploratory=0)
    rng = np.random.default_rng(2)
    for _ in range(20):
        base, cand = sim.simulate(quiet, sim.Design(16, 1), rng)
        d = np.log(cand[sim.HEADLINE].values) - np.log(base[sim.HEADLINE].values)
        assert np.allclose(np.abs(d), 0.1)
        assert np.allclose(d[0::2], -d[1::2])  # each pair: once each variant first


def test_effect_and_drift() -> None:
    rng = np.random.default_rng(3)
    halved = sim.Scenario(effect=0.5, total_sd=0.0, position_effect=0.0, block_sd=0.3)
    base, cand = sim.simulate(halved, sim.Design(6, 2), rng)
    ratio = cand[sim.HEADLINE].values / base[sim.HEADLINE].values
    assert np.allclose(ratio, 0.5)  # the drift is shared by a block's two boots
    assert np.std(np.log(base[sim.HEADLINE].values)) > 0.05
    # the other metrics keep their own ratio (1 unless stated)
    assert np.allclose(cand["max_ms"].values / base["max_ms"].values, 1.0)


def test_metrics_are_correlated() -> None:
    rng = np.random.default_rng(4)
    scenario = sim.Scenario(metric_corr=0.5, block_sd=0.0, position_effect=0.0)
    head: list[float] = []
    other: list[float] = []
    for _ in range(60):
        base, _ = sim.simulate(scenario, sim.Design(20, 1), rng)
        head.extend(np.log(base[sim.HEADLINE].values))
        other.extend(np.log(base["p99_ms"].values))
    assert np.corrcoef(head, other)[0, 1] == pytest.approx(0.5, abs=0.08)


def test_hangs_count_as_the_worst_value() -> None:
    rng = np.random.default_rng(5)
    base, _ = sim.simulate(sim.Scenario(hang_prob=0.3), sim.Design(8, 4), rng)
    rate = base["hang_rate"].values
    assert np.any(rate > 0) and np.all(rate <= 1000)
    assert np.all(np.isin(rate, [0, 250, 500, 750, 1000]))
    # a boot whose runs mostly hung takes the worst value (the hang grace past 10 s)
    mostly = rate > 500
    if mostly.any():
        assert np.all(base["max_ms"].values[mostly] == 15_000.0)
    verdict, _ = sim.verdicts(sim.Scenario(hang_prob=0.3), DEFAULT, rng)
    assert isinstance(verdict, Verdict)


def test_scenario_and_design_validation() -> None:
    with pytest.raises(ValueError):
        sim.Scenario(between_share=1.5)
    with pytest.raises(ValueError):
        sim.Scenario(effect=0.0)
    with pytest.raises(ValueError):
        sim.Design(0, 1)
    assert sim.Design(16, 1).label == "16 blocks x 1 run (paired)"
    assert sim.Design(3, 8, paired=False).label == "3 boots x 8 runs (unpaired)"


# ---------------------------------------------------------------- variance components


def test_simulated_components_recover_the_scenario() -> None:
    rng = np.random.default_rng(6)
    scenario = sim.Scenario(between_share=0.5, total_sd=0.2, block_sd=0.0)
    found = sim.simulated_components(scenario, rng, boots=4, runs=8, repeats=300)
    assert found["between"] == pytest.approx(0.02, rel=0.2)
    assert found["within"] == pytest.approx(0.02, rel=0.1)
    assert found["total_sd"] == pytest.approx(0.2, rel=0.1)


def test_components_from_real_results() -> None:
    rows = sim.components_from_results(sorted(DATA.glob("*.json")))
    assert rows
    for row in rows:
        assert row["boots"] >= 2
        assert row["within"] is not None and 0 < row["within"] < 1
        assert row["between"] is not None and 0 <= row["between"] < 1
    # the default total_sd sits inside the real files' range of per-run sd
    sds = sorted(r["total_sd"] for r in rows)
    assert sds[0] <= sim.Scenario().total_sd <= sds[-1]


# ---------------------------------------------------------------- calibration, seeded


def rates(scenario: sim.Scenario, design: sim.Design, repeats: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    out = [sim.verdicts(scenario, design, rng) for _ in range(repeats)]
    return {
        "called": sum(v in CALLED for v, _ in out) / repeats,
        "improved": sum(v == Verdict.IMPROVED for v, _ in out) / repeats,
        "exploratory": sum(e for _, e in out) / repeats,
    }


def test_aa_false_alarms_at_the_default_design() -> None:
    r = rates(sim.Scenario(), DEFAULT, 200, seed=101)
    assert r["called"] <= 0.1
    assert r["exploratory"] <= 0.1


def test_one_boot_a_side_never_calls() -> None:
    r = rates(sim.Scenario(effect=0.5), sim.Design(1, 24, paired=False), 50, seed=102)
    assert r["called"] == 0.0
    # nor can 3 boots against 3 at 0.05 (the smallest exact p is 0.1)
    r = rates(sim.Scenario(effect=0.5), sim.Design(3, 8, paired=False), 50, seed=103)
    assert r["called"] == 0.0


def test_halving_is_detected_at_the_default_design() -> None:
    r = rates(sim.Scenario(effect=0.5), DEFAULT, 200, seed=104)
    assert r["improved"] >= 0.8


def test_sequential_run() -> None:
    rng = np.random.default_rng(105)
    level = inf.sequential_level(0.05, 16)
    halving = sim.sequential_outcome(sim.Scenario(effect=0.5), 16, rng)
    verdict, used = halving.verdict, halving.blocks
    assert verdict == Verdict.IMPROVED
    # it stopped at the first block able to reach the sequential level
    assert inf.blocks_to_reach(level) <= used < 16
    outcomes = [sim.sequential_outcome(sim.Scenario(), 16, rng) for _ in range(100)]
    assert all(1 <= o.blocks <= 16 for o in outcomes)
    assert all(o.verdict in DECISIVE or o.blocks == 16 for o in outcomes)
    assert sum(o.verdict in CALLED for o in outcomes) / 100 <= 0.1


def test_sequential_level_is_used_for_the_headline() -> None:
    design = sim.Design(16, 1, max_blocks=16)
    assert sim.head_level(design, 0.05) == inf.sequential_level(0.05, 16)
    assert sim.head_level(DEFAULT, 0.05) == 0.05
    base, cand = sim.simulate(sim.Scenario(), design, np.random.default_rng(106))
    decided = sim.judge(base, cand, design)
    head = next(mc for mc in decided if mc.family == "headline")
    assert head.metric == sim.HEADLINE and head.level == sim.head_level(design, 0.05)
    assert all(mc.level == 0.05 for mc in decided if mc.family == "exploratory")
    assert not math.isnan(head.p_value or math.nan)
