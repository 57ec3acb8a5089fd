"""Shared fixtures. Nothing here imports torch: the runtime's tests also run on Python 3.8."""

from __future__ import annotations

import importlib.util
import os
import random
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import pytest
from hypothesis import settings as hypothesis_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEVICE_CONFIGS = REPO_ROOT / "device_configs"

# Export tests need torch & co (Python >= 3.10, the `export` extra): on the device's Python
# they are not even collected, and everything under an export/ folder carries the marker.
collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["*/export"]


# A failing property-based example is printed with the @reproduce_failure blob that replays it, in CI and
# locally alike (hypothesis prints it by default only where the CI variable is set).
hypothesis_settings.register_profile("edge-runtime", print_blob=True)
hypothesis_settings.load_profile("edge-runtime")
HYPOTHESIS_SEED_OPTION = "hypothesis_seed"  # dest of hypothesis' own --hypothesis-seed option


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Give every run a hypothesis seed (a random one unless --hypothesis-seed names it), so a failure replays.

    Runs before hypothesis' plugin, which then applies the seed to every property-based test (schemathesis'
    included). A run with a seed does not use the example database: it is fully determined by seed and code.
    """
    if config.getoption(HYPOTHESIS_SEED_OPTION, None) is None:
        config.option.hypothesis_seed = str(random.SystemRandom().getrandbits(32))


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.getoption(HYPOTHESIS_SEED_OPTION)
    return f"hypothesis seed: {seed} (replay this run with --hypothesis-seed={seed})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    failed = terminalreporter.stats.get("failed", [])
    if any("hypothesis" in report.keywords for report in failed):  # hypothesis' plugin marks its tests
        seed = config.getoption(HYPOTHESIS_SEED_OPTION)
        terminalreporter.write_line(f"hypothesis seed of this run: {seed} (replay with --hypothesis-seed={seed})")


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
