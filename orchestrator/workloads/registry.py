"""The workloads korch knows, by name: adding one is a package and one line here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import UserError
from ..metrics import Metric
from .api import Workload, metric_set
from .command.workload import WORKLOAD as COMMAND
from .kselftest.workload import WORKLOAD as KSELFTEST
from .maps_contention.workload import WORKLOAD as MAPS_CONTENTION

DEFAULT = MAPS_CONTENTION.name
WORKLOADS: Mapping[str, Workload] = {w.name: w for w in (MAPS_CONTENTION, COMMAND, KSELFTEST)}


def get(name: str) -> Workload:
    """The workload named ``name``; :class:`UserError` listing the known ones otherwise."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise UserError(
            f"no workload named {name!r}",
            hint="korch knows: " + ", ".join(WORKLOADS),
        ) from None


def section(provenance: Mapping[str, Any]) -> Mapping[str, Any]:
    """The workload section of a results file's provenance (empty when it has none)."""
    w = provenance.get("workload")
    return w if isinstance(w, Mapping) else {}


def of(provenance: Mapping[str, Any]) -> Workload:
    """The workload a results file was measured with (maps-contention when it does not say:
    imported and older files)."""
    name = section(provenance).get("name") or DEFAULT
    return get(str(name))


def metrics_of(provenance: Mapping[str, Any]) -> tuple[Metric, ...]:
    """The metric set of a results file's workload, the hang rate included."""
    return metric_set(of(provenance), section(provenance))
