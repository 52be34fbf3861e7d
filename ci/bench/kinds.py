#!/usr/bin/env python3
"""A/A false alarms and power of the verdict for each metric kind a command workload can
declare; asserts nothing.

The command workload's metrics go through the same statistics as maps-contention's (one
value per boot, paired by block, signed-rank on the log scale), but their data can be
discrete: counts with many zeros, pass/fail results, shares that are often 0. Each kind's
metric is built by the command workload itself (``build_metric``: its log offset and worst
value), and each draw is judged by production's ``compare_metric`` and ``decide``: 16 blocks
of 1 run a side at alpha 0.05, smallest effect 5%. A block shares a random shift between
its two boots (the host's state then), as real blocks do.

For each kind it prints how often an A/A comparison (both sides drawn alike) is called
improved or regressed, or equivalent, how often a real change is called in its direction
(with 95% Wilson intervals) and how often it is called equivalent. Ties make the signed-rank test conservative, never liberal: its A/A rate
should stay at or below the untied test's 4.43% for 16 blocks.

Run with the virtualenv's python: ``.venv/bin/python ci/bench/kinds.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from orchestrator.stats import Verdict
from orchestrator.stats.boots import BootValues
from orchestrator.stats.verdicts import compare_metric, decide
from orchestrator.workloads.command.workload import build_metric

sys.path.insert(0, str(Path(__file__).parent))
from verdicts import wilson

BLOCKS = 16
Draw = Callable[[np.random.Generator, np.ndarray, float], np.ndarray]


def latency(rng: np.random.Generator, shift: np.ndarray, effect: float) -> np.ndarray:
    return np.exp(np.log(800.0) + shift + rng.normal(0, 0.2, shift.size)) * effect


def throughput(rng: np.random.Generator, shift: np.ndarray, effect: float) -> np.ndarray:
    return np.exp(np.log(300.0) - shift + rng.normal(0, 0.2, shift.size)) * effect


def count(rng: np.random.Generator, shift: np.ndarray, effect: float) -> np.ndarray:
    # rare events: mostly 0, a few 1s and 2s
    return rng.poisson(0.5 * np.exp(shift) * effect).astype(float)


def share(rng: np.random.Generator, shift: np.ndarray, effect: float) -> np.ndarray:
    # per mille of slow operations out of 2000: often 0
    p = np.clip(0.0005 * np.exp(shift) * effect, 0, 1)
    return rng.binomial(2000, p) / 2.0


def pass_fail(rng: np.random.Generator, shift: np.ndarray, effect: float) -> np.ndarray:
    # a run fails with probability 0.1 (x effect): 1000 per mille failed, else 0
    return np.where(rng.random(shift.size) < 0.1 * effect, 1000.0, 0.0)


KINDS: list[tuple[str, dict[str, str], Draw, float, str]] = [
    # name, metric spec, draw, effect, the verdict a real change should get
    ("latency (lognormal, us)", {"unit": "us", "kind": "latency"}, latency, 1.25, "regressed"),
    ("throughput (lognormal)", {"unit": "ops/s", "kind": "throughput"}, throughput, 0.8,
     "regressed"),
    ("count (Poisson, mean 0.5)", {"unit": "events", "kind": "count"}, count, 3.0, "regressed"),
    ("share (binomial, often 0)", {"unit": "‰", "kind": "share"}, share, 3.0, "regressed"),
    ("pass/fail (10% failing)", {"unit": "", "kind": "pass/fail"}, pass_fail, 5.0, "regressed"),
]  # fmt: skip


def judge(m: object, base: np.ndarray, cand: np.ndarray) -> Verdict:
    blocks = np.arange(1, BLOCKS + 1)
    units = tuple(f"block {b}" for b in blocks)
    mc = compare_metric(
        m,  # type: ignore[arg-type]
        "headline",
        BootValues(units, blocks, base),
        BootValues(units, blocks, cand),
        paired=True,
        level=0.05,
        runs=(BLOCKS, BLOCKS),
    )
    return Verdict.INCONCLUSIVE if mc is None else decide(mc, 0.05).verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2000, help="draws per cell (default 2000)")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.monotonic()
    print(f"{BLOCKS} blocks x 1 run, paired, alpha 0.05; {args.repeats} draws per cell")
    print(
        f"{'kind':28} {'A/A called':>22} {'A/A equivalent':>16} {'power':>22}"
        f" {'change: equivalent':>20}  effect"
    )
    for name, spec, draw, effect, wanted in KINDS:
        m = build_metric("x", spec, 60.0)
        alarms = equivalent = hits = missed = 0
        for _ in range(args.repeats):
            shift = rng.normal(0, 0.1, BLOCKS)
            v = judge(m, draw(rng, shift, 1.0), draw(rng, shift, 1.0))
            alarms += v in (Verdict.IMPROVED, Verdict.REGRESSED)
            equivalent += v == Verdict.EQUIVALENT
            shift = rng.normal(0, 0.1, BLOCKS)
            v = judge(m, draw(rng, shift, 1.0), draw(rng, shift, effect))
            hits += str(v) == wanted
            missed += v == Verdict.EQUIVALENT
        lo, hi = wilson(alarms, args.repeats)
        plo, phi = wilson(hits, args.repeats)
        print(
            f"{name:28} {100 * alarms / args.repeats:5.2f}% [{100 * lo:4.2f}, {100 * hi:4.2f}]"
            f" {100 * equivalent / args.repeats:15.1f}%"
            f" {100 * hits / args.repeats:6.1f}% [{100 * plo:4.1f}, {100 * phi:4.1f}]"
            f" {100 * missed / args.repeats:19.2f}%  x{effect:g}"
        )
    print(f"({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
