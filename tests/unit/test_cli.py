"""The command line: exit codes and messages a user sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchestrator.cli import main
from orchestrator.errors import EXIT_OK, EXIT_USAGE


def test_validate_ok_and_error(tmp_path: Path, capsys) -> None:
    good = tmp_path / "exp.yaml"
    (tmp_path / "p.patch").write_text("x")
    good.write_text(
        "schema: 1\nname: t\nkernel: {source: {path: linux}, kconfig: [tinyconfig, qemu-guest]}\n"
        "variants: [{name: a}, {name: b, patches: [p.patch]}]\n"
    )
    assert main(["validate", str(good)]) == EXIT_OK
    assert "ok (t: 2 variants, baseline a; workload maps-contention)" in capsys.readouterr().out
    cross = tmp_path / "cross.yaml"
    cross.write_text(good.read_text().replace("{name: a}", "{name: a, source: {path: other}}"))
    assert main(["validate", str(cross)]) == EXIT_OK
    assert (
        "ok (t: 2 variants, baseline a; cross-tree: 2 kernel sources; workload maps-contention)"
        in capsys.readouterr().out
    )

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "schema: 1\nname: t\nkernel: {source: {path: linux}, kconfig: [tinyconfig, nope]}\nvariants: [{name: a}]\n"
    )
    assert main(["validate", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "kconfig fragment 'nope'" in err and "known fragments:" in err

    missing = tmp_path / "gone.yaml"
    missing.write_text(good.read_text().replace("p.patch", "q.patch"))
    assert main(["validate", str(missing)]) == EXIT_USAGE
    assert "q.patch does not exist" in capsys.readouterr().err


def test_no_command_prints_help(capsys) -> None:
    assert main([]) == EXIT_USAGE
    assert "korch" in capsys.readouterr().out


def test_python_dash_m_and_kconfigs() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator", "kconfigs"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "qemu-guest" in res.stdout and "maps-contention" in res.stdout


def test_a_crash_is_never_exit_1(monkeypatch, capsys) -> None:
    # CI reads exit 1 as "regression": a bug must say it is one, with its traceback
    from orchestrator import cli
    from orchestrator.errors import EXIT_INFRA, EXIT_INTERNAL

    def crash(args, console):
        raise TypeError("'NoneType' object is not subscriptable")

    name, arguments, _ = cli.COMMANDS["kconfigs"]
    monkeypatch.setitem(cli.COMMANDS, "kconfigs", (name, arguments, crash))
    assert main(["kconfigs"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error (a bug in korch" in err and "Traceback" in err and "TypeError" in err

    def full_disk(args, console):
        raise OSError(28, "No space left on device", "/tmp/out/report.html")

    monkeypatch.setitem(cli.COMMANDS, "kconfigs", (name, arguments, full_disk))
    assert main(["kconfigs"]) == EXIT_INFRA
    assert "No space left on device (/tmp/out/report.html)" in capsys.readouterr().err
