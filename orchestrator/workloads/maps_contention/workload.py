"""The maps-contention workload's declaration (see :mod:`orchestrator.workloads.api`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from ...metrics import Metric
from ..api import Extracted, Outcome, ParseContext, Session, ValueCheck, Workload
from . import driver
from .binaries import compile_workload
from .metrics import metrics

DEFAULTS = {"region_mb": 128, "busy_ms": 2, "procfile": "maps"}


def _checks() -> dict[str, ValueCheck]:
    from ...config import between, one_of, positive, power_of_two

    return {
        "region_mb": ((int,), "an integer", power_of_two),
        "busy_ms": ((int,), "a whole number of milliseconds", positive),
        "procfile": ((str,), "a string", one_of(*driver.PROCFILES)),
        # the experiment itself is stricter than a matrix value: at most 1000 ms
        "busy_ms!": ((int,), "a whole number of milliseconds", between(0, 1000, " ms")),
    }


class MapsContention(Workload):
    """mmap/munmap latency of one task while others read /proc/PID/maps (docs/maps-contention.md)."""

    name = "maps-contention"
    summary = "mmap/munmap latency while other tasks read /proc/PID/maps"
    kconfig = ("maps-contention",)
    keys = ("region_mb", "busy_ms", "procfile")
    operation_latencies = True

    @property
    def matrix(self) -> Mapping[str, ValueCheck]:  # type: ignore[override]
        return {k: v for k, v in _checks().items() if not k.endswith("!")}

    def defaults(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def parse(self, ctx: ParseContext) -> dict[str, Any]:
        from ...config import memory_mb

        c, m = ctx.checker, ctx.nodes
        checks = _checks()
        out = self.defaults()
        for key in self.keys:
            if key in m:
                types, what, check = checks[f"{key}!" if f"{key}!" in checks else key]
                value = c.scalar(m[key], f"workload.{key}", types, what, check)
                if value is not None:
                    out[key] = value
        # the mapper populates its whole region in the guest's RAM, beside the kernel and
        # the initramfs: a region of more than half the memory fails at run time
        if memory_mb(ctx.vm.memory) < 2 * out["region_mb"]:
            node: yaml.Node | None = m.get("region_mb") or ctx.section
            c.problem(
                node,
                "workload.region_mb",
                f"a region of {out['region_mb']} MB does not fit a guest of {ctx.vm.memory}:"
                f" give vm.memory at least {2 * out['region_mb']}M, or a smaller region",
            )
        return out

    def metrics(self, workload: Mapping[str, Any]) -> tuple[Metric, ...]:
        return metrics(workload)

    def default_headline(self, params: Mapping[str, Any]) -> str:
        return "max_ms"

    def guest_files(
        self, params: Mapping[str, Any], cache: Path | None, guest_dir: str
    ) -> dict[str, Path]:
        return {f"{guest_dir}/bin/{n}": p for n, p in compile_workload(cache).items()}

    def run(self, session: Session) -> dict[str, Any]:
        p = session.params
        params = driver.Params(
            runs=session.runs,
            duration_s=session.duration_s,
            region_mb=int(p.get("region_mb", DEFAULTS["region_mb"])),
            busy_ms=int(p.get("busy_ms", DEFAULTS["busy_ms"])),
            procfile=str(p.get("procfile", DEFAULTS["procfile"])),
            vcpus=session.vcpus,
            seed=session.seed,
        )

        def record(o: driver.RunOutcome) -> None:
            session.on_run(
                Outcome(
                    index=session.first_index + o.index,
                    seed=o.seed,
                    record=o.record.to_json() if o.record else None,
                    hang=o.hang,
                    note=o.note,
                    extra={
                        "scanner_passes": list(o.scanner_passes),
                        "busy_periods": list(o.busy_periods),
                    },
                )
            )

        result = driver.run_workload(
            session.remote, params, guest_dir=session.guest_dir, on_run=record
        )
        return {"placement": asdict(result.placement)}

    def extract(self, records: Sequence[Mapping[str, Any]], wheres: Sequence[str]) -> Extracted:
        from .values import extract

        return extract(records, wheres)


WORKLOAD = MapsContention()
