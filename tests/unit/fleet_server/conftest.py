"""Fixtures for the central server's unit tests: a migrated SQLite app in tmp_path on a fake clock.

The central server needs Python >= 3.10 and the `fleet` extra: on the device's Python 3.8 these
tests are not collected.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Iterator, List

import pytest

collect_ignore_glob: List[str] = (
    [] if sys.version_info >= (3, 10) and importlib.util.find_spec("sqlalchemy") else ["test_*.py"]
)


@pytest.fixture()
def fleet(tmp_path: Path) -> Iterator[Any]:
    """A FleetHarness (fleet_server.testing) on SQLite in tmp_path, devices dev-a and dev-b enrolled."""
    from fleet_server.testing import fleet_harness

    with fleet_harness("sqlite:///fleet.sqlite", tmp_path) as harness:
        yield harness
