"""Serving benchmark on the ResNet-18 INT8 bundle (x86-cpu target), measured side by side in one run.

1. Latency, batch 1, p50/p99, interleaved blocks: in-process (the serving stack without HTTP:
   ServedModel.infer through queue and worker thread), HTTP binary, HTTP JSON, HTTP + system
   shared memory, all with the unmodified tritonclient against one `edge-runtime serve`; and
   binary/JSON bodies encoded once and POSTed raw, which shows the server's own cost (tritonclient
   encodes JSON with json.dumps of a Python list: 150k floats cost it more than the inference).
2. Throughput of 8 concurrent clients (batch-1 binary requests) against two servers running
   side by side, one with dynamic batching and one without, alternating rounds; and the ceiling on
   that gain: ONNX Runtime's per-sample time at batch 1 over batch 8, the model alone.
3. Process start → ready: `edge-runtime serve` spawned until /v2/health/ready answers 200.
4. Peak RSS (VmHWM) of the runtime serving the INT8 bundle vs a torch eager process running the
   FP32 model at the same batch sizes (1 and 8), and the floor: the runtime's imports alone.

    python scripts/bench/serving_bench.py [--rounds 20] [--block 20] [--seconds 3] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import orjson
import tritonclient.http as httpclient
from tritonclient.utils import shared_memory as shm

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from runtime_support import start_server  # noqa: E402

from edge_runtime.bundle.signing import generate_keypair, load_public_key  # noqa: E402
from edge_runtime.config import load_device_config, runtime_settings_from_mapping  # noqa: E402
from edge_runtime.serving.repository import ModelRepository  # noqa: E402
from export.models.resnet import INPUT_SHAPE  # noqa: E402
from export.pipeline import ExportRequest, run_export  # noqa: E402

MODEL = "resnet18"
# argv: batch-1 runs, then batch-8 runs (the runtime sees batches up to 8 in the throughput test).
TORCH_SERVER = """
import sys, numpy as np, torch
from export.models.resnet import ResNet18
torch.manual_seed(0); model = ResNet18().eval()
with torch.inference_mode():
    for batch, runs in ((1, int(sys.argv[1])), (8, int(sys.argv[2]))):
        x = torch.from_numpy(np.zeros((batch, 3, 224, 224), np.float32))
        for _ in range(runs): model(x)
print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
"""
# The floor under any Python runtime built on these libraries: its imports, no model. The daemon
# (composition root) pulls in the model layer; the HTTP layer (flask) and transport (waitress) it
# imports only when it serves, so they are named here too.
RUNTIME_IMPORTS = """
import onnxruntime, edge_runtime.daemon, edge_runtime.server.app, edge_runtime.server.transport
print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
"""


def _export(tmp: Path) -> Tuple[Path, Path]:
    key, pub = generate_keypair(tmp / "keys")
    calib = tmp / "calib.npy"
    np.save(calib, np.random.default_rng(1).standard_normal((64, *INPUT_SHAPE), dtype=np.float32))
    out = tmp / "repo" / MODEL / "1"
    run_export(ExportRequest(model=MODEL, configs=[load_device_config(REPO / "device_configs/x86-cpu.yaml")],
                             key_path=key, out=out, calib_data=calib, calib_samples=64, latency_runs=5))
    return tmp / "repo", pub


def _settings_yaml(path: Path, pub: Path, batching: bool) -> Path:
    path.write_text(f"device_config: {REPO / 'device_configs/x86-cpu.yaml'}\ntrusted_keys: [{pub}]\n"
                    f"batching: {{enabled: {str(batching).lower()}, max_batch_size: 8, max_queue_delay_us: 0}}\n"
                    # the JSON modes send a 224x224x3 image as JSON (3.1 MB): above the 1 MiB default
                    "limits: {max_json_bytes: 4194304}\n")
    return path


def _percentiles(values: List[float]) -> Tuple[float, float]:
    return statistics.median(values), float(np.percentile(values, 99))


def _raw_poster(url: str, body: bytes, headers: Dict[str, str]) -> Callable[[], object]:
    """POST a pre-encoded infer body on a kept-alive connection: the server's cost, not the client's."""
    host, port = url.split(":")
    connection = http.client.HTTPConnection(host, int(port))

    def post() -> object:
        connection.request("POST", f"/v2/models/{MODEL}/infer", body=body, headers=headers)
        reply = connection.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(data[:200])
        return data

    return post


def _raw_bodies(sample: np.ndarray) -> Tuple[Tuple[bytes, Dict[str, str]], Tuple[bytes, Dict[str, str]]]:
    tensor = {"name": "input", "shape": list(sample.shape), "datatype": "FP32"}
    json_body = orjson.dumps({"inputs": [dict(tensor, data=sample.ravel())],
                              "outputs": [{"name": "output"}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    header = orjson.dumps({"inputs": [dict(tensor, parameters={"binary_data_size": sample.nbytes})],
                           "outputs": [{"name": "output", "parameters": {"binary_data": True}}]})
    binary = (header + sample.tobytes(), {"Inference-Header-Content-Length": str(len(header))})
    return (json_body, {"Content-Type": "application/json"}), binary


def _latency_modes(url: str, repo: Path, pub: Path, sample: np.ndarray, regions: List[object]
                   ) -> Dict[str, Callable[[], object]]:
    settings = runtime_settings_from_mapping(
        {"device_config": str(REPO / "device_configs/x86-cpu.yaml"), "trusted_keys": [str(pub)]}, "bench")
    local = ModelRepository(repo, settings, load_device_config(REPO / "device_configs/x86-cpu.yaml"),
                            [load_public_key(pub)])
    model = local.load(MODEL)
    client = httpclient.InferenceServerClient(url)

    def http(binary: bool) -> Callable[[], object]:
        given = httpclient.InferInput("input", list(sample.shape), "FP32")
        given.set_data_from_numpy(sample, binary_data=binary)
        wanted = [httpclient.InferRequestedOutput("output", binary_data=binary)]
        return lambda: client.infer(MODEL, [given], outputs=wanted).as_numpy("output")

    handle_in = shm.create_shared_memory_region("bench-in", "/edge_bench_in", sample.nbytes)
    handle_out = shm.create_shared_memory_region("bench-out", "/edge_bench_out", 4000)
    regions += [handle_in, handle_out]
    shm.set_shared_memory_region(handle_in, [sample])
    client.register_system_shared_memory("bench-in", "/edge_bench_in", sample.nbytes)
    client.register_system_shared_memory("bench-out", "/edge_bench_out", 4000)
    shm_in = httpclient.InferInput("input", list(sample.shape), "FP32")
    shm_in.set_shared_memory("bench-in", sample.nbytes)
    shm_out = httpclient.InferRequestedOutput("output", binary_data=True)
    shm_out.set_shared_memory("bench-out", 4000)
    (json_body, json_headers), (binary_body, binary_headers) = _raw_bodies(sample)
    return {
        "in-process (no HTTP)": lambda: model.infer({"input": sample}),
        "HTTP binary (tritonclient)": http(True),
        "HTTP JSON (tritonclient)": http(False),
        "HTTP + shared memory (tritonclient)": lambda: (
            client.infer(MODEL, [shm_in], outputs=[shm_out]),
            shm.get_contents_as_numpy(handle_out, np.float32, [1, 1000])),
        "HTTP binary (pre-encoded body)": _raw_poster(url, binary_body, binary_headers),
        "HTTP JSON (pre-encoded body)": _raw_poster(url, json_body, json_headers),
    }


def _interleave(modes: Dict[str, Callable[[], object]], rounds: int, block: int) -> Dict[str, List[float]]:
    times: Dict[str, List[float]] = {name: [] for name in modes}
    for run in modes.values():
        for _ in range(5):
            run()
    for _ in range(rounds):
        for name, run in modes.items():
            for _ in range(block):
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def _throughput(url: str, sample: np.ndarray, clients: int, seconds: float) -> Tuple[float, List[float]]:
    stop = time.monotonic() + seconds
    latencies: List[List[float]] = [[] for _ in range(clients)]

    def work(index: int) -> None:
        client = httpclient.InferenceServerClient(url)
        given = httpclient.InferInput("input", list(sample.shape), "FP32")
        given.set_data_from_numpy(sample)
        while time.monotonic() < stop:
            start = time.perf_counter()
            client.infer(MODEL, [given])
            latencies[index].append((time.perf_counter() - start) * 1e3)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    begin = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = [value for values in latencies for value in values]
    return len(done) / (time.monotonic() - begin), done


def _batch_speedup(model: Path, runs: int = 15) -> float:
    """Per-sample time at batch 1 / at batch 8, ONNX Runtime alone: the most batching can gain here."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    per_sample = {}
    for batch in (1, 8):
        feed = {name: np.zeros((batch, *INPUT_SHAPE), np.float32)}
        for _ in range(3):
            session.run(None, feed)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - started)
        per_sample[batch] = statistics.median(times) / batch
    return per_sample[1] / per_sample[8]


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput round")
    parser.add_argument("--throughput-rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sample = np.random.default_rng(0).standard_normal((1, *INPUT_SHAPE), dtype=np.float32)
    lines: List[str] = []
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp_name:
        tmp = Path(tmp_name)
        repo, pub = _export(tmp)
        started = time.perf_counter()
        batched = start_server(["--repository", str(repo), "--config", str(_settings_yaml(tmp / "b.yaml", pub, True))],
                               tmp / "batched.log", timeout=120)
        ready_s = time.perf_counter() - started
        plain = start_server(["--repository", str(repo), "--config", str(_settings_yaml(tmp / "p.yaml", pub, False))],
                             tmp / "plain.log", timeout=120)
        try:
            regions: List[object] = []
            try:
                times = _interleave(_latency_modes(batched.url, repo, pub, sample, regions), args.rounds, args.block)
            finally:
                for region in regions:
                    shm.destroy_shared_memory_region(region)
            throughput: Dict[str, List[float]] = {"dynamic batching": [], "no batching": []}
            tails: Dict[str, List[float]] = {"dynamic batching": [], "no batching": []}
            for _ in range(args.throughput_rounds):
                for name, server in (("dynamic batching", batched), ("no batching", plain)):
                    rate, lat = _throughput(server.url, sample, 8, args.seconds)
                    throughput[name].append(rate)
                    tails[name] += lat
            runtime_rss = _vm_hwm_kib(batched.process.pid)
            binary_only_rss = _vm_hwm_kib(plain.process.pid)
        finally:
            batched.stop()
            plain.stop()
        rss = {"runtime": runtime_rss, "runtime binary only": binary_only_rss,
               "torch batches 1 and 8": _hwm_of(TORCH_SERVER, str(args.rounds * args.block), "10"),
               "torch batch 1 only": _hwm_of(TORCH_SERVER, str(args.rounds * args.block), "0"),
               "runtime imports only": _hwm_of(RUNTIME_IMPORTS)}
        speedup = _batch_speedup(repo / MODEL / "1" / "onnx" / "x86-cpu.int8.onnx")
        lines = _render(times, throughput, tails, ready_s, rss, speedup, args)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with args.out.open("a") as handle:
            handle.write(text + "\n")
    return 0


RSS_LABELS = {
    "runtime": "the runtime after every test above (batches up to 8, JSON included)",
    "runtime binary only": "the server that only took the binary requests of the throughput test",
    "torch batches 1 and 8": "a torch eager process running the FP32 model at batches 1 and 8 (no HTTP)",
    "torch batch 1 only": "torch at batch 1 only",
    "runtime imports only": "the runtime's imports alone (Python, numpy, ONNX Runtime, Flask, waitress; no model)",
}


def _hwm_of(script: str, *argv: str) -> int:
    """Peak RSS (KiB) that a fresh Python process running ``script`` reports."""
    result = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, check=True, cwd=REPO)
    return int(result.stdout.split()[-1])


def _render(times: Dict[str, List[float]], throughput: Dict[str, List[float]], tails: Dict[str, List[float]],
            ready_s: float, rss: Dict[str, int], speedup: float, args: argparse.Namespace) -> List[str]:
    base = statistics.median(times["in-process (no HTTP)"])
    binary = statistics.median(times["HTTP binary (tritonclient)"])
    lines = ["## Serving benchmark: ResNet-18 INT8 bundle (x86-cpu), batch 1", "",
             f"`python scripts/bench/serving_bench.py {' '.join(sys.argv[1:])}`".replace(" `", "`") + " — "
             + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
             + f", {args.rounds} rounds x {args.block} requests per mode, interleaved.", "",
             "| mode | p50 ms | p99 ms | p50 / in-process |", "|---|---:|---:|---:|"]
    for name, values in times.items():
        p50, p99 = _percentiles(values)
        lines.append(f"| {name} | {p50:.2f} | {p99:.2f} | {p50 / base:.3f} |")
    lines += ["", "| 8 concurrent clients | requests/s (rounds) | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
    for name, rates in throughput.items():
        p50, p99 = _percentiles(tails[name])
        lines.append(f"| {name} | {statistics.median(rates):.1f} ({', '.join(f'{r:.0f}' for r in rates)}) "
                     f"| {p50:.2f} | {p99:.2f} |")
    gain = statistics.median(throughput["dynamic batching"]) / statistics.median(throughput["no batching"])
    lines += ["", f"Batching gain {gain:.3f}; the ceiling on this machine: ONNX Runtime alone runs a sample "
              f"{speedup:.3f}x faster at batch 8 than at batch 1."]
    b50, b99 = _percentiles(tails["dynamic batching"])
    shm_ratio = statistics.median(times["HTTP + shared memory (tritonclient)"]) / base
    json_ratio = statistics.median(times["HTTP JSON (pre-encoded body)"]) / statistics.median(
        times["HTTP binary (pre-encoded body)"])
    rss_ratio = rss["runtime"] / rss["torch batches 1 and 8"]
    peaks = "; ".join(f"{RSS_LABELS[key]} {value / 1024:.0f}" for key, value in rss.items())
    lines += ["", f"Start → ready: {ready_s:.2f} s.", "",
              f"Peak RSS (VmHWM), MiB: {peaks}. Ratio runtime / torch at batches 1 and 8: {rss_ratio:.3f}.", "",
              "Goals: " + "; ".join([
                  _goal("binary/in-process", binary / base, 1.15), _goal("shm/in-process", shm_ratio, 1.05),
                  _goal("JSON/binary (pre-encoded)", json_ratio, 2.0), _goal("batching gain", gain, 1.2, above=True),
                  _goal("batching p99/p50", b99 / b50, 2.0), _goal("ready s", ready_s, 1.5),
                  _goal("RSS ratio", rss_ratio, 0.25)]) + ".", ""]
    return lines


def _goal(name: str, value: float, bound: float, above: bool = False) -> str:
    met = value >= bound if above else value <= bound
    return f"{name} {value:.3f} ({'>=' if above else '<='} {bound}: {'met' if met else 'NOT met'})"


if __name__ == "__main__":
    raise SystemExit(main())
