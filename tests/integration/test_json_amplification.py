"""Amplifying JSON bodies against the real server (subprocess): a 400 each, and memory bounded by the body size.

Before the decoder checked counts and element types first, a 130 KB body holding one
10 000-character string and 30 000 short ones made numpy build a '<U10000' array (58 MB -> 1.2 GB
of RSS), and larger variants answered 500 (MemoryError). The bound asserted is on the server's
peak RSS (VmHWM), not on time.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any, Iterator, Tuple

import pytest
from runtime_support import RunningServer, start_server, write_runtime_config

MB = 1024 * 1024
JSON_CAP = 4 * MB  # limits.max_json_bytes raised from its 1 MiB default: the bound must hold at larger caps too


@pytest.fixture()
def fake_server(tmp_path: Path, keypair: Tuple[Path, Path], device_configs_dir: Path) -> Iterator[RunningServer]:
    config = write_runtime_config(tmp_path / "runtime.yaml", device_configs_dir, keypair[1],
                                  f"limits: {{max_json_bytes: {JSON_CAP}}}\n")
    running = start_server(["--config", str(config), "--fake", "fake"], tmp_path / "server.log")
    yield running
    running.stop()


def amplifying_body(long_chars: int, short_strings: int, rows: int) -> bytes:
    """An inference request for fake (INPUT0 FP32 [rows, 16]) whose data are strings: one long, many short."""
    data = ",".join(['"' + "x" * long_chars + '"'] + ['"a"'] * short_strings)
    return ('{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[' + str(rows) + ',16],"data":['
            + data + "]}]}").encode()


def peak_rss(server: RunningServer) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def post(server: RunningServer, body: bytes) -> Tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request("POST", "/v2/models/fake/infer", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        assert response.getheader("Content-Type", "").startswith("application/json"), data[:200]
        return response.status, json.loads(data)
    finally:
        connection.close()


def _variants() -> Iterator[Any]:
    yield pytest.param(10_000, 30_015, 1876, id="130KB-10k-char-string")  # the reported body: 30 016 values
    yield pytest.param(100_000, 250_000 - 1, 15_625, id="1MB")
    rows = (JSON_CAP - 200_000 - 200) // 4 // 16  # as many 4-byte '"a",' as fit under the JSON cap
    yield pytest.param(200_000, rows * 16 - 1, rows, id="4MB-at-the-json-cap")


@pytest.mark.parametrize(("long_chars", "short_strings", "rows"), list(_variants()))
def test_amplifying_json_is_refused_within_a_small_multiple_of_its_size(
    fake_server: RunningServer, long_chars: int, short_strings: int, rows: int
) -> None:
    assert post(fake_server, amplifying_body(10, 15, 1))[0] == 400  # warm the path once
    body = amplifying_body(long_chars, short_strings, rows)
    assert len(body) <= JSON_CAP
    before = peak_rss(fake_server)
    status, answer = post(fake_server, body)
    grown = peak_rss(fake_server) - before
    assert status == 400, answer
    assert "FP32 takes JSON numbers, got strings" in answer["error"]
    assert grown < 20 * len(body) + 30 * MB, f"peak RSS grew by {grown / MB:.0f} MB for a {len(body) / MB:.2f} MB body"
    assert post(fake_server, amplifying_body(10, 15, 1))[0] == 400  # and it still answers
