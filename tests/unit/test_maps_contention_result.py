"""The mapper's result line: valid lines parse, every kind of bad line is a clear error."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.errors import InfraError, WorkloadError
from orchestrator.workloads.maps_contention.histogram import Histogram
from orchestrator.workloads.maps_contention.result import OpStats, RunRecord, parse_result

MAP_SAMPLES = [900, 1200, 1200, 5000, 250_000]
UNMAP_SAMPLES = [700, 800, 3_000_000]


def op(samples: list[int]) -> dict[str, Any]:
    return {
        "count": len(samples),
        "sum_ns": sum(samples),
        "max_ns": max(samples),
        "hist": Histogram.from_samples(samples).to_json(),
    }


def valid() -> dict[str, Any]:
    everything = MAP_SAMPLES + UNMAP_SAMPLES
    return {
        "schema": 1,
        "tool": "maps-mapper",
        "maps": len(MAP_SAMPLES),
        "unmaps": len(UNMAP_SAMPLES),
        "max_ms": round(max(everything) / 1e6, 6),
        "mean_ms": round(sum(everything) / len(everything) / 1e6, 6),
        "map": op(MAP_SAMPLES),
        "unmap": op(UNMAP_SAMPLES),
        "duration_s": 10,
        "elapsed_s": 10.000123,
        "region_mb": 128,
        "seed": 7,
        "cpu": 0,
    }


def line(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":")) + "\n"


def test_valid_line() -> None:
    record = parse_result(line(valid()), "run 1")
    assert record.maps == 5 and record.unmaps == 3 and record.operations == 8
    assert record.max_ms == 3.0
    assert record.map == OpStats(5, sum(MAP_SAMPLES), 250_000, Histogram.from_samples(MAP_SAMPLES))
    assert record.hist == Histogram.from_samples(MAP_SAMPLES + UNMAP_SAMPLES)
    assert record.duration_s == 10.0 and record.seed == 7 and record.cpu == 0
    assert record.map.mean_ns == pytest.approx(sum(MAP_SAMPLES) / 5)


def test_round_trip_and_unknown_keys_ignored() -> None:
    record = parse_result(line(valid()), "run 1")
    assert parse_result(line(record.to_json()), "again") == record
    assert parse_result(line({**valid(), "future_field": [1, 2]}), "run 1") == record


def test_no_operations_is_valid() -> None:
    obj = {**valid(), "maps": 0, "unmaps": 0, "max_ms": 0.0, "mean_ms": 0.0}
    obj["map"] = obj["unmap"] = {
        "count": 0,
        "sum_ns": 0,
        "max_ns": 0,
        "hist": Histogram().to_json(),
    }
    record = parse_result(line(obj), "run 1")
    assert isinstance(record, RunRecord) and record.operations == 0


def test_error_is_infra_and_names_source_and_snippet() -> None:
    with pytest.raises(WorkloadError) as info:
        parse_result("Segmentation fault\n", "maps-contention run 3/10, mapper result")
    error = info.value
    assert isinstance(error, InfraError)
    assert "maps-contention run 3/10, mapper result" in str(error)
    assert "Segmentation fault" in str(error)


def test_every_truncation_is_a_clear_error() -> None:
    text = line(valid()).rstrip("\n")
    for cut in range(1, len(text)):
        with pytest.raises(WorkloadError):
            parse_result(text[:cut], "run 1")
    with pytest.raises(WorkloadError, match="truncated"):
        parse_result(text[: len(text) // 2], "run 1")
    with pytest.raises(WorkloadError, match="truncated"):
        parse_result('{"schema":1,"tool":"maps-ma', "run 1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty output"),
        ("   \n", "empty output"),
        ("garbage", "not JSON"),
        ("\x00\x01\xff", "not JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ("null", "JSON NoneType"),
        ('{"a": NaN}', "NaN"),
        ("{}\n{}", "2 lines"),
        ('{"schema": 2}', "schema 2 is not supported"),
        ('{"schema": "1"}', "'schema' is '1', not a whole number"),
        ('{"schema": 1, "tool": "other"}', "'tool' is 'other'"),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_garbage(text: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        parse_result(text, "run 1")


@pytest.mark.parametrize(
    "key",
    [
        "schema",
        "maps",
        "unmaps",
        "max_ms",
        "mean_ms",
        "map",
        "unmap",
        "duration_s",
        "elapsed_s",
        "region_mb",
        "seed",
        "cpu",
    ],
)
def test_missing_key(key: str) -> None:
    obj = valid()
    del obj[key]
    with pytest.raises(WorkloadError, match=f"missing key '{key}'"):
        parse_result(line(obj), "run 1")


@pytest.mark.parametrize("key", ["count", "sum_ns", "max_ns", "hist"])
def test_missing_nested_key(key: str) -> None:
    obj = valid()
    del obj["unmap"][key]
    with pytest.raises(WorkloadError, match="unmap") as info:
        parse_result(line(obj), "run 1")
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("maps",), "5", "'maps' is '5', not a whole number"),
        (("maps",), True, "not a whole number"),
        (("maps",), 5.0, "not a whole number"),
        (("maps",), -5, "below 0"),
        (("max_ms",), "3", "'max_ms' is '3', not a number"),
        (("max_ms",), float("inf"), "Infinity is not a number korch accepts"),
        (("map",), [1], "'map' is \\[1\\], not an object"),
        (("map", "count"), None, "'map.count' is None"),
        (("map", "hist"), "x", "'map'"),
        (("map", "hist", "counts"), [[1, -1]], "positive"),
        (("cpu",), -2, "below -1"),
        (("duration_s",), 0, "'duration_s' must be positive"),
    ],
)
def test_wrong_types(path: tuple[str, ...], value: Any, message: str) -> None:
    obj = valid()
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(WorkloadError, match=message):
        parse_result(json.dumps(obj), "run 1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"maps": 6}, "disagree"),
        ({"max_ms": 2.0}, "'max_ms' is 2.0"),
        ({"mean_ms": 9.9}, "'mean_ms' is 9.9"),
    ],
)
def test_inconsistent_totals(change: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        parse_result(line({**valid(), **change}), "run 1")


def test_overflowing_number_is_not_finite() -> None:
    text = line(valid()).replace('"elapsed_s":10.000123', '"elapsed_s":1e400')
    with pytest.raises(WorkloadError, match="'elapsed_s' is inf, not a finite"):
        parse_result(text, "run 1")


def test_histogram_disagreeing_with_count_or_max() -> None:
    obj = valid()
    obj["map"]["count"] = 6
    with pytest.raises(WorkloadError, match="histogram holds 5 operations"):
        parse_result(line(obj), "run 1")
    obj = valid()
    obj["map"]["max_ns"] = 260_000  # a larger maximum lands in a bucket the histogram lacks
    with pytest.raises(WorkloadError, match="highest non-empty bucket"):
        parse_result(line(obj), "run 1")


def test_snippet_of_a_long_line_is_short() -> None:
    text = "x" * 10_000
    with pytest.raises(WorkloadError) as info:
        parse_result(text, "run 1")
    assert len(str(info.value)) < 600
