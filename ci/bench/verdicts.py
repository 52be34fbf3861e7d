#!/usr/bin/env python3
"""Verdict calibration benchmark: false alarms and power of every design; asserts nothing.

Draws hierarchical results with known truth (:mod:`orchestrator.stats.simulate`: blocks,
boots, runs, a drift per block, a position effect, 16 correlated metrics) and judges each by
production's path (``compare_metric``, ``adjust_exploratory``, ``decide``), for:

* the old unpaired designs (boots per side, rank-sum test over boot values): 1 boot x 24 runs,
  3 boots x 8 runs (the old default), 6 boots x 4 runs;
* the paired designs (per-block log ratios, signed-rank test): 16 blocks x 1 run (the new
  default), 8 blocks x 2 runs;
* the sequential design (``--until-decisive --max-blocks 16``, 1 run a boot): the headline
  at the group-sequential level after every block, stopping at the first decisive verdict.

For each, at between-boot shares 0.2, 0.45 and 0.67 of the noise: the A/A false-alarm rate
of the headline (called improved or regressed), the rate at which any exploratory metric is
called (Holm over the 15 others), how often A/A is found equivalent, and the power to detect
a halving (x0.5) and a 20% change either way (x0.8, x1.25), each with a 95% Wilson interval.
First the real data's variance components (``ci/bench/data/tcg``) next to the
simulator's.

Run with the virtualenv's python: ``.venv/bin/python ci/bench/verdicts.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from orchestrator.stats import Verdict
from orchestrator.stats import inference as inf
from orchestrator.stats import simulate as sim

DATA = Path(__file__).resolve().parent / "data" / "tcg"  # korch's own runs under TCG
SHARES = (0.2, 0.45, 0.67)
MAX_BLOCKS = 16
DESIGNS: tuple[tuple[str, sim.Design], ...] = (
    ("1 boot x 24 runs (unpaired)", sim.Design(1, 24, paired=False)),
    ("3 boots x 8 runs (unpaired, old default)", sim.Design(3, 8, paired=False)),
    ("6 boots x 4 runs (unpaired)", sim.Design(6, 4, paired=False)),
    ("16 blocks x 1 run (paired, new default)", sim.Design(16, 1)),
    ("8 blocks x 2 runs (paired)", sim.Design(8, 2)),
)
SEQUENTIAL = f"until decisive, max {MAX_BLOCKS} blocks (paired)"
# (column, true ratio of the headline, the verdict that counts as a hit)
EFFECTS: tuple[tuple[str, float, Verdict], ...] = (
    ("power x0.5", 0.5, Verdict.IMPROVED),
    ("power x0.8", 0.8, Verdict.IMPROVED),
    ("power x1.25", 1.25, Verdict.REGRESSED),
)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_size(n: int, level: float) -> float:
    """The exact signed-rank test's false-alarm rate on ``n`` untied blocks at ``level``."""
    cdf = np.asarray(inf._untied_cdf(n))
    pmf = np.diff(np.concatenate(([0.0], cdf)))
    upper = 1.0 - np.concatenate(([0.0], cdf[:-1]))  # P(T+ >= t)
    p = np.minimum(1.0, 2 * np.minimum(cdf, upper))
    return float(pmf[p <= level + 1e-12].sum())


def unpaired_size(n: int, m: int, level: float) -> float:
    """The exact rank-sum test's false-alarm rate with ``n`` and ``m`` untied boots."""
    cdf = np.asarray(inf._rank_sum_cdf(n, m))
    pmf = np.diff(np.concatenate(([0.0], cdf)))
    upper = 1.0 - np.concatenate(([0.0], cdf[:-1]))
    p = np.minimum(1.0, 2 * np.minimum(cdf, upper))
    return float(pmf[p <= level + 1e-12].sum())


def sequential_size(level: float, max_blocks: int, paths: int = 200_000) -> float:
    """Family-wise false-alarm rate of looking after every block at ``level``, from the
    test's own null distribution (another seed than the level's calibration)."""
    mins = inf._null_paths(max_blocks, paths, seed=1).min(axis=1)
    return float(np.mean(mins <= level + 1e-12))


def cell(hits: int, n: int) -> str:
    low, high = wilson(hits, n)
    return f"{100 * hits / n:5.1f}% [{100 * low:4.1f},{100 * high:5.1f}]"


@dataclass
class Tally:
    n: int = 0
    n_aa: int = 0  # A/A repeats: more than the others, the goals bound their upper interval
    headline_false: int = 0
    exploratory_false: int = 0
    equivalent: int = 0
    hits: dict[str, int] = field(default_factory=dict)
    blocks: dict[str, list[int]] = field(default_factory=dict)


def run_design(
    design: sim.Design | None,
    share: float,
    repeats: int,
    seed: np.random.SeedSequence,
    aa_repeats: int | None = None,
) -> Tally:
    """A/A (``aa_repeats`` times) and the three effects (``repeats`` times each) for one
    design (``None``: the sequential one)."""
    seeds = seed.spawn(1 + len(EFFECTS))
    tally = Tally(n=repeats, n_aa=aa_repeats or repeats)
    base = sim.Scenario(between_share=share)

    def once(scenario: sim.Scenario, rng: np.random.Generator) -> tuple[Verdict, bool, int]:
        if design is None:
            out = sim.sequential_outcome(scenario, MAX_BLOCKS, rng)
            return out.verdict, out.exploratory_called, out.blocks
        verdict, called = sim.verdicts(scenario, design, rng)
        return verdict, called, design.blocks

    rng = np.random.default_rng(seeds[0])
    used = []
    for _ in range(tally.n_aa):
        verdict, called, blocks = once(base, rng)
        tally.headline_false += verdict in (Verdict.IMPROVED, Verdict.REGRESSED)
        tally.exploratory_false += called
        tally.equivalent += verdict == Verdict.EQUIVALENT
        used.append(blocks)
    tally.blocks["A/A"] = used
    for (name, effect, hit), s in zip(EFFECTS, seeds[1:], strict=True):
        rng = np.random.default_rng(s)
        scenario = replace(base, effect=effect)
        hits, used = 0, []
        for _ in range(repeats):
            verdict, _, blocks = once(scenario, rng)
            hits += verdict == hit
            used.append(blocks)
        tally.hits[name] = hits
        tally.blocks[name] = used
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="simulations per cell (default 1000)"
    )
    parser.add_argument("--seed", type=int, default=20240611, help="seed (default 20240611)")
    parser.add_argument("--quick", action="store_true", help="100 repeats unless --repeats says")
    parser.add_argument(
        "--aa-repeats",
        type=int,
        default=None,
        help="A/A simulations per cell (default 3 x --repeats: the false-alarm goals bound the"
        " upper end of their interval, which needs more repeats than power does)",
    )
    args = parser.parse_args()
    repeats = args.repeats or (100 if args.quick else 1000)
    aa_repeats = args.aa_repeats or 3 * repeats
    t0 = time.perf_counter()
    root = np.random.SeedSequence(args.seed)
    seq_level = inf.sequential_level(0.05, MAX_BLOCKS)

    # -- variance components: the real data and the simulator ----------------
    print("variance components of log(above_1ms) per run (one-way ANOVA over boots)")
    files = sorted(DATA.glob("*.json"))
    if files:
        print(f"real results files ({DATA}):")
        for row in sim.components_from_results(files):
            print("  " + sim.format_components(row))
    else:
        print(f"  (no results files in {DATA})")
    default = sim.Scenario()
    print(
        f"simulator (total_sd {default.total_sd:g}, block_sd {default.block_sd:g} counted as"
        f" between boots, position {default.position_effect:g}; mean of 200 draws of 3 x 8):"
    )
    comp_rng = np.random.default_rng(root.spawn(1)[0])
    for share in SHARES:
        row = sim.simulated_components(replace(default, between_share=share), comp_rng)
        print("  " + sim.format_components(row))

    # -- the designs -----------------------------------------------------------
    print(
        f"\n{repeats} simulations per effect and {aa_repeats} per A/A cell, alpha 0.05 (sequential: headline at"
        f" {seq_level:.4g} after every block), smallest effect 5%,"
        f" {sim.Scenario().exploratory} exploratory metrics correlated"
        f" {sim.Scenario().metric_corr:g}; hits and false alarms with 95% Wilson intervals"
    )
    columns = ["A/A headline called", "A/A exploratory called", "A/A equiv."]
    columns += [name for name, _, _ in EFFECTS]
    print(
        "the tests' exact A/A rates on untied data (what the A/A column should show, up to"
        " the simulation's error):"
    )
    print(
        f"  signed-rank, 16 blocks: {100 * paired_size(16, 0.05):.2f}%;"
        f" 8 blocks: {100 * paired_size(8, 0.05):.2f}%;"
        f" rank-sum 6 + 6 boots: {100 * unpaired_size(6, 6, 0.05):.2f}%;"
        f" 3 + 3 and 1 + 1 boots: {100 * unpaired_size(3, 3, 0.05):.2f}% (cannot reach 0.05);"
        f" sequential, max {MAX_BLOCKS} blocks at {seq_level:.4g}:"
        f" {100 * sequential_size(seq_level, MAX_BLOCKS):.2f}% ± 0.05 (200000 null paths)"
    )
    header = f"{'design':42s} " + " ".join(f"{c:>22s}" for c in columns)
    warnings: list[str] = []  # significantly above 5%: the interval's lower end too
    notes: list[str] = []  # above 5%, but 5% inside the interval
    for share, share_seed in zip(SHARES, root.spawn(len(SHARES)), strict=True):
        print(f"\nbetween_share {share:g}")
        print(header)
        rows = [*DESIGNS, (SEQUENTIAL, None)]
        for (label, design), seed in zip(rows, share_seed.spawn(len(rows)), strict=True):
            t = run_design(design, share, repeats, seed, aa_repeats)
            cells = [
                cell(t.headline_false, t.n_aa),
                cell(t.exploratory_false, t.n_aa),
                cell(t.equivalent, t.n_aa),
                *(cell(t.hits[name], t.n) for name, _, _ in EFFECTS),
            ]
            print(f"{label:42s} " + " ".join(f"{c:>22s}" for c in cells))
            if design is None:
                means = ", ".join(f"{k} {np.mean(v):.1f}" for k, v in t.blocks.items())
                print(f"{'':42s} mean blocks used: {means}")
            paired = design is None or design.paired
            for what, hits in (
                ("headline", t.headline_false),
                ("exploratory", t.exploratory_false),
            ):
                if paired and hits / t.n_aa > 0.05:
                    text = (
                        f"between_share {share:g}, {label}: A/A {what} false alarms"
                        f" {cell(hits, t.n_aa).strip()}"
                    )
                    (warnings if wilson(hits, t.n_aa)[0] > 0.05 else notes).append(text)
    print()
    for note in notes:
        print(f"above 5%, but not significantly (5% inside the interval): {note}")
    for w in warnings:
        print(f"CHECK, significantly above 5%: {w}")
    if not warnings:
        print("no paired design's A/A false-alarm rate is significantly above 5%")
    print(f"elapsed {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
