#!/usr/bin/env python3
"""Shards on different runners: false alarms and power with a runner effect; asserts nothing.

A hosted runner differs from the next (CPU model, neighbours): here the second runner makes
every latency 30% higher. Three layouts of the default design (16 blocks x 1 run), judged
by production's path (``orchestrator.stats.simulate``):

* one machine (no runner effect): the reference;
* two shards of 8 blocks, the second shard on the slower runner: each block boots both
  variants on one machine, and the comparison pairs within blocks (``korch plan --shards 2``);
* one runner per variant, the candidate's the slower: the old workflow (a bench job per
  variant), whose results cannot pair and are compared unpaired over boots.

For each: the A/A false-alarm rate of the headline (called improved or regressed) and the
power for a halving (x0.5) and for -20% (x0.8), with 95% Wilson intervals.

Run with the virtualenv's python: ``.venv/bin/python ci/bench/shards.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from orchestrator.stats import Verdict
from orchestrator.stats import simulate as sim

RUNNER = 1.3
LAYOUTS = (
    ("one machine", sim.Design(16, 1), {}),
    ("2 shards, shard 2 +30%", sim.Design(16, 1), {"runner_effect": RUNNER}),
    (
        "a runner per variant, candidate's +30% (unpaired)",
        sim.Design(16, 1, paired=False),
        {"runner_effect": RUNNER, "runner_per_variant": True},
    ),
)
EFFECTS = (("A/A false alarms", 1.0), ("power x0.5", 0.5), ("power x0.8", 0.8))


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=12)
    args = ap.parse_args()
    start = time.monotonic()
    print(f"{args.repeats} repeats per cell; between-boot share 0.45; headline only")
    print(f"{'layout':52s}" + "".join(f"{name:>28s}" for name, _ in EFFECTS))
    for label, design, runner in LAYOUTS:
        cells = []
        for _, effect in EFFECTS:
            rng = np.random.default_rng(args.seed)
            scenario = sim.Scenario(effect=effect, exploratory=0, **runner)  # type: ignore[arg-type]
            hits = 0
            for _ in range(args.repeats):
                base, cand = sim.simulate(scenario, design, rng)
                head = sim.judge(base, cand, design, headline_only=True)[0]
                if effect == 1.0:
                    hits += head.verdict in (Verdict.IMPROVED, Verdict.REGRESSED)
                else:
                    hits += head.verdict == Verdict.IMPROVED
            lo, hi = wilson(hits, args.repeats)
            cells.append(f"{100 * hits / args.repeats:5.1f}% [{100 * lo:4.1f}, {100 * hi:5.1f}]")
        print(f"{label:52s}" + "".join(f"{c:>28s}" for c in cells))
    print(f"({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
