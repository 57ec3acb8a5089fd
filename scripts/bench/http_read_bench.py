"""How waitress' socket read size (recv_bytes) affects a large binary inference request, side by side.

Servers run the runtime's app over a fake model with a ResNet-sized input (FP32 [1, 3, 224, 224],
602 KB) and output (FP32 [1, 1000]); each is a waitress server differing only in recv_bytes. One
client POSTs the same pre-encoded binary-extension body to each in turn (interleaved blocks), so
the numbers show the transport and the app, not a model. It backs RECV_BYTES in
edge_runtime/server/serve.py.

    python scripts/bench/http_read_bench.py [--rounds 30] [--block 10] [--sizes 8192,65536,262144]
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHAPE = (1, 3, 224, 224)
HEADER = "Inference-Header-Content-Length"


def serve(port: int, recv_bytes: int) -> None:
    """Server process: the app over fake model 'big', on waitress with the given recv_bytes."""
    import waitress

    from edge_runtime.backends.fake import FakeBackend
    from edge_runtime.bundle.manifest import TensorSpec
    from edge_runtime.config import RuntimeSettings, load_device_config
    from edge_runtime.server.app import create_app
    from edge_runtime.serving.repository import ModelRepository

    settings = RuntimeSettings(device_config=str(REPO / "device_configs/x86-cpu.yaml"), trusted_keys=("unused",))
    repository = ModelRepository(None, settings, load_device_config(settings.device_config), trusted_keys=[])
    repository.add_fake("big", lambda: FakeBackend(
        inputs=(TensorSpec(name="IN", dtype="float32", shape=(-1, *SHAPE[1:])),),
        outputs=(TensorSpec(name="OUT", dtype="float32", shape=(-1, 1000)),)))
    repository.load_all()
    cap = settings.limits.max_request_bytes + 1
    waitress.serve(create_app(settings, repository), host="127.0.0.1", port=port, threads=4, recv_bytes=recv_bytes,
                   max_request_body_size=cap, inbuf_overflow=cap, outbuf_overflow=cap, _quiet=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--sizes", default="8192,65536,262144", help="recv_bytes values (8192: waitress' default)")
    parser.add_argument("--serve", nargs=2, type=int, metavar=("PORT", "RECV_BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    sizes = [int(size) for size in args.sizes.split(",")]
    tensor = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "IN", "shape": list(SHAPE), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(tensor)}}],
                         "outputs": [{"name": "OUT", "parameters": {"binary_data": True}}]}).encode()
    body, headers = header + tensor, {HEADER: str(len(header))}
    ports = {size: _free_port() for size in sizes}
    servers = [subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(size)], cwd=REPO)
               for size, port in ports.items()]
    times: Dict[int, List[float]] = {size: [] for size in sizes}
    try:
        for port in ports.values():
            _wait_ready(port, time.monotonic() + 60)
        conns = {size: http.client.HTTPConnection("127.0.0.1", port) for size, port in ports.items()}
        for round_ in range(args.rounds + 1):  # round 0 warms up, untimed
            for size, conn in conns.items():
                for _ in range(args.block):
                    started = time.perf_counter()
                    conn.request("POST", "/v2/models/big/infer", body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        raise SystemExit(f"recv_bytes {size}: HTTP {response.status}")
                    if round_:
                        times[size].append(time.perf_counter() - started)
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
    base = statistics.median(times[sizes[0]])
    print(f"`python scripts/bench/http_read_bench.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
          + f" — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.rounds} rounds x {args.block} "
          f"requests per server, interleaved; body {len(body)} bytes, response 4 KB.\n")
    print(f"| recv_bytes | p50 ms | p90 ms | p50 / recv_bytes {sizes[0]} |\n|---:|---:|---:|---:|")
    for size, values in times.items():
        p50, p90 = statistics.median(values), float(np.percentile(values, 90))
        print(f"| {size} | {p50 * 1e3:.3f} | {p90 * 1e3:.3f} | {p50 / base:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
