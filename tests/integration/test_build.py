"""The build stage on a real kernel: Debian's linux-source-7.2, built twice from one tree.

Needs the packages of ci/install-deps.sh and the Debian archive reachable through the
machine's apt sources (the source package is linux-source-7.2 from trixie-backports).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from orchestrator import build, config
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
    for line in ("CONFIG_PER_VMA_LOCK=y", "CONFIG_VIRTIO_NET=y", "CONFIG_SERIAL_8250_CONSOLE=y", "CONFIG_ACPI=y"):
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
