"""``workload: {name: kselftest, tests: [proc/proc-maps-race, ...]}``.

Each test is a program of ``tools/testing/selftests`` of the variant's own tree, built on the
host as a static binary against that tree's headers (the same build as ``checks:``, see
orchestrator/checks.py). A run runs every test once in the guest. Its TAP output is a pass,
fail, skip or timeout result per test and boot, which feeds the correctness gate (a test
that passes on the baseline and fails on a candidate is a regression, exit 1); the run's
metrics are the tests' wall time and the number of failing tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...checks import SEVERITY, CheckResult, CheckSpec, run_checks
from ...metrics import Metric
from ..api import Extracted, Outcome, ParseContext, Session, Workload


def specs(params: Mapping[str, Any]) -> tuple[CheckSpec, ...]:
    """The tests, as :class:`CheckSpec` objects."""
    return tuple(CheckSpec.from_json(t) for t in params.get("tests") or ())


class Kselftest(Workload):
    """Kernel selftests from the tree under test."""

    name = "kselftest"
    summary = "kernel selftests built from each variant's tree; TAP results gate the verdict"
    keys = ("tests",)

    def parse(self, ctx: ParseContext) -> dict[str, Any]:
        from ...config import selftest_list

        if "tests" not in ctx.nodes:
            ctx.checker.problem(ctx.section, "workload.tests", "required key is missing")
            return {"tests": []}
        before = len(ctx.checker.problems)
        tests = selftest_list(ctx.checker, ctx.nodes["tests"], "workload.tests")
        if not tests and len(ctx.checker.problems) == before:
            ctx.checker.problem(
                ctx.nodes["tests"],
                "workload.tests",
                "needs at least one selftest, e.g. proc/proc-maps-race",
            )
        return {"tests": [t.to_json() for t in tests]}

    def metrics(self, workload: Mapping[str, Any]) -> tuple[Metric, ...]:
        # a run never hangs: a test past its timeout is killed and counts as "timeout"
        return (
            Metric("seconds", "tests' wall time", "s", "lower", 2, False,
                   "per run, the time every test took in the guest, copying included",
                   kind="latency", log_offset=1e-6),
            Metric("failed_tests", "failing tests", "tests", "lower", 0, False,
                   "per run, the tests that failed or timed out",
                   kind="count", log_offset=1.0, discrete=True),
        )  # fmt: skip

    def default_headline(self, params: Mapping[str, Any]) -> str:
        return "seconds"

    def selftests(self, params: Mapping[str, Any]) -> tuple[CheckSpec, ...]:
        return specs(params)

    def run(self, session: Session) -> dict[str, Any]:
        tests = specs(session.params)
        missing = [t.test for t in tests if t.test not in session.selftests]
        if missing:
            from ...errors import WorkloadError

            raise WorkloadError(
                f"kselftest: {', '.join(missing)} was not built for this kernel",
                hint="korch build builds the workload's tests with the kernel; build again",
            )
        worst: dict[str, CheckResult] = {}
        for i in range(session.runs):
            index = session.first_index + i
            save = session.save_dir / "kselftest" / f"run-{index + 1}" if session.save_dir else None
            results = run_checks(
                session.remote,
                tests,
                session.selftests,
                save_dir=save,
                guest_dir=f"{session.guest_dir}/kselftest",
            )
            for test, result in results.items():
                old = worst.get(test)
                if old is None or SEVERITY[result.status] > SEVERITY[old.status]:
                    worst[test] = result
                if session.on_check is not None:
                    session.on_check(test, worst[test])
            record = {
                "seconds": round(sum(r.seconds for r in results.values()), 3),
                "failed_tests": sum(r.status in ("fail", "timeout") for r in results.values()),
                "tests": {t: r.status for t, r in results.items()},
            }
            session.on_run(Outcome(index, session.seed + i, record))
        return {}

    def extract(self, records: Sequence[Mapping[str, Any]], wheres: Sequence[str]) -> Extracted:
        import numpy as np

        values = {k: np.full(len(records), np.nan) for k in ("seconds", "failed_tests")}
        for i, (rec, where) in enumerate(zip(records, wheres, strict=True)):
            for k, arr in values.items():
                v = rec.get(k)
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise ValueError(f"{where}: '{k}' is {v!r}, not a number")
                arr[i] = float(v)
        return Extracted(values)

    def guest_files(
        self, params: Mapping[str, Any], cache: Path | None, guest_dir: str
    ) -> dict[str, Path]:
        return {}


WORKLOAD = Kselftest()
