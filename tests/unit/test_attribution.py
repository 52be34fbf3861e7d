"""The bisect search (orchestrator.stats.attribution) on series with known truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.stats import attribution as attr
from orchestrator.stats import simulate_bisect as sb
from orchestrator.stats.simulate import Scenario

LEVELS = attr.Levels(0.05, 12)


def searcher(ratios: list[float], sd: float, seed: int = 1):
    """A block source: prefix k's log level plus a block drift and each boot's noise."""
    rng = np.random.default_rng(seed)
    level = np.concatenate([[0.0], np.cumsum(np.log(ratios))])

    def block(rnd: attr.Round, n: int) -> dict[int, float]:
        drift = rng.normal(0, 0.05)
        return {p: float(level[p] + drift + rng.normal(0, sd)) for p in rnd.points}

    return block


def test_prefixes_of_the_same_image_are_one_kernel() -> None:
    assert attr.effective_prefixes(["a", "a", "b", "b", "c"]) == [0, 2, 4]
    assert attr.effective_prefixes(["a", "a", "a"]) == [0]
    # a patch that reverts an earlier one builds an image seen before, but a new one for
    # its neighbour: it is kept
    assert attr.effective_prefixes(["a", "b", "a"]) == [0, 1, 2]


def test_a_round_boots_every_prefix_of_a_short_range_and_four_segments_of_a_long_one() -> None:
    short = attr.make_round(1, [0, 1, 2, 3, 4], 0, 4, gate=True)
    assert short.points == (0, 1, 2, 3, 4) and short.full and short.gate
    long = attr.make_round(1, list(range(13)), 0, 12)
    assert long.points == (0, 3, 6, 9, 12) and not long.full
    # effective prefixes only: 2 and 5 build the same image as the one before them
    sparse = attr.make_round(2, [0, 1, 3, 4, 6], 1, 6)
    assert sparse.points == (1, 3, 4, 6) and sparse.full


def test_one_patch_carrying_a_large_change_is_named() -> None:
    out = attr.search(list(range(5)), searcher([1, 1, 0.1, 1], 0.2), LEVELS)
    assert out.answer == attr.NAMED and out.named == (3,)
    _, j = out.rounds[-1]
    assert j.gate is not None and j.gate.rejected and j.gate.est < 0
    step = j.steps[j.chosen[0]]
    assert step.rejected and math.exp(step.high) < 0.5
    # the rest of the series is shown smaller than the step's change
    rest = j.rests[j.chosen[0]]
    assert rest is not None and rest.far < step.near
    # stopped at the first block that decided, not at the most blocks
    assert j.blocks < LEVELS.max_blocks and out.boots == j.blocks * 5


def test_a_long_series_is_narrowed_in_rounds() -> None:
    ratios = [1.0] * 12
    ratios[6] = 0.3  # patch 7
    out = attr.search(list(range(13)), searcher(ratios, 0.1), LEVELS)
    assert out.answer == attr.NAMED and out.named == (7,)
    assert [r.points for r, _ in out.rounds] == [(0, 3, 6, 9, 12), (6, 7, 8, 9)]
    assert out.rounds[0][1].outcome == attr.NARROW
    assert out.rounds[1][0].direction == -1


def test_a_series_that_changes_nothing_names_no_patch() -> None:
    out = attr.search(list(range(5)), searcher([1, 1, 1, 1], 0.2, seed=3), LEVELS)
    assert out.answer == attr.NO_CHANGE and out.named == ()
    assert out.rounds[0][1].blocks == LEVELS.max_blocks


def test_a_quiet_null_series_ends_equivalent() -> None:
    out = attr.search(list(range(3)), searcher([1, 1], 0.002), LEVELS)
    assert out.answer == attr.EQUIVALENT and out.named == ()
    assert out.rounds[0][1].blocks < LEVELS.max_blocks


def test_two_equal_halves_are_several_patches_not_one() -> None:
    out = attr.search(list(range(5)), searcher([1, 0.5, 1, 0.5], 0.05), LEVELS)
    assert out.answer == attr.SEVERAL
    assert set(out.named) == {2, 4}


def test_a_step_against_the_series_direction_is_not_a_single_answer() -> None:
    # patch 1 raises the metric, patch 3 lowers it more: the series lowers it, but patch 3
    # alone does not carry the change
    out = attr.search(list(range(5)), searcher([2.0, 1, 0.1, 1], 0.05), LEVELS)
    assert out.answer == attr.SEVERAL and set(out.named) == {1, 3}


def test_a_range_without_a_decisive_segment_falls_back_to_every_prefix() -> None:
    # eight small steps of 10%: the series moves, no segment dominates
    ratios = [0.9] * 8
    out = attr.search(list(range(9)), searcher(ratios, 0.02), attr.Levels(0.05, 8))
    kinds = [j.outcome for _, j in out.rounds]
    assert kinds[0] in (attr.FALLBACK, attr.NARROW)
    if kinds[0] == attr.FALLBACK:
        assert out.rounds[1][0].full and out.rounds[1][0].points == tuple(range(9))
    assert out.answer in (attr.SEVERAL, attr.SPREAD)


def test_a_series_whose_images_never_change_needs_no_boot() -> None:
    def never(rnd: attr.Round, n: int) -> dict[int, float]:
        raise AssertionError("nothing should boot")

    out = attr.search([0], never, LEVELS)
    assert out.answer == attr.NO_IMAGE_CHANGE and out.boots == 0


def test_the_judge_waits_for_the_gate() -> None:
    # a segment that moves while the gate has too few blocks to reject: go on
    rnd = attr.first_round([0, 1, 2])
    logs = {0: np.zeros(3), 1: np.full(3, -2.0), 2: np.full(3, -2.0)}
    j = attr.judge(rnd, logs, [0, 1, 2], LEVELS)
    assert j.outcome == attr.CONTINUE and j.gate is not None and not j.gate.rejected


def test_missing_blocks_are_left_out_of_a_comparison() -> None:
    d = np.array([-1.0, math.nan, -1.1, -0.9])
    e = attr.estimate(0, 1, d, 0.05)
    assert e.blocks == 3


@pytest.mark.parametrize(("ratios", "movers"), [((1, 1, 1, 1), ()), ((1, 1, 0.5, 1), (3,))])
def test_the_simulator_tallies_against_the_truth(ratios: tuple[float, ...], movers: tuple) -> None:
    series = sb.Series(ratios)
    assert series.movers == movers
    t = sb.run(series, Scenario(), attr.Levels(0.05, 12), repeats=40, seed=2)
    assert t.repeats == 40 and sum(t.answers.values()) == 40
    if not movers:
        # a null series: at most alpha of searches may name anything (seeded, 40 repeats)
        assert t.right == 0 and t.wrong <= 4
        assert t.answers[attr.NO_CHANGE] + t.answers[attr.EQUIVALENT] >= 36
    else:
        assert t.right >= 30 and t.wrong <= 4
    assert all(b >= 2 for b in t.boots)


def test_the_localisation_budget_is_split_over_the_rounds_a_search_takes() -> None:
    assert [attr.planned_rounds(k) for k in (1, 4, 5, 16, 17, 64, 65)] == [1, 1, 2, 2, 3, 3, 4]
    # a 12-step range takes two rounds, so its segments are tested at half the level
    rnd = attr.first_round(list(range(13)))
    logs = {p: np.full(12, -0.5 * (p >= 7)) + 0.01 * np.arange(12) % 0.03 for p in rnd.points}
    j = attr.judge(rnd, logs, list(range(13)), LEVELS)
    assert j.steps[0].level == LEVELS.level(0.05 / 2 / 4)
