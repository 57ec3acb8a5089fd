"""``GET /metrics``: Triton's metric names in Prometheus text format, plus process memory gauges.

The nv_* families are read from the serving statistics at scrape time (a custom collector), so
the inference path only bumps plain integers. They are exposed as *untyped*: Triton exposes
them as counters without a ``_total`` suffix, which dashboards built for Triton query, while
prometheus-client always renames a counter family to ``*_total``. Untyped keeps the names
exact; Prometheus ingests untyped samples like gauges and ``rate()`` works on them.
"""

from __future__ import annotations

import resource
import sys
from typing import Callable, Dict, Iterator, List, Tuple

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from edge_runtime.serving.repository import ModelRepository

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
        snapshots = [m.stats.snapshot(m.name, m.version) for m in self._repository.loaded()]
        for name, documentation, value in _FAMILIES:
            family = Metric(name, documentation, "untyped")
            for snap in snapshots:
                family.add_sample(name, {"model": snap["name"], "version": snap["version"]}, value(snap))
            yield family
        peak = GaugeMetricFamily("edge_runtime_peak_rss_bytes", "Peak resident set size of this process")
        peak.add_metric([], _peak_rss_bytes())
        yield peak


def _peak_rss_bytes() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def metrics_blueprint(repository: ModelRepository) -> Blueprint:
    """A blueprint serving /metrics from its own registry (no global state between apps)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_virtual_memory_bytes, CPU
    registry.register(ServingCollector(repository))
    blueprint = Blueprint("metrics", __name__)

    @blueprint.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    return blueprint
