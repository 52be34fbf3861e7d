"""Per-operation latency histogram, with the same bucket layout as the guest mapper (c/hist.h).

Layout: 64 sub-buckets per power of two, from 100 ns over 24 octaves (to 100 ns · 2^24 =
1.68 s, the fewest whole octaves that reach 1 s), plus one underflow and one overflow
bucket; 1538 buckets in all. Latencies are whole nanoseconds.

For a latency ``v`` in ns::

    v < 100                      -> bucket 0 (underflow, [0, 100) ns)
    v >= 100 · 2^24              -> bucket 1537 (overflow, [1.68 s, inf))
    otherwise, with
        k = floor(log2(v / 100))                  (octave, 0..23)
        j = floor(v · 64 / (100 · 2^k)) - 64      (sub-bucket, 0..63)
    -> bucket i = 1 + 64·k + j

Regular bucket ``i`` (k, j = divmod(i - 1, 64)) covers the half-open interval
``[L(i), L(i + 1))`` with ``L(i) = 100 · 2^k · (64 + j) / 64`` ns, so each bucket is at most
1/64 (1.6 %) of its lower bound wide. Both sides compute the index with integer arithmetic
only, which makes the C and Python layouts agree exactly (the tests check that through the
mapper's ``--selftest``).

JSON encoding (one object, as printed by the mapper)::

    {"min_ns": 100, "sub": 64, "octaves": 24, "counts": [[index, count], ...]}

``counts`` is sparse: only non-empty buckets, indices strictly ascending, counts positive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

MIN_NS = 100
SUB = 64
OCTAVES = 24
MAX_NS = MIN_NS << OCTAVES
UNDERFLOW = 0
OVERFLOW = 1 + SUB * OCTAVES
NBUCKETS = OVERFLOW + 1


def bucket_index(ns: int) -> int:
    """The bucket that holds a latency of ``ns`` nanoseconds (see the module docstring)."""
    if isinstance(ns, bool) or not isinstance(ns, int) or ns < 0:
        raise ValueError(f"a latency must be a non-negative whole number of ns, not {ns!r}")
    if ns < MIN_NS:
        return UNDERFLOW
    if ns >= MAX_NS:
        return OVERFLOW
    k = (ns // MIN_NS).bit_length() - 1
    j = (ns * SUB) // (MIN_NS << k) - SUB
    return 1 + k * SUB + j


def bucket_lower(index: int) -> Fraction:
    """Lower bound in ns (inclusive) of bucket ``index``, exact."""
    _check_index(index)
    if index == UNDERFLOW:
        return Fraction(0)
    if index == OVERFLOW:
        return Fraction(MAX_NS)
    k, j = divmod(index - 1, SUB)
    return Fraction(MIN_NS * (SUB + j) << k, SUB)


def bucket_upper(index: int) -> float:
    """Upper bound in ns (exclusive) of bucket ``index``; ``inf`` for the overflow bucket."""
    _check_index(index)
    if index == OVERFLOW:
        return math.inf
    return float(bucket_lower(index + 1))


def _check_index(index: int) -> None:
    if not 0 <= index < NBUCKETS:
        raise ValueError(f"bucket index {index} is outside 0..{NBUCKETS - 1}")


@dataclass(frozen=True)
class Histogram:
    """Counts per bucket, dense (``NBUCKETS`` entries). Immutable: ``merge`` returns a new one."""

    counts: tuple[int, ...] = (0,) * NBUCKETS

    def __post_init__(self) -> None:
        if len(self.counts) != NBUCKETS:
            raise ValueError(f"a histogram has {NBUCKETS} buckets, not {len(self.counts)}")
        if any(c < 0 for c in self.counts):
            raise ValueError("bucket counts cannot be negative")

    @classmethod
    def from_samples(cls, samples: Iterable[int]) -> Histogram:
        """Bucket every latency (whole ns) of ``samples``."""
        counts = [0] * NBUCKETS
        for ns in samples:
            counts[bucket_index(ns)] += 1
        return cls(tuple(counts))

    @classmethod
    def from_json(cls, obj: Any) -> Histogram:
        """Decode the JSON object described in the module docstring.

        Raises ``ValueError`` naming the first problem (wrong layout, unsorted or
        out-of-range indices, non-positive counts, wrong types).
        """
        if not isinstance(obj, Mapping):
            raise ValueError(f"a histogram is a JSON object, not {type(obj).__name__}")
        for key, expected in (("min_ns", MIN_NS), ("sub", SUB), ("octaves", OCTAVES)):
            if key not in obj:
                raise ValueError(f"histogram: missing key '{key}'")
            if obj[key] != expected or isinstance(obj[key], bool):
                raise ValueError(
                    f"histogram: {key} is {obj[key]!r}, this korch reads only {key}={expected}"
                )
        pairs = obj.get("counts")
        if not isinstance(pairs, list):
            raise ValueError("histogram: 'counts' must be a list of [index, count] pairs")
        counts = [0] * NBUCKETS
        previous = -1
        for n, pair in enumerate(pairs):
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
            ):
                raise ValueError(f"histogram: counts[{n}] is {pair!r}, not [index, count]")
            index, count = pair
            if not previous < index < NBUCKETS:
                raise ValueError(
                    f"histogram: counts[{n}] has index {index}; indices must ascend"
                    f" strictly within 0..{NBUCKETS - 1}"
                )
            if count <= 0:
                raise ValueError(f"histogram: counts[{n}] has count {count}; must be positive")
            counts[index] = count
            previous = index
        return cls(tuple(counts))

    def to_json(self) -> dict[str, Any]:
        """The sparse JSON object, the inverse of :meth:`from_json`."""
        return {
            "min_ns": MIN_NS,
            "sub": SUB,
            "octaves": OCTAVES,
            "counts": [[i, c] for i, c in enumerate(self.counts) if c],
        }

    def merge(self, other: Histogram) -> Histogram:
        """A histogram holding the samples of both (bucket counts added)."""
        return Histogram(tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)))

    @classmethod
    def merge_all(cls, histograms: Iterable[Histogram]) -> Histogram:
        """The merge of any number of histograms (an empty one for none)."""
        counts = [0] * NBUCKETS
        for h in histograms:
            for i, c in enumerate(h.counts):
                counts[i] += c
        return cls(tuple(counts))

    @property
    def count(self) -> int:
        """Number of samples."""
        return sum(self.counts)

    def percentile(self, q: float) -> float:
        """Upper bound in ns of the bucket holding the ``q``-th percentile sample (0 <= q <= 100).

        The sample is chosen by nearest rank: the ``ceil(q/100 · n)``-th smallest (at least
        the first). The true value lies in ``[bucket_lower, result)``, so the result
        overstates it by under 1/64 of its value; ``inf`` if it lies in the overflow bucket.
        Raises ``ValueError`` for an empty histogram or ``q`` out of range.
        """
        if not 0 <= q <= 100:
            raise ValueError(f"percentile {q} is outside 0..100")
        n = self.count
        if n == 0:
            raise ValueError("percentile of an empty histogram")
        # Decimal text, not the binary float, so that 99.9 % of 1000 samples is rank 999.
        rank = max(1, math.ceil(Fraction(str(q)) * n / 100))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return bucket_upper(i)
        raise AssertionError("unreachable: rank <= count")

    def count_above(self, threshold_ns: float) -> float:
        """Estimated number of samples at or above ``threshold_ns``.

        Buckets entirely at or above the threshold count fully; the bucket the threshold
        falls in contributes the share of its width above the threshold (samples taken as
        spread evenly within a bucket). Exact when the threshold is a bucket bound; otherwise
        off by at most the count of that one bucket, which also makes "above" and "at or
        above" the same question at this resolution.
        The threshold must lie in ``[0, 100 · 2^24]`` ns: above that, values are unknown.
        """
        if not 0 <= threshold_ns <= MAX_NS:
            raise ValueError(f"threshold {threshold_ns} ns is outside 0..{MAX_NS} ns")
        total = 0.0
        for i, c in enumerate(self.counts):
            if not c:
                continue
            low = float(bucket_lower(i))
            high = bucket_upper(i)
            if low >= threshold_ns:
                total += c
            elif high > threshold_ns:
                total += c * (high - threshold_ns) / (high - low)
        return total

    def share_above(self, threshold_ns: float) -> float:
        """Estimated fraction of samples above ``threshold_ns`` (see :meth:`count_above`)."""
        n = self.count
        if n == 0:
            raise ValueError("share of an empty histogram")
        return self.count_above(threshold_ns) / n
