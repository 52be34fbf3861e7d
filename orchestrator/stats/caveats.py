"""What a reader must know before trusting a comparison (:func:`caveats`): emulated timing,
a busy host, unpaired sides, single boots, failed or hung boots, summary-only runs, and
where two kernel trees' configurations differ."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .summary import Summary
from .values import VariantData

if TYPE_CHECKING:
    from .verdicts import CandidateComparison


# a median share of the host's CPU taken by other processes from which the report warns
BUSY_HOST_SHARE = 0.25


def caveats(
    datas: Sequence[VariantData],
    summaries: Sequence[Summary],
    emulated: bool,
    paired: bool,
    candidates: Sequence[CandidateComparison],
) -> list[str]:
    out = _cross_tree(datas)
    busy = _busy_host(datas)
    if busy:
        out.append(busy)
    if emulated:
        out.append(
            "Emulated timing (QEMU TCG): latencies include the emulator's own delays and are"
            " not what hardware shows; compare directions, not magnitudes."
        )
    if not paired and len(datas) > 1:
        out.append(
            "The sides are not paired by block (results of separate runs or hosts, or results"
            " without blocks): the comparison is unpaired over boot values, which needs more"
            " boots and cannot cancel drift between the runs."
        )
    for s in summaries:
        if s.single_boot:
            out.append(
                f"'{s.variant}' rests on a single boot: one boot is one sample, however many"
                " runs it holds, so no verdict can come from it (Kalibera and Jones 2013)."
            )
        if s.runs == 0:
            out.append(f"'{s.variant}' has no completed run.")
        if s.status != "complete":
            reason = (s.interruption or {}).get("reason", "no reason recorded")
            out.append(f"The results of '{s.variant}' are incomplete ({s.status}: {reason}).")
        if s.boot_errors:
            out.append(
                f"'{s.variant}': {len(s.boot_errors)} boot(s) failed: " + "; ".join(s.boot_errors)
            )
        if s.hangs:
            out.append(
                f"'{s.variant}' hung in {s.hangs} of {s.runs + s.hangs} runs; a hung run counts"
                " as the worst value of every latency metric (censored at its deadline)."
            )
    for c in candidates:
        head = c.headline
        if head is not None and head.unpaired_boots:
            out.append(
                f"Boots without a partner in their block, left out of the paired comparison of"
                f" '{c.candidate}': {', '.join(head.unpaired_boots)}."
            )
    by_reason: dict[str, list[str]] = {}
    for d in datas:
        if d.summary_only and d.summary_only == d.boot_codes.size:
            reason = d.results.provenance.get("pairing") or "they carry only a maximum and a mean"
            by_reason.setdefault(str(reason), []).append(f"'{d.variant}'")
    for reason, names in by_reason.items():
        out.append(
            f"The runs of {' and '.join(names)} are summary-only: {reason}."
            " Per-operation metrics are not available."
        )
    return out


CONFIG_DIFFERENCES_SHOWN = 12


def _busy_host(datas: Sequence[VariantData]) -> str | None:
    """A warning when other processes took a large share of the host's CPU while the
    workloads ran (``host_others_cpu`` of each boot): the guests then wait for cores, and
    every latency holds the host's load as well as the kernel's behaviour."""
    shares = sorted(
        float(boot["host_others_cpu"])
        for d in datas
        for boot in d.results.boots
        if isinstance(boot, Mapping)
        and isinstance(boot.get("host_others_cpu"), int | float)
        and not boot.get("error")
    )
    if not shares:
        return None
    median = statistics.median(shares)
    if median < BUSY_HOST_SHARE:
        return None
    return (
        f"Busy host: other processes took a median {median:.0%} of the host's CPU while the"
        f" workloads ran (most {shares[-1]:.0%}, over {len(shares)} boots); the guests waited"
        " for cores, so the timings hold the host's load too and a change is harder to see."
        " Compare on a quiet host."
    )


def _cross_tree(datas: Sequence[VariantData]) -> list[str]:
    """A note per side built from another kernel source than the baseline (first): what
    it is built from, and where the two .config files differ (information, not an error:
    each tree's Kconfig decides its own symbols)."""
    if not datas:
        return []
    base = datas[0]
    base_prov = base.results.provenance
    out = []
    for d in datas[1:]:
        prov = d.results.provenance
        a, b = base_prov.get("kernel_source"), prov.get("kernel_source")
        if not a or not b or a == b:
            continue
        text = (
            f"Cross-tree comparison: '{base.variant}' is built from {a}, '{d.variant}' from {b};"
            " the difference holds everything between the two trees, not one series."
        )
        ca, cb = base_prov.get("config_symbols"), prov.get("config_symbols")
        if isinstance(ca, Mapping) and isinstance(cb, Mapping):
            diff = [
                f"{sym} {ca.get(sym, 'n')} vs {cb.get(sym, 'n')}"
                for sym in sorted(set(ca) | set(cb))
                if ca.get(sym, "n") != cb.get(sym, "n")
            ]
            shown = "; ".join(diff[:CONFIG_DIFFERENCES_SHOWN])
            more = len(diff) - CONFIG_DIFFERENCES_SHOWN
            text += (
                f" Their .config files differ in {len(diff)} symbol(s), as each tree's Kconfig"
                f" decided (information, not an error): {shown}"
                + (f"; and {more} more" if more > 0 else "")
                + "."
                if diff
                else " Their .config files set the same symbols."
            )
        out.append(text)
    return out
