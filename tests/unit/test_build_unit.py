"""Build-stage logic that needs no compiler: cache keys, error extraction, the config guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import build, config
from orchestrator.errors import KconfigError


class FakePatched:
    def __init__(self, tree_id: str) -> None:
        self.tree_id = tree_id


@pytest.fixture
def builder(tmp_path: Path) -> build.Builder:
    b = build.Builder(config.load_default(), tmp_path)
    b._tools = {"gcc": "gcc (Debian 12.2.0-14) 12.2.0", "ld": "GNU ld 2.40", "make": "GNU Make 4.3"}
    return b


def test_artifact_key_follows_tree_config_and_toolchain(builder: build.Builder) -> None:
    k = builder.artifact_key(FakePatched("a" * 40), "CONFIG_A=y\n")  # type: ignore[arg-type]
    assert k == builder.artifact_key(FakePatched("a" * 40), "CONFIG_A=y\n")  # type: ignore[arg-type]
    assert k != builder.artifact_key(FakePatched("b" * 40), "CONFIG_A=y\n")  # type: ignore[arg-type]
    assert k != builder.artifact_key(FakePatched("a" * 40), "CONFIG_A=n\n")  # type: ignore[arg-type]
    builder._tools = dict(builder.tools, gcc="gcc (Debian 13.1.0) 13.1.0")
    assert k != builder.artifact_key(FakePatched("a" * 40), "CONFIG_A=y\n")  # type: ignore[arg-type]


def test_compiler_errors_picks_the_error_lines() -> None:
    log = "\n".join(
        [f"  CC      fs/x{i}.o" for i in range(50)]
        + [
            "../fs/proc/task_mmu.c: In function 'lock_vma_range':",
            "../fs/proc/task_mmu.c:170:9: error: implicit declaration of function 'nope'",
            "  170 |         nope();",
            "      |         ^~~~",
            "make[4]: *** [../scripts/Makefile.build:287: fs/proc/task_mmu.o] Error 1",
            "  CC      fs/y.o",
        ]
    )
    out = build.compiler_errors(log)
    assert "task_mmu.c:170:9: error: implicit declaration" in out
    assert "nope();" in out
    assert "Makefile.build:287: fs/proc/task_mmu.o] Error 1" in out
    assert "fs/x1.o" not in out


def test_variants_with_different_configs_are_an_error(builder: build.Builder) -> None:
    exp = builder.exp
    configs = {
        "mmap-lock": "CONFIG_A=y\nCONFIG_B=y\n",
        "per-vma": "CONFIG_A=y\n# CONFIG_B is not set\n",
    }
    with pytest.raises(KconfigError) as exc:
        builder.check_configs_agree(list(exp.variants), configs)
    assert "CONFIG_B: y vs n" in str(exc.value) and exc.value.symbols == ["CONFIG_B"]
    builder.check_configs_agree(list(exp.variants), {k: "CONFIG_A=y\n" for k in configs})


def test_compiled_object_lines() -> None:
    assert build._COMPILED.match("  CC      fs/proc/task_mmu.o")
    assert build._COMPILED.match("  AS      arch/x86/entry/entry_64.o")
    assert not build._COMPILED.match("  LD      vmlinux.o")
    assert not build._COMPILED.match("  CC      scripts/mod/empty.s")


def test_variants_of_different_trees_may_end_with_different_configs(
    builder: build.Builder, tmp_path: Path
) -> None:
    # each tree's Kconfig decides its symbols; the report lists the differences instead
    text = config.default_experiment_path().read_text()
    text = text.replace(
        "    description: stock Linux 7.2",
        "    source: {debian: linux-source-6.12, suite: trixie}\n    description: Linux 6.12",
    )
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "maps-under-mmap-lock.patch").write_text("x")
    f = tmp_path / "cross.yaml"
    f.write_text(text)
    exp = config.load(f)
    assert exp.cross_tree
    cross = build.Builder(exp, tmp_path)
    configs = {"mmap-lock": "CONFIG_A=y\nCONFIG_B=y\n", "per-vma": "CONFIG_A=y\n"}
    cross.check_configs_agree(list(exp.variants), configs)
