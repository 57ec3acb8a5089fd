"""Latency histograms: merging them across samples and reading percentiles from the merge.

A histogram is ``{"bounds_ms": [b0, b1, ...], "counts": [c0, ..., cN]}`` with ``cN`` the
overflow bucket (above the last bound). Percentiles of a rollup come from the merged counts,
interpolated linearly inside the bucket that holds the rank (Prometheus' histogram_quantile
does the same); a rank in the overflow bucket is reported as the largest p99 a constituent sample
reported, since the histogram says nothing above its last bound. Histograms with other bounds
(a new runtime version) are re-binned onto the first bounds by each bucket's upper edge.
"""

from __future__ import annotations

import bisect
from typing import Dict, List, Optional


def merge_histogram(into: Optional[Dict[str, List[float]]], other: Optional[Dict[str, List[float]]]
                    ) -> Optional[Dict[str, List[float]]]:
    """The sum of two histograms (``into`` is not modified); either may be None."""
    if other is None:
        return None if into is None else {"bounds_ms": list(into["bounds_ms"]), "counts": list(into["counts"])}
    if into is None:
        return {"bounds_ms": list(other["bounds_ms"]), "counts": list(other["counts"])}
    bounds = list(into["bounds_ms"])
    counts = list(into["counts"])
    if list(other["bounds_ms"]) == bounds:
        return {"bounds_ms": bounds, "counts": [a + b for a, b in zip(counts, other["counts"])]}
    other_bounds = list(other["bounds_ms"])
    for index, count in enumerate(other["counts"]):
        if not count:
            continue
        if index >= len(other_bounds):
            counts[-1] += count  # overflow stays overflow
        else:
            counts[bisect.bisect_left(bounds, other_bounds[index])] += count
    return {"bounds_ms": bounds, "counts": counts}


def quantile(histogram: Optional[Dict[str, List[float]]], q: float, overflow_ms: Optional[float] = None
             ) -> Optional[float]:
    """The ``q`` quantile (0..1) of a histogram in ms; None when it counts nothing."""
    if histogram is None:
        return None
    bounds, counts = histogram["bounds_ms"], histogram["counts"]
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for index, count in enumerate(counts):
        if count <= 0:
            continue
        if seen + count >= rank:
            if index >= len(bounds):  # the overflow bucket: no upper edge
                last = float(bounds[-1])
                return max(last, overflow_ms) if overflow_ms is not None else last
            lower = 0.0 if index == 0 else float(bounds[index - 1])
            upper = float(bounds[index])
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return float(bounds[-1])
