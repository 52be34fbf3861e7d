"""Import the published per-run data of the maps-contention test as a run directory.

The published files (``published-<variant>.dat``) have one line per run index::

    index  median-of-means  j-th-smallest-mean  j-th-smallest-max      (milliseconds)

Two choices, recorded in each results file's provenance so that every report says them:

* **Pairing.** Columns 3 and 4 were sorted independently, so no line describes one run.
  Run ``j`` becomes a summary-only record pairing the j-th smallest mean with the j-th
  smallest maximum. Every statistic korch computes uses one metric at a time (medians,
  ranks, counts above a threshold), so the pairing changes none of them; only a
  mean-against-maximum scatter would be wrong, and no report draws one.
* **Independence.** Each published run was its own execution of the test, so each run is
  marked as its own boot. The boot-level bootstrap then resamples runs one by one, and no
  between-boot versus within-boot split exists (each boot holds one run).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UserError
from ..results import ResultsFile
from ..rundir import RunDir

PREFIX = "published-"
EXPERIMENT = "maps-contention-published"
PAIRING = (
    "columns 3 (means) and 4 (maxima) of the published file were sorted independently, so"
    " run j pairs the j-th smallest mean with the j-th smallest maximum; a record is not one"
    " run, but each metric's distribution over runs is exact"
)
INDEPENDENCE = (
    "each published run was a separate execution of the test, so each is marked as its own"
    " boot ('independent runs')"
)


def read_published(path: Path) -> tuple[list[float], list[float]]:
    """(means, maxima) in ms from one published file; :class:`UserError` naming the line."""
    means: list[float] = []
    maxima: list[float] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 4:
            raise UserError(
                f"{path}:{lineno}: expected 4 columns (index, median of means, mean, max), found {len(fields)}"
            )
        try:
            index = int(fields[0])
            mean, mx = float(fields[2]), float(fields[3])
        except ValueError:
            raise UserError(f"{path}:{lineno}: not numbers: {line.strip()!r}") from None
        if index != len(means) + 1:
            raise UserError(f"{path}:{lineno}: run index {index}, expected {len(means) + 1}")
        means.append(mean)
        maxima.append(mx)
    if not means:
        raise UserError(f"{path}: no data lines")
    for name, column in (("means", means), ("maxima", maxima)):
        if column != sorted(column):
            raise UserError(
                f"{path}: the {name} column is not sorted ascending",
                hint="this importer reads the published layout, whose columns 3 and 4 are each sorted",
            )
    return means, maxima


def _descriptions(directory: Path) -> dict[str, str]:
    readme = directory / "README.md"
    if not readme.is_file():
        return {}
    found = {}
    for m in re.finditer(
        r"^- `published-([\w.-]+)\.dat`:\s*(.+)$", readme.read_text(), re.MULTILINE
    ):
        found[m.group(1)] = m.group(2).strip()
    return found


def results_for(
    variant: str,
    means: list[float],
    maxima: list[float],
    *,
    baseline: str,
    source: Path,
    description: str,
    reproduce: str,
) -> ResultsFile:
    """One variant's results file from its published columns (see the module docstring)."""
    boots: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for j, (mean, mx) in enumerate(zip(means, maxima, strict=True), 1):
        boot = f"{variant}-{j}"
        boots.append(
            {
                "id": boot,
                "started_at": None,
                "ended_at": None,
                "boot_s": None,
                "console": None,
                "error": None,
            }
        )
        runs.append(
            {
                "boot": boot,
                "index": 0,
                "seed": None,
                "hang": False,
                "note": "",
                "record": {"max_ms": mx, "mean_ms": mean},
            }
        )
    provenance = {
        "source": f"published per-run data imported from {source}",
        "description": description,
        "pairing": PAIRING,
        "independence": INDEPENDENCE,
        "accel": "none (bare metal, published)",
        "korch_version": __version__,
        "reproduce": reproduce,
        "workload": {
            "name": "maps-contention",
            "runs": len(runs),
            "duration_s": 10,
            "busy_ms": 2,
            "procfile": "maps",
        },
    }
    return ResultsFile(
        experiment=EXPERIMENT,
        variant=variant,
        baseline=baseline,
        provenance=provenance,
        boots=boots,
        runs=runs,
    )


def import_published(
    directory: Path, out: Path, *, baseline: str = "mmap-lock"
) -> list[ResultsFile]:
    """Write ``out/results/<variant>.json`` for every ``published-<variant>.dat`` in
    ``directory``; returns the results files, the baseline first."""
    files = sorted(directory.glob(f"{PREFIX}*.dat"))
    if len(files) < 2:
        raise UserError(
            f"{directory}: found {len(files)} published-*.dat file(s); a comparison needs two",
            hint="the directory holds published-<variant>.dat files (see its README.md)",
        )
    variants = [f.name[len(PREFIX) : -len(".dat")] for f in files]
    if baseline not in variants:
        raise UserError(
            f"{directory}: no published-{baseline}.dat for the baseline '{baseline}'",
            hint=f"choose the baseline among: {', '.join(variants)}",
        )
    descriptions = _descriptions(directory)
    reproduce = f"korch import-published {directory} {out}"
    results = []
    for path, variant in zip(files, variants, strict=True):
        means, maxima = read_published(path)
        rf = results_for(
            variant, means, maxima, baseline=baseline, source=path.resolve(),
            description=descriptions.get(variant, "published data"), reproduce=reproduce,
        )  # fmt: skip
        rf.save(RunDir(out).results(variant))
        results.append(rf)
    results.sort(key=lambda r: r.variant != baseline)
    return results
