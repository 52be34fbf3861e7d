#!/usr/bin/env python3
"""Guest-stage benchmark: prints figures, asserts nothing.

1. Guest image build time: cold (empty cache: ldd, hashing, key generation, cpio, gzip) and
   warm (the cache hit every later boot pays: ldd and hashing of the inputs).
2. Boot to SSH login under TCG, several boots: median, min, max; and the whole
   boot-run-poweroff cycle as `korch boot ... -- true` would do it.

Run with the virtualenv's python:
``.venv/bin/python ci/bench/guest.py --kernel path/to/bzImage`` (default: $KORCH_TEST_BZIMAGE).
Images go to a temporary cache that is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from orchestrator import vm
from orchestrator.image import build_image


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.2f} s, min {min(values):.2f} s, "
        f"max {max(values):.2f} s (n={len(values)})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--kernel", default=os.environ.get("KORCH_TEST_BZIMAGE"), help="bzImage")
    p.add_argument("--boots", type=int, default=5)
    p.add_argument("--cpus", type=int, default=4)
    p.add_argument("--builds", type=int, default=3, help="cold image builds to time")
    args = p.parse_args(argv)
    if not args.kernel:
        p.error("give --kernel or set KORCH_TEST_BZIMAGE")
    kernel = Path(args.kernel)

    work = Path(tempfile.mkdtemp(prefix="korch-bench-guest-"))
    try:
        cold, warm = [], []
        for i in range(args.builds):
            cache = work / f"cache-{i}"
            t0 = time.monotonic()
            image = build_image(cache=cache)
            cold.append(time.monotonic() - t0)
            t0 = time.monotonic()
            again = build_image(cache=cache)
            warm.append(time.monotonic() - t0)
            assert again == image
        print(f"image: {image.initrd.stat().st_size / 1e6:.2f} MB gzipped, id {image.content_id}")
        print(f"image build, cold: {summary(cold)}")
        print(f"image build, warm: {summary(warm)}")

        config = vm.VMConfig(cpus=args.cpus, accel="tcg")
        to_ssh, cycle = [], []
        for i in range(args.boots):
            t0 = time.monotonic()
            with vm.Guest(kernel, image, config, workdir=work / f"boot-{i}") as guest:
                assert guest.boot_s is not None
                to_ssh.append(guest.boot_s)
                guest.run("true")
            cycle.append(time.monotonic() - t0)
        print(f"TCG, {args.cpus} vCPUs, {os.cpu_count()} host CPUs, kernel {kernel}")
        print(f"boot to SSH login: {summary(to_ssh)}")
        print(f"boot + run + poweroff: {summary(cycle)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
