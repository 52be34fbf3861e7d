"""Kconfig fragments: parsing, lookup by name, dropped-symbol and variant-difference detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import kconfig
from orchestrator.errors import UserError


def test_parse_config_values_and_unset() -> None:
    text = '# comment\nCONFIG_A=y\nCONFIG_B="str"\n# CONFIG_C is not set\nCONFIG_D=0x10\n'
    assert kconfig.parse_config(text) == {
        "CONFIG_A": "y",
        "CONFIG_B": '"str"',
        "CONFIG_C": "n",
        "CONFIG_D": "0x10",
    }


def test_fragment_with_a_bad_line_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.config"
    f.write_text("CONFIG_A=y\nCONFIG_B y\n")
    with pytest.raises(UserError, match=rf"{f}:2: not a Kconfig line"):
        kconfig.load_fragment(f)


def test_dropped_symbols_are_named() -> None:
    frag = kconfig.Fragment(
        "guest",
        Path("guest.config"),
        "",
        {"CONFIG_A": "y", "CONFIG_B": "y", "CONFIG_C": "n", "CONFIG_N": "4"},
    )
    final = {"CONFIG_A": "y", "CONFIG_C": "y", "CONFIG_N": "8"}
    assert kconfig.dropped_symbols(final, [frag]) == [
        "CONFIG_B=y (from guest) ended up not set",
        "CONFIG_C=n (from guest) ended up y",
        "CONFIG_N=4 (from guest) ended up 8",
    ]
    assert (
        kconfig.dropped_symbols({"CONFIG_A": "y", "CONFIG_B": "y", "CONFIG_N": "4"}, [frag]) == []
    )


def test_differing_symbols() -> None:
    assert kconfig.differing_symbols(
        {"CONFIG_A": "y", "CONFIG_B": "y"}, {"CONFIG_A": "y", "CONFIG_C": "m"}
    ) == [
        "CONFIG_B: y vs n",
        "CONFIG_C: n vs m",
    ]


def test_shipped_fragments_are_listed_and_resolve() -> None:
    names = [f.name for f in kconfig.list_fragments()]
    assert {"qemu-guest", "maps-contention"} <= set(names)
    guest = kconfig.resolve("qemu-guest")
    for sym in (
        "CONFIG_SERIAL_8250_CONSOLE",
        "CONFIG_BLK_DEV_INITRD",
        "CONFIG_VIRTIO_NET",
        "CONFIG_ACPI",
        "CONFIG_DEVTMPFS",
    ):
        assert guest.symbols[sym] == "y"
    assert kconfig.resolve("maps-contention").symbols["CONFIG_PER_VMA_LOCK"] == "y"
    with pytest.raises(UserError, match=r"known fragments: .*qemu-guest"):
        kconfig.resolve("no-such-fragment")


@pytest.mark.parametrize(
    ("path", "affects"),
    [
        ("fs/proc/task_mmu.c", False),
        ("include/linux/mmap_lock.h", False),
        ("mm/Kconfig", True),
        ("arch/x86/Kconfig.cpu", True),
        ("scripts/kconfig/merge_config.sh", True),
        ("arch/x86/configs/x86_64_defconfig", True),
        ("kernel/configs/tiny.config", True),
        ("Makefile", True),
        ("fs/proc/Makefile", False),
    ],
)
def test_which_changes_affect_kconfig(path: str, affects: bool) -> None:
    assert kconfig.affects_kconfig(path) is affects


def _tree(root: Path) -> Path:
    (root / "arch" / "x86").mkdir(parents=True)
    (root / "arch" / "arm64").mkdir(parents=True)
    (root / "fs" / "proc").mkdir(parents=True)
    (root / "Kconfig").write_text('mainmenu "Linux"\nsource "fs/proc/Kconfig"\n')
    (root / "fs" / "proc" / "Kconfig").write_text(
        "config PROC_FS\n\tbool\n\nmenuconfig PROC_SYSCTL  # a comment\n\tbool\n"
        "\thelp\n\t  config NOT_A_DEFINITION in help text\n"
    )
    (root / "arch" / "x86" / "Kconfig.cpu").write_text("config X86_64\n\tdef_bool y\n")
    (root / "arch" / "arm64" / "Kconfig").write_text("config ARM64\n\tdef_bool y\n")
    (root / "fs" / "proc" / "notes.txt").write_text("config IN_A_NOTE\n")
    return root


def test_defined_symbols_come_from_the_arch_s_kconfig_files(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    assert kconfig.defined_symbols(tree, "x86_64") == {
        "CONFIG_PROC_FS",
        "CONFIG_PROC_SYSCTL",
        "CONFIG_X86_64",
    }
    assert "CONFIG_ARM64" in kconfig.defined_symbols(tree, "arm64")


def test_a_symbol_the_tree_does_not_define_is_a_warning_not_an_error(tmp_path: Path) -> None:
    # PROC_SYSCTL is gone from Linux 7.3; the shipped qemu-guest fragment still sets it
    tree = _tree(tmp_path)
    (tree / "fs" / "proc" / "Kconfig").write_text("config PROC_FS\n\tbool\n")
    guest = kconfig.Fragment(
        "qemu-guest",
        Path("qemu-guest.config"),
        "",
        {"CONFIG_PROC_FS": "y", "CONFIG_PROC_SYSCTL": "y"},
    )
    extra = kconfig.Fragment("extra", Path("extra.config"), "", {"CONFIG_PROC_SYSCTL": "y"})
    undefined = kconfig.undefined_symbols([guest, extra], kconfig.defined_symbols(tree, "x86_64"))
    assert undefined == ["CONFIG_PROC_SYSCTL"]
    final = {"CONFIG_PROC_FS": "y"}
    assert kconfig.dropped_symbols(final, [guest], undefined) == []
    assert kconfig.dropped_symbols(final, [guest]) == [
        "CONFIG_PROC_SYSCTL=y (from qemu-guest) ended up not set"
    ]
    warning = kconfig.undefined_warning(undefined, [guest, extra], "debian:linux-source-7.3")
    assert warning.startswith(
        "debian:linux-source-7.3 does not define CONFIG_PROC_SYSCTL (from qemu-guest)"
    )
    # a defined symbol that olddefconfig dropped is still an error
    assert kconfig.dropped_symbols({}, [guest], undefined) == [
        "CONFIG_PROC_FS=y (from qemu-guest) ended up not set"
    ]
