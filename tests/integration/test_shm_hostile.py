"""A hostile local client against the real server (subprocess): shrunk shm objects, registration floods.

Before pread/pwrite, an object truncated after registration killed the server with SIGBUS on the
first inference that touched it, and about 1030 registrations (one descriptor each) made
waitress' select() fail. Each check here ends by asking whether the server is still alive.
"""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest
from runtime_support import RunningServer, start_server, write_runtime_config

MAX_REGIONS = 8
ROW_BYTES = 64  # the fake model's INPUT0/OUTPUT0: FP32 [-1, 16]


@pytest.fixture()
def hostile_server(tmp_path: Path, keypair: Tuple[Path, Path], device_configs_dir: Path) -> Iterator[RunningServer]:
    """The runtime serving the fake model; the test's objects are the server's user's own: allowed here."""
    config = write_runtime_config(tmp_path / "runtime.yaml", device_configs_dir, keypair[1],
                                  f"shared_memory: {{allow_server_owned: true, max_regions: {MAX_REGIONS}}}\n")
    running = start_server(["--config", str(config), "--fake", "fake"], tmp_path / "server.log")
    yield running
    running.stop()


def call(server: RunningServer, method: str, path: str, body: Optional[Any] = None) -> Tuple[int, Any]:
    """One request on its own connection: (status, JSON body); asserts the answer is JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        assert response.getheader("Content-Type", "").startswith("application/json"), data[:200]
        return response.status, json.loads(data)
    finally:
        connection.close()


def register(server: RunningServer, name: str, key: str, byte_size: int) -> Tuple[int, Any]:
    return call(server, "POST", f"/v2/systemsharedmemory/region/{name}/register",
                {"key": key, "offset": 0, "byte_size": byte_size})


def infer(server: RunningServer, input_region: Optional[str], output_region: Optional[str]) -> Tuple[int, Any]:
    item: Dict[str, Any] = {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16]}
    if input_region is None:
        item["data"] = [0.5] * 16
    else:
        item["parameters"] = {"shared_memory_region": input_region, "shared_memory_byte_size": ROW_BYTES}
    document: Dict[str, Any] = {"inputs": [item]}
    if output_region is not None:
        document["outputs"] = [{"name": "OUTPUT0", "parameters": {
            "shared_memory_region": output_region, "shared_memory_byte_size": ROW_BYTES}}]
    return call(server, "POST", "/v2/models/fake/infer", document)


def assert_alive(server: RunningServer) -> None:
    assert server.process.poll() is None, server.log.read_text()[-2000:]
    assert call(server, "GET", "/v2/health/live")[0] == 200


def open_fds(server: RunningServer) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def test_truncated_objects_answer_400_and_the_server_lives(
    hostile_server: RunningServer, make_shm: Any
) -> None:
    source, target = make_shm(4096, b"\x00" * 4096), make_shm(4096)
    assert register(hostile_server, "in", source, 4096)[0] == 200
    assert register(hostile_server, "out", target, 4096)[0] == 200
    assert infer(hostile_server, "in", "out")[0] == 200  # the honest round trip works first
    os.truncate("/dev/shm" + source, 0)
    os.truncate("/dev/shm" + target, 0)

    status, body = infer(hostile_server, "in", None)  # reads from the shrunk object
    assert status == 400 and "region 'in'" in body["error"] and "truncated" in body["error"], body
    assert_alive(hostile_server)

    status, body = infer(hostile_server, None, "out")  # writes the output into the shrunk object
    assert status == 400 and "region 'out'" in body["error"] and "truncated" in body["error"], body
    assert_alive(hostile_server)
    assert os.path.getsize("/dev/shm" + target) == 0  # the write did not grow it back


def test_a_registration_flood_is_capped_and_costs_no_descriptors(
    hostile_server: RunningServer, make_shm: Any
) -> None:
    key = make_shm(4096)
    before = open_fds(hostile_server)
    refused = 0
    for index in range(2000):
        status, body = register(hostile_server, f"flood-{index}", key, 64)
        if status != 200:
            assert status == 400 and "shared_memory.max_regions" in body["error"], body
            refused += 1
    assert refused == 2000 - MAX_REGIONS
    assert open_fds(hostile_server) <= before + MAX_REGIONS + 4  # +4: connections closing meanwhile
    assert_alive(hostile_server)
    assert len(call(hostile_server, "GET", "/v2/systemsharedmemory/status")[1]) == MAX_REGIONS
    assert call(hostile_server, "POST", "/v2/systemsharedmemory/unregister")[0] == 200
    assert open_fds(hostile_server) <= before + 4
