"""System shared memory at its edges: a write that ends exactly at the object's end, a write that passes a
truncated object's end by a few bytes, and the cap on registered bytes summed over several regions."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import pytest

from edge_runtime.config.runtime import SharedMemorySettings
from edge_runtime.errors import SharedMemoryError
from edge_runtime.server.shm import SystemSharedMemoryRegistry

MakeShm = Callable[..., str]
OWN = SharedMemorySettings(allow_server_owned=True)  # the test's objects are owned by the test's (server's) user


def _read(key: str, offset: int, size: int) -> bytes:
    fd = os.open("/dev/shm" + key, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def test_a_write_that_ends_exactly_at_the_objects_end_lands(make_shm: MakeShm) -> None:
    key = make_shm(100)
    with SystemSharedMemoryRegistry(OWN) as registry:
        registry.register("r", key, 36, 64)  # the region is the object's last 64 bytes
        region = registry.acquire("r", 60, 4)
        try:
            region.write(60, memoryview(b"TAIL"))
        finally:
            region.release()
    assert _read(key, 96, 4) == b"TAIL"
    assert os.path.getsize("/dev/shm" + key) == 100


def test_a_write_a_few_bytes_past_a_truncated_objects_end_is_refused_and_does_not_grow_it(make_shm: MakeShm) -> None:
    key = make_shm(64)
    with SystemSharedMemoryRegistry(OWN) as registry:
        registry.register("r", key, 0, 64)
        os.truncate("/dev/shm" + key, 32)
        region = registry.acquire("r", 28, 8)
        try:
            with pytest.raises(SharedMemoryError) as refused:
                region.write(28, memoryview(bytes(8)))  # bytes 28..36 of a 32-byte object
        finally:
            region.release()
    assert str(refused.value) == (
        f"shared memory region 'r': its object (key {key!r}) is now 32 bytes, too small for 8 bytes at offset 28: "
        "it was truncated after registration"
    )
    assert os.path.getsize("/dev/shm" + key) == 32


def test_the_registered_bytes_cap_counts_every_region_not_only_the_last(make_shm: MakeShm) -> None:
    keys = [make_shm(4096) for _ in range(3)]
    settings = dataclasses.replace(OWN, max_total_bytes=6000)
    with SystemSharedMemoryRegistry(settings) as registry:
        registry.register("a", keys[0], 0, 3000)
        registry.register("b", keys[1], 0, 2000)
        with pytest.raises(SharedMemoryError, match="1500 more bytes would pass the limit of 6000 registered bytes"):
            registry.register("c", keys[2], 0, 1500)  # 3000 + 2000 + 1500 > 6000
        registry.register("c", keys[2], 0, 1000)  # exactly 6000


def test_an_unregistered_region_stays_open_until_its_last_of_two_holders_releases_it(make_shm: MakeShm) -> None:
    key = make_shm(16)
    with SystemSharedMemoryRegistry(OWN) as registry:
        registry.register("r", key, 0, 16)
        first, second = registry.acquire("r", 0, 4), registry.acquire("r", 4, 4)
        registry.unregister("r")
        first.release()
        second.write(4, memoryview(b"LAST"))  # the descriptor is still open for the second holder
        second.release()
    assert _read(key, 4, 4) == b"LAST"
