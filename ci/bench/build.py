#!/usr/bin/env python3
"""Build-stage benchmark: prints figures, asserts nothing.

1. Cold build of the default experiment's first variant with korch (empty ccache, empty
   build directory, no cached artifact) against plain ``make -j<cpus> bzImage`` on the same
   tree and the same .config (goal: ratio at most 1.04).
2. The second variant's build time over the first's (goal: at most 0.05).
3. A warm rerun of ``korch build`` as a user runs it (goal: no compiler, under 5 s).

The kernel source comes from korch's cache (imported on first use); everything a build
produces goes to a temporary cache that is removed at the end. Run with the virtualenv's
python: ``.venv/bin/python ci/bench/build.py``. Takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator import build, config
from orchestrator.fsutil import cache_root
from orchestrator.series import prepare
from orchestrator.source import SourceCache
from orchestrator.ui import PlainProgress


def shared_source_cache(real: Path, tmp: Path) -> None:
    """A fresh cache that borrows the real cache's sources but none of its build products."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("git", "trees", "apt"):
        if (real / name).exists():
            (tmp / name).symlink_to(real / name)
    if (real / "sources").exists():
        shutil.copytree(real / "sources", tmp / "sources")


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    # SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C, so the temporary cache goes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    exp = config.load_default()
    real = cache_root()
    print(f"source cache: {real}")
    SourceCache(real, log=print).get(exp.source)  # import once, outside the timings

    work = Path(tempfile.mkdtemp(prefix="korch-bench-"))
    try:
        cache = work / "cache"
        shared_source_cache(real, cache)
        first, second = exp.variants[0].name, exp.variants[1].name

        # -- 1. korch, cold --------------------------------------------------------
        builder = build.Builder(exp, cache, PlainProgress())
        t0 = time.monotonic()
        b1 = builder.build_all([first])[first]
        korch_cold = time.monotonic() - t0
        make_only = b1.metadata["durations_s"]["build"]

        # -- 2. second variant, incremental -----------------------------------------
        t0 = time.monotonic()
        b2 = build.Builder(exp, cache, PlainProgress()).build_all([second])[second]
        korch_second = time.monotonic() - t0

        # -- plain make on the same tree and .config (first variant checked out) -----
        src = SourceCache(cache).get(exp.source)
        patched = prepare(SourceCache(cache).store, src, exp.variants[0].series)
        SourceCache(cache).store.switch(src.worktree, patched.commit)
        plain_dir = work / "plain"
        plain_dir.mkdir()
        shutil.copyfile(b1.config, plain_dir / ".config")
        argv = [
            "make",
            "-C",
            str(src.worktree.path),
            f"O={plain_dir}",
            "ARCH=x86_64",
            f"-j{build.jobs()}",
            "bzImage",
        ]
        print("plain:", " ".join(argv), flush=True)
        t0 = time.monotonic()
        subprocess.run(
            argv, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, LC_ALL="C")
        )
        plain = time.monotonic() - t0

        # -- 3. warm rerun through the CLI --------------------------------------------
        korch = Path(sys.executable).with_name("korch")
        env = dict(os.environ, KORCH_CACHE=str(cache))
        t0 = time.monotonic()
        out = subprocess.run(
            [str(korch), "build"], env=env, capture_output=True, text=True, check=True
        )
        warm = time.monotonic() - t0
        # table columns: variant, kernel, objects compiled, build, bzImage
        rows = [
            line.split()
            for line in out.stdout.splitlines()
            if line.split()[:1] in ([first], [second])
        ]
        quiet = len(rows) == 2 and all(r[2] == "0" and r[3] == "cached" for r in rows)
        compilers = "no" if quiet else "SOME"

        print()
        print(
            f"korch cold, first variant ({first}):   {korch_cold:7.1f} s total, {make_only:.1f} s in make, "
            f"{b1.objects_compiled} objects"
        )
        print(f"plain make -j{build.jobs()} bzImage, same tree/config: {plain:7.1f} s")
        print(
            f"ratio korch cold / plain make:           {korch_cold / plain:7.3f}   (goal <= 1.04)"
        )
        print(
            f"korch second variant ({second}):        {korch_second:7.1f} s, {b2.objects_compiled} objects"
        )
        print(
            f"ratio second / first:                    {korch_second / korch_cold:7.3f}   (goal <= 0.05)"
        )
        print(
            f"warm rerun 'korch build':                {warm:7.2f} s, {compilers} compiler invoked (goal: none, < 5 s)"
        )
        print(f"images differ: {b1.bzimage.read_bytes() != b2.bzimage.read_bytes()}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
