"""Integration fixtures: a real bundle repository, runtime settings, a running `edge-runtime serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Tuple

import pytest
from runtime_support import RunningServer, start_server, write_tiny_bundle


@pytest.fixture()
def repository(tmp_path: Path, keypair: Tuple[Path, Path]) -> Path:
    """A model repository with tiny/1 (a real signed bundle)."""
    root = tmp_path / "repo"
    write_tiny_bundle(root / "tiny" / "1", keypair[0], "1")
    return root


@pytest.fixture()
def runtime_config(tmp_path: Path, keypair: Tuple[Path, Path], device_configs_dir: Path) -> Path:
    path = tmp_path / "runtime.yaml"
    path.write_text(
        f"device_config: {device_configs_dir / 'x86-cpu.yaml'}\n"
        f"trusted_keys: [{keypair[1]}]\n"
        "warmup_runs: 1\n"
        "drain_timeout_s: 5\n"
        "batching: {max_batch_size: 8, max_queue_delay_us: 2000, max_queue_size: 64}\n"
        # tritonclient's regions belong to the test's user, which is also the server's here
        "shared_memory: {allow_server_owned: true}\n"
    )
    return path


@pytest.fixture()
def server(repository: Path, runtime_config: Path, tmp_path: Path) -> Iterator[RunningServer]:
    """The runtime serving the repository plus a fake model."""
    running = start_server(["--repository", str(repository), "--config", str(runtime_config), "--fake", "fake"],
                           tmp_path / "server.log")
    yield running
    running.stop()
