"""A recording test double of ``pycuda.driver`` (the calls in ``backends/tensorrt/cuda_api.py``).

Memory is real numpy memory. Every allocation gets a fake address:

- ``pagelocked_empty`` returns an ndarray whose ``.base`` is the allocation (as pycuda's);
  with ``mem_flags=host_alloc_flags.DEVICEMAP`` the allocation is mapped, and
  ``base.get_device_pointer()`` is a device address that reaches the same bytes;
- ``mem_alloc`` returns device memory; ``int(allocation)`` is its address.

The fake engine (``fake_trt_runtime``) reads and writes tensors through :meth:`FakeCuda.resolve`,
which only knows device addresses (device buffers and mapped host memory), as a GPU would:
a pinned host array's own pointer is not an address the engine can use.

Work on a stream is queued and runs at ``Stream.synchronize()`` (async copies, engine runs),
so a missing synchronize leaves the host outputs unwritten, as on a GPU. Contexts keep a stack
per thread; every call that needs a context checks that the calling thread has one current.
Every call is appended to ``calls`` as ``(name, args)`` (share the list with the fake
``tensorrt`` module to assert one call order). Failures are injectable: ``fail("mem_alloc", 3)``
makes the 3rd ``mem_alloc`` raise pycuda's MemoryError.
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

Call = Tuple[str, Tuple[Any, ...]]


class Error(Exception):
    """Base of pycuda's errors."""


class LogicError(Error):
    pass


class MemoryError(Error):
    pass


class host_alloc_flags:
    PORTABLE = 1
    DEVICEMAP = 2
    WRITECOMBINED = 4


class device_attribute:
    INTEGRATED = "INTEGRATED"
    CAN_MAP_HOST_MEMORY = "CAN_MAP_HOST_MEMORY"


class _Memory:
    """One allocation: its bytes, its fake device address (0: none), whether it is still live."""

    def __init__(self, cuda: FakeCuda, kind: str, nbytes: int, address: int) -> None:
        self.cuda = cuda
        self.kind = kind  # "host" | "mapped" | "device"
        self.raw = np.zeros(max(nbytes, 1), np.uint8)
        self.nbytes = nbytes
        self.address = address
        self.live = True

    def free(self) -> None:
        self.cuda._record("free", (self.kind, self.address))
        if not self.live:
            raise LogicError(f"{self.kind}_allocation::free failed: invalid resource handle (freed twice)")
        self.live = False


class HostAllocation(_Memory):
    """``ndarray.base`` of a page-locked array (exposes the bytes through ``__array_interface__``)."""

    def __init__(self, cuda: FakeCuda, kind: str, nbytes: int, address: int,
                 shape: Tuple[int, ...], dtype: np.dtype) -> None:
        super().__init__(cuda, kind, nbytes, address)
        self.__array_interface__ = {
            "shape": shape, "typestr": dtype.str, "data": (self.raw.ctypes.data, False), "version": 3,
        }

    def get_device_pointer(self) -> int:
        self.cuda._record("get_device_pointer", (self.address,))
        if self.kind != "mapped":
            raise LogicError("cuMemHostGetDevicePointer failed: invalid value (memory not allocated with DEVICEMAP)")
        return self.address


class DeviceAllocation(_Memory):
    """Device memory; ``int()`` is its address."""

    def __int__(self) -> int:
        return self.address

    def __index__(self) -> int:
        return self.address


class Context:
    def __init__(self, cuda: FakeCuda, ordinal: int) -> None:
        self.cuda = cuda
        self.ordinal = ordinal
        self.detached = False

    def push(self) -> None:
        self.cuda._record("ctx.push", (threading.get_ident(),))
        if self.detached:
            raise LogicError("context::push failed: the context was detached")
        self.cuda._stack().append(self)

    def pop(self) -> None:
        self.cuda._record("ctx.pop", (threading.get_ident(),))
        stack = self.cuda._stack()
        if not stack or stack[-1] is not self:
            raise LogicError("context::pop failed: this context is not current on this thread")
        stack.pop()

    def detach(self) -> None:
        self.cuda._record("ctx.detach", (threading.get_ident(),))
        if self.detached:
            raise LogicError("context::detach failed: already detached")
        self.detached = True


class Device:
    def __init__(self, cuda: FakeCuda, ordinal: int) -> None:
        self.cuda = cuda
        self.ordinal = ordinal

    def retain_primary_context(self) -> Context:
        self.cuda._record("retain_primary_context", (self.ordinal,))
        context = Context(self.cuda, self.ordinal)
        self.cuda.contexts.append(context)
        return context

    def compute_capability(self) -> Tuple[int, int]:
        return self.cuda.capability

    def get_attribute(self, attribute: Any) -> int:
        return int(self.cuda.attributes[attribute])

    def name(self) -> str:
        return "Fake Xavier GPU"


class Stream:
    def __init__(self, cuda: FakeCuda, handle: int) -> None:
        self.cuda = cuda
        self.handle = handle

    def synchronize(self) -> None:
        self.cuda._record("stream.synchronize", (self.handle,))
        self.cuda._needs_context("Stream.synchronize")
        for work in self.cuda.pending.pop(self.handle, []):
            work()


class FakeCuda:
    """One fake ``pycuda.driver``: pass it where the backend takes ``cuda``."""

    Error = Error
    LogicError = LogicError
    MemoryError = MemoryError
    host_alloc_flags = host_alloc_flags
    device_attribute = device_attribute

    def __init__(self, calls: Optional[List[Call]] = None, capability: Tuple[int, int] = (7, 2),
                 integrated: bool = True, can_map_host_memory: bool = True) -> None:
        self.calls: List[Call] = [] if calls is None else calls
        self.capability = capability
        self.attributes: Dict[Any, int] = {
            device_attribute.INTEGRATED: int(integrated),
            device_attribute.CAN_MAP_HOST_MEMORY: int(can_map_host_memory),
        }
        self.allocations: List[_Memory] = []
        self.contexts: List[Context] = []
        self.pending: Dict[int, List[Callable[[], None]]] = defaultdict(list)
        self.initialized = False
        self._addresses = itertools.count(0x7F0000000000, 1 << 24)  # 16 MiB apart: no overlap in tests
        self._handles = itertools.count(0x5000)
        self._threads = threading.local()
        self._failures: Dict[str, Tuple[int, Error]] = {}
        self._counts: Dict[str, int] = defaultdict(int)

    # -- test controls -----------------------------------------------------------------
    def fail(self, name: str, nth: int = 1, error: Optional[Error] = None) -> None:
        """Make the ``nth`` call of ``name`` (counted from now) raise ``error`` (default: pycuda MemoryError)."""
        self._failures[name] = (self._counts[name] + nth, error or MemoryError(f"{name} failed: out of memory"))

    def live(self) -> List[_Memory]:
        """Allocations not freed yet."""
        return [memory for memory in self.allocations if memory.live]

    def current_context(self) -> Optional[Context]:
        """The context current on the calling thread."""
        stack = self._stack()
        return stack[-1] if stack else None

    def resolve(self, address: int, nbytes: int) -> np.ndarray:
        """The uint8 bytes at a device address (device memory or mapped host memory), as the GPU sees them."""
        for memory in self.allocations:
            if memory.address and memory.address <= address and address + nbytes <= memory.address + memory.nbytes:
                if not memory.live:
                    raise AssertionError(f"device address {address:#x} was freed")
                if memory.kind == "host":
                    raise AssertionError(f"address {address:#x} is pinned host memory the device cannot reach")
                start = address - memory.address
                return memory.raw[start:start + nbytes]
        raise AssertionError(f"no device allocation holds {nbytes} bytes at {address:#x}")

    def enqueue(self, handle: int, work: Callable[[], None]) -> None:
        """Queue ``work`` on the stream ``handle``; it runs at that stream's synchronize."""
        self.pending[handle].append(work)

    # -- pycuda.driver ------------------------------------------------------------------
    def init(self) -> None:
        self._call("init", ())
        self.initialized = True

    def Device(self, ordinal: int) -> Device:
        self._call("Device", (ordinal,))
        if not self.initialized:
            raise LogicError("cuInit has not been called")
        if ordinal != 0:
            raise LogicError(f"cuDeviceGet failed: invalid device ordinal {ordinal}")
        return Device(self, ordinal)

    def Stream(self) -> Stream:
        self._call("Stream", ())
        self._needs_context("Stream")
        return Stream(self, next(self._handles))

    def mem_alloc(self, nbytes: int) -> DeviceAllocation:
        self._call("mem_alloc", (nbytes,))
        self._needs_context("mem_alloc")
        if nbytes <= 0:
            raise LogicError("cuMemAlloc failed: invalid value")
        memory = DeviceAllocation(self, "device", nbytes, next(self._addresses))
        self.allocations.append(memory)
        return memory

    def pagelocked_empty(self, shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self._call("pagelocked_empty", (shape, np.dtype(dtype).name, mem_flags))
        self._needs_context("pagelocked_empty")
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        mapped = bool(mem_flags & host_alloc_flags.DEVICEMAP)
        memory = HostAllocation(self, "mapped" if mapped else "host", nbytes,
                                next(self._addresses), shape, dtype)
        self.allocations.append(memory)
        array = np.asarray(memory)
        assert array.base is memory
        return array

    def memcpy_htod_async(self, dest: Any, src: np.ndarray, stream: Stream) -> None:
        self._call("memcpy_htod_async", (int(dest), src.nbytes, stream.handle))
        self._needs_context("memcpy_htod_async")
        self._check_pinned(src)
        target = self.resolve(int(dest), src.nbytes)
        data = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        self.enqueue(stream.handle, lambda: np.copyto(target, data))

    def memcpy_dtoh_async(self, dest: np.ndarray, src: Any, stream: Stream) -> None:
        self._call("memcpy_dtoh_async", (int(src), dest.nbytes, stream.handle))
        self._needs_context("memcpy_dtoh_async")
        self._check_pinned(dest)
        if not dest.flags.c_contiguous:
            raise LogicError("memcpy_dtoh_async: the destination must be contiguous")
        source = self.resolve(int(src), dest.nbytes)
        target = dest.reshape(-1).view(np.uint8)
        self.enqueue(stream.handle, lambda: np.copyto(target, source))

    # -- internals ----------------------------------------------------------------------
    def _stack(self) -> List[Context]:
        if not hasattr(self._threads, "stack"):
            self._threads.stack = []
        stack: List[Context] = self._threads.stack
        return stack

    def _record(self, name: str, args: Tuple[Any, ...]) -> None:
        self.calls.append((f"cuda.{name}", args))

    def _call(self, name: str, args: Tuple[Any, ...]) -> None:
        """Record the call and raise an injected failure when its turn has come."""
        self._record(name, args)
        self._counts[name] += 1
        failure = self._failures.get(name)
        if failure is not None and failure[0] == self._counts[name]:
            del self._failures[name]
            raise failure[1]

    def _needs_context(self, what: str) -> None:
        if self.current_context() is None:
            raise LogicError(f"{what} failed: invalid device context - no currently active context")

    def _check_pinned(self, array: np.ndarray) -> None:
        """Async copies need page-locked host memory (pycuda copies pageable memory synchronously)."""
        start = array.__array_interface__["data"][0]
        for memory in self.allocations:
            if isinstance(memory, HostAllocation):
                base = memory.raw.ctypes.data
                if base <= start and start + array.nbytes <= base + memory.nbytes:
                    if not memory.live:
                        raise AssertionError("async copy from freed host memory")
                    return
        raise AssertionError("async copy with host memory that is not page-locked")
