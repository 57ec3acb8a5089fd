"""The ingest bench's load generator: open-loop batches from processes of keep-alive connections.

Used by ingest_bench.py. Each process gets its own devices and a share of the rate; batch i of a
process is due at start + i / rate whatever the server does (open loop), is sent by whichever of
its connections' threads is free, and its latency counts from when it was due: a slow server shows
as latency and send lag, never as a lower offered rate.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import resource
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import numpy as np
import psutil

Device = Tuple[str, str]  # (device_id, token)


@dataclass
class Phase:
    """One open-loop phase at one offered rate: what the load generators saw, and who spent the CPU."""

    rate: float
    duration: float
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    statuses: Counter = field(default_factory=Counter)  # HTTP status or exception name -> count
    latencies_ms: List[float] = field(default_factory=list)  # from when due to the answer read, 200s only
    due_s: List[float] = field(default_factory=list)  # when each of those was due, from the phase's start
    lags_ms: List[float] = field(default_factory=list)  # from when due to when sent
    elapsed_s: float = 0.0  # from the phase's start to the last answer
    cpu_s: Dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    def worst_second_p99(self) -> float:
        """The highest p99 over the phase's 1-second windows (by when due): a stall shows here, not in p50."""
        windows: Dict[int, List[float]] = {}
        for due, latency in zip(self.due_s, self.latencies_ms):
            windows.setdefault(int(due), []).append(latency)
        return max((float(np.percentile(values, 99)) for values in windows.values()), default=float("nan"))


def two_model_record(now: float) -> Dict[str, Any]:
    """A record sampled once a minute with two models (digits and a detector)."""
    from fleet_server.testing import make_record

    record = make_record(now, interval_s=60.0, requests=6000)
    record["models"].append(dict(record["models"][0], name="detector", version="3", memory_mb=88.0, p50_ms=7.9,
                                 p99_ms=14.2, histogram={"bounds_ms": [1.0, 2.0, 5.0, 10.0, 20.0, 50.0],
                                                         "counts": [0, 0, 900, 4000, 1090, 10, 0]}))
    return record


def generate(port: int, devices: List[Device], rate: float, count: int, first_sequence: int, start: float,
             connections: int) -> Dict[str, Any]:
    """One load process: ``count`` batches, batch i due at ``start + i / rate``, over keep-alive connections."""
    from fleet_server.testing import make_batch

    lock, cursor = threading.Lock(), [0]
    out: Dict[str, Any] = {"statuses": Counter(), "lat": [], "due": [], "lag": [], "accepted": 0, "duplicates": 0,
                           "end": 0.0}
    used = resource.getrusage(resource.RUSAGE_SELF)

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()  # before the first batch is due, as a load balancer's upstream connections are
        while True:
            with lock:
                index = cursor[0]
                cursor[0] += 1
            if index >= count:
                break
            due = start + index / rate
            time.sleep(max(0.0, due - time.monotonic()))
            device_id, token = devices[index % len(devices)]
            body = json.dumps(make_batch(device_id, [two_model_record(time.time())],
                                         first_sequence + index // len(devices))).encode()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            sent = time.monotonic()
            try:
                status, reply = _post(conn, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                with lock:
                    out["statuses"][type(exc).__name__] += 1
                continue
            done = time.monotonic()
            with lock:
                out["statuses"][status] += 1
                out["lag"].append((sent - due) * 1e3)
                out["end"] = max(out["end"], done)
                if status == 200:
                    out["lat"].append((done - due) * 1e3)
                    out["due"].append(due - start)
                    out["accepted"] += reply["accepted"]
                    out["duplicates"] += reply["duplicates"]
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu"] = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
    return out


def _post(conn: http.client.HTTPConnection, body: bytes, headers: Dict[str, str]) -> Tuple[int, Any]:
    """POST a batch; once more on a fresh connection when a kept-alive one was closed by the server."""
    for attempt in (1, 2):
        try:
            conn.request("POST", "/api/v1/ingest", body, headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, json.loads(data)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            conn.close()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def process_tree_cpu(pid: int) -> Dict[int, float]:
    """CPU seconds (user + system) of ``pid`` and its descendants, by pid."""
    times: Dict[int, float] = {}
    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with_times = process.cpu_times()
            times[process.pid] = with_times.user + with_times.system
    except psutil.Error:
        pass
    return times


def run_phase(port: int, devices: List[Device], rate: float, duration: float, first_sequence: int,
              args: argparse.Namespace, pids: Dict[str, int]) -> Phase:
    """Offer ``rate`` batches/s for ``duration`` s from --procs processes (each gets its own devices)."""
    phase, total = Phase(rate, duration), int(rate * duration)
    shares = [(devices[p::args.procs], total // args.procs + (p < total % args.procs)) for p in range(args.procs)]
    before = {name: process_tree_cpu(pid) for name, pid in pids.items()}
    start = time.monotonic() + 1.0  # every process started by then
    with multiprocessing.get_context("fork").Pool(args.procs, initializer=signal.signal,
                                                  initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
        results = pool.starmap(generate, [(port, share, rate / args.procs, count, first_sequence, start,
                                           args.connections) for share, count in shares])
    for name, pid in pids.items():
        after = process_tree_cpu(pid)
        phase.cpu_s[name] = sum(cpu - before[name].get(p, 0.0) for p, cpu in after.items())
    phase.cpu_s["load generators"] = sum(result["cpu"] for result in results)
    for result in results:
        phase.statuses.update(result["statuses"])
        phase.latencies_ms += result["lat"]
        phase.due_s += result["due"]
        phase.lags_ms += result["lag"]
        phase.accepted += result["accepted"]
        phase.duplicates += result["duplicates"]
    phase.sent = total
    phase.elapsed_s = max(result["end"] for result in results) - start
    return phase
