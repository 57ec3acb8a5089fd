"""Shared fixtures. Nothing here imports torch: the runtime's tests also run on Python 3.8."""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEVICE_CONFIGS = REPO_ROOT / "device_configs"

# Export tests need torch & co (Python >= 3.10, the `export` extra): on the device's Python
# they are not even collected, and everything under an export/ folder carries the marker.
collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["*/export"]


def pytest_collection_modifyitems(items: list) -> None:
    for item in items:
        if "export" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.export)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def device_configs_dir() -> Path:
    return DEVICE_CONFIGS


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    """A fresh ed25519 signing key and its public key, for the whole session."""
    from edge_runtime.bundle.signing import generate_keypair

    return generate_keypair(tmp_path_factory.mktemp("keys"))


MakeShm = Callable[..., str]


@pytest.fixture()
def make_shm() -> Iterator[MakeShm]:
    """Create POSIX shm objects under /dev/shm: ``make(size=4096, content=b"")`` returns the key ('/name').

    Names are unique per call; the objects are unlinked after the test. Skips where there is no /dev/shm.
    """
    if not os.path.isdir("/dev/shm"):
        pytest.skip("needs POSIX shared memory in /dev/shm")
    paths: List[str] = []

    def make(size: int = 4096, content: bytes = b"") -> str:
        name = f"edge-runtime-test-{uuid.uuid4().hex}"
        path = f"/dev/shm/{name}"
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        paths.append(path)
        try:
            os.ftruncate(fd, size)
            os.pwrite(fd, content, 0)
        finally:
            os.close(fd)
        return "/" + name

    yield make
    for path in paths:
        if os.path.lexists(path):
            os.unlink(path)
