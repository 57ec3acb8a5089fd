"""scripts/bench/trt_bench.py's reading of trtexec output (the bench itself needs a Jetson)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "scripts" / "bench"))

import trt_bench

# The summary trtexec prints (8.5 and 10.x share this shape); H2D/D2H lines must not be taken for Latency.
OUTPUT = """\
[11/25/2026-10:20:30] [I] === Performance summary ===
[11/25/2026-10:20:30] [I] Throughput: 1234.5 qps
[11/25/2026-10:20:30] [I] Latency: min = 0.779541 ms, max = 1.23 ms, mean = 0.80 ms, median = 0.795898 ms, \
percentile(90%) = 0.81 ms, percentile(95%) = 0.82 ms, percentile(99%) = 0.9 ms
[11/25/2026-10:20:30] [I] H2D Latency: min = 0.01 ms, max = 0.02 ms, mean = 0.012 ms, median = 0.0117 ms
[11/25/2026-10:20:30] [I] GPU Compute Time: min = 0.7 ms, max = 1.1 ms, mean = 0.73 ms, median = 0.72 ms
[11/25/2026-10:20:30] [I] D2H Latency: min = 0.005 ms, max = 0.01 ms, mean = 0.006 ms, median = 0.0061 ms
"""


def test_medians_of_latency_and_gpu_compute_time() -> None:
    assert trt_bench.parse_trtexec(OUTPUT) == {"Latency": 0.795898, "GPU Compute Time": 0.72}


def test_no_summary_gives_nothing() -> None:
    assert trt_bench.parse_trtexec("[E] Error[1]: engine deserialization failed") == {}


def test_plan_of_a_bundle_engine_and_of_a_cache_entry(tmp_path: Path) -> None:
    assert trt_bench.plan_of("engines/agx-xavier.plan", tmp_path, tmp_path) == tmp_path / "engines/agx-xavier.plan"
    (tmp_path / "abc.json").write_text('{"label": "digits v1 agx-xavier fp16"}')
    assert trt_bench.plan_of("engine cache: digits v1 agx-xavier fp16", tmp_path, tmp_path) == tmp_path / "abc.plan"
