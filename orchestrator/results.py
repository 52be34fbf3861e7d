"""The results file: ``results/<variant>.json`` in a run directory.

One file per variant holds every run's raw figures and the provenance needed to judge
whether two sides can be compared. A boot's ``block`` is the block it belongs to (each block
boots every variant once) and ``position`` its place in that block's order; a run row's
``block`` and ``attempt`` name its physical boot (a resumed boot is a new one). Files written
before blocks existed have neither, nor ``design``. ``korch run`` writes the file
(atomically, after every run, so an interrupted run keeps what it completed); ``korch
report`` reads it.

Schema 1::

    {
      "schema": 1, "kind": "korch-results",
      "experiment": "maps-contention", "variant": "per-vma", "baseline": "mmap-lock",
      "status": "complete" | "interrupted",
      "interruption": null | {"reason": "...", "boot": "per-vma-2", "at": "2026-11-26T21:00:00Z"},
      "provenance": {
        "kernel_release": "7.2.12", "kernel_version_string": "Linux version 7.2.12 ...",
        "config_sha256": "...", "patches": [{"file": "...", "subject": "..."}],
        "accel": "tcg", "accel_reason": "...", "qemu_version": "...", "vcpus": 4, "memory": "1G",
        "host_cpu": "...", "host": "...", "korch_version": "...", "reproduce": "korch run ...",
        "workload": {"name": "maps-contention", "runs": 1, "blocks": 16, "duration_s": 10,
                     "region_mb": 128, "busy_ms": 2, "procfile": "maps", "headline": "above_1ms",
                     "smallest_effect_pct": 5.0},
        "design": {"blocks": 16, "runs": 1, "order_seed": 1,
                   "sequential": null | {"max_blocks": 16},   (korch run --until-decisive)
                   "blocks_run": 16, "stop": "ran the 16 planned blocks" | null (interrupted)},
        "checks": [{"test": "proc/proc-maps-race", "args": [], "env": {...}, "timeout_s": 300}],
        "placement": {...}, "source": "imported data ..." (optional, for imported data)
      },
      "boots": [{"id": "per-vma-1", "attempt": 1, "block": 1, "position": 0,
                 "started_at": "...", "ended_at": "...", "boot_s": 3.9,
                 "host_others_cpu": 0.02,  (share of the host's CPU other processes took
                                            during the workload; see hostwatch.HostShare)
                 "console": "boot/per-vma-1/console.log", "error": null,
                 "checks": {"proc/proc-maps-race": {"status": "pass", ...}}}],
                           (correctness checks after the runs; see checks.CheckResult)
      "runs": [{"boot": "per-vma-1", "block": 1, "attempt": 1, "index": 0, "seed": 1,
                "hang": false, "note": "",
                "record": {<the mapper's JSON line, see workloads/maps_contention/result.py>}
                          | {"max_ms": 1.2, "mean_ms": 0.011}  (summary-only, imported data)
                          | null (a hang)}]
    }
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .fsutil import write_json

SCHEMA = 1
KIND = "korch-results"


@dataclass
class ResultsFile:
    """A variant's results; mutable while a run appends to it, saved atomically."""

    experiment: str
    variant: str
    baseline: str
    provenance: dict[str, Any] = field(default_factory=dict)
    boots: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    status: str = "complete"
    interruption: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "kind": KIND,
            "experiment": self.experiment,
            "variant": self.variant,
            "baseline": self.baseline,
            "status": self.status,
            "interruption": self.interruption,
            "provenance": self.provenance,
            "boots": self.boots,
            "runs": self.runs,
        }

    def save(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> ResultsFile:
        try:
            obj = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: no such results file") from None
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}:{exc.lineno}: not valid JSON: {exc.msg}",
                hint="a results file is written by 'korch run'",
            ) from None
        if not isinstance(obj, dict) or obj.get("kind") != KIND:
            raise UserError(f'{path}: not a korch results file (no "kind": "{KIND}")')
        if obj.get("schema") != SCHEMA:
            raise UserError(
                f"{path}: results schema {obj.get('schema')!r}; this korch reads schema {SCHEMA}"
            )
        missing = [
            k
            for k in ("experiment", "variant", "baseline", "provenance", "boots", "runs")
            if k not in obj
        ]
        if missing:
            raise UserError(f"{path}: missing keys: {', '.join(missing)}")
        expected = {
            "experiment": (str, "a string"),
            "variant": (str, "a string"),
            "baseline": (str, "a string"),
            "provenance": (dict, "an object"),
            "boots": (list, "a list"),
            "runs": (list, "a list"),
        }
        wrong = [
            f"{key} is {obj[key]!r}, not {what}"
            for key, (kind, what) in expected.items()
            if not isinstance(obj[key], kind) or (kind is str and not obj[key])
        ]
        if wrong:
            raise UserError(
                f"{path}: not a valid results file: {'; '.join(wrong)}",
                hint="a results file is written by 'korch run'",
            )
        return cls(
            experiment=obj["experiment"],
            variant=obj["variant"],
            baseline=obj["baseline"],
            provenance=obj["provenance"],
            boots=obj["boots"],
            runs=obj["runs"],
            status=obj.get("status", "complete"),
            interruption=obj.get("interruption"),
        )
