"""``GET /metrics``: Triton's metric names in Prometheus text format, plus process memory gauges.

The nv_* families are read from the serving statistics at scrape time (a custom collector), so
the inference path only bumps plain integers. They are exposed as *untyped*: Triton exposes
them as counters without a ``_total`` suffix, which dashboards built for Triton query, while
prometheus-client always renames a counter family to ``*_total``. Untyped keeps the names
exact; Prometheus ingests untyped samples like gauges and ``rate()`` works on them.

The system figures telemetry samples (memory, NvMap, GPU load, temperatures, power rails, clocks;
read from ``settings.telemetry.sysfs_root``) are read again at scrape time as ``edge_runtime_*``
gauges, and each model's latency histogram is ``edge_runtime_request_duration_seconds``.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from edge_runtime.serving.repository import ModelRepository
from edge_runtime.serving.stats import LATENCY_BOUNDS_MS
from edge_runtime.telemetry.record import Guard, read_system

_MIB = 1024.0 * 1024.0

# name, help, value taken from a Triton statistics snapshot
_FAMILIES: List[Tuple[str, str, Callable[[Dict], int]]] = [
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes",
     lambda s: s["inference_stats"]["success"]["count"]),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes",
     lambda s: s["inference_stats"]["fail"]["count"]),
    ("nv_inference_count", "Number of inferences performed (a batch of n counts n)",
     lambda s: s["inference_count"]),
    ("nv_inference_exec_count", "Number of model executions performed (a batch counts 1)",
     lambda s: s["execution_count"]),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds",
     lambda s: s["inference_stats"]["success"]["ns"] // 1000),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds",
     lambda s: s["inference_stats"]["queue"]["ns"] // 1000),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds",
     lambda s: s["inference_stats"]["compute_input"]["ns"] // 1000),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds",
     lambda s: s["inference_stats"]["compute_infer"]["ns"] // 1000),
    ("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds",
     lambda s: s["inference_stats"]["compute_output"]["ns"] // 1000),
]


class ServingCollector:
    """Reads every loaded model's statistics when Prometheus scrapes."""

    def __init__(self, repository: ModelRepository) -> None:
        self._repository = repository

    def collect(self) -> Iterator[Metric]:
        models = self._repository.loaded()
        snapshots = [m.stats.snapshot(m.name, m.version) for m in models]
        for name, documentation, value in _FAMILIES:
            family = Metric(name, documentation, "untyped")
            for snap in snapshots:
                family.add_sample(name, {"model": snap["name"], "version": snap["version"]}, value(snap))
            yield family
        latency = HistogramMetricFamily("edge_runtime_request_duration_seconds",
                                        "Duration of successful inference requests", labels=["model", "version"])
        for model in models:
            latest = model.stats.latency_snapshot()
            cumulative, buckets = 0, []
            for bound, count in zip([*(f"{b / 1000.0:g}" for b in LATENCY_BOUNDS_MS), "+Inf"], latest.counts):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            latency.add_metric([model.name, model.version], buckets, latest.sum_ns / 1e9)
        yield latency
        peak = GaugeMetricFamily("edge_runtime_peak_rss_bytes", "Peak resident set size of this process")
        peak.add_metric([], _peak_rss_bytes())
        yield peak


class SystemCollector:
    """The device's memory, NvMap, GPU load, temperatures, power rails and clock lock, read at scrape time."""

    def __init__(self, sysfs_root: Path) -> None:
        self._root = sysfs_root
        self._guard = Guard()

    def collect(self) -> Iterator[Metric]:
        figures = read_system(self._root, self._guard)
        yield from _gauge("edge_runtime_memory_total_bytes", "Total memory of the device (shared CPU/GPU DRAM)",
                          _bytes(figures["mem_total_mb"]))
        yield from _gauge("edge_runtime_memory_available_bytes", "Memory available for new allocations",
                          _bytes(figures["mem_available_mb"]))
        yield from _gauge("edge_runtime_nvmap_bytes", "Memory held through NvMap (GPU and engines) on Jetson",
                          _bytes(figures["nvmap_mb"]))
        yield from _gauge("edge_runtime_gpu_load", "Integrated GPU load, 0..1", figures["gpu_load"])
        locked = figures["clocks_locked"]
        yield from _gauge("edge_runtime_clocks_locked", "1 when every online CPU runs at a fixed frequency",
                          None if locked is None else float(locked))
        yield _labelled("edge_runtime_temperature_celsius", "Thermal zone temperature", "zone",
                        figures["temperatures_c"])
        yield _labelled("edge_runtime_power_milliwatts", "Power per INA3221 rail", "rail", figures["power_mw"])
        mode = figures["power_mode"]
        yield _labelled("edge_runtime_power_mode_info", "The nvpmodel power mode (value 1)", "mode",
                        {mode: 1.0} if mode else {})


def _bytes(megabytes: Optional[float]) -> Optional[float]:
    return None if megabytes is None else megabytes * _MIB


def _gauge(name: str, documentation: str, value: Optional[float]) -> Iterator[Metric]:
    """A one-sample gauge, or nothing when the figure is unknown on this host."""
    if value is not None:
        gauge = GaugeMetricFamily(name, documentation)
        gauge.add_metric([], float(value))
        yield gauge


def _labelled(name: str, documentation: str, label: str, values: Dict[str, Any]) -> Metric:
    gauge = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        gauge.add_metric([key], float(value))
    return gauge


def _peak_rss_bytes() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def metrics_blueprint(repository: ModelRepository) -> Blueprint:
    """A blueprint serving /metrics from its own registry (no global state between apps)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_virtual_memory_bytes, CPU
    registry.register(ServingCollector(repository))
    registry.register(SystemCollector(Path(repository.settings.resolve(repository.settings.telemetry.sysfs_root))))
    blueprint = Blueprint("metrics", __name__)

    @blueprint.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    return blueprint
