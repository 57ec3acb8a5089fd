"""Fixtures for the central server's integration tests: SQLite and a real PostgreSQL, `edge-fleet serve`.

PostgreSQL is started by scripts/lib/postgres.sh (a throwaway cluster on 127.0.0.1, as the
`postgres` user when running as root); each test gets a database of its own. Tests that need it
skip with the script's reason only when PostgreSQL cannot be started. Not collected on Python < 3.10.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from ci_policy import unavailable

collect_ignore_glob: List[str] = (
    [] if sys.version_info >= (3, 10) and importlib.util.find_spec("sqlalchemy") else ["test_*.py"]
)

REPO_ROOT = Path(__file__).resolve().parents[3]
POSTGRES_SH = REPO_ROOT / "scripts" / "lib" / "postgres.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A running throwaway PostgreSQL cluster: its admin URL (database `postgres`)."""
    directory = Path(tempfile.mkdtemp(prefix="edge-fleet-pg-"))
    directory.chmod(0o755)  # the cluster runs as `postgres` when the tests run as root
    cluster = directory / "cluster"
    result = subprocess.run(["bash", str(POSTGRES_SH), "start", str(cluster), str(_free_port())],
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        unavailable(f"PostgreSQL could not be started: {result.stderr.strip()[-300:] or result.stdout.strip()}")
    try:
        yield result.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(POSTGRES_SH), "stop", str(cluster)], capture_output=True, timeout=120,
                       check=False)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture()
def postgres_database(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test: its URL."""
    import psycopg

    name = f"fleet_{uuid.uuid4().hex[:12]}"
    admin = postgres_server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on an embedded SQLite file and on a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.sqlite'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture()
def fleet_db(database_url: str, tmp_path: Path) -> Iterator[Any]:
    """A FleetHarness (fleet_server.testing) on each database."""
    from fleet_server.testing import fleet_harness

    with fleet_harness(database_url, tmp_path) as harness:
        yield harness


@pytest.fixture(scope="session")
def fleet_env() -> dict:
    """The environment for `edge-fleet` subprocesses (no gunicorn control socket in $HOME)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
