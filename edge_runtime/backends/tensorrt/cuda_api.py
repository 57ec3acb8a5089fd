"""Typed protocols for the few ``pycuda.driver`` calls the TensorRT backend makes (pycuda ships no stubs).

mypy checks our calls against these; the real ``pycuda.driver`` module and the test double in
``tests/trt_fakes/fake_pycuda.py`` both satisfy them. Every call in this list exists in pycuda
2022.1 and later (the release JetPack 5 users build from source).
"""

from __future__ import annotations

from typing import Any, Protocol, Tuple

import numpy as np


class HostAllocation(Protocol):
    """``ndarray.base`` of an array from ``pagelocked_empty``: page-locked host memory."""

    def free(self) -> None: ...

    def get_device_pointer(self) -> int: ...  # only for DEVICEMAP (mapped, zero-copy) allocations


class DeviceAllocation(Protocol):
    """Device memory from ``mem_alloc``; ``int()`` is its device address."""

    def free(self) -> None: ...

    def __int__(self) -> int: ...


class CudaStream(Protocol):
    """A CUDA stream; ``handle`` is what ``execute_async_v3`` takes."""

    handle: int

    def synchronize(self) -> None: ...


class CudaContext(Protocol):
    """A CUDA context (the device's primary one), current on the thread that pushed it."""

    def push(self) -> None: ...

    def pop(self) -> None: ...

    def detach(self) -> None: ...


class CudaDevice(Protocol):
    def retain_primary_context(self) -> CudaContext: ...

    def compute_capability(self) -> Tuple[int, int]: ...

    def get_attribute(self, attribute: Any) -> int: ...

    def name(self) -> str: ...


class CudaDriver(Protocol):
    """The subset of ``pycuda.driver`` in use."""

    Error: Any  # exception base class of every pycuda error
    host_alloc_flags: Any  # .DEVICEMAP
    device_attribute: Any  # .INTEGRATED, .CAN_MAP_HOST_MEMORY

    def init(self) -> None: ...

    def Device(self, ordinal: int) -> CudaDevice: ...  # pycuda's name

    def Stream(self) -> CudaStream: ...  # pycuda's name

    def mem_alloc(self, nbytes: int) -> DeviceAllocation: ...

    def pagelocked_empty(self, shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray: ...

    def memcpy_htod_async(self, dest: Any, src: np.ndarray, stream: CudaStream) -> None: ...

    def memcpy_dtoh_async(self, dest: np.ndarray, src: Any, stream: CudaStream) -> None: ...
