"""korch doctor and the korch boot command line, without booting anything."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator import cli, doctor, vm
from orchestrator.errors import EXIT_INFRA, EXIT_OK, EXIT_USAGE


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, color_system=None), out


def test_missing_tools_name_their_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = doctor.shutil.which
    monkeypatch.setattr(
        doctor.shutil,
        "which",
        lambda tool: None if tool in ("flex", "ccache") else real_which(tool),
    )
    checks = {c.name: c for c in doctor.run_checks()}
    assert not checks["flex"].ok and checks["flex"].package == "flex"
    assert not checks["ccache"].ok and not checks["ccache"].required
    assert "flex" in doctor.missing_packages(checks.values())
    assert "ccache" in doctor.missing_packages(checks.values())

    console, out = _console()
    assert doctor.run_doctor(console) == EXIT_INFRA
    text = out.getvalue()
    assert "sudo apt-get install" in text and "flex" in text


def test_kvm_check_names_the_cause_without_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vm, "kvm_facts", lambda: vm.KvmFacts(True, True, None, True))
    check = doctor.check_kvm()
    assert not check.ok and not check.required
    assert "svm/vmx" in check.detail and "kvm_pvm" in check.detail


def test_kvm_check_with_a_kernel_uses_the_probe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(vm, "kvm_facts", lambda: vm.KvmFacts(True, True, "vmx", False))
    monkeypatch.setattr(doctor.image, "build_image", lambda: None)
    monkeypatch.setattr(
        vm, "choose_accel", lambda *a, **k: vm.AccelDecision("kvm", "KVM probe reached it")
    )
    check = doctor.check_kvm(tmp_path / "bzImage")
    assert check.ok and check.detail == "KVM probe reached it"


def test_disk_check(tmp_path: Path) -> None:
    assert doctor.check_disk(tmp_path / "not" / "yet", min_free_gb=0).ok
    assert not doctor.check_disk(tmp_path, min_free_gb=1e9).ok


def test_doctor_passes_when_everything_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "run_checks", lambda kernel=None: [doctor.Check("x", True, "y")])
    console, out = _console()
    assert doctor.run_doctor(console) == EXIT_OK
    assert "apt-get" not in out.getvalue()


@pytest.mark.parametrize(
    ("argv", "variant", "accel", "words"),
    [
        (["exp.yaml", "--variant", "v", "--", "ls", "-la"], "v", None, ["ls", "-la"]),
        (["--variant", "v", "exp.yaml", "--accel", "tcg", "--", "x"], "v", "tcg", ["x"]),
        (["exp.yaml", "--", "echo", "--variant"], None, None, ["echo", "--variant"]),
        (["exp.yaml", "nproc"], None, None, ["nproc"]),
        (["exp.yaml"], None, None, []),
    ],
)
def test_boot_command_line(
    argv: list[str], variant: str | None, accel: str | None, words: list[str]
) -> None:
    args = cli.parser().parse_args(["boot", *argv])
    assert args.command == "boot"
    assert cli._boot_tail(args) == words
    assert (args.experiment, args.variant, args.accel) == ("exp.yaml", variant, accel)


def test_boot_without_command_needs_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "schema: 1\nname: t\nkernel: {source: {path: linux}, kconfig: [tinyconfig]}\n"
        "variants: [{name: a}]\n"
    )
    # stdin is not a terminal under pytest: refused before anything is built
    assert cli.main(["boot", str(exp)]) == EXIT_USAGE
    assert "not a terminal" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "variant", "words"),
    [
        (["--variant", "per-vma", "--", "uname", "-r"], "per-vma", ["uname", "-r"]),
        (["--variant", "per-vma"], "per-vma", []),
        (["--", "nproc"], None, ["nproc"]),
    ],
)
def test_boot_defaults_to_the_embedded_experiment(
    argv: list[str], variant: str | None, words: list[str]
) -> None:
    # korch run, build and plan default to the embedded experiment; korch boot did not
    args = cli.parser().parse_args(["boot", *argv])
    args.argv = ["boot", *argv]  # as main() records it
    assert cli._boot_tail(args) == words
    assert (args.experiment, args.variant) == (None, variant)
