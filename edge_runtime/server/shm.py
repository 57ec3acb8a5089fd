"""Triton's system shared-memory extension: regions of POSIX shm objects that clients register.

A client creates a POSIX shared-memory object (``shm_open("/key")``, e.g. with
``tritonclient.utils.shared_memory``), registers a named region of it (key, offset, byte size),
and then names that region instead of sending tensor bytes over HTTP. On Linux a POSIX shm
object is the file ``/dev/shm/<key without its leading '/'>``, so this module opens that file
itself and keeps one descriptor per region.

Why ``pread``/``pwrite`` and not ``mmap``: the object belongs to the client, who may shrink it
(``ftruncate``) at any time, and a full ``/dev/shm`` cannot back a page of a sparse object.
Touching such a page of a mapping raises SIGBUS, which kills the whole server; ``pread`` returns
short and ``pwrite`` fails with ENOSPC instead, which become a 400 naming the region. The price
is one copy of each shared-memory input (into a fresh buffer the model reads) and of each output.

Who may register what (key prefixes, owners, sharing; docs/security.md) is
:class:`~edge_runtime.server.shm_policy.SharedMemoryPolicy`, checked on the key before opening
and with ``fstat`` on the opened descriptor. Caps bound the regions (one descriptor each) and
their total registered bytes.

Why not :mod:`multiprocessing.shared_memory`: before Python 3.13 its resource tracker unlinks
every segment a process attaches to when the process exits, destroying the clients' segments.
The key is opened like glibc's ``shm_open`` does it, with ``O_NOFOLLOW`` (``/dev/shm`` is
world-writable: a planted symlink must not lead elsewhere), and only a regular file is accepted.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional

import numpy as np

from edge_runtime.config.runtime import SharedMemorySettings
from edge_runtime.errors import SharedMemoryError
from edge_runtime.server.shm_policy import SharedMemoryPolicy

SHM_DIRECTORY = "/dev/shm"
_OPEN_FLAGS = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


class Region:
    """One registered region: its own descriptor of the object, read and written with pread/pwrite.

    Requests hold a region (``acquire``/``release``) from decode until the response is written;
    unregistering retires it, and its descriptor is closed when the last holder releases it.
    """

    def __init__(self, name: str, key: str, offset: int, byte_size: int, fd: int) -> None:
        self.name = name
        self.key = key
        self.offset = offset
        self.byte_size = byte_size
        self._fd = fd
        self._users = 0
        self._retired = False
        self._lock = threading.Lock()

    def acquire(self) -> Region:
        """Hold the region (its descriptor stays open until ``release``)."""
        with self._lock:
            if self._retired:
                raise SharedMemoryError(f"shared memory region {self.name!r} was unregistered")
            self._users += 1
        return self

    def release(self) -> None:
        """Stop holding the region; closes its descriptor if it was retired and no one holds it."""
        with self._lock:
            self._users -= 1
            close = self._retired and self._users == 0
        if close:
            os.close(self._fd)

    def retire(self) -> None:
        """Unregistered: close the descriptor now, or when the last holder releases it."""
        with self._lock:
            if self._retired:
                return
            self._retired = True
            close = self._users == 0
        if close:
            os.close(self._fd)

    def check_range(self, offset: int, byte_size: int) -> None:
        """SharedMemoryError unless ``byte_size`` bytes at ``offset`` lie inside the region."""
        _check_int(self.name, "offset", offset, minimum=0)
        _check_int(self.name, "byte_size", byte_size, minimum=0)
        if offset + byte_size > self.byte_size:
            raise SharedMemoryError(
                f"shared memory region {self.name!r}: {byte_size} bytes at offset {offset} do not fit "
                f"in its {self.byte_size} bytes"
            )

    def read(self, offset: int, byte_size: int) -> np.ndarray:
        """A fresh uint8 array of ``byte_size`` bytes at ``offset`` (a held region only)."""
        self.check_range(offset, byte_size)
        buffer = np.empty(byte_size, dtype=np.uint8)
        view = buffer.data
        start = self.offset + offset
        done = 0
        try:
            while done < byte_size:
                count = os.preadv(self._fd, [view[done:]], start + done)
                if count == 0:
                    raise SharedMemoryError(
                        f"shared memory region {self.name!r}: its object (key {self.key!r}) ends before the "
                        f"{byte_size} bytes at offset {offset}: it was truncated after registration"
                    )
                done += count
        except OSError as exc:
            raise SharedMemoryError(f"shared memory region {self.name!r}: read failed: {exc.strerror}") from exc
        return buffer

    def write(self, offset: int, data: memoryview) -> None:
        """Write ``data`` (bytes) at ``offset`` (a held region only); never grows a shrunk object."""
        self.check_range(offset, data.nbytes)
        start = self.offset + offset
        try:
            size = os.fstat(self._fd).st_size
            if start + data.nbytes > size:
                raise SharedMemoryError(
                    f"shared memory region {self.name!r}: its object (key {self.key!r}) is now {size} bytes, "
                    f"too small for {data.nbytes} bytes at offset {offset}: it was truncated after registration"
                )
            done = 0
            while done < data.nbytes:
                done += os.pwrite(self._fd, data[done:], start + done)
        except OSError as exc:
            raise SharedMemoryError(f"shared memory region {self.name!r}: write failed: {exc.strerror}") from exc


class SystemSharedMemoryRegistry:
    """The registered system shared-memory regions of one server, under its settings; thread-safe."""

    def __init__(self, settings: Optional[SharedMemorySettings] = None, directory: str = SHM_DIRECTORY) -> None:
        self._settings = settings if settings is not None else SharedMemorySettings()
        self._policy = SharedMemoryPolicy(self._settings)
        self._directory = directory
        self._regions: Dict[str, Region] = {}
        self._total_bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """False when the settings switch the extension off."""
        return self._settings.enabled

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Open the shm object ``key`` as region ``name`` (``byte_size`` bytes at ``offset``), by the policy."""
        self._check_enabled()
        if not isinstance(name, str) or not name:
            raise SharedMemoryError("shared memory region name must be a non-empty string")
        path = self._path(key)
        _check_int(name, "offset", offset, minimum=0)
        _check_int(name, "byte_size", byte_size, minimum=1)
        self._policy.check_key(name, key)
        with self._lock:  # checked before opening (a flood must not cost descriptors) and again after
            self._check_caps(name, byte_size)
        fd = self._open(name, path, key, offset, byte_size)
        try:
            with self._lock:
                self._check_caps(name, byte_size)
                self._regions[name] = Region(name, key, offset, byte_size, fd)
                self._total_bytes += byte_size
        except BaseException:
            os.close(fd)
            raise

    def unregister(self, name: Optional[str] = None) -> None:
        """Forget region ``name`` (all regions when None); an unknown name is a no-op, as in Triton."""
        with self._lock:
            if name is None:
                regions = list(self._regions.values())
                self._regions.clear()
            else:
                region = self._regions.pop(name, None)
                regions = [] if region is None else [region]
            self._total_bytes -= sum(region.byte_size for region in regions)
        for region in regions:
            region.retire()

    def status(self, name: Optional[str] = None) -> List[Dict[str, Any]]:
        """Triton's status list ``[{"name", "key", "offset", "byte_size"}]`` of one or all regions."""
        with self._lock:
            if name is None:
                regions = list(self._regions.values())
            elif name in self._regions:
                regions = [self._regions[name]]
            else:
                raise SharedMemoryError(f"unknown shared memory region {name!r}")
        return [
            {"name": region.name, "key": region.key, "offset": region.offset, "byte_size": region.byte_size}
            for region in regions
        ]

    def acquire(self, name: str, offset: int, byte_size: int) -> Region:
        """Region ``name``, held by the caller (who must ``release`` it), checked to hold the range."""
        self._check_enabled()
        with self._lock:
            region = self._regions.get(name)
            if region is None:
                raise SharedMemoryError(f"unknown shared memory region {name!r}")
            region.check_range(offset, byte_size)
            return region.acquire()

    def read(self, name: str, offset: int, byte_size: int) -> np.ndarray:
        """A fresh copy of ``byte_size`` bytes at ``offset`` of region ``name``."""
        region = self.acquire(name, offset, byte_size)
        try:
            return region.read(offset, byte_size)
        finally:
            region.release()

    def close(self) -> None:
        """Unregister every region."""
        self.unregister(None)

    def __enter__(self) -> SystemSharedMemoryRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_enabled(self) -> None:
        if not self._settings.enabled:
            raise SharedMemoryError("system shared memory is not supported: it is disabled on this server")

    def _check_caps(self, name: str, byte_size: int) -> None:
        if name in self._regions:
            raise SharedMemoryError(f"shared memory region {name!r} is already registered")
        limit = self._settings.max_regions
        if len(self._regions) >= limit:
            raise SharedMemoryError(
                f"shared memory region {name!r}: {limit} regions are registered, the limit "
                "(shared_memory.max_regions): unregister one first"
            )
        total = self._settings.max_total_bytes
        if self._total_bytes + byte_size > total:
            raise SharedMemoryError(
                f"shared memory region {name!r}: {byte_size} more bytes would pass the limit of {total} "
                f"registered bytes (shared_memory.max_total_bytes; {self._total_bytes} registered)"
            )

    def _open(self, name: str, path: str, key: str, offset: int, byte_size: int) -> int:
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            raise SharedMemoryError(
                f"shared memory region {name!r}: cannot open key {key!r}: {exc.strerror}"
            ) from exc
        try:
            info = os.fstat(fd)
            self._policy.check_object(name, key, info)
            if offset + byte_size > info.st_size:
                raise SharedMemoryError(
                    f"shared memory region {name!r}: offset {offset} + byte_size {byte_size} is beyond "
                    f"the end of key {key!r} ({info.st_size} bytes)"
                )
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _path(self, key: Any) -> str:
        bare = key[1:] if isinstance(key, str) and key.startswith("/") else key
        if not isinstance(bare, str) or not bare or "/" in bare or ".." in bare or "\x00" in bare:
            raise SharedMemoryError(
                f"invalid shared memory key {key!r}: expected '/name' (no other '/', no '..')"
            )
        return os.path.join(self._directory, bare)


def _check_int(name: str, field: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SharedMemoryError(
            f"shared memory region {name!r}: {field} must be an integer >= {minimum}, got {value!r}"
        )
