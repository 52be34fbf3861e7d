"""What a workload declares, and what korch hands it: the one interface between a benchmark
and the rest of korch (plan, runner, results, statistics, report, history).

A workload is a package under ``orchestrator/workloads/`` with one :class:`Workload` object,
registered by name in :mod:`.registry`. It declares:

- its experiment parameters (:meth:`Workload.parse`: the keys of ``workload:`` beyond the
  ones every workload has, checked with file:line errors; :attr:`Workload.matrix` for the
  ones a ``matrix:`` may vary);
- the kconfig fragments it needs (:attr:`Workload.kconfig`);
- the files it adds to the guest image (:meth:`Workload.guest_files`: programs built on the
  host, statically, or the user's files);
- the selftests it needs built from each variant's tree (:meth:`Workload.selftests`);
- how one boot's runs happen in the guest (:meth:`Workload.run`, one :class:`Outcome` per
  run, each with a JSON record);
- how records become per-run metric values (:meth:`Workload.extract`);
- its metrics (:meth:`Workload.metrics`: name, unit, better direction, kind) and the default
  headline (:meth:`Workload.default_headline`).

Everything a workload is given or gives back is plain JSON-able data, so a results file says
what ran and can be read again without the workload's own classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..metrics import Metric, hang_rate
from .protocol import Remote

if TYPE_CHECKING:
    import numpy as np
    import yaml

    from ..checks import CheckSpec
    from ..config import Checker, VmSpec

GUEST_DIR = "/opt/korch"  # the workloads' files are baked into the image under here

# A matrix value's check: the accepted types, their name in a message, and a check of the
# value that returns a problem or None (the same shape as the experiment's own keys).
ValueCheck = tuple[tuple[type, ...], str, Callable[[Any], str | None] | None]


@dataclass(frozen=True)
class ParseContext:
    """What :meth:`Workload.parse` reads: the ``workload:`` mapping's nodes by key, the
    checker that records problems with file and line, the experiment's directory (relative
    paths) and its ``vm:`` settings (a workload may not fit the guest)."""

    checker: Checker
    nodes: Mapping[str, yaml.Node]
    base: Path
    vm: VmSpec
    section: yaml.Node | None = None


@dataclass(frozen=True)
class Outcome:
    """One run: its record (JSON, what :meth:`Workload.extract` reads), or a hang."""

    index: int
    seed: int
    record: Mapping[str, Any] | None
    hang: bool = False
    note: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # the workload's own details

    def to_json(self) -> dict[str, Any]:
        """A JSON object for the results file's ``runs``."""
        return {
            "index": self.index,
            "seed": self.seed,
            "hang": self.hang,
            "note": self.note,
            **self.extra,
            "record": dict(self.record) if self.record is not None else None,
        }


@dataclass(frozen=True)
class Session:
    """One boot's runs, as the runner asks for them."""

    remote: Remote
    params: Mapping[str, Any]  # the workload's parameters, as parse() returned them
    runs: int  # runs still to do in this boot
    first_index: int  # the index of the first of them (runs done earlier are not repeated)
    duration_s: float
    vcpus: int
    seed: int  # the first run's seed; run i uses seed + i on every side
    guest_dir: str  # where guest_files() put the image's files
    on_run: Callable[[Outcome], None]  # called with each run as soon as it exists
    # the selftest programs built from this variant's tree, by selftest name
    selftests: Mapping[str, Path] = field(default_factory=dict)
    # where a workload keeps whole outputs of this boot (the boot's directory)
    save_dir: Path | None = None
    # a selftest result for the boot's correctness gate: (test, result JSON)
    on_check: Callable[[str, Any], None] | None = None


@dataclass(frozen=True)
class Extracted:
    """Per-run values of a workload's metrics, one entry per completed run (NaN where a run
    lacks the figure); ``hist_map``/``hist_unmap`` are operation histograms (runs x buckets)
    for the metrics marked ``needs_histogram``; ``summary_only`` counts runs without them."""

    values: dict[str, np.ndarray]
    hist_map: np.ndarray | None = None
    hist_unmap: np.ndarray | None = None
    summary_only: int = 0


class Workload:
    """The declaration of a workload; see the module's documentation."""

    name: str = ""
    summary: str = ""  # what it measures, in one line
    kconfig: tuple[str, ...] = ()  # fragments (names in kconfigs/) the workload needs
    keys: tuple[str, ...] = ()  # its keys in ``workload:``
    matrix: Mapping[str, ValueCheck] = {}  # the keys a ``matrix:`` may vary
    # its records hold per-run maximum and mean latencies in ms and operation histograms:
    # the reports add the published maps-contention test's table of maxima and its charts
    operation_latencies: bool = False

    def parse(self, ctx: ParseContext) -> dict[str, Any]:
        """The workload's parameters from its keys, with defaults filled in."""
        raise NotImplementedError

    def defaults(self) -> dict[str, Any]:
        """The parameters of an experiment that gives none of the keys."""
        return {}

    def metrics(self, workload: Mapping[str, Any]) -> tuple[Metric, ...]:
        """Every metric, for the workload section of a results file's provenance (its
        parameters, ``duration_s`` and ``runs``); :func:`metric_set` adds the hang rate."""
        raise NotImplementedError

    def default_headline(self, params: Mapping[str, Any]) -> str:
        """The metric whose verdict answers the experiment when it declares none."""
        raise NotImplementedError

    def guest_files(
        self, params: Mapping[str, Any], cache: Path | None, guest_dir: str
    ) -> dict[str, Path]:
        """Guest path -> host file (or directory) to put into the image."""
        return {}

    def selftests(self, params: Mapping[str, Any]) -> tuple[CheckSpec, ...]:
        """Selftests to build from each variant's tree for :meth:`run`."""
        return ()

    def run(self, session: Session) -> dict[str, Any]:
        """The boot's runs; returns what the results file's provenance should record."""
        raise NotImplementedError

    def extract(self, records: Sequence[Mapping[str, Any]], wheres: Sequence[str]) -> Extracted:
        """Per-run metric values from completed runs' records; ``ValueError`` naming the
        run (``wheres[i]``) on a record that does not hold what the metrics need."""
        raise NotImplementedError


def metric_set(workload: Workload, provenance: Mapping[str, Any]) -> tuple[Metric, ...]:
    """The workload's metrics for ``provenance`` (a results file's ``workload`` section),
    with the hang rate every workload has."""
    own = tuple(m for m in workload.metrics(provenance) if m.key != "hang_rate")
    return (*own, hang_rate())
