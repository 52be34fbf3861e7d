"""Whether two sides may be compared (:func:`comparability`) and which is the baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..results import ResultsFile
from .options import StatsOptions

# ---------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class Difference:
    """A provenance field that differs between the baseline and a candidate."""

    field: str
    label: str
    baseline: Any
    candidate: Any


COMPARABILITY_FIELDS: tuple[tuple[str, str], ...] = (
    ("accel", "accelerator"),
    ("vcpus", "vCPU count"),
    ("memory", "guest memory"),
    ("qemu_version", "QEMU version"),
    ("host_cpu", "host CPU model"),
)
# The sample size is the statistics' business, not a reason the sides measure different things.
WORKLOAD_FIELDS_IGNORED = frozenset({"runs", "boots", "blocks", "headline", "smallest_effect_pct"})


def comparability(baseline: ResultsFile, candidate: ResultsFile) -> tuple[Difference, ...]:
    """The fields that make two sides incomparable: experiment, accelerator, vCPUs, memory,
    QEMU version, host CPU model, and every workload parameter except the run and boot
    counts. A field recorded on one side only counts as a difference; one recorded on
    neither does not."""
    out: list[Difference] = []
    if baseline.experiment != candidate.experiment:
        out.append(
            Difference("experiment", "experiment", baseline.experiment, candidate.experiment)
        )
    bp, cp = baseline.provenance, candidate.provenance
    for key, label in COMPARABILITY_FIELDS:
        if bp.get(key) != cp.get(key):
            out.append(Difference(key, label, bp.get(key), cp.get(key)))
    bw = bp.get("workload") or {}
    cw = cp.get("workload") or {}
    for key in sorted(set(bw) | set(cw)):
        if key not in WORKLOAD_FIELDS_IGNORED and bw.get(key) != cw.get(key):
            out.append(
                Difference(f"workload.{key}", f"workload parameter {key}", bw.get(key), cw.get(key))
            )
    return tuple(out)


def _is_emulated(provenance: Mapping[str, Any]) -> bool:
    return "tcg" in str(provenance.get("accel") or "").lower()


def _baseline(results: Sequence[ResultsFile], options: StatsOptions) -> str:
    names = [r.variant for r in results]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(
            f"more than one results file for variant {', '.join(duplicates)}",
            hint="give each variant's results once",
        )
    if options.baseline:
        chosen = options.baseline
    else:
        named = sorted({r.baseline for r in results})
        if len(named) != 1:
            raise UserError(
                f"the results files name different baselines: {', '.join(named)}",
                hint="choose one with --baseline",
            )
        chosen = named[0]
    if chosen not in names:
        raise UserError(
            f"the baseline '{chosen}' has no results file (given: {', '.join(names)})",
            hint="add its results/<variant>.json or choose another with --baseline",
        )
    if len(results) < 2:
        raise UserError("a comparison needs results of at least two variants")
    return chosen
