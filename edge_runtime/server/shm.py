"""Triton's system shared-memory extension: regions of POSIX shm objects that clients register.

A client creates a POSIX shared-memory object (``shm_open("/key")``, e.g. with
``tritonclient.utils.shared_memory``), registers a named region of it (key, offset, byte size),
and then names that region instead of sending tensor bytes over HTTP. On Linux a POSIX shm
object is the file ``/dev/shm/<key without its leading '/'>``, so this module opens that file
itself (``os.open`` + ``mmap``, read/write, shared).

Why not :mod:`multiprocessing.shared_memory`: before Python 3.13 its resource tracker records
every segment a process *attaches* to and unlinks it when the process exits, so the server would
destroy its clients' segments (and warn about "leaked" ones it never created).

The key is opened like glibc's ``shm_open`` does it: ``O_NOFOLLOW`` (``/dev/shm`` is
world-writable, so a symlink planted there must not lead the server to map some other file),
and only a regular file is accepted.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from edge_runtime.errors import SharedMemoryError

SHM_DIRECTORY = "/dev/shm"
_OPEN_FLAGS = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


@dataclass(frozen=True)
class _Region:
    key: str
    offset: int
    byte_size: int
    mapping: mmap.mmap
    start: int  # where the region begins inside ``mapping`` (mmap offsets are page-aligned)


class SystemSharedMemoryRegistry:
    """The registered system shared-memory regions of one server; safe to use from any thread.

    Unregistering a region while views of it are still in use (an inference in flight) is
    allowed: the entry goes at once, and the mapping is unmapped when the last view is released.
    """

    def __init__(self, directory: str = SHM_DIRECTORY) -> None:
        self._directory = directory
        self._regions: Dict[str, _Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map ``byte_size`` bytes at ``offset`` of the shm object ``key`` as region ``name``."""
        if not isinstance(name, str) or not name:
            raise SharedMemoryError("shared memory region name must be a non-empty string")
        path = self._path(key)
        _check_int(name, "offset", offset, minimum=0)
        _check_int(name, "byte_size", byte_size, minimum=1)
        with self._lock:
            if name in self._regions:
                raise SharedMemoryError(f"shared memory region {name!r} is already registered")
            self._regions[name] = _map_region(name, path, key, offset, byte_size)

    def unregister(self, name: Optional[str] = None) -> None:
        """Forget region ``name`` (all regions when None); an unknown name is a no-op, as in Triton."""
        with self._lock:
            if name is None:
                regions = list(self._regions.values())
                self._regions.clear()
            else:
                region = self._regions.pop(name, None)
                regions = [] if region is None else [region]
        for region in regions:
            _release(region.mapping)

    def status(self, name: Optional[str] = None) -> List[Dict[str, Any]]:
        """Triton's status list ``[{"name", "key", "offset", "byte_size"}]`` of one or all regions."""
        with self._lock:
            if name is None:
                items = list(self._regions.items())
            elif name in self._regions:
                items = [(name, self._regions[name])]
            else:
                raise SharedMemoryError(f"unknown shared memory region {name!r}")
        return [
            {"name": key, "key": region.key, "offset": region.offset, "byte_size": region.byte_size}
            for key, region in items
        ]

    def view(self, name: str, offset: int, byte_size: int) -> memoryview:
        """A writable view of ``byte_size`` bytes at ``offset`` inside region ``name``."""
        with self._lock:
            region = self._regions.get(name)
            if region is None:
                raise SharedMemoryError(f"unknown shared memory region {name!r}")
            _check_int(name, "offset", offset, minimum=0)
            _check_int(name, "byte_size", byte_size, minimum=0)
            if offset + byte_size > region.byte_size:
                raise SharedMemoryError(
                    f"shared memory region {name!r}: {byte_size} bytes at offset {offset} do not fit "
                    f"in its {region.byte_size} bytes"
                )
            start = region.start + offset
            return memoryview(region.mapping)[start : start + byte_size]

    def close(self) -> None:
        """Unregister every region."""
        self.unregister(None)

    def __enter__(self) -> SystemSharedMemoryRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _path(self, key: Any) -> str:
        bare = key[1:] if isinstance(key, str) and key.startswith("/") else key
        if not isinstance(bare, str) or not bare or "/" in bare or ".." in bare or "\x00" in bare:
            raise SharedMemoryError(
                f"invalid shared memory key {key!r}: expected '/name' (no other '/', no '..')"
            )
        return os.path.join(self._directory, bare)


def _map_region(name: str, path: str, key: str, offset: int, byte_size: int) -> _Region:
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise SharedMemoryError(
            f"shared memory region {name!r}: cannot open key {key!r}: {exc.strerror}"
        ) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SharedMemoryError(f"shared memory region {name!r}: key {key!r} is not a shm object")
        if offset + byte_size > info.st_size:
            raise SharedMemoryError(
                f"shared memory region {name!r}: offset {offset} + byte_size {byte_size} is beyond "
                f"the end of key {key!r} ({info.st_size} bytes)"
            )
        start = offset % mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(fd, start + byte_size, access=mmap.ACCESS_WRITE, offset=offset - start)
    except (OSError, ValueError) as exc:
        raise SharedMemoryError(
            f"shared memory region {name!r}: cannot map key {key!r}: {getattr(exc, 'strerror', None) or exc}"
        ) from exc
    finally:
        os.close(fd)  # the mapping keeps its own reference to the object
    return _Region(key=key, offset=offset, byte_size=byte_size, mapping=mapping, start=start)


def _release(mapping: mmap.mmap) -> None:
    # BufferError: views are still exported (an inference is using the region). Dropping our
    # reference is then enough: the mapping is unmapped when the last view goes away.
    with contextlib.suppress(BufferError):
        mapping.close()


def _check_int(name: str, field: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SharedMemoryError(
            f"shared memory region {name!r}: {field} must be an integer >= {minimum}, got {value!r}"
        )
