#!/usr/bin/env python3
"""The statistics as they were before the boot-level rewrite, on simulated hierarchical runs.

The "before" half of the calibration (``ci/bench/verdicts.py`` is the "after"): it checks
out ``orchestrator/`` at a commit (default 5a76a92, the last one with run-level verdicts)
into a temporary directory with ``git archive`` and feeds its ``stats.compare`` results
files drawn from the same model as the simulator: per side ``boots`` boots of ``runs`` runs,
per-run log value = a boot effect (a share ``s`` of the variance) + run noise (``1 - s``),
total sd 0.2 (the median of korch's own TCG runs), summary-only runs with the headline
``max_ms``. It prints how often an A/A comparison is called improved or regressed, and how
often a halving and a 20% drop are found, with 95% Wilson intervals.

    .venv/bin/python ci/bench/verdicts_before.py [--repeats 1000] [--commit 5a76a92]
"""

import argparse
import io
import math
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
parser.add_argument("--repeats", type=int, default=1000)
parser.add_argument("--commit", default="5a76a92")
args = parser.parse_args()
repo = Path(__file__).resolve().parents[2]
old = Path(tempfile.mkdtemp(prefix="korch-stats-before-"))
archive = subprocess.run(
    ["git", "-C", str(repo), "archive", args.commit, "orchestrator"],
    check=True,
    capture_output=True,
).stdout
with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
    tf.extractall(old, filter="data")
sys.path.insert(0, str(old))
from orchestrator import stats  # noqa: E402  (the old module, from the temporary tree)
from orchestrator.results import ResultsFile  # noqa: E402

assert "design_effect" in dir(stats), f"{args.commit} has no run-level statistics"


def side(name, rng, boots, runs, share, effect, sd=0.2):
    b_sd, r_sd = sd * math.sqrt(share), sd * math.sqrt(1 - share)
    rows, bl = [], []
    for b in range(boots):
        bid = f"{name}-{b + 1}"
        bl.append({"id": bid, "error": None})
        be = rng.normal(0, b_sd)
        for i in range(runs):
            y = math.log(effect) + be + rng.normal(0, r_sd)
            m = 1.5 * math.exp(y)
            rows.append(
                {
                    "boot": bid,
                    "index": i,
                    "hang": False,
                    "record": {"max_ms": m, "mean_ms": m / 100},
                }
            )
    prov = {
        "accel": "kvm",
        "vcpus": 4,
        "workload": {"headline": "max_ms", "runs": runs, "boots": boots},
    }
    return ResultsFile("sim", name, "a", provenance=prov, boots=bl, runs=rows)


def wilson(k, n, z=1.96):
    """Percent, with the 95% Wilson interval."""
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return 100 * p, 100 * max(0, c - h), 100 * min(1, c + h)


n = args.repeats
opts = stats.StatsOptions(resamples=400)
t0 = time.time()
print(f"statistics at {args.commit}, {n} repeats per cell, headline max_ms, per-run sd 0.2")
for share in (0.2, 0.45, 0.67):
    for boots, runs in ((1, 24), (3, 8), (6, 4)):
        rng = np.random.default_rng(int(share * 100) * 1000 + boots)
        cells = []
        for effect in (1.0, 0.5, 0.8):
            k = 0
            for _ in range(n):
                c = stats.compare(
                    [
                        side("a", rng, boots, runs, share, 1.0),
                        side("b", rng, boots, runs, share, effect),
                    ],
                    opts,
                )
                v = c.candidates[0].verdict
                k += (
                    v in (stats.Verdict.IMPROVED, stats.Verdict.REGRESSED)
                    if effect == 1.0
                    else v == stats.Verdict.IMPROVED
                )
            cells.append("{:5.1f}% [{:4.1f}, {:4.1f}]".format(*wilson(k, n)))
        print(
            f"share {share:<4} {boots} boots x {runs:<2} runs   A/A called {cells[0]}   halving found {cells[1]}   -20% found {cells[2]}",
            flush=True,
        )
print(f"elapsed {time.time() - t0:.0f} s")
