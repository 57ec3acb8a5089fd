"""Fixtures of the Backend contract suite: ``case`` and ``loaded`` run once per entry of backend_cases.CASES."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Tuple

import pytest
from backend_cases import CASES, BackendCase, CaseContext

from edge_runtime.backends.base import Backend


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest, tmp_path: Path, keypair: Tuple[Path, Path],
         device_configs_dir: Path) -> Iterator[BackendCase]:
    """Each backend in turn, unloaded; closed after the test whatever state it was left in."""
    built = CASES[request.param](CaseContext(tmp_path, keypair, device_configs_dir))
    yield built
    built.backend.close()


@pytest.fixture()
def loaded(case: BackendCase) -> Backend:
    """Each backend in turn, loaded with the case's bundle, device and options."""
    return case.load()
