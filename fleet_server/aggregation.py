"""Aggregates of samples over a minute or an hour: what rollups store and coarse history shows.

One :class:`BucketAggregate` per device and bucket: sums and counts of each figure (so means of
means stay weighted by sample count), the peak RSS, and per model the summed requests/failures and
the merged latency histogram (:mod:`fleet_server.histograms`) from which p50/p99 are read. Merging
two aggregates gives the aggregate of their union, which is what lets retention fold late
samples into an existing rollup and hours out of minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from fleet_server.histograms import merge_histogram, quantile

FIGURES = ("rss_mb", "cpu_percent", "mem_total_mb", "mem_available_mb", "nvmap_mb", "gpu_load")
BUCKET_SECONDS = {"minute": 60.0, "hour": 3600.0}
ModelKey = Tuple[str, str]  # (name, version)
Row = Mapping[Any, Any]  # a result row as a mapping (RowMapping) or a plain dict


def bucket_start(time: float, resolution: str) -> float:
    """The start of the minute or hour holding ``time``."""
    size = BUCKET_SECONDS[resolution]
    return math.floor(time / size) * size


@dataclass
class ModelAggregate:
    """One model's figures over a bucket."""

    backend: str
    samples: int = 0
    requests: int = 0
    failures: int = 0
    memory_mb_sum: float = 0.0
    memory_mb_n: int = 0
    p99_ms_max: Optional[float] = None
    histogram: Optional[Dict[str, List[float]]] = None

    def add(self, row: Row) -> None:
        """Fold in one model row of one sample (a ``model_samples`` row as a mapping)."""
        self.merge(ModelAggregate(
            backend=row["backend"], samples=1, requests=int(row["requests"]), failures=int(row["failures"]),
            memory_mb_sum=row["memory_mb"] or 0.0, memory_mb_n=0 if row["memory_mb"] is None else 1,
            p99_ms_max=row["p99_ms"], histogram=row["histogram"]))

    def merge(self, other: ModelAggregate) -> None:
        """Fold in another aggregate of the same model."""
        self.backend = other.backend or self.backend
        self.samples += other.samples
        self.requests += other.requests
        self.failures += other.failures
        self.memory_mb_sum += other.memory_mb_sum
        self.memory_mb_n += other.memory_mb_n
        if other.p99_ms_max is not None:
            self.p99_ms_max = other.p99_ms_max if self.p99_ms_max is None else max(self.p99_ms_max, other.p99_ms_max)
        self.histogram = merge_histogram(self.histogram, other.histogram)

    def point(self, version: str) -> Dict[str, Any]:
        """The history point's figures for this model."""
        p99 = quantile(self.histogram, 0.99, self.p99_ms_max)
        return {"version": version, "requests": self.requests,
                "p50_ms": quantile(self.histogram, 0.5, self.p99_ms_max),
                "p99_ms": p99 if p99 is not None or self.histogram is not None else self.p99_ms_max,
                "memory_mb": self.memory_mb_sum / self.memory_mb_n if self.memory_mb_n else None}


@dataclass
class BucketAggregate:
    """A device's samples over one bucket."""

    samples: int = 0
    sums: Dict[str, List[float]] = field(default_factory=dict)  # figure -> [sum, count]
    rss_peak_mb_max: Optional[float] = None
    models: Dict[ModelKey, ModelAggregate] = field(default_factory=dict)

    def add_sample(self, sample: Row, model_rows: List[Row]) -> None:
        """Fold in one raw sample and its model rows."""
        self.samples += 1
        for key in FIGURES:
            value = sample[key]
            if value is not None:
                total = self.sums.setdefault(key, [0.0, 0])
                total[0] += value
                total[1] += 1
        peak = sample["rss_peak_mb"]
        if peak is not None:
            self.rss_peak_mb_max = peak if self.rss_peak_mb_max is None else max(self.rss_peak_mb_max, peak)
        for row in model_rows:
            model_key = (str(row["name"]), str(row["version"]))
            self.models.setdefault(model_key, ModelAggregate(backend=row["backend"])).add(row)

    def merge(self, other: BucketAggregate) -> None:
        """Fold in another aggregate of the same device (e.g. a stored rollup, or a finer bucket)."""
        self.samples += other.samples
        for key, (total, count) in other.sums.items():
            mine = self.sums.setdefault(key, [0.0, 0])
            mine[0] += total
            mine[1] += count
        if other.rss_peak_mb_max is not None:
            self.rss_peak_mb_max = (other.rss_peak_mb_max if self.rss_peak_mb_max is None
                                    else max(self.rss_peak_mb_max, other.rss_peak_mb_max))
        for model_key, model in other.models.items():
            self.models.setdefault(model_key, ModelAggregate(backend=model.backend)).merge(model)

    def mean(self, key: str) -> Optional[float]:
        """The sample-weighted mean of a figure, or None when no sample had it."""
        total = self.sums.get(key)
        return total[0] / total[1] if total and total[1] else None

    def point(self, time: float) -> Dict[str, Any]:
        """This bucket as a history point (the model with most samples stands for each name)."""
        models: Dict[str, Dict[str, Any]] = {}
        best: Dict[str, int] = {}
        for (name, version), model in self.models.items():
            if model.samples > best.get(name, -1):
                best[name] = model.samples
                models[name] = model.point(version)
        return {"time": time, "rss_mb": self.mean("rss_mb"), "mem_available_mb": self.mean("mem_available_mb"),
                "nvmap_mb": self.mean("nvmap_mb"), "gpu_load": self.mean("gpu_load"), "samples": self.samples,
                "models": models}

    def figures_json(self) -> Dict[str, Any]:
        """What ``rollups.figures`` stores."""
        return {"sums": self.sums, "rss_peak_mb_max": self.rss_peak_mb_max}

    @classmethod
    def from_stored(cls, samples: int, figures: Mapping[str, Any], model_rows: List[Row]
                    ) -> BucketAggregate:
        """Rebuild an aggregate from a ``rollups`` row and its ``model_rollups`` rows."""
        aggregate = cls(samples=samples, sums={k: [float(v[0]), int(v[1])] for k, v in figures["sums"].items()},
                        rss_peak_mb_max=figures.get("rss_peak_mb_max"))
        for row in model_rows:
            aggregate.models[(row["name"], row["version"])] = ModelAggregate(
                backend=row["backend"], samples=int(row["samples"]), requests=int(row["requests"]),
                failures=int(row["failures"]), memory_mb_sum=float(row["memory_mb_sum"]),
                memory_mb_n=int(row["memory_mb_n"]), p99_ms_max=row["p99_ms_max"], histogram=row["histogram"])
        return aggregate
