"""The maps-contention workload: mmap/munmap latency while other tasks read /proc/PID/maps.

docs/maps-contention.md in the repository describes the method. The C programs live in ``c/``;
:func:`compile_workload` builds them, :func:`run_workload` drives them in a guest and
:func:`parse_result` reads the mapper's result line.
"""

from .binaries import compile_workload
from .driver import (
    Params,
    Placement,
    RunOutcome,
    Timing,
    WorkloadResult,
    placement,
    run_script,
    run_workload,
)
from .histogram import Histogram, bucket_index, bucket_lower, bucket_upper
from .result import OpStats, RunRecord, parse_result

__all__ = [
    "Histogram",
    "OpStats",
    "Params",
    "Placement",
    "RunOutcome",
    "RunRecord",
    "Timing",
    "WorkloadResult",
    "bucket_index",
    "bucket_lower",
    "bucket_upper",
    "compile_workload",
    "parse_result",
    "placement",
    "run_script",
    "run_workload",
]
