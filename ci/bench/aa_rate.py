#!/usr/bin/env python3
"""The default design's A/A false-alarm rate, precisely; asserts nothing.

``ci/bench/verdicts.py`` measures every design at a few thousand repeats, where one cell's
rate can stray 1.5 points from its truth by chance. This bench measures one thing with tens
of thousands of repeats: how often the headline of the default design (16 blocks x 1 run,
paired, signed-rank at alpha 0.05) is called improved or regressed when nothing changed,
at between-boot shares 0.2, 0.45 and 0.67, with the simulator's position effect (the boot
that goes first in a block shifted by 0.02 on the log scale) and without it, for two seeds.

The exact rate of the signed-rank test with 16 untied pairs at 0.05 is 4.43%. A rate
significantly above it would mean the simulated data break the test's assumption that a
block's log ratio is symmetric about zero under A/A (a position effect that did not cancel,
say); the balanced order makes each pair of blocks put either variant first once, which
should keep it symmetric.

Run with the virtualenv's python: ``.venv/bin/python ci/bench/aa_rate.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from orchestrator.stats import Verdict
from orchestrator.stats import simulate as sim

sys.path.insert(0, str(Path(__file__).parent))
from verdicts import wilson


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=40000, help="A/A runs per cell (default 40000)")
    ap.add_argument("--seeds", default="11,12", help="comma-separated seeds (default 11,12)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    design = sim.Design(16, 1)
    start = time.monotonic()
    print(
        f"A/A headline false alarms, 16 blocks x 1 run (paired), alpha 0.05, {args.repeats} runs a cell"
    )
    print("exact rate of the signed-rank test on 16 untied pairs: 4.43%")
    for share in (0.2, 0.45, 0.67):
        for position in (0.02, 0.0):
            for seed in seeds:
                rng = np.random.default_rng(seed)
                scenario = sim.Scenario(
                    between_share=share, position_effect=position, exploratory=0
                )
                hits = 0
                for _ in range(args.repeats):
                    base, cand = sim.simulate(scenario, design, rng)
                    head = sim.judge(base, cand, design, headline_only=True)[0]
                    hits += head.verdict in (Verdict.IMPROVED, Verdict.REGRESSED)
                lo, hi = wilson(hits, args.repeats)
                print(
                    f"between_share {share:<4}  position {position:<4}  seed {seed}:"
                    f"  {100 * hits / args.repeats:5.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]",
                    flush=True,
                )
    print(f"elapsed {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
