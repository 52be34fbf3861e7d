"""Correctness checks: TAP parsing, classification, the gate, the host build, the guest run.

The guest run is exercised on the host through FakeRemote (a real shell, busybox's
``timeout``); tests/integration/test_checks.py runs proc-maps-race in real guests.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from orchestrator import checks, config
from orchestrator.checks import CheckSpec, classify, decide, gate, parse_tap, tally
from orchestrator.errors import BuildError, ConfigError, UserError
from orchestrator.results import ResultsFile
from orchestrator.workloads.fake import FakeRemote

DATA = Path(__file__).parent / "data" / "checks"
EXPERIMENT = config.default_experiment_path().read_text()


# ---------------------------------------------------------------- TAP and classification


def test_a_torn_maps_read_is_a_failure_with_the_subtest_named() -> None:
    out = (DATA / "proc-maps-race-torn.log").read_text()
    result = classify(1, out, 31.0, 120)
    assert result.status == "fail"
    assert result.failed == ("proc_maps_race.maps.test_maps_tearing_from_split",)
    assert result.passed == 0
    assert "Test terminated by timeout" in result.tail


def test_a_passing_run_is_a_pass_without_a_tail() -> None:
    result = classify(0, (DATA / "proc-maps-race-pass.log").read_text(), 1.2, 120)
    assert (result.status, result.passed, result.failed, result.tail) == ("pass", 1, (), "")


def test_directives_skip_xfail_and_todo_are_not_failures() -> None:
    text = textwrap.dedent(
        """\
        TAP version 13
        1..4
        ok 1 a
        not ok 2 b # XFAIL known
        not ok 3 c # TODO later
        ok 4 d # SKIP no hardware
        """
    )
    assert parse_tap(text) == [("a", "pass"), ("b", "pass"), ("c", "pass"), ("d", "skip")]
    assert classify(0, text, 1, 10).status == "pass"


@pytest.mark.parametrize(
    ("code", "text", "seconds", "status"),
    [
        (4, "ok 1 x # SKIP needs root\n", 0.1, "skip"),
        (0, "ok 1 x # SKIP needs root\n", 0.1, "skip"),
        (0, "", 0.1, "pass"),  # a plain program passes by its exit status
        (2, "ok 1 x\n", 0.1, "fail"),  # every subtest passed, the program did not
        (137, "", 9.8, "timeout"),  # killed by timeout -s KILL at 10 s
        (137, "", 1.0, "fail"),  # killed by something else, early
        (None, "", 70.0, "timeout"),  # the SSH command itself never came back
    ],
)
def test_exit_status_decides_without_failed_subtests(
    code: int | None, text: str, seconds: float, status: str
) -> None:
    assert classify(code, text, seconds, 10).status == status


# ---------------------------------------------------------------- the gate


def _boot(boot_id: str, status: str | None, failed: tuple[str, ...] = ()) -> dict:
    entry: dict = {"id": boot_id}
    if status is not None:
        entry["checks"] = {"proc/proc-maps-race": {"status": status, "failed": list(failed)}}
    return entry


def _results(variant: str, statuses: list[str | None]) -> ResultsFile:
    boots = [
        _boot(f"{variant}-{i + 1}", s, ("t.split",) if s == "fail" else ())
        for i, s in enumerate(statuses)
    ]
    return ResultsFile("e", variant, "base", boots=boots)


def test_pass_on_baseline_and_one_failing_candidate_boot_is_a_regression() -> None:
    (g,) = gate([_results("base", ["pass"] * 4), _results("cand", ["pass"] * 3 + ["fail"])], "base")
    assert g.test == "proc/proc-maps-race" and g.regressed
    (c,) = g.candidates
    assert c.verdict == "regressed"
    assert c.tally.boots_failed == ("cand-4",)
    assert "fails on 1 of 4 candidate boots" in c.reason and "t.split failed in 1" in c.reason


@pytest.mark.parametrize(
    ("base", "cand", "verdict"),
    [
        (["pass", "pass"], ["pass", "pass"], "passed"),
        (["pass", "fail"], ["fail", "pass"], "fails on both"),
        (["fail", "fail"], ["pass", "pass"], "fixed"),
        (["skip", "skip"], ["fail", "fail"], "not decided"),  # nothing passed to compare
        (["pass", "pass"], ["skip", "timeout"], "not decided"),
        (["pass", "pass"], [None, None], "not decided"),  # the candidate never ran it
        (["pass", "timeout"], ["pass", "pass"], "passed"),
    ],
)
def test_gate_verdicts(base: list, cand: list, verdict: str) -> None:
    b, c = _results("base", base), _results("cand", cand)
    assert (
        decide(tally(b.boots, "proc/proc-maps-race"), tally(c.boots, "proc/proc-maps-race"))[0]
        == verdict
    )
    assert gate([b, c], "base")[0].regressed is (verdict == "regressed")


def test_results_without_checks_have_no_gate() -> None:
    assert gate([_results("base", [None]), _results("cand", [None])], "base") == ()


def test_a_regressed_check_makes_the_exit_code_1_even_when_faster() -> None:
    from orchestrator.report import exit_code
    from orchestrator.stats import Comparison, StatsOptions

    g = gate([_results("base", ["pass"]), _results("cand", ["fail"])], "base")
    comparison = Comparison(
        experiment="e", baseline="base", headline="above_1ms", options=StatsOptions(),
        summaries=(), candidates=(), warnings=(), provenance={}, emulated=True, checks=g,
    )  # fmt: skip
    assert exit_code(comparison, "regression") == 1
    assert exit_code(comparison, "never") == 0
    passing = gate([_results("base", ["pass"]), _results("cand", ["pass"])], "base")
    assert exit_code(Comparison(**{**comparison.__dict__, "checks": passing})) == 0


# ---------------------------------------------------------------- the experiment file


HEAD = EXPERIMENT.split("\nchecks:")[0] + "\n"


def test_the_default_experiment_checks_maps_ordering() -> None:
    (spec,) = config.load_default().checks
    assert spec.test == "proc/proc-maps-race" and dict(spec.env) == {"DURATION": "1"}


def test_checks_in_an_experiment_file(tmp_path: Path) -> None:
    exp = config.loads(
        HEAD
        + "checks:\n  - proc/proc-pid-vm\n"
        + "  - {test: proc/proc-maps-race, env: {DURATION: 1}, args: [-v, maps], timeout_s: 90}\n",
        tmp_path / "e.yaml",
    )
    first, second = exp.checks
    assert first == CheckSpec("proc/proc-pid-vm")
    assert second == CheckSpec("proc/proc-maps-race", ("-v", "maps"), (("DURATION", "1"),), 90.0)
    assert second.command("/g") == (
        "cd /g/proc && env DURATION=1 timeout -s KILL 90 ./proc-maps-race -v maps"
        " >proc-maps-race.out 2>&1; s=$?; cat proc-maps-race.out; exit $s"
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("../etc/passwd", "checks[0]: expected <dir>/<program>"),
        ("proc", "checks[0]: expected <dir>/<program>"),
        ("{test: proc/x, env: {1A: 2}}", "checks[0].env: not a variable name"),
        ("{test: proc/x, timeout_s: 0}", "checks[0].timeout_s: must be greater than 0"),
        ("{args: [x]}", "checks[0].test: required key is missing"),
        ("{test: proc/x, when: always}", "checks[0].when: unknown key"),
    ],
)
def test_bad_checks_name_the_line_and_key(tmp_path: Path, item: str, message: str) -> None:
    text = HEAD + f"checks:\n  - {item}\n"
    line = text.splitlines().index(f"  - {item}") + 1
    with pytest.raises(ConfigError) as err:
        config.loads(text, tmp_path / "e.yaml")
    assert f"e.yaml:{line}: {message}" in str(err.value)


def test_a_check_listed_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="proc/a is listed twice"):
        config.loads(HEAD + "checks: [proc/a, {test: proc/a}]\n", tmp_path / "e.yaml")


# ---------------------------------------------------------------- the host build


def _interpreter(binary: Path) -> bytes | None:
    """The ELF program's PT_INTERP (its dynamic loader), None for a static program."""
    image = binary.read_bytes()
    assert image[:5] == b"\x7fELF\x02"  # 64-bit ELF
    phoff = int.from_bytes(image[0x20:0x28], "little")
    size, count = (int.from_bytes(image[o : o + 2], "little") for o in (0x36, 0x38))
    for i in range(count):
        header = image[phoff + i * size : phoff + (i + 1) * size]
        if int.from_bytes(header[:4], "little") == 3:  # PT_INTERP
            off, length = (int.from_bytes(header[o : o + 8], "little") for o in (8, 32))
            return image[off : off + length]
    return None


def _tree(root: Path, source: str = "int main(void) { return 0; }\n") -> Path:
    d = root / "tools" / "testing" / "selftests" / "demo"
    d.mkdir(parents=True)
    (d / "demo-ok.c").write_text(source)
    (d / "Makefile").write_text(
        "TEST_GEN_PROGS := demo-ok\n"
        "$(OUTPUT)/demo-ok: demo-ok.c\n"
        "\t$(CC) $(KHDR_INCLUDES) -o $@ $<\n"
    )
    return root


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_a_program_is_built_static_by_its_own_makefile(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    headers = tmp_path / "hdr"
    headers.mkdir()
    binary = checks.build_program(
        tree, CheckSpec("demo/demo-ok"), headers, tmp_path / "out", tmp_path / "log", "tree"
    )
    assert binary == tmp_path / "out" / "demo-ok"
    assert _interpreter(binary) is None  # static: the guest has no C library
    assert f"-isystem {headers}" in (tmp_path / "log").read_text()


def test_a_compile_error_names_the_check_and_shows_the_compiler(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", "int main(void) { return undeclared_thing; }\n")
    with pytest.raises(BuildError) as err:
        checks.build_program(
            tree, CheckSpec("demo/demo-ok"), tmp_path, tmp_path / "out", tmp_path / "log",
            "variant torn",
        )  # fmt: skip
    text = str(err.value)
    assert "check demo/demo-ok: building it from variant torn failed" in text
    assert "undeclared_thing" in text


def test_a_missing_program_suggests_the_closest(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    with pytest.raises(UserError) as err:
        checks.program_source(tree, CheckSpec("demo/demo-okk"), "variant x (7.2)")
    assert "variant x (7.2) has no tools/testing/selftests/demo/demo-okk.c" in str(err.value)
    assert "did you mean demo/demo-ok?" in str(err.value)
    with pytest.raises(UserError, match="no selftest directory"):
        checks.program_source(tree, CheckSpec("dem/demo-ok"), "variant x")


# ---------------------------------------------------------------- in the guest (the host here)


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox (the guest's shell)")
def test_run_checks_copies_runs_and_records(tmp_path: Path) -> None:
    ok = _script(tmp_path / "ok", 'echo "1..1"; echo "ok 1 fine $DURATION $1"\n')
    bad = _script(tmp_path / "bad", 'echo "1..2"; echo "ok 1 a"; echo "not ok 2 b"; exit 1\n')
    slow = _script(tmp_path / "slow", "sleep 30\n")
    specs = [
        CheckSpec("x/ok", ("arg",), (("DURATION", "3"),)),
        CheckSpec("x/bad"),
        CheckSpec("y/slow", timeout_s=1),
        CheckSpec("y/unbuilt"),
    ]
    seen: list[str] = []
    found = checks.run_checks(
        FakeRemote(("busybox", "sh", "-c")),
        specs,
        {"x/ok": ok, "x/bad": bad, "y/slow": slow},
        save_dir=tmp_path / "logs",
        on_check=lambda test, r: seen.append(f"{test} {r.status}"),
        guest_dir=str(tmp_path / "guest"),
    )
    assert seen == ["x/ok pass", "x/bad fail", "y/slow timeout"]
    assert found["x/bad"].failed == ("b",)
    assert "ok 1 fine 3 arg" in (tmp_path / "logs" / "x-ok.log").read_text()
    assert (tmp_path / "guest" / "x" / "ok").is_file()


def test_a_boot_booted_again_counts_once_with_its_worst_result() -> None:
    # a resumed kselftest run: the boot's first attempt passed its runs, the second failed
    passed = checks.CheckResult("pass", 0, 1.0, passed=1).to_json()
    failed = checks.CheckResult("fail", 1, 1.0, failed=("torn",)).to_json()
    boots = [
        {"id": "v-1", "attempt": 1, "checks": {"t/x": passed}},
        {"id": "v-1", "attempt": 2, "checks": {"t/x": failed}},
        {"id": "v-2", "attempt": 1, "checks": {"t/x": passed, "t/y": {}}},
    ]
    got = checks.tally(boots, "t/x")
    assert got.counts == {"fail": 1, "pass": 1} and got.boots_failed == ("v-1",)
    assert got.failed_tests == {"torn": 1}
    assert checks.tally(boots, "t/y").counts == {}  # an entry without a result is none
