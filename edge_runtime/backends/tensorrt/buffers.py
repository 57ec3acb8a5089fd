"""Host/device buffer pairs for TensorRT I/O, in pycuda memory, each with an explicit ``free()``.

As in TensorRT's samples: every CUDA call goes through one checker (:class:`CudaCalls`) that
turns a pycuda error into one of ours, and every buffer is a small object that owns its memory.
Two kinds, chosen by ``tensorrt.zero_copy`` in the device config:

- :class:`PinnedBuffer`: page-locked host memory plus a device buffer; inputs are copied to the
  device and outputs back with async copies on the model's stream (discrete GPUs, and Jetsons
  when zero-copy is off);
- :class:`MappedBuffer`: mapped page-locked host memory (``host_alloc_flags.DEVICEMAP``), whose
  device pointer the engine uses directly: on a Jetson CPU and GPU share DRAM, so no copies.

A buffer is sized once for the largest shape the engine will see; a request uses ``view(shape)``,
its leading bytes.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Tuple, Type, TypeVar, cast

import numpy as np

from edge_runtime.backends.tensorrt.cuda_api import CudaDriver, CudaStream, DeviceAllocation, HostAllocation
from edge_runtime.errors import EdgeRuntimeError, InferenceError, MemoryBudgetError

log = logging.getLogger(__name__)
T = TypeVar("T")


class CudaCalls:
    """The one checker every CUDA call goes through: pycuda errors become ours, with the cause kept."""

    def __init__(self, cuda: CudaDriver) -> None:
        self.cuda = cuda

    def __call__(self, what: str, function: Callable[..., T], *args: Any,
                 error: Type[EdgeRuntimeError] = InferenceError, **kwargs: Any) -> T:
        """``function(*args, **kwargs)``; a pycuda error is raised as ``error`` (out of memory: MemoryBudgetError)."""
        try:
            return function(*args, **kwargs)
        except self.cuda.Error as exc:
            out_of_memory = getattr(self.cuda, "MemoryError", None)
            kind = MemoryBudgetError if out_of_memory is not None and isinstance(exc, out_of_memory) else error
            raise kind(f"CUDA: {what} failed: {str(exc).strip() or type(exc).__name__}") from exc


def allocation_of(host: np.ndarray) -> HostAllocation:
    """The page-locked allocation behind an array from ``pagelocked_empty`` (pycuda keeps it as ``.base``)."""
    return cast(HostAllocation, host.base)


class HostDeviceBuffer:
    """One tensor's memory: a host array the runtime reads and writes, and the address the engine uses."""

    def __init__(self, name: str, dtype: np.dtype, max_shape: Tuple[int, ...]) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)
        self.max_shape = max_shape
        self.count = int(np.prod(max_shape, dtype=np.int64))
        self.nbytes = self.count * self.dtype.itemsize
        self.host: Optional[np.ndarray] = None  # 1-D page-locked array of ``count`` elements (at least 1)
        self.address = 0  # what the engine reads/writes (set_tensor_address)

    @property
    def zero_copy(self) -> bool:
        return False

    def view(self, shape: Tuple[int, ...]) -> np.ndarray:
        """The leading bytes of the host memory, shaped ``shape`` (no copy)."""
        assert self.host is not None, f"buffer '{self.name}' is freed"
        return self.host[:int(np.prod(shape, dtype=np.int64))].reshape(shape)

    def to_device(self, check: CudaCalls, stream: CudaStream, shape: Tuple[int, ...]) -> None:
        """Queue the copy of ``view(shape)`` to the device (nothing to do with mapped memory)."""

    def to_host(self, check: CudaCalls, stream: CudaStream, shape: Tuple[int, ...]) -> None:
        """Queue the copy of the device's ``shape`` result into ``view(shape)`` (nothing with mapped memory)."""

    def free(self, check: CudaCalls) -> None:
        """Free the host memory (idempotent: a freed buffer holds nothing)."""
        host, self.host, self.address = self.host, None, 0
        if host is not None:
            check(f"freeing the host buffer of '{self.name}'", allocation_of(host).free)


class PinnedBuffer(HostDeviceBuffer):
    """Page-locked host memory plus device memory, joined by async copies on the stream."""

    def __init__(self, check: CudaCalls, name: str, dtype: np.dtype, max_shape: Tuple[int, ...]) -> None:
        super().__init__(name, dtype, max_shape)
        self.device: Optional[DeviceAllocation] = None
        self.host = check(f"allocating {self.nbytes} bytes of page-locked memory for '{name}'",
                          check.cuda.pagelocked_empty, max(self.count, 1), self.dtype)
        try:
            self.device = check(f"allocating {self.nbytes} bytes of device memory for '{name}'",
                                check.cuda.mem_alloc, max(self.nbytes, 1))
        except EdgeRuntimeError:
            self.free(check)
            raise
        self.address = int(self.device)

    def to_device(self, check: CudaCalls, stream: CudaStream, shape: Tuple[int, ...]) -> None:
        check(f"copying '{self.name}' to the device", check.cuda.memcpy_htod_async, self.device, self.view(shape),
              stream)

    def to_host(self, check: CudaCalls, stream: CudaStream, shape: Tuple[int, ...]) -> None:
        check(f"copying '{self.name}' from the device", check.cuda.memcpy_dtoh_async, self.view(shape), self.device,
              stream)

    def free(self, check: CudaCalls) -> None:
        """Free the device memory, then the host memory; idempotent."""
        device, self.device = self.device, None
        try:
            if device is not None:
                check(f"freeing the device buffer of '{self.name}'", device.free)
        finally:
            super().free(check)


class MappedBuffer(HostDeviceBuffer):
    """Mapped page-locked host memory: the engine reads and writes it through its device pointer (zero-copy)."""

    def __init__(self, check: CudaCalls, name: str, dtype: np.dtype, max_shape: Tuple[int, ...]) -> None:
        super().__init__(name, dtype, max_shape)
        flags = check.cuda.host_alloc_flags.DEVICEMAP
        self.host = check(f"allocating {self.nbytes} bytes of mapped host memory for '{name}'",
                          check.cuda.pagelocked_empty, max(self.count, 1), self.dtype, mem_flags=flags)
        try:
            pointer = check(f"mapping the host buffer of '{name}'", allocation_of(self.host).get_device_pointer)
            self.address = int(pointer)
        except EdgeRuntimeError:
            self.free(check)
            raise

    @property
    def zero_copy(self) -> bool:
        return True


class BufferSet:
    """Every I/O buffer of a model, by tensor name; ``free()`` frees them all and is idempotent."""

    def __init__(self, check: CudaCalls, zero_copy: bool) -> None:
        self.check = check
        self.zero_copy = zero_copy
        self.buffers: Dict[str, HostDeviceBuffer] = {}

    def allocate(self, name: str, dtype: np.dtype, max_shape: Tuple[int, ...]) -> HostDeviceBuffer:
        """A new buffer for ``name`` at ``max_shape``; kept here so that ``free()`` frees it."""
        kind = MappedBuffer if self.zero_copy else PinnedBuffer
        buffer = self.buffers[name] = kind(self.check, name, dtype, max_shape)
        return buffer

    def __getitem__(self, name: str) -> HostDeviceBuffer:
        return self.buffers[name]

    def free(self) -> None:
        """Free every buffer, even when one fails; then raise the first failure."""
        first: Optional[EdgeRuntimeError] = None
        buffers, self.buffers = list(self.buffers.values()), {}
        for buffer in buffers:
            try:
                buffer.free(self.check)
            except EdgeRuntimeError as exc:
                log.warning("%s", exc)
                first = first or exc
        if first is not None:
            raise first
