"""A full shared-memory filesystem, for real: a 64 KiB tmpfs stands in for a full /dev/shm.

Docker gives containers a 64 MB /dev/shm. An object can be ftruncate()d far beyond the space
left (tmpfs files are sparse), so registration succeeds; the memory is only needed when the
output is written. With a mapping, that write raised SIGBUS and killed the server (here: the
test process). With pwrite it is ENOSPC, a 400 naming the region, and the process lives.
Needs root to mount the tmpfs; skips otherwise.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from edge_runtime.config import SharedMemorySettings
from edge_runtime.errors import SharedMemoryError
from edge_runtime.server.shm import SystemSharedMemoryRegistry

SPACE = 64 * 1024
OBJECT = 1024 * 1024  # sparse: larger than the filesystem


@pytest.fixture()
def small_tmpfs() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mountpoint = Path(tempfile.mkdtemp(prefix="edge-runtime-full-shm-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SPACE}", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
        mountpoint.rmdir()


def test_an_output_into_a_full_filesystem_is_an_error_not_a_crash(small_tmpfs: Path) -> None:
    fd = os.open(small_tmpfs / "client-region", os.O_CREAT | os.O_RDWR, 0o660)
    try:
        os.ftruncate(fd, OBJECT)
    finally:
        os.close(fd)
    registry = SystemSharedMemoryRegistry(SharedMemorySettings(allow_server_owned=True), directory=str(small_tmpfs))
    try:
        registry.register("out", "/client-region", 0, OBJECT)
        region = registry.acquire("out", 0, OBJECT)
        try:
            with pytest.raises(SharedMemoryError, match=r"'out'.*No space left on device"):
                region.write(0, memoryview(np.ones(OBJECT, dtype=np.uint8)))
        finally:
            region.release()
        assert registry.read("out", 0, 16).tolist() == [1] * 16  # what fitted was written; the rest refused
    finally:
        registry.close()
