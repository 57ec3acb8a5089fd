"""The TensorRT backend: runs the engines :mod:`.loader` gives it, on pycuda buffers, on one CUDA stream.

Loading apart from running, as in Polygraphy: :func:`.loader.load_engines` checks fingerprints and
deserializes (or builds); this module makes the execution contexts, sizes the buffers
(:mod:`.buffers`) for the largest shapes the device config allows, binds their addresses once,
and runs requests with ``execute_async_v3``. Only API TensorRT 8.5 and 10.x share is used.

The CUDA context is the device's primary context, pushed by the thread that loads the model and
kept current on it until close: the serving layer's worker thread loads, runs and closes a
backend (serving/instance.py), and pycuda contexts are per thread. A request costs one copy in,
one engine run, one copy out (none with zero-copy) and one copy of each output (buffers are
reused); input shapes are set only when they change. DLA engines have static shapes: a model gets
one engine per batch size, and a request runs on the smallest that fits, zero-padded.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Tuple, Type

import numpy as np

from edge_runtime import host_info
from edge_runtime.backends.base import Backend, BackendOptions, batch_limit
from edge_runtime.backends.tensorrt import api, io_specs
from edge_runtime.backends.tensorrt.buffers import BufferSet, CudaCalls
from edge_runtime.backends.tensorrt.cuda_api import CudaContext, CudaDriver, CudaStream
from edge_runtime.bundle.fingerprint import HostFingerprint
from edge_runtime.bundle.verify import VerifiedBundle
from edge_runtime.config import DeviceConfig
from edge_runtime.errors import (
    BackendUnavailableError,
    BundleError,
    ConfigError,
    EdgeRuntimeError,
    InferenceError,
    RequestError,
)

if TYPE_CHECKING:
    import tensorrt

    from edge_runtime.backends.tensorrt.loader import LoadedEngine

log = logging.getLogger(__name__)
Shape = Tuple[int, ...]
LoadEngines = Callable[..., List["LoadedEngine"]]


@dataclass
class _Slot:
    """One engine's execution context and the shapes it is currently set to."""

    context: tensorrt.IExecutionContext
    static_batch: Optional[int]
    inputs: Dict[str, Shape] = field(default_factory=dict)
    outputs: Dict[str, Shape] = field(default_factory=dict)


def _real_load_engines() -> LoadEngines:
    from edge_runtime.backends.tensorrt.loader import load_engines

    return load_engines


class TensorRTBackend(Backend):
    """TensorRT engines on the GPU (or DLA), with pinned or zero-copy (mapped) pycuda buffers."""

    name = "tensorrt"

    def __init__(self, trt: Optional[api.TrtModule] = None, cuda: Optional[CudaDriver] = None,
                 host: Optional[HostFingerprint] = None, load_engines: Optional[LoadEngines] = None) -> None:
        super().__init__()
        self._given = (trt, cuda, host, load_engines)  # None: the real module / host / loader at load
        self._errors: List[str] = []  # TensorRT's error messages since the last call that cleared them
        self._thread = 0
        self._check: Optional[CudaCalls] = None
        self._cuda_context: Optional[CudaContext] = None
        self._pushed = False
        self._stream: Optional[CudaStream] = None
        self._runtime: Optional[tensorrt.Runtime] = None
        self._engines: List[LoadedEngine] = []
        self._slots: List[_Slot] = []
        self._buffers: Optional[BufferSet] = None
        self._ranges: Dict[str, List[io_specs.Range]] = {}
        self._declared: Dict[str, Shape] = {}
        self._output_names: List[str] = []

    def _load(self, bundle: Optional[VerifiedBundle], device: DeviceConfig, options: BackendOptions) -> None:
        if bundle is None:
            raise BundleError("the tensorrt backend needs a bundle")
        trt, cuda, host, load_engines = self._given
        trt = trt if trt is not None else api.import_tensorrt()
        api.features(trt)  # refuses a TensorRT older than 8.5
        cuda = cuda if cuda is not None else api.import_cuda()
        host = host if host is not None else host_info.host_fingerprint()
        load_engines = load_engines or _real_load_engines()
        self._thread = threading.get_ident()
        try:
            self._open_cuda(cuda, device)
            self._runtime = trt.Runtime(api.make_logger(trt, self._errors, log.warning))
            self._engines = load_engines(trt, self._runtime, bundle, device, options, host, log_errors=self._errors)
            self._prepare(trt, device, options)
        except BaseException:
            self._release()
            raise
        self.artifact = "; ".join(loaded.description for loaded in self._engines)

    def _open_cuda(self, cuda: CudaDriver, device: DeviceConfig) -> None:
        """Initialise CUDA, make the device's primary context current on this thread, open the stream."""
        check = self._check = CudaCalls(cuda)
        index = device.tensorrt.device_index
        check("initialising the driver", cuda.init, error=BackendUnavailableError)
        gpu = check(f"opening CUDA device {index}", cuda.Device, index, error=BackendUnavailableError)
        self._cuda_context = check("retaining the primary context", gpu.retain_primary_context,
                                   error=BackendUnavailableError)
        check("making the context current", self._cuda_context.push, error=BackendUnavailableError)
        self._pushed = True
        if device.tensorrt.zero_copy and not check(
                "reading the device's attributes", gpu.get_attribute, cuda.device_attribute.CAN_MAP_HOST_MEMORY):
            raise ConfigError(f"{device.source or device.name}: tensorrt.zero_copy is on, but CUDA device {index} "
                              "cannot map host memory: set tensorrt.zero_copy: false")
        self._stream = check("creating a stream", cuda.Stream)

    def _prepare(self, trt: api.TrtModule, device: DeviceConfig, options: BackendOptions) -> None:
        """Check the memory budget, then make contexts, buffers at the largest shapes, and bind addresses."""
        batches = [loaded.static_batch for loaded in self._engines]
        static = bool(batches) and all(batch is not None for batch in batches)
        if not batches or (not static and len(batches) != 1):
            raise BundleError(f"expected one dynamic-shape engine or static-shape (DLA) engines, got {batches}")
        tensors = io_specs.agreed_tensors(trt, [loaded.engine for loaded in self._engines], static)
        megabytes = sum(loaded.engine.device_memory_size + loaded.plan_size for loaded in self._engines) / 2**20
        if options.memory_check is not None:
            options.memory_check(megabytes)  # before any context takes the engine's device memory
        self.memory_mb = megabytes
        inputs = [tensor for tensor in tensors if tensor.is_input]
        largest = max(b for b in batches if b is not None) if static else device.batch.max
        self._max_batch_size = batch_limit([t.spec for t in inputs], min(options.max_batch_size, largest))
        dynamic = (device.tensorrt.dynamic_dim.min, device.tensorrt.dynamic_dim.max)
        self._ranges = {t.name: io_specs.input_ranges(t, self._max_batch_size, dynamic) for t in inputs}
        self._declared = {t.name: t.shape for t in inputs}
        self._output_names = [t.name for t in tensors if not t.is_input]
        for loaded in sorted(self._engines, key=lambda e: e.static_batch or 0):
            self._slots.append(self._new_slot(loaded))
        sizes: Dict[str, Shape] = {}
        for slot in self._slots:
            for name, shape in {**slot.inputs, **slot.outputs}.items():
                sizes[name] = tuple(np.maximum(sizes.get(name, shape), shape).tolist())
        assert self._check is not None
        self._buffers = BufferSet(self._check, device.tensorrt.zero_copy)
        for tensor in tensors:
            self._buffers.allocate(tensor.name, np.dtype(tensor.dtype), sizes[tensor.name])
        for slot in self._slots:
            for tensor in tensors:
                if not slot.context.set_tensor_address(tensor.name, self._buffers[tensor.name].address):
                    raise BundleError(f"TensorRT refused the address of tensor '{tensor.name}': {self._said()}")
        self._inputs = tuple(t.spec for t in inputs)
        self._outputs = tuple(t.spec for t in tensors if not t.is_input)

    def _new_slot(self, loaded: LoadedEngine) -> _Slot:
        """A context for ``loaded``, set to the largest input shapes, with the output shapes they give."""
        del self._errors[:]
        context: Optional[tensorrt.IExecutionContext] = loaded.engine.create_execution_context()
        if context is None:
            raise BundleError(f"TensorRT cannot create an execution context for {loaded.description}: {self._said()}")
        slot = _Slot(context, loaded.static_batch)
        if loaded.static_batch is not None:
            slot.inputs = {name: io_specs.dims(loaded.engine.get_tensor_shape(name)) for name in self._ranges}
        else:
            largest = {name: io_specs.max_shape(self._declared[name], ranges) for name, ranges in self._ranges.items()}
            for name, shape in largest.items():
                if not context.set_input_shape(name, shape):
                    raise BundleError(
                        f"the engine's optimization profile does not take input '{name}' at {list(shape)}, the "
                        f"largest shape the device config allows (batch.max, tensorrt.dynamic_dim.max): rebuild "
                        f"the engine for this config ({self._said()})")
            slot.inputs = largest
        slot.outputs = self._output_shapes(slot, BundleError)
        return slot

    def _output_shapes(self, slot: _Slot, error: Type[EdgeRuntimeError]) -> Dict[str, Shape]:
        """Output shapes for the context's current input shapes; a -1 left is a data-dependent shape."""
        shapes = {name: io_specs.dims(slot.context.get_tensor_shape(name)) for name in self._output_names}
        for name, shape in shapes.items():
            if -1 in shape:
                raise error(f"output '{name}' has a data-dependent shape {list(shape)}, which this runtime "
                            "does not serve (its size is known only after the engine ran)")
        return shapes

    def _infer(self, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if threading.get_ident() != self._thread:
            raise InferenceError("the TensorRT backend runs on the thread that loaded it (its CUDA context is there)")
        count = len(next(iter(inputs.values()))) if self._max_batch_size else 0
        slot = self._slot_for(count)
        padded = bool(count) and slot.static_batch is not None and slot.static_batch != count
        shapes = {name: (count if slot.static_batch is None else slot.static_batch, *array.shape[1:])
                  if count else array.shape for name, array in inputs.items()}
        if slot.static_batch is None and any(slot.inputs.get(name) != shape for name, shape in shapes.items()):
            self._reshape(slot, shapes)
        check, stream, buffers = self._check, self._stream, self._buffers
        assert check is not None and stream is not None and buffers is not None
        for name, array in inputs.items():
            buffer = buffers[name]
            view = buffer.view(shapes[name])
            if padded:
                view[:count] = array
                view[count:] = 0
            else:
                np.copyto(view, array)
            buffer.to_device(check, stream, shapes[name])
        del self._errors[:]
        if not slot.context.execute_async_v3(stream.handle):
            raise InferenceError(f"TensorRT failed to run the engine: {self._said()}")
        for name, shape in slot.outputs.items():
            buffers[name].to_host(check, stream, shape)
        check("waiting for the stream", stream.synchronize)
        if padded:
            return {name: buffers[name].view(shape)[:count].copy() for name, shape in slot.outputs.items()}
        return {name: buffers[name].view(shape).copy() for name, shape in slot.outputs.items()}

    def _slot_for(self, count: int) -> _Slot:
        """The context to run ``count`` rows on: the one dynamic engine, or the smallest static batch that fits."""
        if len(self._slots) == 1:
            return self._slots[0]
        for slot in self._slots:  # sorted by static batch
            if slot.static_batch is not None and slot.static_batch >= count:
                return slot
        raise RequestError(f"batch size {count} is larger than every engine's ({self._max_batch_size})")

    def _reshape(self, slot: _Slot, shapes: Mapping[str, Shape]) -> None:
        """Set the input shapes that changed, then read the output shapes (RequestError outside the profile)."""
        for name, shape in shapes.items():
            if slot.inputs.get(name) == shape:
                continue
            ranges = self._ranges[name]
            taken = f"the engine's optimization profile takes {io_specs.describe_ranges(self._declared[name], ranges)}"
            if io_specs.outside(shape, ranges):
                raise RequestError(f"input '{name}' has shape {list(shape)}; {taken}")
            del self._errors[:]
            if not slot.context.set_input_shape(name, shape):
                slot.inputs.clear()  # the context's shapes are unknown now: set them all next time
                raise RequestError(f"input '{name}' has shape {list(shape)}; {taken} ({self._said()})")
            slot.inputs[name] = shape
        slot.outputs = self._output_shapes(slot, InferenceError)
        assert self._buffers is not None
        for name, shape in slot.outputs.items():
            if int(np.prod(shape, dtype=np.int64)) > self._buffers[name].count:
                slot.inputs.clear()
                raise InferenceError(f"output '{name}' would take shape {list(shape)}, larger than its buffer "
                                     f"{list(self._buffers[name].max_shape)}")

    def _close(self) -> None:
        self._release()

    def _release(self) -> None:
        """Free buffers, drop contexts, engines and runtime (in that order), then pop the CUDA context; safe twice."""
        if self._buffers is not None:
            buffers, self._buffers = self._buffers, None
            try:
                buffers.free()
            except EdgeRuntimeError as exc:
                log.warning("TensorRT backend: %s", exc)
        self._slots = []
        self._engines = []
        self._runtime = None
        self._stream = None
        context, self._cuda_context = self._cuda_context, None
        if context is not None and self._check is not None:
            steps = [("popping the CUDA context", context.pop)] if self._pushed else []
            for what, step in [*steps, ("releasing the CUDA context", context.detach)]:
                try:
                    self._check(what, step)
                except EdgeRuntimeError as exc:
                    log.warning("TensorRT backend: %s", exc)
        self._pushed = False

    def _said(self) -> str:
        """TensorRT's error messages since they were last cleared, for a one-line error."""
        return "; ".join(self._errors) or "TensorRT gave no reason"
