#!/usr/bin/env python3
"""korch bisect's calibration: false attributions and power, simulated and real; asserts nothing.

**Simulated** (:mod:`orchestrator.stats.simulate_bisect`, judged by the search korch runs):
series with known truth, each patch multiplying the headline by a known ratio, every patch
changing the kernel image (the hardest case: the search cannot exclude any prefix). For
each series, at the simulator's median noise (a boot's log sd 0.2), a loaded host's (0.4)
and that of 3 s runs under TCG (0.6, measured on bisect's own rounds), with normal noise,
and at 0.2 with heavy tails (Student t, 3 degrees of freedom):

* *series called changed*: how often the gate (prefix 0 against N, the A/B question
  ``korch run --until-decisive`` asks) rejects "no change": what korch could say before
  bisect, false alarms on a null series, power on the others;
* *false attribution*: the answer names a patch that moves nothing (goal: at most alpha);
* *right*: the answer names exactly the patches that move the metric;
* *partial*: it names some of them and no other;
* boots and rounds per search (mean).

Rates with 95% Wilson intervals.

**Real** (``--real``): the series of ``tests/integration/data/bisect`` on this machine's
Linux 7.2: one ``korch run`` of the move experiment (the A/B comparison of the same two
kernels, baseline and whole series, the experiment's blocks), then ``korch bisect`` of the
move series and of the comment-only series, ``--repeats`` times each in fresh directories
(builds cached after the first). Prints each answer, its wall time, and the ratio to the
A/B run's. ``--null-max-blocks N`` caps the comment-only series' rounds (a series that moves
nothing runs to the cap).

Run with the virtualenv's python: ``.venv/bin/python ci/bench/attribution.py [--repeats N] [--real]``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from orchestrator.stats import attribution as attr
from orchestrator.stats import simulate_bisect as sb
from orchestrator.stats.simulate import Scenario

sys.path.insert(0, str(Path(__file__).parent))
from verdicts import cell  # a rate with its Wilson interval, as the verdicts bench prints

ROOT = Path(__file__).resolve().parents[2]

DATA = ROOT / "tests" / "integration" / "data" / "bisect"
SERIES: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("null, 4 patches", (1.0,) * 4),
    ("null, 12 patches", (1.0,) * 12),
    ("patch 3 of 4 x0.1 (TCG's effect)", (1.0, 1.0, 0.1, 1.0)),
    ("patch 3 of 4 x0.5", (1.0, 1.0, 0.5, 1.0)),
    ("patch 3 of 4 x0.8", (1.0, 1.0, 0.8, 1.0)),
    ("patch 7 of 12 x0.5", (1.0,) * 6 + (0.5,) + (1.0,) * 5),
    ("patches 2, 4 of 4 x0.7 each", (1.0, 0.7, 1.0, 0.7)),
    ("8 patches x0.95 each", (0.95,) * 8),
)
NOISE = ((0.2, None), (0.4, None), (0.6, None), (0.2, 3.0))


def simulated(repeats: int, seed: int, max_blocks: int) -> None:
    levels = attr.Levels(0.05, max_blocks)
    print(
        f"simulated: {repeats} searches per cell, alpha 0.05, up to {max_blocks} blocks a"
        f" round, gate at {levels.level(0.05):.4g}; rates with 95% Wilson intervals"
    )
    head = (
        f"{'series':34} {'noise':10} {'series called changed':>22} {'false attribution':>22}"
        f" {'right':>22} {'partial':>22} {'boots':>6} {'rounds':>6}"
    )
    print(head)
    print("-" * len(head))
    root = np.random.SeedSequence(seed)
    for (sd, df), s1 in zip(NOISE, root.spawn(len(NOISE)), strict=True):
        noise = f"sd {sd:g}" + (f" t{df:g}" if df else "")
        for (name, ratios), s2 in zip(SERIES, s1.spawn(len(SERIES)), strict=True):
            series = sb.Series(ratios, df=df)
            scenario = replace(Scenario(), total_sd=sd)
            t = sb.run(series, scenario, levels, repeats, int(s2.generate_state(1)[0]))
            called = t.repeats - t.answers[attr.NO_CHANGE] - t.answers[attr.EQUIVALENT]
            print(
                f"{name:34} {noise:10} {cell(called, t.repeats):>22} {cell(t.wrong, t.repeats):>22}"
                f" {cell(t.right, t.repeats):>22} {cell(t.partial, t.repeats):>22}"
                f" {np.mean(t.boots):6.1f} {np.mean(t.rounds):6.2f}"
            )
        print()


def korch(args: list[str], log: Path) -> tuple[int, float]:
    t0 = time.monotonic()
    with log.open("w") as f:
        rc = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args], cwd=ROOT, stdout=f, stderr=f
        ).returncode
    return rc, time.monotonic() - t0


def real(repeats: int, extra: list[str], null_max_blocks: int | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="korch-bench-bisect-"))
    print(f"real: work directory {work} (korch options: {' '.join(extra) or 'the experiments'})")
    move, comments = DATA / "move.yaml", DATA / "comments.yaml"
    rc, ab = korch(["run", str(move), "--out", str(work / "ab"), *extra], work / "ab.log")
    comp = json.loads((work / "ab" / "comparison.json").read_text()) if rc in (0, 1, 3) else {}
    cand = (comp.get("candidates") or [{}])[0]
    head = next((m for m in cand.get("metrics", []) if m.get("metric") == comp.get("headline")), {})
    print(
        f"A/B korch run (mmap-lock against the whole series): exit {rc}, {ab:.0f} s,"
        f" {cand.get('verdict', '?')}, {comp.get('headline')} {head.get('change_pct', math.nan):+.1f}%"
        f" after {head.get('blocks', '?')} blocks"
    )
    null_opts = ["--max-blocks", str(null_max_blocks)] if null_max_blocks else []
    for name, exp, opts in (("move", move, []), ("comments", comments, null_opts)):
        for i in range(1, repeats + 1):
            out = work / f"{name}-{i}"
            rc, took = korch(
                ["bisect", str(exp), "--out", str(out), *extra, *opts], work / f"{name}-{i}.log"
            )
            state = (
                json.loads((out / "bisect.json").read_text())
                if (out / "bisect.json").exists()
                else {}
            )
            answer = state.get("answer") or {}
            rounds = state.get("rounds") or []
            blocks = [r["blocks"] for r in rounds]
            print(
                f"bisect {name} #{i}: exit {rc}, {took:.0f} s ({took / ab:.2f} x the A/B run),"
                f" answer {answer.get('kind', '?')}, named {answer.get('named', [])},"
                f" rounds {len(rounds)} with blocks {blocks}, effective prefixes"
                f" {state.get('effective')}, builds {state.get('timings', {}).get('build_s')} s"
            )
    print(f"logs and directories kept in {work}")
    shutil.rmtree(work / "ab" / "boot", ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=None,
                        help="simulated searches per cell (default 1000), real bisects (default 3)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--max-blocks", type=int, default=16, help="simulated rounds' most blocks")
    parser.add_argument(
        "--real", action="store_true", help="run the real bisects too (an hour or more)"
    )
    parser.add_argument("--only-real", action="store_true", help="skip the simulation")
    parser.add_argument(
        "--null-max-blocks",
        type=int,
        help="real: the comment-only series' most blocks (default: the experiment's); a"
        " series that moves nothing runs every round to it",
    )
    parser.add_argument("korch_options", nargs="*",
                        help="after --: options for the real korch run and bisects, e.g. --accel tcg")  # fmt: skip
    args = parser.parse_args()
    t0 = time.perf_counter()
    if not args.only_real:
        simulated(args.repeats or 1000, args.seed, args.max_blocks)
    if args.real or args.only_real:
        real(args.repeats or 3, args.korch_options, args.null_max_blocks)
    print(f"took {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
