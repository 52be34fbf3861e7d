"""Synthetic results files with known truth, for tests and the report benchmark.

Nothing here is measured: latencies come from a seeded generator (a log-normal body of
fast operations and a small slow tail), so a test knows which side "should" win and by
how much. Records follow the mapper's schema exactly (``record_from_json`` accepts them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..results import ResultsFile
from ..stats import bucket_bounds

EXPERIMENT = "synthetic"


def provenance(variant: str, **overrides: Any) -> dict[str, Any]:
    """A plausible provenance block for synthetic data; ``overrides`` replace top-level keys."""
    base: dict[str, Any] = {
        "kernel_release": "7.2.0-synthetic",
        "kernel_version_string": f"Linux version 7.2.0-synthetic ({variant})",
        "config_sha256": "0" * 64,
        "patches": [],
        "accel": "kvm",
        "accel_reason": "synthetic data",
        "qemu_version": "QEMU emulator version 9.2.0",
        "vcpus": 4,
        "memory": "1G",
        "host_cpu": "Synthetic CPU @ 3.0GHz",
        "host": "synthetic",
        "korch_version": "0.1.0",
        "reproduce": "korch run synthetic.yaml",
        # every synthetic side belongs to one blocked run, so sides pair by block
        "run_id": "synthetic-run",
        "workload": {
            "name": "maps-contention",
            "runs": 10,
            "blocks": 2,
            "duration_s": 10,
            "region_mb": 128,
            "busy_ms": 2,
            "procfile": "maps",
        },
    }
    base.update(overrides)
    return base


def _histogram(ns: np.ndarray) -> dict[str, Any]:
    lower, _ = bucket_bounds()
    index = np.searchsorted(lower, ns.astype(np.float64), side="right") - 1
    buckets, counts = np.unique(index, return_counts=True)
    return {
        "min_ns": 100,
        "sub": 64,
        "octaves": 24,
        "counts": [[int(b), int(c)] for b, c in zip(buckets, counts, strict=True)],
    }


def _op(ns: np.ndarray) -> dict[str, Any]:
    return {
        "count": int(ns.size),
        "sum_ns": int(ns.sum()),
        "max_ns": int(ns.max()) if ns.size else 0,
        "hist": _histogram(ns),
    }


def record(
    rng: np.random.Generator,
    *,
    scale: float = 1.0,
    ops: int = 4000,
    tail: float = 0.01,
    duration_s: float = 10.0,
    seed: int = 0,
) -> dict[str, Any]:
    """One mapper record: ``ops`` operations, a share ``tail`` of them slow, times ``scale``."""
    body = rng.lognormal(np.log(15_000), 0.35, ops)
    slow = rng.random(ops) < tail
    body[slow] = rng.lognormal(np.log(600_000), 0.7, int(slow.sum()))
    ns = np.maximum(1, np.rint(body * scale)).astype(np.int64)
    is_map = rng.random(ops) < 0.5
    maps, unmaps = ns[is_map], ns[~is_map]
    return {
        "schema": 1,
        "tool": "maps-mapper",
        "maps": int(maps.size),
        "unmaps": int(unmaps.size),
        "max_ms": round(int(ns.max()) / 1e6, 6),
        "mean_ms": round(int(ns.sum()) / ns.size / 1e6, 6),
        "map": _op(maps),
        "unmap": _op(unmaps),
        "duration_s": duration_s,
        "elapsed_s": duration_s + float(rng.random()) * 0.01,
        "region_mb": 128,
        "seed": seed,
        "cpu": 0,
    }


def synthetic_results(
    variant: str,
    *,
    baseline: str,
    runs: int = 20,
    boots: int = 2,
    seed: int = 0,
    scale: float = 1.0,
    boot_sd: float = 0.0,
    ops: int = 4000,
    tail: float = 0.01,
    experiment: str = EXPERIMENT,
    prov: Mapping[str, Any] | None = None,
) -> ResultsFile:
    """``runs`` runs spread evenly over ``boots`` boots (boot n in block n, so that two sides
    made alike pair by block); each boot multiplies its latencies by a factor
    exp(N(0, boot_sd)), the way a boot's layout and host noise shift a whole boot."""
    rng = np.random.default_rng(seed)
    boot_list: list[dict[str, Any]] = []
    run_list: list[dict[str, Any]] = []
    per_boot = [runs // boots + (1 if b < runs % boots else 0) for b in range(boots)]
    for b, count in enumerate(per_boot):
        boot_id = f"{variant}-{b + 1}"
        factor = float(np.exp(rng.normal(0.0, boot_sd))) if boot_sd else 1.0
        boot_list.append(
            {
                "id": boot_id,
                "started_at": None,
                "ended_at": None,
                "boot_s": 3.9,
                "console": None,
                "error": None,
                "block": b + 1,
                "position": 0,
            }
        )
        for i in range(count):
            rec = record(rng, scale=scale * factor, ops=ops, tail=tail, seed=len(run_list) + 1)
            run_list.append(
                {
                    "boot": boot_id,
                    "block": b + 1,
                    "index": i,
                    "seed": rec["seed"],
                    "hang": False,
                    "note": "",
                    "record": rec,
                }
            )
    return ResultsFile(
        experiment=experiment,
        variant=variant,
        baseline=baseline,
        provenance=dict(prov) if prov is not None else provenance(variant),
        boots=boot_list,
        runs=run_list,
    )


def summary_only_results(
    variant: str,
    *,
    baseline: str,
    maxima_by_boot: Sequence[Sequence[float]],
    means_by_boot: Sequence[Sequence[float]] | None = None,
    experiment: str = EXPERIMENT,
    prov: Mapping[str, Any] | None = None,
) -> ResultsFile:
    """Summary-only runs (``{"max_ms", "mean_ms"}``), one list of per-run maxima per boot."""
    boot_list: list[dict[str, Any]] = []
    run_list: list[dict[str, Any]] = []
    for b, maxima in enumerate(maxima_by_boot):
        boot_id = f"{variant}-{b + 1}"
        boot_list.append({"id": boot_id, "error": None})
        means = means_by_boot[b] if means_by_boot is not None else [m / 100 for m in maxima]
        for i, (mx, mean) in enumerate(zip(maxima, means, strict=True)):
            run_list.append(
                {
                    "boot": boot_id,
                    "index": i,
                    "seed": None,
                    "hang": False,
                    "note": "",
                    "record": {"max_ms": float(mx), "mean_ms": float(mean)},
                }
            )
    return ResultsFile(
        experiment=experiment,
        variant=variant,
        baseline=baseline,
        provenance=dict(prov) if prov is not None else provenance(variant),
        boots=boot_list,
        runs=run_list,
    )
