"""Experiment schema: every problem with file, line, key path, expected and got."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.errors import ConfigError

GOOD = """\
schema: 1
name: demo
kernel:
  source: {tarball: linux.tar.xz}
  kconfig: [tinyconfig, qemu-guest]
variants:
  - name: base
  - name: cand
    description: with the series
    series: {dir: patches}
baseline: base
vm: {cpus: 2, memory: 512M, accel: tcg}
workload: {runs: 3, duration_s: 2.5, region_mb: 64}
"""


def load(tmp_path: Path, text: str) -> config.Experiment:
    f = tmp_path / "exp.yaml"
    f.write_text(text)
    return config.load(f)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.problems


def test_valid_file_resolves_paths_against_the_file(tmp_path: Path) -> None:
    exp = load(tmp_path, GOOD)
    assert exp.name == "demo"
    assert exp.source == config.SourceSpec("tarball", str(tmp_path / "linux.tar.xz"))
    assert exp.kconfig_base == "tinyconfig" and exp.kconfig == ("qemu-guest",)
    assert [v.name for v in exp.variants] == ["base", "cand"]
    assert exp.variants[1].series == config.SeriesSpec("dir", path=tmp_path / "patches")
    assert exp.vm == config.VmSpec(cpus=2, memory="512M", accel="tcg")
    assert (
        exp.workload.duration_s == 2.5
        and exp.workload.params["region_mb"] == 64
        and exp.workload.runs == 3
    )


def test_unknown_key_names_line_and_path(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  kconfig: [tinyconfig, qemu-guest]", "  kconfig: [tinyconfig]\n  kconfg: [x]"
    )
    (p,) = problems(tmp_path, text)
    assert p.startswith(f"{tmp_path / 'exp.yaml'}:6: kernel.kconfg: unknown key")
    assert "expected one of: arch, kconfig, make_target, source" in p


def test_wrong_type_says_expected_and_got(tmp_path: Path) -> None:
    text = GOOD.replace("cpus: 2", "cpus: two")
    (p,) = problems(tmp_path, text)
    assert ":12: vm.cpus: expected an integer, got a string ('two')" in p


def test_boolean_is_not_a_number(tmp_path: Path) -> None:
    (p,) = problems(tmp_path, GOOD.replace("runs: 3", "runs: true"))
    assert "workload.runs: expected an integer, got a boolean (true)" in p


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = (
        GOOD.replace("cpus: 2", "cpus: 0")
        .replace("region_mb: 64", "region_mb: 100")
        .replace("baseline: base", "baseline: nope")
    )
    ps = problems(tmp_path, text)
    assert len(ps) == 3
    assert any(":11: baseline: names no variant" in p for p in ps)
    assert any("vm.cpus: must be greater than zero (got 0)" in p for p in ps)
    assert any("workload.region_mb: must be a power of two (got 100)" in p for p in ps)


def test_variant_errors_carry_their_index(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    series: {dir: patches}", "    series: {dir: patches}\n    patches: [a.patch]"
    )
    (p,) = problems(tmp_path, text)
    assert "variants[1]: give either patches or series, not both" in p
    text = GOOD.replace("  - name: cand", "  - name: base")
    (p,) = problems(tmp_path, text)
    assert ":8: variants[1].name: variant name 'base' is used twice" in p


def test_missing_required_and_bad_schema(tmp_path: Path) -> None:
    ps = problems(tmp_path, "schema: 2\nname: x\n")
    assert any("schema: this korch reads schema 1 (got 2)" in p for p in ps)
    assert any(p.endswith("kernel: required key is missing") for p in ps)
    assert any(p.endswith("variants: required key is missing") for p in ps)


def test_source_needs_exactly_one_provider(tmp_path: Path) -> None:
    (p,) = problems(tmp_path, GOOD.replace("{tarball: linux.tar.xz}", "{tarball: a, git: b}"))
    assert (
        ":4: kernel.source: give exactly one of path, tarball, git, debian (found: tarball, git)"
        in p
    )
    (p,) = problems(
        tmp_path, GOOD.replace("{tarball: linux.tar.xz}", "{git: https://example.invalid/l.git}")
    )
    assert "kernel.source.ref: required key is missing" in p
    (p,) = problems(tmp_path, GOOD.replace("{tarball: linux.tar.xz}", "{tarball: http://x/l.tar}"))
    assert "only https URLs or paths" in p


def test_series_kinds(tmp_path: Path) -> None:
    exp = load(tmp_path, GOOD.replace("{dir: patches}", "{git: v7.1..v7.2, repo: ../linux}"))
    s = exp.variants[1].series
    assert (
        s.kind == "git" and s.spec == "v7.1..v7.2" and s.path == (tmp_path / "../linux").resolve()
    )
    exp = load(tmp_path, GOOD.replace("{dir: patches}", "{b4: 20250101.1-x@y, mbox: t.mbx}"))
    s = exp.variants[1].series
    assert s.kind == "b4" and s.spec == "20250101.1-x@y" and s.path == tmp_path / "t.mbx"
    (p,) = problems(tmp_path, GOOD.replace("{dir: patches}", "{git: main, repo: r}"))
    assert "expected a revision range like v7.2..HEAD" in p


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    (p,) = problems(tmp_path, GOOD.replace("baseline: base", "baseline: [base"))
    assert f"{tmp_path / 'exp.yaml'}:" in p and "not valid YAML" in p


def test_default_experiment_is_valid() -> None:
    exp = config.load_default()
    assert exp.baseline == "mmap-lock"
    assert exp.source.kind == "debian" and exp.source.location == "linux-source-7.2"
    names = [v.name for v in exp.variants]
    assert names == ["mmap-lock", "per-vma"]
    assert exp.variant("mmap-lock").series.files[0].is_file()
    with pytest.raises(ConfigError, match="no variant named 'x'"):
        exp.variant("x")


def test_headline_must_be_a_known_metric(tmp_path: Path) -> None:
    exp = load(tmp_path, GOOD.replace("region_mb: 64}", "region_mb: 64, headline: above_1ms}"))
    assert exp.workload.headline == "above_1ms"
    (p,) = problems(tmp_path, GOOD.replace("region_mb: 64}", "region_mb: 64, headline: fastest}"))
    assert (
        "workload.headline: must be a metric maps-contention reports: max_ms" in p
        and "(got 'fastest')" in p
    )


# GOOD up to its baseline line, without vm and workload
BASE = "".join(GOOD.splitlines(keepends=True)[:11])


def test_values_that_would_fail_late_are_refused_now(tmp_path: Path) -> None:
    # each of these passed validate and failed only after the builds, or never ended
    found = problems(
        tmp_path,
        BASE
        + "vm: {memory: 20M}\n"
        + "workload: {duration_s: .inf, runs: 100000000000, blocks: 0, busy_ms: 5000,"
        + " region_mb: 8}\n",
    )
    text = "\n".join(found)
    assert "vm.memory: must be at least 256M" in text
    assert "workload.duration_s: must be a finite number" in text
    assert "workload.runs: must be greater than 0 and at most 1000 runs per boot" in text
    assert "workload.blocks: must be greater than 0 and at most 1000" in text
    assert "workload.busy_ms: must be greater than 0 and at most 1000 ms" in text


def test_the_region_must_fit_the_guest(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + "vm: {memory: 512M}\nworkload: {region_mb: 512}\n")
    assert len(found) == 1 and ":13: workload.region_mb:" in found[0]
    assert "does not fit a guest of 512M: give vm.memory at least 1024M" in found[0]
    load(tmp_path, BASE + "vm: {memory: 1G}\nworkload: {region_mb: 512}\n")


CROSS = GOOD.replace(
    "  - name: base\n",
    "  - name: base\n    source: {debian: linux-source-6.12, suite: trixie}\n",
)


def test_a_variant_may_build_from_its_own_source(tmp_path: Path) -> None:
    exp = load(tmp_path, CROSS)
    assert exp.source_of("base") == config.SourceSpec("debian", "linux-source-6.12", suite="trixie")
    assert exp.source_of("cand") == exp.source  # kernel.source, as before
    assert exp.cross_tree
    assert not load(tmp_path, GOOD).cross_tree


def test_a_variant_s_source_is_checked_with_its_key_path(tmp_path: Path) -> None:
    text = GOOD.replace("  - name: cand\n", "  - name: cand\n    source: {debian: x, git: y}\n")
    (p,) = problems(tmp_path, text)
    assert p.startswith(f"{tmp_path / 'exp.yaml'}:9: variants[1].source: give exactly one of")
    text = GOOD.replace("  - name: cand\n", "  - name: cand\n    source: {debian: Not_A_Package}\n")
    (p,) = problems(tmp_path, text)
    assert "variants[1].source.debian" in p and "Debian package name" in p
