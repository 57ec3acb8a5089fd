"""buffers.py on a real CUDA device through real pycuda (no TensorRT needed): pinned, mapped, copies, free.

Runs wherever pycuda sees a GPU (a Jetson, or a lent GPU machine with pycuda built from source);
skipped otherwise by conftest.py with the reason.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pytest

from edge_runtime.backends.tensorrt.buffers import BufferSet, CudaCalls, MappedBuffer, PinnedBuffer


@pytest.fixture()
def cuda() -> Iterator[Any]:
    """pycuda.driver with device 0's primary context current on this thread (popped after)."""
    import pycuda.driver as driver

    driver.init()
    context = driver.Device(0).retain_primary_context()
    context.push()
    try:
        yield driver
    finally:
        context.pop()
        context.detach()


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "int32", "bool"])
def test_pinned_buffer_round_trips_through_device_memory(cuda: Any, dtype: str) -> None:
    check = CudaCalls(cuda)
    stream = cuda.Stream()
    buffer = PinnedBuffer(check, "x", np.dtype(dtype), (8, 3, 5))
    other = PinnedBuffer(check, "y", np.dtype(dtype), (8, 3, 5))
    try:
        assert buffer.nbytes == 8 * 3 * 5 * np.dtype(dtype).itemsize and buffer.address == int(buffer.device)
        shape = (2, 3, 5)  # a smaller batch uses the leading bytes
        data = (np.arange(30).reshape(shape) % 2).astype(dtype)
        np.copyto(buffer.view(shape), data)
        buffer.to_device(check, stream, shape)
        check("device to device", cuda.memcpy_dtod_async, other.device, buffer.device, data.nbytes, stream)
        other.to_host(check, stream, shape)
        stream.synchronize()
        np.testing.assert_array_equal(other.view(shape), data)
    finally:
        buffer.free(check)
        other.free(check)
        buffer.free(check)  # idempotent


def test_mapped_buffer_is_read_by_the_device_at_its_device_pointer(cuda: Any) -> None:
    check = CudaCalls(cuda)
    if not cuda.Device(0).get_attribute(cuda.device_attribute.CAN_MAP_HOST_MEMORY):
        pytest.skip("this GPU cannot map host memory")
    stream = cuda.Stream()
    mapped = MappedBuffer(check, "x", np.dtype("float32"), (4, 4))
    out = PinnedBuffer(check, "y", np.dtype("float32"), (4, 4))
    try:
        data = np.arange(16, dtype=np.float32).reshape(4, 4)
        np.copyto(mapped.view((4, 4)), data)  # the CPU writes host memory ...
        check("device read of mapped memory", cuda.memcpy_dtod_async, out.device, mapped.address, data.nbytes,
              stream)  # ... the GPU reads it at the mapped address, no host-to-device copy
        out.to_host(check, stream, (4, 4))
        stream.synchronize()
        np.testing.assert_array_equal(out.view((4, 4)), data)
    finally:
        mapped.free(check)
        out.free(check)


def test_buffer_set_frees_everything(cuda: Any) -> None:
    check = CudaCalls(cuda)
    free_before, _ = cuda.mem_get_info()
    buffers = BufferSet(check, zero_copy=False)
    for index in range(4):
        buffers.allocate(f"t{index}", np.dtype("float32"), (1024, 1024))  # 4 MiB each on the device
    buffers.free()
    buffers.free()
    free_after, _ = cuda.mem_get_info()
    assert free_after >= free_before - (1 << 20)  # what the allocator keeps around, not 16 MiB
