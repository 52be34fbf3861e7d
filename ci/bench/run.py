#!/usr/bin/env python3
"""End-to-end benchmark of ``korch run``: prints time by stage, asserts nothing.

Runs ``korch run`` on the default experiment (or the one given) as a user would and reads
the run directory's timings.json: build, image, boot, workload, checks, report, total. The
overhead is everything outside the workload's and the correctness checks' own time (goal for two variants under TCG, warm:
at most 30 s). ``--cold`` uses an empty temporary cache, so the figures include the
kernel source download and import and both kernel builds.

    .venv/bin/python ci/bench/run.py [--cold] [--runs N --blocks N --duration S] [--until-decisive] [EXPERIMENT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("experiment", nargs="?")
    p.add_argument("--cold", action="store_true", help="start from an empty korch cache")
    p.add_argument("--runs", type=int)
    p.add_argument("--blocks", type=int)
    p.add_argument("--until-decisive", action="store_true")
    p.add_argument("--duration", type=float)
    p.add_argument("--accel", default=None)
    p.add_argument("--keep", metavar="DIR", help="keep the run directory here (default: removed)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="korch-bench-run-"))
    env = dict(os.environ)
    if args.cold:
        env["KORCH_CACHE"] = str(work / "cache")
    rundir = Path(args.keep) if args.keep else work / "run"
    argv = [sys.executable, "-m", "orchestrator", "run", "--out", str(rundir)]
    if args.experiment:
        argv.insert(4, args.experiment)
    for flag, value in (
        ("--runs", args.runs),
        ("--blocks", args.blocks),
        ("--duration", args.duration),
        ("--accel", args.accel),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.until_decisive:
        argv.append("--until-decisive")
    try:
        print(
            "running:",
            " ".join(argv[2:]),
            "(cold cache)" if args.cold else "(warm cache)",
            flush=True,
        )
        start = time.monotonic()
        res = subprocess.run(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        wall = time.monotonic() - start
        timings_file = rundir / "timings.json"
        if not timings_file.exists():
            print(res.stdout[-3000:])
            print(f"korch run exited {res.returncode} without timings")
            return 1
        t = json.loads(timings_file.read_text())
        print(f"korch run exit code {res.returncode} (3 = inconclusive, 0 = a verdict)")
        for stage in ("build", "image", "boot", "workload", "checks", "report"):
            print(f"  {stage:9s} {t.get(stage, 0.0):8.1f} s")
        print(f"  {'total':9s} {t['total']:8.1f} s   (process wall time {wall:.1f} s)")
        # the experiment's correctness checks are work it asked for, like the workload
        overhead = wall - t.get("workload", 0.0) - t.get("checks", 0.0)
        print(
            f"overhead outside the workload's and the checks' own time: {overhead:.1f} s"
            " (goal for two variants, warm, TCG: <= 30 s)"
        )
        lines = [
            line
            for line in res.stdout.splitlines()
            if "vs mmap-lock" in line or line.startswith("per-vma ")
        ]
        print("\n".join(lines[:3]))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
