"""Query a running edge-runtime with the unmodified Triton client: answers, latency, memory.

    python scripts/demo_query.py --url 127.0.0.1:8000 --model digits-cnn
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request

import numpy as np
import tritonclient.http as httpclient

from export.models.digits_data import load_digits_splits


def _resident_mib(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{url}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "process_resident_memory_bytes":
                return sample.value / 2**20
    raise RuntimeError("the server's /metrics has no process_resident_memory_bytes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:8000")
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    client = httpclient.InferenceServerClient(args.url)
    data = load_digits_splits()
    images, labels = data.test_x[:8], data.test_y[:8]
    given = httpclient.InferInput("input", list(images.shape), "FP32")
    given.set_data_from_numpy(images)
    logits = client.infer(args.model, [given]).as_numpy("output")
    print(f"model {args.model}: {client.get_model_metadata(args.model)['platform']}, "
          f"artifact {client.get_model_config(args.model)['parameters']['artifact']['string_value']}")
    print(f"predicted: {logits.argmax(1).tolist()}")
    print(f"labels:    {labels.tolist()}")
    one = httpclient.InferInput("input", [1, 1, 8, 8], "FP32")
    one.set_data_from_numpy(data.test_x[:1])
    times = []
    for _ in range(args.requests):
        start = time.perf_counter()
        client.infer(args.model, [one])
        times.append((time.perf_counter() - start) * 1e3)
    correct = 0
    batch_size = client.get_model_config(args.model)["max_batch_size"] or 1
    for start in range(0, len(data.test_x), batch_size):
        batch = data.test_x[start : start + batch_size]
        request = httpclient.InferInput("input", list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        correct += int((client.infer(args.model, [request]).as_numpy("output").argmax(1)
                        == data.test_y[start : start + batch_size]).sum())
    print(f"held-out top-1 through the server: {100.0 * correct / len(data.test_y):.2f} % ({len(data.test_y)} images)")
    print(f"latency over HTTP (binary, batch 1, {args.requests} requests): "
          f"p50 {statistics.median(times):.2f} ms, p99 {float(np.percentile(times, 99)):.2f} ms")
    print(f"server resident memory: {_resident_mib(args.url):.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
