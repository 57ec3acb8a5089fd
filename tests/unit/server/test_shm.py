"""System shared-memory registry against real POSIX shm objects under /dev/shm."""

from __future__ import annotations

import os
import threading
import uuid
from typing import Callable, Iterator, List

import pytest

from edge_runtime.errors import SharedMemoryError
from edge_runtime.server.shm import SystemSharedMemoryRegistry

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs POSIX shared memory in /dev/shm")

MakeShm = Callable[..., str]


@pytest.fixture()
def registry() -> Iterator[SystemSharedMemoryRegistry]:
    with SystemSharedMemoryRegistry() as reg:
        yield reg


def _read(key: str, offset: int, size: int) -> bytes:
    fd = os.open("/dev/shm" + key, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def test_view_reads_and_writes_the_object(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    key = make_shm(64, bytes(range(64)))
    registry.register("r", key, 0, 64)
    view = registry.view("r", 10, 4)
    assert bytes(view) == bytes([10, 11, 12, 13])
    view[:] = b"WXYZ"
    assert _read(key, 8, 8) == bytes([8, 9]) + b"WXYZ" + bytes([14, 15])


def test_region_offset_need_not_be_page_aligned(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    content = bytes(index % 251 for index in range(3 * 4096))
    key = make_shm(len(content), content)
    registry.register("r", key, 4100, 100)
    assert bytes(registry.view("r", 0, 100)) == content[4100:4200]
    assert bytes(registry.view("r", 90, 10)) == content[4190:4200]


def test_key_without_leading_slash_names_the_same_object(
    registry: SystemSharedMemoryRegistry, make_shm: MakeShm
) -> None:
    key = make_shm(16, b"abc")
    registry.register("r", key[1:], 0, 16)
    assert bytes(registry.view("r", 0, 3)) == b"abc"
    assert registry.status("r") == [{"name": "r", "key": key[1:], "offset": 0, "byte_size": 16}]


def test_status_lists_regions_in_registration_order(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    first, second = make_shm(), make_shm()
    registry.register("a", first, 0, 100)
    registry.register("b", second, 8, 16)
    assert registry.status() == [
        {"name": "a", "key": first, "offset": 0, "byte_size": 100},
        {"name": "b", "key": second, "offset": 8, "byte_size": 16},
    ]
    assert registry.status("b") == [{"name": "b", "key": second, "offset": 8, "byte_size": 16}]
    with pytest.raises(SharedMemoryError, match="unknown shared memory region 'c'"):
        registry.status("c")


def test_name_registered_twice_is_refused(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    key = make_shm()
    registry.register("r", key, 0, 10)
    with pytest.raises(SharedMemoryError, match="'r' is already registered"):
        registry.register("r", key, 0, 10)
    assert len(registry.status()) == 1


@pytest.mark.parametrize(
    ("offset", "byte_size", "match"),
    [
        (-1, 10, "offset must be an integer >= 0, got -1"),
        (0, -5, "byte_size must be an integer >= 1, got -5"),
        (0, 0, "byte_size must be an integer >= 1, got 0"),
        (True, 10, "offset must be an integer >= 0, got True"),
        (0, 10.0, "byte_size must be an integer >= 1, got 10.0"),
        (4000, 97, r"offset 4000 \+ byte_size 97 is beyond the end of key '.*' \(4096 bytes\)"),
        (0, 4097, r"beyond the end"),
    ],
)
def test_bad_offset_or_size_is_refused(
    registry: SystemSharedMemoryRegistry, make_shm: MakeShm, offset: object, byte_size: object, match: str
) -> None:
    key = make_shm(4096)
    with pytest.raises(SharedMemoryError, match=match):
        registry.register("r", key, offset, byte_size)  # type: ignore[arg-type]
    assert registry.status() == []


@pytest.mark.parametrize("key", ["/a/b", "a/b", "/..", "/x..y", "", "/", "//x", "/a\x00b", 5, None])
def test_invalid_key_is_refused(registry: SystemSharedMemoryRegistry, key: object) -> None:
    with pytest.raises(SharedMemoryError, match="invalid shared memory key"):
        registry.register("r", key, 0, 1)  # type: ignore[arg-type]


def test_missing_key_is_refused(registry: SystemSharedMemoryRegistry) -> None:
    key = f"/edge-runtime-test-missing-{uuid.uuid4().hex}"
    with pytest.raises(SharedMemoryError, match=f"cannot open key '{key}': No such file or directory"):
        registry.register("r", key, 0, 1)


def test_symlink_key_is_not_followed(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    target = make_shm(16, b"secret")
    link = f"/edge-runtime-test-link-{uuid.uuid4().hex}"
    os.symlink("/dev/shm" + target, "/dev/shm" + link)
    try:
        with pytest.raises(SharedMemoryError, match=f"cannot open key '{link}'"):
            registry.register("r", link, 0, 16)
    finally:
        os.unlink("/dev/shm" + link)


def test_directory_key_is_refused(registry: SystemSharedMemoryRegistry) -> None:
    name = f"edge-runtime-test-dir-{uuid.uuid4().hex}"
    os.mkdir("/dev/shm/" + name)
    try:
        with pytest.raises(SharedMemoryError, match=f"key '/{name}'"):
            registry.register("r", "/" + name, 0, 1)
    finally:
        os.rmdir("/dev/shm/" + name)


@pytest.mark.parametrize(
    ("offset", "byte_size", "match"),
    [
        (90, 11, "11 bytes at offset 90 do not fit in its 100 bytes"),
        (101, 0, "0 bytes at offset 101 do not fit"),
        (-1, 4, "offset must be an integer >= 0"),
        (0, -4, "byte_size must be an integer >= 0"),
    ],
)
def test_view_outside_the_region_is_refused(
    registry: SystemSharedMemoryRegistry, make_shm: MakeShm, offset: int, byte_size: int, match: str
) -> None:
    registry.register("r", make_shm(4096), 0, 100)
    with pytest.raises(SharedMemoryError, match=match):
        registry.view("r", offset, byte_size)


def test_view_of_unknown_region_is_refused(registry: SystemSharedMemoryRegistry) -> None:
    with pytest.raises(SharedMemoryError, match="unknown shared memory region 'nope'"):
        registry.view("nope", 0, 1)


def test_view_at_the_very_end_is_allowed(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    registry.register("r", make_shm(100, bytes(range(100))), 0, 100)
    assert bytes(registry.view("r", 96, 4)) == bytes([96, 97, 98, 99])
    assert bytes(registry.view("r", 100, 0)) == b""


def test_unregister_one_all_and_unknown(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    for name in ("a", "b", "c"):
        registry.register(name, make_shm(), 0, 8)
    registry.unregister("b")
    registry.unregister("never-registered")  # a no-op, as in Triton
    assert [entry["name"] for entry in registry.status()] == ["a", "c"]
    registry.unregister()
    assert registry.status() == []
    with pytest.raises(SharedMemoryError, match="unknown shared memory region 'a'"):
        registry.view("a", 0, 1)


def test_unregister_while_a_view_is_exported(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    key = make_shm(32, b"0123456789")
    registry.register("r", key, 0, 32)
    view = registry.view("r", 0, 10)
    registry.unregister("r")  # mmap.close() would raise BufferError here: must not escape
    assert registry.status() == []
    assert bytes(view) == b"0123456789"  # still mapped for whoever holds the view
    view[0:1] = b"X"
    assert _read(key, 0, 1) == b"X"
    view.release()
    registry.register("r", key, 0, 32)  # the name is free again
    assert bytes(registry.view("r", 0, 2)) == b"X1"


def test_close_keeps_the_clients_objects(make_shm: MakeShm) -> None:
    key = make_shm(16)
    registry = SystemSharedMemoryRegistry()
    registry.register("r", key, 0, 16)
    registry.close()
    assert registry.status() == []
    assert os.path.exists("/dev/shm" + key)  # unlike multiprocessing.shared_memory's tracker


def test_concurrent_registration_of_one_name_lets_exactly_one_win(
    registry: SystemSharedMemoryRegistry, make_shm: MakeShm
) -> None:
    key = make_shm()
    outcomes: List[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def register() -> None:
        start.wait()
        try:
            registry.register("same", key, 0, 8)
            result = "ok"
        except SharedMemoryError:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=register) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok"] + ["refused"] * 7
    assert len(registry.status()) == 1


def test_empty_region_name_is_refused(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    with pytest.raises(SharedMemoryError, match="region name must be a non-empty string"):
        registry.register("", make_shm(), 0, 1)
