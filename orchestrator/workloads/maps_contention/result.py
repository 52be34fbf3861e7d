"""The mapper's result line (schema 1), parsed into frozen records with every field checked.

The mapper prints exactly one JSON line::

    {"schema": 1, "tool": "maps-mapper",
     "maps": int, "unmaps": int,            # operations of each kind
     "max_ms": float, "mean_ms": float,     # over both kinds, as the published test reports
     "map":   {"count": int, "sum_ns": int, "max_ns": int, "hist": HISTOGRAM},
     "unmap": {"count": int, "sum_ns": int, "max_ns": int, "hist": HISTOGRAM},
     "duration_s": float,                   # requested measuring time
     "elapsed_s": float,                    # measured from the gate opening to the loop's end
     "region_mb": int, "seed": int,
     "cpu": int}                            # CPU the mapper pinned itself to, -1 for none

``HISTOGRAM`` is described in :mod:`.histogram`. Unknown keys are ignored, so that later
mappers may add fields without a schema bump; a missing or ill-typed known key is an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import WorkloadError
from .histogram import Histogram, bucket_index

SCHEMA = 1
TOOL = "maps-mapper"
SNIPPET_CHARS = 160
# The mapper prints milliseconds with 6 decimals (whole ns), so allow for that rounding.
MS_TOLERANCE = 2e-6


@dataclass(frozen=True)
class OpStats:
    """Latency of one kind of operation (map or unmap) over one run."""

    count: int
    sum_ns: int
    max_ns: int
    hist: Histogram

    @property
    def mean_ns(self) -> float:
        """Mean latency in ns (0 when there was no operation)."""
        return self.sum_ns / self.count if self.count else 0.0

    def to_json(self) -> dict[str, Any]:
        """The JSON object the mapper prints for this kind of operation."""
        return {
            "count": self.count,
            "sum_ns": self.sum_ns,
            "max_ns": self.max_ns,
            "hist": self.hist.to_json(),
        }


@dataclass(frozen=True)
class RunRecord:
    """One mapper run: the published per-run numbers plus per-operation histograms."""

    maps: int
    unmaps: int
    max_ms: float
    mean_ms: float
    map: OpStats
    unmap: OpStats
    duration_s: float
    elapsed_s: float
    region_mb: int
    seed: int
    cpu: int

    @property
    def operations(self) -> int:
        """Maps plus unmaps."""
        return self.maps + self.unmaps

    @property
    def hist(self) -> Histogram:
        """Both kinds of operation in one histogram."""
        return self.map.hist.merge(self.unmap.hist)

    def to_json(self) -> dict[str, Any]:
        """The mapper's JSON object; ``parse_result(json.dumps(r.to_json()), ...) == r``."""
        return {
            "schema": SCHEMA,
            "tool": TOOL,
            "maps": self.maps,
            "unmaps": self.unmaps,
            "max_ms": self.max_ms,
            "mean_ms": self.mean_ms,
            "map": self.map.to_json(),
            "unmap": self.unmap.to_json(),
            "duration_s": self.duration_s,
            "elapsed_s": self.elapsed_s,
            "region_mb": self.region_mb,
            "seed": self.seed,
            "cpu": self.cpu,
        }


def snippet(text: str, around: int | None = None) -> str:
    """A short quotable piece of ``text`` (around offset ``around`` if given)."""
    if around is None or len(text) <= SNIPPET_CHARS:
        start = 0
    else:
        start = max(0, min(around - SNIPPET_CHARS // 2, len(text) - SNIPPET_CHARS))
    piece = text[start : start + SNIPPET_CHARS]
    return (
        ("..." if start else "")
        + repr(piece)[1:-1]
        + ("..." if start + SNIPPET_CHARS < len(text) else "")
    )


def _fail(source: str, problem: str, text: str, around: int | None = None) -> WorkloadError:
    return WorkloadError(
        f"{source}: {problem}\n  text: {snippet(text, around)}",
        hint="the guest program's output is not a maps-mapper result line (schema 1);"
        " its stderr, if any, says why",
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number korch accepts")


def parse_result(text: str, source: str) -> RunRecord:
    """Parse the mapper's result line; ``source`` names where it came from for the message.

    Any problem (empty, several lines, truncated, not JSON, missing or ill-typed keys,
    counts that disagree with their histograms) raises :class:`WorkloadError` naming it
    and quoting a snippet of the offending text.
    """
    stripped = text.strip()
    if not stripped:
        raise _fail(source, "no result line (empty output)", text)
    lines = stripped.splitlines()
    if len(lines) > 1:
        raise _fail(source, f"expected one result line, got {len(lines)} lines", text)
    try:
        obj = json.loads(stripped, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        # A cut-off line fails at its end, or inside a string it never closes.
        if exc.pos >= len(stripped) - 1 or (
            stripped.startswith("{") and not stripped.endswith("}")
        ):
            problem = f"the line ends early (truncated output?): {exc.msg}"
        else:
            problem = f"not JSON: {exc.msg} at column {exc.colno}"
        raise _fail(source, problem, stripped, exc.pos) from None
    except (ValueError, RecursionError) as exc:
        raise _fail(source, f"not JSON: {exc}", stripped) from None
    try:
        return record_from_json(obj)
    except ValueError as exc:
        raise _fail(source, str(exc), stripped) from None


def record_from_json(obj: Any) -> RunRecord:
    """Build a :class:`RunRecord` from the decoded JSON object; ``ValueError`` on a problem."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"the result is a JSON {type(obj).__name__}, not an object")
    schema = _int(obj, "schema")
    if schema != SCHEMA:
        raise ValueError(f"schema {schema} is not supported (this korch reads schema {SCHEMA})")
    tool = obj.get("tool")
    if tool != TOOL:
        raise ValueError(f"'tool' is {tool!r}, expected {TOOL!r}")
    record = RunRecord(
        maps=_int(obj, "maps"),
        unmaps=_int(obj, "unmaps"),
        max_ms=_number(obj, "max_ms"),
        mean_ms=_number(obj, "mean_ms"),
        map=op_stats_from_json(_object(obj, "map"), "map"),
        unmap=op_stats_from_json(_object(obj, "unmap"), "unmap"),
        duration_s=_number(obj, "duration_s"),
        elapsed_s=_number(obj, "elapsed_s"),
        region_mb=_int(obj, "region_mb"),
        seed=_int(obj, "seed"),
        cpu=_int(obj, "cpu", minimum=-1),
    )
    _check_totals(record)
    return record


def op_stats_from_json(obj: Mapping[str, Any], where: str) -> OpStats:
    """Build :class:`OpStats` from its JSON object (also the mapper's ``--selftest`` output)."""
    try:
        hist = Histogram.from_json(_object(obj, "hist"))
    except ValueError as exc:
        raise ValueError(f"'{where}': {exc}") from None
    stats = OpStats(
        count=_int(obj, "count", where),
        sum_ns=_int(obj, "sum_ns", where),
        max_ns=_int(obj, "max_ns", where),
        hist=hist,
    )
    if hist.count != stats.count:
        raise ValueError(
            f"'{where}': the histogram holds {hist.count} operations, 'count' says {stats.count}"
        )
    if stats.count == 0:
        if stats.sum_ns or stats.max_ns:
            raise ValueError(f"'{where}': no operations but a non-zero sum or maximum")
        return stats
    highest = max(i for i, c in enumerate(hist.counts) if c)
    if bucket_index(stats.max_ns) != highest:
        raise ValueError(
            f"'{where}': max_ns {stats.max_ns} is not in the highest non-empty bucket ({highest})"
        )
    if not stats.max_ns <= stats.sum_ns <= stats.max_ns * stats.count:
        raise ValueError(f"'{where}': sum_ns {stats.sum_ns} is impossible with this max and count")
    return stats


def _check_totals(r: RunRecord) -> None:
    if r.maps != r.map.count or r.unmaps != r.unmap.count:
        raise ValueError(
            f"'maps'/'unmaps' ({r.maps}/{r.unmaps}) disagree with the per-operation counts"
            f" ({r.map.count}/{r.unmap.count})"
        )
    max_ms = max(r.map.max_ns, r.unmap.max_ns) / 1e6
    if abs(r.max_ms - max_ms) > MS_TOLERANCE:
        raise ValueError(f"'max_ms' is {r.max_ms}, the per-operation maxima give {max_ms:.6f}")
    ops = r.maps + r.unmaps
    mean_ms = (r.map.sum_ns + r.unmap.sum_ns) / ops / 1e6 if ops else 0.0
    if abs(r.mean_ms - mean_ms) > MS_TOLERANCE:
        raise ValueError(f"'mean_ms' is {r.mean_ms}, the per-operation sums give {mean_ms:.6f}")
    if r.duration_s <= 0 or r.elapsed_s < 0:
        raise ValueError("'duration_s' must be positive and 'elapsed_s' non-negative")


def _where(key: str, where: str | None) -> str:
    return f"'{where}.{key}'" if where else f"'{key}'"


def _get(obj: Mapping[str, Any], key: str, where: str | None) -> Any:
    if key not in obj:
        raise ValueError(f"missing key {_where(key, where)}")
    return obj[key]


def _int(obj: Mapping[str, Any], key: str, where: str | None = None, minimum: int = 0) -> int:
    value = _get(obj, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{_where(key, where)} is {value!r}, not a whole number")
    if value < minimum:
        raise ValueError(f"{_where(key, where)} is {value}, below {minimum}")
    return value


def _number(obj: Mapping[str, Any], key: str) -> float:
    value = _get(obj, key, None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{key}' is {value!r}, not a number")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"'{key}' is {value}, not a finite non-negative number")
    return float(value)


def _object(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = _get(obj, key, None)
    if not isinstance(value, Mapping):
        raise ValueError(f"'{key}' is {value!r:.40}, not an object")
    return value
