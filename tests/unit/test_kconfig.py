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
