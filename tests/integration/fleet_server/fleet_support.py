"""Starting `edge-fleet serve` for the integration tests: migrate, enroll, serve on a free port, stop."""

from __future__ import annotations

import http.client
import re
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tls_support import write_test_pki


def fleet_cli(config: Path, *args: str, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet_server.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120, env=env, check=False)


@dataclass
class Served:
    """A running `edge-fleet serve` and the tokens made for it."""

    process: subprocess.Popen
    port: int
    device_token: str
    operator_token: str
    context: Optional[ssl.SSLContext]

    def request(self, method: str, path: str, body: Optional[bytes] = None, token: Optional[str] = None,
                headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
        if self.context is None:
            connection: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        else:
            connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self.context)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        try:
            connection.request(method, path, body=body, headers=all_headers)
            reply = connection.getresponse()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
        finally:
            connection.close()


def start_fleet(config: Path, log: Path, extra: List[str], context: Optional[ssl.SSLContext]) -> Served:
    for command in (["migrate"], ["enroll", "dev-a"], ["operator-token", "create", "ops"]):
        result = fleet_cli(config, *command)
        assert result.returncode == 0, result.stderr
        if command[0] == "enroll":
            device_token = result.stdout.strip()
        elif command[0] == "operator-token":
            operator_token = result.stdout.strip()
    return serve_fleet(config, log, extra, context, device_token, operator_token)


def serve_fleet(config: Path, log: Path, extra: List[str], context: Optional[ssl.SSLContext],
                device_token: str = "", operator_token: str = "") -> Served:
    """Start `edge-fleet serve` on a free port of 127.0.0.1 (database migrated) and wait until it answers."""
    handle = log.open("w")
    process = subprocess.Popen([sys.executable, "-m", "fleet_server.cli", "serve", "--config", str(config),
                                "--port", "0", "--workers", "2", *extra], stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        match = re.search(r"serving on https?://127\.0\.0\.1:(\d+)", log.read_text())
        if match:
            served = Served(process, int(match.group(1)), device_token, operator_token, context)
            try:
                if served.request("GET", "/api/v1/devices")[0] == 401:
                    return served
            except OSError:
                pass
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise AssertionError(f"edge-fleet serve did not start:\n{log.read_text()}")



def stop_fleet(running: Served) -> None:
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(30) == 0


def make_ca_and_server_cert(directory: Path) -> Tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    pki = write_test_pki(directory)
    return pki.ca, pki.cert, pki.key
