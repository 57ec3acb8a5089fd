"""System shared-memory registry against real POSIX shm objects under /dev/shm: I/O, policy, caps."""

from __future__ import annotations

import dataclasses
import errno
import os
import threading
import uuid
from typing import Any, Callable, Iterator, List

import numpy as np
import pytest

from edge_runtime.config.runtime import SharedMemorySettings
from edge_runtime.errors import SharedMemoryError
from edge_runtime.server.shm import SystemSharedMemoryRegistry

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs POSIX shared memory in /dev/shm")

MakeShm = Callable[..., str]
OWN = SharedMemorySettings(allow_server_owned=True)  # the test's objects are owned by the test's (server's) user
OTHER_UID, OTHER_GID = 64000, 64001  # need no /etc/passwd entry
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give an shm object to another uid")


@pytest.fixture()
def registry() -> Iterator[SystemSharedMemoryRegistry]:
    with SystemSharedMemoryRegistry(OWN) as reg:
        yield reg


def _read(key: str, offset: int, size: int) -> bytes:
    fd = os.open("/dev/shm" + key, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _give_away(key: str, mode: int, uid: int = OTHER_UID, gid: int = OTHER_GID) -> None:
    os.chown("/dev/shm" + key, uid, gid)
    os.chmod("/dev/shm" + key, mode)


def test_read_copies_and_write_lands_in_the_object(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    key = make_shm(64, bytes(range(64)))
    registry.register("r", key, 0, 64)
    data = registry.read("r", 10, 4)
    assert bytes(data) == bytes([10, 11, 12, 13])
    data[0] = 99  # a private copy: the object is unchanged
    assert _read(key, 10, 1) == bytes([10])
    region = registry.acquire("r", 10, 4)
    region.write(10, memoryview(b"WXYZ"))
    region.release()
    assert _read(key, 8, 8) == bytes([8, 9]) + b"WXYZ" + bytes([14, 15])


def test_region_offset_need_not_be_page_aligned(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    content = bytes(index % 251 for index in range(3 * 4096))
    key = make_shm(len(content), content)
    registry.register("r", key, 4100, 100)
    assert bytes(registry.read("r", 0, 100)) == content[4100:4200]
    assert bytes(registry.read("r", 90, 10)) == content[4190:4200]


def test_key_without_leading_slash_names_the_same_object(
    registry: SystemSharedMemoryRegistry, make_shm: MakeShm
) -> None:
    key = make_shm(16, b"abc")
    registry.register("r", key[1:], 0, 16)
    assert bytes(registry.read("r", 0, 3)) == b"abc"
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
def test_access_outside_the_region_is_refused(
    registry: SystemSharedMemoryRegistry, make_shm: MakeShm, offset: int, byte_size: int, match: str
) -> None:
    registry.register("r", make_shm(4096), 0, 100)
    with pytest.raises(SharedMemoryError, match=match):
        registry.read("r", offset, byte_size)
    with pytest.raises(SharedMemoryError, match=match):
        registry.acquire("r", offset, byte_size)


def test_unknown_region_is_refused(registry: SystemSharedMemoryRegistry) -> None:
    with pytest.raises(SharedMemoryError, match="unknown shared memory region 'nope'"):
        registry.read("nope", 0, 1)


def test_read_at_the_very_end_is_allowed(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    registry.register("r", make_shm(100, bytes(range(100))), 0, 100)
    assert bytes(registry.read("r", 96, 4)) == bytes([96, 97, 98, 99])
    assert bytes(registry.read("r", 100, 0)) == b""


def test_unregister_one_all_and_unknown(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    for name in ("a", "b", "c"):
        registry.register(name, make_shm(), 0, 8)
    registry.unregister("b")
    registry.unregister("never-registered")  # a no-op, as in Triton
    assert [entry["name"] for entry in registry.status()] == ["a", "c"]
    registry.unregister()
    assert registry.status() == []
    with pytest.raises(SharedMemoryError, match="unknown shared memory region 'a'"):
        registry.read("a", 0, 1)


def test_each_region_holds_one_descriptor_closed_by_unregister(
    registry: SystemSharedMemoryRegistry, make_shm: MakeShm
) -> None:
    keys = [make_shm() for _ in range(5)]
    before = _open_fds()
    for index, key in enumerate(keys):
        registry.register(f"r{index}", key, 0, 8)
    assert _open_fds() == before + 5
    registry.unregister()
    assert _open_fds() == before


def test_a_held_region_outlives_unregister_until_released(
    registry: SystemSharedMemoryRegistry, make_shm: MakeShm
) -> None:
    first, second = make_shm(32), make_shm(32)
    registry.register("r", first, 0, 32)
    before = _open_fds()
    held = registry.acquire("r", 0, 4)
    registry.unregister("r")
    registry.register("r", second, 0, 32)  # the name now names another object
    held.write(0, memoryview(b"ABCD"))  # still the object the holder resolved
    assert _read(first, 0, 4) == b"ABCD" and _read(second, 0, 4) == bytes(4)
    assert _open_fds() == before + 1  # the new registration's descriptor; the old one is still open
    held.release()
    assert _open_fds() == before  # the old descriptor closed with its last holder
    with pytest.raises(SharedMemoryError, match="was unregistered"):
        held.acquire()


def test_close_keeps_the_clients_objects(make_shm: MakeShm) -> None:
    key = make_shm(16)
    registry = SystemSharedMemoryRegistry(OWN)
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


# --- an object that shrinks or cannot be written: an error, never SIGBUS --------------------


def test_read_of_a_truncated_object_is_an_error(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    key = make_shm(8192, b"x" * 8192)
    registry.register("r", key, 0, 8192)
    os.truncate("/dev/shm" + key, 100)  # the client shrinks its object after registering it
    assert bytes(registry.read("r", 0, 100)) == b"x" * 100
    with pytest.raises(SharedMemoryError, match=r"region 'r': its object .* ends before the 200 bytes at offset 0"):
        registry.read("r", 0, 200)
    os.truncate("/dev/shm" + key, 0)
    with pytest.raises(SharedMemoryError, match="truncated after registration"):
        registry.read("r", 4096, 4096)


def test_write_to_a_truncated_object_is_an_error_and_does_not_grow_it(
    registry: SystemSharedMemoryRegistry, make_shm: MakeShm
) -> None:
    key = make_shm(8192)
    registry.register("r", key, 0, 8192)
    os.truncate("/dev/shm" + key, 0)
    region = registry.acquire("r", 0, 8192)
    try:
        with pytest.raises(SharedMemoryError, match=r"region 'r': its object .* is now 0 bytes"):
            region.write(4096, memoryview(bytes(16)))
    finally:
        region.release()
    assert os.path.getsize("/dev/shm" + key) == 0


def test_partial_reads_and_writes_are_completed(
    registry: SystemSharedMemoryRegistry, make_shm: MakeShm, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = bytes(range(200))
    key = make_shm(256, content)
    registry.register("r", key, 0, 256)
    real_preadv, real_pwrite = os.preadv, os.pwrite

    def preadv(fd: int, buffers: List[Any], offset: int) -> int:
        return real_preadv(fd, [memoryview(buffers[0])[:7]], offset)  # at most 7 bytes a call

    def pwrite(fd: int, data: Any, offset: int) -> int:
        return real_pwrite(fd, bytes(data[:5]), offset)

    monkeypatch.setattr(os, "preadv", preadv)
    monkeypatch.setattr(os, "pwrite", pwrite)
    assert bytes(registry.read("r", 3, 150)) == content[3:153]
    region = registry.acquire("r", 0, 256)
    region.write(10, memoryview(b"0123456789abcdefghij"))
    region.release()
    assert _read(key, 10, 20) == b"0123456789abcdefghij"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failing_write_is_an_error_naming_the_region(
    registry: SystemSharedMemoryRegistry, make_shm: MakeShm, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    registry.register("r", make_shm(64), 0, 64)

    def pwrite(fd: int, data: Any, offset: int) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "pwrite", pwrite)
    region = registry.acquire("r", 0, 64)
    try:
        with pytest.raises(SharedMemoryError, match=f"region 'r': write failed: {os.strerror(code)}"):
            region.write(0, memoryview(bytes(8)))
    finally:
        region.release()


# --- caps -------------------------------------------------------------------------------------


def test_region_count_is_capped_and_a_refused_registration_costs_no_descriptor(make_shm: MakeShm) -> None:
    keys = [make_shm() for _ in range(3)]
    with SystemSharedMemoryRegistry(dataclasses.replace(OWN, max_regions=2)) as registry:
        registry.register("a", keys[0], 0, 8)
        registry.register("b", keys[1], 0, 8)
        before = _open_fds()
        for _ in range(50):
            with pytest.raises(SharedMemoryError, match=r"2 regions are registered, the limit .shared_memory.max_reg"):
                registry.register("c", keys[2], 0, 8)
        assert _open_fds() == before
        registry.unregister("a")
        registry.register("c", keys[2], 0, 8)


def test_registered_bytes_are_capped(make_shm: MakeShm) -> None:
    keys = [make_shm(4096) for _ in range(3)]
    with SystemSharedMemoryRegistry(dataclasses.replace(OWN, max_total_bytes=6000)) as registry:
        registry.register("a", keys[0], 0, 4096)
        with pytest.raises(SharedMemoryError, match="4096 more bytes would pass the limit of 6000 registered bytes"):
            registry.register("b", keys[1], 0, 4096)
        registry.register("b", keys[1], 0, 1904)
        registry.unregister()
        registry.register("c", keys[2], 0, 4096)


def test_disabled_extension_registers_nothing(make_shm: MakeShm) -> None:
    with SystemSharedMemoryRegistry(SharedMemorySettings(enabled=False, allow_server_owned=True)) as registry:
        with pytest.raises(SharedMemoryError, match="system shared memory is not supported: it is disabled"):
            registry.register("r", make_shm(), 0, 8)
        assert registry.status() == []
        with pytest.raises(SharedMemoryError, match="disabled"):
            registry.read("r", 0, 8)


# --- who may register what ------------------------------------------------------------------


def test_an_object_of_the_servers_own_user_is_refused_by_default(make_shm: MakeShm) -> None:
    with SystemSharedMemoryRegistry() as registry:
        with pytest.raises(SharedMemoryError, match=r"is owned by the server's own user.*allow_server_owned is false"):
            registry.register("r", make_shm(), 0, 8)
        assert registry.status() == []


def test_the_key_policy_is_checked_before_the_object_is_opened() -> None:
    # (the policy itself: test_shm_policy.py) a missing key outside the prefixes is refused by prefix
    registry = SystemSharedMemoryRegistry(dataclasses.replace(OWN, key_prefixes=("/app-",)))
    with registry, pytest.raises(SharedMemoryError, match=r"does not start with an allowed prefix \(/app-; shared_"):
        registry.register("r", f"/edge-runtime-test-missing-{uuid.uuid4().hex}", 0, 8)


@needs_root
def test_an_object_its_owner_does_not_share_is_refused(make_shm: MakeShm) -> None:
    key = make_shm()
    _give_away(key, 0o600)  # root could open it: the kernel would not stop the server
    with SystemSharedMemoryRegistry() as registry:
        with pytest.raises(SharedMemoryError, match=r"is private to its owner \(mode 0600\)"):
            registry.register("r", key, 0, 8)
        _give_away(key, 0o660)
        registry.register("r", key, 0, 8)


def test_a_copy_is_read_whatever_the_dtype_later_needs(registry: SystemSharedMemoryRegistry, make_shm: MakeShm) -> None:
    values = np.arange(4, dtype=np.float32)
    registry.register("r", make_shm(64, values.tobytes()), 0, 64)
    data = registry.read("r", 0, 16)
    np.testing.assert_array_equal(np.frombuffer(data, dtype=np.float32), values)
