"""The latency histogram: layout, merge, percentiles, shares, JSON, and agreement with C."""

from __future__ import annotations

import bisect
import json
import math
import random
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from orchestrator import process
from orchestrator.workloads.maps_contention import compile_workload
from orchestrator.workloads.maps_contention.histogram import (
    MAX_NS,
    NBUCKETS,
    OVERFLOW,
    UNDERFLOW,
    Histogram,
    bucket_index,
    bucket_lower,
    bucket_upper,
)
from orchestrator.workloads.maps_contention.result import op_stats_from_json

LOWERS = [bucket_lower(i) for i in range(NBUCKETS)]


def reference_index(ns: int) -> int:
    """The bucket by definition: the last one whose lower bound is <= ns."""
    return bisect.bisect_right(LOWERS, ns) - 1


def samples(n: int, seed: int) -> list[int]:
    """Log-uniform latencies from 10 ns to 3 s, so underflow and overflow get some too."""
    rng = random.Random(seed)
    return [int(10 ** rng.uniform(1, 9.5)) for _ in range(n)]


def test_bucket_edges() -> None:
    assert bucket_index(0) == UNDERFLOW
    assert bucket_index(99) == UNDERFLOW
    assert bucket_index(100) == 1
    assert bucket_index(101) == 1  # 101 * 64 / 100 = 64.6: still sub-bucket 0
    assert bucket_index(102) == 2
    assert bucket_index(199) == 64
    assert bucket_index(200) == 65  # second octave starts at 200 ns
    assert bucket_index(MAX_NS - 1) == OVERFLOW - 1
    assert bucket_index(MAX_NS) == OVERFLOW
    assert bucket_index(10**12) == OVERFLOW
    assert bucket_upper(OVERFLOW - 1) == MAX_NS
    assert bucket_upper(OVERFLOW) == math.inf
    assert bucket_lower(OVERFLOW) == MAX_NS
    assert MAX_NS >= 10**9  # the layout reaches 1 s


def test_every_bucket_holds_exactly_its_interval() -> None:
    for i in range(1, OVERFLOW):
        first = math.ceil(LOWERS[i])
        last = math.ceil(LOWERS[i + 1]) - 1
        assert first <= last, f"bucket {i} holds no whole ns"
        assert bucket_index(first) == i
        assert bucket_index(last) == i
        assert bucket_index(first - 1) == i - 1
        # each bucket is at most 1/64 of its lower bound wide
        assert LOWERS[i + 1] - LOWERS[i] <= LOWERS[i] / 64


def test_index_matches_definition_on_random_values() -> None:
    for ns in samples(20_000, seed=1):
        assert bucket_index(ns) == reference_index(ns)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "100"])
def test_bucket_index_rejects_non_latencies(bad: object) -> None:
    with pytest.raises(ValueError):
        bucket_index(bad)  # type: ignore[arg-type]


def test_merge_adds_counts() -> None:
    a, b = samples(500, seed=2), samples(700, seed=3)
    merged = Histogram.from_samples(a).merge(Histogram.from_samples(b))
    assert merged == Histogram.from_samples(a + b)
    assert merged.count == 1200
    assert Histogram.merge_all([Histogram.from_samples(a), Histogram.from_samples(b)]) == merged
    assert Histogram.merge_all([]) == Histogram()


@pytest.mark.parametrize("q", [0, 1, 10, 50, 90, 99, 99.9, 100])
def test_percentile_is_upper_bound_of_nearest_rank_sample(q: float) -> None:
    data = samples(10_000, seed=4)
    hist = Histogram.from_samples(data)
    ordered = sorted(data)
    rank = max(1, math.ceil(Fraction(str(q)) * len(ordered) / 100))
    value = ordered[rank - 1]
    got = hist.percentile(q)
    assert got == bucket_upper(bucket_index(value))
    assert float(bucket_lower(bucket_index(value))) <= value < got


def test_percentile_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        Histogram().percentile(50)
    with pytest.raises(ValueError, match="outside"):
        Histogram.from_samples([1000]).percentile(101)


def test_share_above_exact_at_bucket_bounds() -> None:
    data = samples(5_000, seed=5)
    hist = Histogram.from_samples(data)
    for i in (1, 300, 800, 1200, OVERFLOW):
        threshold = float(bucket_lower(i))
        direct = sum(1 for v in data if v >= threshold) / len(data)
        assert hist.share_above(threshold) == pytest.approx(direct)


@pytest.mark.parametrize("threshold", [500_000, 1_000_000, 2_000_000, 150])
def test_share_above_between_bounds_within_one_bucket(threshold: int) -> None:
    data = samples(5_000, seed=6)
    hist = Histogram.from_samples(data)
    direct = sum(1 for v in data if v > threshold) / len(data)
    straddling = hist.counts[bucket_index(threshold)] / len(data)
    assert abs(hist.share_above(threshold) - direct) <= straddling


def test_share_above_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        Histogram().share_above(1000)
    with pytest.raises(ValueError, match="outside"):
        Histogram.from_samples([5]).share_above(MAX_NS + 1)


def test_json_round_trip_is_sparse_and_ascending() -> None:
    hist = Histogram.from_samples([5, 150, 150, 10**6, 10**10])
    encoded = hist.to_json()
    assert encoded == {
        "min_ns": 100,
        "sub": 64,
        "octaves": 24,
        "counts": [[0, 1], [33, 2], [bucket_index(10**6), 1], [OVERFLOW, 1]],
    }
    assert Histogram.from_json(encoded) == hist


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "JSON object"),
        ({"sub": 64, "octaves": 24, "counts": []}, "missing key 'min_ns'"),
        ({"min_ns": 1000, "sub": 64, "octaves": 24, "counts": []}, "min_ns is 1000"),
        ({"min_ns": 100, "sub": 32, "octaves": 24, "counts": []}, "sub is 32"),
        ({"min_ns": 100, "sub": 64, "octaves": 24}, "'counts' must be a list"),
        ({"min_ns": 100, "sub": 64, "octaves": 24, "counts": [[5, 1], [3, 1]]}, "ascend"),
        ({"min_ns": 100, "sub": 64, "octaves": 24, "counts": [[5, 1], [5, 1]]}, "ascend"),
        ({"min_ns": 100, "sub": 64, "octaves": 24, "counts": [[9999, 1]]}, "ascend"),
        ({"min_ns": 100, "sub": 64, "octaves": 24, "counts": [[5, 0]]}, "positive"),
        ({"min_ns": 100, "sub": 64, "octaves": 24, "counts": [[5, True]]}, "not \\[index"),
        ({"min_ns": 100, "sub": 64, "octaves": 24, "counts": [[5]]}, "not \\[index"),
        ({"min_ns": 100, "sub": 64, "octaves": 24, "counts": [5]}, "not \\[index"),
    ],
)
def test_from_json_rejects(obj: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Histogram.from_json(obj)


@pytest.fixture(scope="module")
def mapper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    return compile_workload(tmp_path_factory.getbasetemp() / "korch-cache")["maps-mapper"]


def test_c_and_python_layouts_agree(mapper: Path, tmp_path: Path) -> None:
    edges = [math.ceil(x) for x in LOWERS[1:]]
    values = [0, 1, 99, 100, 101, MAX_NS - 1, MAX_NS, 2**40]
    values += edges + [e - 1 for e in edges] + samples(20_000, seed=7)
    out = tmp_path / "hist.json"
    process.run(
        [str(mapper), "--selftest"],
        input="".join(f"{v}\n" for v in values).encode(),
        stdout_file=out,
        timeout=60,
    )
    stats = op_stats_from_json(json.loads(out.read_text()), "selftest")
    assert stats.hist == Histogram.from_samples(values)
    assert stats.count == len(values)
    assert stats.sum_ns == sum(values)
    assert stats.max_ns == max(values)


def test_selftest_rejects_bad_input(mapper: Path) -> None:
    result = process.run([str(mapper), "--selftest"], input=b"12\nabc\n", check=False)
    assert result.returncode == 65
    assert "line 2" in result.output
