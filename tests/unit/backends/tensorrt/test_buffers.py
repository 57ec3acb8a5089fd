"""Host/device buffer pairs (pinned and zero-copy) on the fake pycuda driver, and the one CUDA call checker."""

from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np
import pytest
from trt_fakes.fake_pycuda import FakeCuda

from edge_runtime.backends.tensorrt.buffers import BufferSet, CudaCalls, MappedBuffer, PinnedBuffer
from edge_runtime.errors import BackendUnavailableError, InferenceError, MemoryBudgetError

DTYPES = ["float32", "float16", "int8", "int32", "bool", "int64", "uint8"]


@pytest.fixture()
def cuda() -> Any:
    """A fake driver with a context current on this thread (as the runner's worker thread has)."""
    fake = FakeCuda()
    fake.init()
    context = fake.Device(0).retain_primary_context()
    context.push()
    yield fake
    context.pop()


@pytest.mark.parametrize("zero_copy", [False, True], ids=["pinned", "zero-copy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_buffer_sizes_follow_dtype_and_shape(cuda: FakeCuda, dtype: str, zero_copy: bool) -> None:
    buffers = BufferSet(CudaCalls(cuda), zero_copy)
    buffer = buffers.allocate("t", np.dtype(dtype), (4, 3, 5))
    itemsize = np.dtype(dtype).itemsize
    assert buffer.nbytes == 60 * itemsize and buffer.count == 60
    assert buffer.host is not None and buffer.host.dtype == np.dtype(dtype) and buffer.host.shape == (60,)
    kinds = sorted((m.kind, m.nbytes) for m in cuda.live())
    assert kinds == ([("mapped", 60 * itemsize)] if zero_copy else [("device", 60 * itemsize), ("host", 60 * itemsize)])
    buffers.free()
    assert cuda.live() == []


def test_view_is_the_leading_bytes_of_the_host_memory(cuda: FakeCuda) -> None:
    buffer = PinnedBuffer(CudaCalls(cuda), "x", np.dtype("float32"), (8, 3))
    view = buffer.view((2, 3))
    view[...] = np.arange(6).reshape(2, 3)
    assert buffer.host is not None
    assert np.shares_memory(view, buffer.host) and view.shape == (2, 3)
    np.testing.assert_array_equal(buffer.host[:6], np.arange(6))
    buffer.free(CudaCalls(cuda))


def test_pinned_copies_go_through_the_device_buffer_on_the_stream(cuda: FakeCuda) -> None:
    check = CudaCalls(cuda)
    stream = cuda.Stream()
    source = PinnedBuffer(check, "in", np.dtype("int32"), (4, 2))
    source.view((3, 2))[...] = [[1, 2], [3, 4], [5, 6]]
    source.to_device(check, stream, (3, 2))
    device_bytes = cuda.resolve(source.address, 24)
    assert not device_bytes.any()  # queued: nothing moves before the stream is synchronized
    stream.synchronize()
    np.testing.assert_array_equal(device_bytes.view(np.int32), [1, 2, 3, 4, 5, 6])
    device_bytes.view(np.int32)[:] = [6, 5, 4, 3, 2, 1]  # "the engine" writes its result
    source.view((3, 2))[...] = 0
    source.to_host(check, stream, (3, 2))
    stream.synchronize()
    np.testing.assert_array_equal(source.view((3, 2)), [[6, 5], [4, 3], [2, 1]])
    assert [n for n, _ in cuda.calls if "memcpy" in n] == ["cuda.memcpy_htod_async", "cuda.memcpy_dtoh_async"]
    source.free(check)


def test_zero_copy_buffer_is_mapped_host_memory_the_device_reaches_without_copies(cuda: FakeCuda) -> None:
    check = CudaCalls(cuda)
    stream = cuda.Stream()
    buffer = MappedBuffer(check, "x", np.dtype("float16"), (2, 4))
    assert buffer.zero_copy
    assert buffer.host is not None and buffer.address == buffer.host.base.get_device_pointer()
    buffer.view((2, 4))[...] = 1.5
    np.testing.assert_array_equal(cuda.resolve(buffer.address, 16).view(np.float16), [1.5] * 8)
    buffer.to_device(check, stream, (2, 4))
    buffer.to_host(check, stream, (2, 4))
    assert [n for n, _ in cuda.calls if "memcpy" in n or "mem_alloc" in n] == []
    buffer.free(check)


def test_pinned_host_memory_has_no_device_pointer(cuda: FakeCuda) -> None:
    array = cuda.pagelocked_empty(4, np.float32)
    with pytest.raises(cuda.Error):
        array.base.get_device_pointer()  # as pycuda: only DEVICEMAP memory is mapped
    array.base.free()


def test_free_is_idempotent_and_never_frees_twice(cuda: FakeCuda) -> None:
    check = CudaCalls(cuda)
    buffers = BufferSet(check, zero_copy=False)
    for name in ("a", "b"):
        buffers.allocate(name, np.dtype("float32"), (2,))
    buffers.free()
    buffers.free()
    assert cuda.live() == []
    assert len([n for n, _ in cuda.calls if n == "cuda.free"]) == 4
    memory = cuda.mem_alloc(4)
    memory.free()
    with pytest.raises(cuda.Error, match="freed twice"):  # what the idempotence protects against
        memory.free()


def test_a_failed_device_allocation_frees_the_host_half(cuda: FakeCuda) -> None:
    buffers = BufferSet(CudaCalls(cuda), zero_copy=False)
    buffers.allocate("a", np.dtype("float32"), (2,))
    cuda.fail("mem_alloc", 1)
    with pytest.raises(MemoryBudgetError, match="allocating 400 bytes of device memory for 'b'") as caught:
        buffers.allocate("b", np.dtype("float32"), (10, 10))
    assert isinstance(caught.value.__cause__, cuda.Error)
    assert [m.kind for m in cuda.live()] == ["host", "device"]  # a's pair only
    buffers.free()
    assert cuda.live() == []


def test_buffer_set_frees_the_rest_when_one_free_fails(cuda: FakeCuda) -> None:
    check = CudaCalls(cuda)
    buffers = BufferSet(check, zero_copy=False)
    first = buffers.allocate("a", np.dtype("float32"), (2,))
    buffers.allocate("b", np.dtype("float32"), (2,))
    assert isinstance(first, PinnedBuffer) and first.device is not None
    device = first.device

    def broken() -> None:
        raise cuda.LogicError("cuMemFree failed: an illegal memory access was encountered")

    device.free = broken  # type: ignore[method-assign]
    with pytest.raises(InferenceError, match="freeing the device buffer of 'a' failed: cuMemFree failed"):
        buffers.free()
    assert [m.kind for m in cuda.live()] == ["device"]  # only the one whose free failed


def test_checker_turns_pycuda_errors_into_ours(cuda: FakeCuda) -> None:
    check = CudaCalls(cuda)
    calls: List[Tuple[int, int]] = []
    assert check("adding", lambda a, b: calls.append((a, b)) or a + b, 2, 3) == 5 and calls == [(2, 3)]

    def fails() -> None:
        raise cuda.LogicError("cuInit failed: no CUDA-capable device is detected")

    with pytest.raises(BackendUnavailableError, match=r"^CUDA: initialising failed: cuInit failed") as caught:
        check("initialising", fails, error=BackendUnavailableError)
    assert isinstance(caught.value.__cause__, cuda.LogicError)
    with pytest.raises(InferenceError):
        check("running", fails)


def test_cuda_calls_need_a_current_context() -> None:
    fake = FakeCuda()
    fake.init()
    with pytest.raises(InferenceError, match="no currently active context"):
        PinnedBuffer(CudaCalls(fake), "x", np.dtype("float32"), (2,))
    assert fake.live() == []
