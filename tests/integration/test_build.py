"""The build stage on a real kernel: Debian's linux-source-7.2, built twice from one tree.

Needs the packages of ci/install-deps.sh and the Debian archive reachable through the
machine's apt sources (the source package is linux-source-7.2 from trixie-backports).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from orchestrator import build, config
from orchestrator.cli import main
from orchestrator.errors import EXIT_INFRA, EXIT_USAGE
from orchestrator.fsutil import cache_root
from orchestrator.ui import PlainProgress

MARKER_PATCH = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: korch test <test@localhost>
Date: Thu, 26 Nov 2026 00:00:00 +0000
Subject: [PATCH] fs/proc/task_mmu: add a marker string

Changes one object file, so an incremental build has a handful of objects to compile.
---
diff --git a/fs/proc/task_mmu.c b/fs/proc/task_mmu.c
--- a/fs/proc/task_mmu.c
+++ b/fs/proc/task_mmu.c
@@ -32,6 +32,8 @@
 #define SENTINEL_VMA_END	-1
 #define SENTINEL_VMA_GATE	-2
 
+static const char korch_marker[] __used = "MARKER";
+
 #define SEQ_PUT_DEC(str, val) \\
 		seq_put_decimal_ull_width(m, str, (val) << (PAGE_SHIFT-10), 8)
 void task_mem(struct seq_file *m, struct mm_struct *mm)
"""


def test_default_variants_build_and_differ(default_builds: dict[str, build.Build]) -> None:
    lock, pervma = default_builds["mmap-lock"], default_builds["per-vma"]
    for b in (lock, pervma):
        assert b.bzimage.is_file() and b.bzimage.stat().st_size > 500_000
        assert b.system_map.is_file() and b.config.is_file()
        meta = json.loads((b.dir / "metadata.json").read_text())
        assert meta["kernel_release"].startswith("7.2")
        assert meta["hashes"]["bzImage"] and meta["toolchain"]["gcc"].startswith("gcc")
        assert "korch build" in meta["reproduce"] and "make -C" in meta["make_command"]
    assert lock.bzimage.read_bytes() != pervma.bzimage.read_bytes()
    assert lock.config.read_text() == pervma.config.read_text()
    assert [p["subject"] for p in lock.metadata["patches"]] == [
        "fs/proc/task_mmu: read /proc/pid/maps under mmap_lock again"
    ]
    assert pervma.metadata["patches"] == []
    # Every symbol the fragments ask for holds in the image's configuration.
    cfg = pervma.config.read_text()
    for line in (
        "CONFIG_PER_VMA_LOCK=y",
        "CONFIG_VIRTIO_NET=y",
        "CONFIG_SERIAL_8250_CONSOLE=y",
        "CONFIG_ACPI=y",
    ):
        assert line in cfg.splitlines()


def test_second_variant_is_incremental_and_rerun_builds_nothing(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    token = uuid.uuid4().hex
    patch = tmp_path / "marker.patch"
    patch.write_text(MARKER_PATCH.replace("MARKER", token))
    default = config.load_default()
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(
        f"""schema: 1
name: incremental
kernel:
  source: {{debian: {default.source.location}, suite: {default.source.suite}}}
  kconfig: [{default.kconfig_base}, {", ".join(default.kconfig)}]
variants:
  - name: stock
  - name: marked
    patches: [marker.patch]
"""
    )
    exp = config.load(exp_file)
    builds = build.Builder(exp, cache_root(), PlainProgress()).build_all()
    stock, marked = builds["stock"], builds["marked"]
    # The stock tree with the same config is the default per-vma build: already cached.
    assert stock.cached and stock.key == default_builds["per-vma"].key
    assert not marked.cached
    assert 1 <= marked.objects_compiled <= 10, marked.objects_compiled
    assert marked.bzimage.read_bytes() != stock.bzimage.read_bytes()

    again = build.Builder(exp, cache_root(), PlainProgress()).build_all()
    assert all(b.cached and b.objects_compiled == 0 for b in again.values())
    assert again["marked"].key == marked.key


def _experiment(tmp_path: Path, variants: str, extra_kconfig: str = "") -> Path:
    default = config.load_default()
    kconfig = ", ".join(
        [default.kconfig_base, *default.kconfig, *([extra_kconfig] if extra_kconfig else [])]
    )
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(
        f"schema: 1\nname: failing\nkernel:\n"
        f"  source: {{debian: {default.source.location}, suite: {default.source.suite}}}\n"
        f"  kconfig: [{kconfig}]\nvariants:\n{variants}"
    )
    return exp_file


def test_compile_error_exits_2_with_the_compiler_lines(
    default_builds: dict[str, build.Build], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = uuid.uuid4().hex
    (tmp_path / "broken.patch").write_text(
        MARKER_PATCH.replace(
            'static const char korch_marker[] __used = "MARKER";', f"#error broken_{token}"
        )
    )
    exp = _experiment(tmp_path, "  - name: broken\n    patches: [broken.patch]\n")
    assert main(["build", str(exp)]) == EXIT_INFRA
    err = capsys.readouterr().err
    assert "build of variant broken failed" in err
    assert f"task_mmu.c:35:2: error: #error broken_{token}" in err
    log = re.search(r"full output: (\S+)", err)
    assert log and Path(log.group(1)).is_file()


def test_patch_that_does_not_apply_exits_64(
    default_builds: dict[str, build.Build], tmp_path: Path, capsys
) -> None:
    stale = MARKER_PATCH.replace("#define SENTINEL_VMA_GATE\t-2", "#define SENTINEL_VMA_GATE\t-3")
    (tmp_path / "0001-stale.patch").write_text(stale)
    exp = _experiment(tmp_path, "  - name: stale\n    series: {dir: .}\n")
    assert main(["build", str(exp)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert 'patch 0001-stale.patch ("fs/proc/task_mmu: add a marker string", 1 of 1' in err
    assert "fs/proc/task_mmu.c: hunk #1 (@@ -32,6 +32,8 @@) does not apply" in err


def test_dropped_kconfig_symbol_is_named(
    default_builds: dict[str, build.Build], tmp_path: Path, capsys
) -> None:
    frag = tmp_path / "extra.config"
    frag.write_text(
        "# needs a symbol that does not exist and one whose dependency is off\nCONFIG_KORCH_NO_SUCH_SYMBOL=y\nCONFIG_KVM=y\n"
    )
    exp = _experiment(tmp_path, "  - name: only\n", extra_kconfig="extra.config")
    assert main(["build", str(exp)]) == EXIT_USAGE
    err = capsys.readouterr().err
    # the tree defines KVM but its dependency is off: an error; the other is no symbol at all
    assert "1 symbol(s) set by the kconfig fragments did not survive" in err
    assert "CONFIG_KVM=y (from extra) ended up not set" in err
    assert "skipped, as the tree does not define them: CONFIG_KORCH_NO_SUCH_SYMBOL" in err


def test_a_symbol_the_tree_does_not_define_is_a_warning(
    default_builds: dict[str, build.Build], tmp_path: Path, capsys
) -> None:
    # a fragment serves many kernels; a tree that removed a symbol has moved on
    frag = tmp_path / "extra.config"
    frag.write_text("# a symbol no tree defines\nCONFIG_KORCH_NO_SUCH_SYMBOL=y\n")
    exp = _experiment(tmp_path, "  - name: only\n", extra_kconfig="extra.config")
    assert main(["build", str(exp)]) == 0
    err = capsys.readouterr().err
    assert "warning: only: debian:linux-source-7.2 from trixie-backports does not define" in err
    assert "does not define CONFIG_KORCH_NO_SUCH_SYMBOL (from extra)" in err
    # the same .config as the stock variant: the build is the cached per-vma kernel
    built = build.Builder(config.load(exp), cache_root(), PlainProgress()).build_all()["only"]
    assert built.cached and built.key == default_builds["per-vma"].key
