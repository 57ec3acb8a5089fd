"""The running side of the fake ``tensorrt`` module: Runtime, ICudaEngine, IExecutionContext.

Only API that TensorRT 8.5 and 10.x both have. An engine is a :class:`FakePlan`; a context runs
the plan's ONNX with ONNX Runtime on the bytes found at its tensor addresses in the fake pycuda
memory (``module.cuda_memory``, a ``fake_pycuda.FakeCuda``), queued on the stream it is given,
so a missing copy, a wrong address or a missing synchronize gives wrong numbers, as on a GPU.
Output shapes for given input shapes come from running the ONNX on zeros (cached). Names in
``module.data_dependent_outputs`` keep their -1 dimensions (shapes known only after a run).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from trt_fakes.fake_tensorrt import FakePlan, FakeTensor

_NUMPY = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "BOOL": "bool",
          "UINT8": "uint8", "INT64": "int64"}


def install(module: Any, major: int) -> None:
    """Set Runtime, ICudaEngine and IExecutionContext on the fake ``tensorrt`` ``module``."""

    def record(name: str, *args: Any) -> None:
        module.calls.append((name, args))

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.shapes: Dict[str, Tuple[int, ...]] = {}
            self.addresses: Dict[str, int] = {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            shape = tuple(int(d) for d in shape)
            record("context.set_input_shape", name, shape)
            tensor = self.engine.tensor(name)
            if tensor is None or tensor.mode != "INPUT" or len(shape) != len(tensor.shape):
                self.engine.error(f"setInputShape: {name} is not an input of rank {len(shape)}")
                return False
            low, _, high = self.engine.plan.profile.get(name, [tensor.shape, tensor.shape, tensor.shape])
            if any(not lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
                self.engine.error(f"IExecutionContext::setInputShape: {name} {shape} is outside the profile")
                return False
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            record("context.get_tensor_shape", name)
            tensor = self.engine.tensor(name)
            if tensor is None:
                return ()
            if tensor.mode == "INPUT":
                return self.shapes.get(name, tuple(tensor.shape))
            if name in getattr(module, "data_dependent_outputs", ()) or not self._inputs_set():
                return tuple(tensor.shape)
            return self.engine.output_shapes(self._input_shapes())[name]

        def set_tensor_address(self, name: str, address: int) -> bool:
            record("context.set_tensor_address", name, int(address))
            if self.engine.tensor(name) is None:
                self.engine.error(f"setTensorAddress: no tensor named {name}")
                return False
            self.addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            record("context.execute_async_v3", stream_handle)
            memory = module.cuda_memory
            if memory.current_context() is None:
                self.engine.error("enqueueV3: no CUDA context is current on this thread")
                return False
            missing = [t.name for t in self.engine.plan.tensors if t.name not in self.addresses]
            if missing or not self._inputs_set():
                self.engine.error(f"enqueueV3: tensors without address or shape: {missing or 'input shapes'}")
                return False
            if getattr(module, "fail_execute", False):
                self.engine.error("enqueueV3: an injected failure")
                return False
            input_shapes = self._input_shapes()
            output_shapes = self.engine.output_shapes(input_shapes)
            memory.enqueue(stream_handle, lambda: self._run(memory, input_shapes, output_shapes))
            return True

        def _run(self, memory: Any, input_shapes: Dict[str, Tuple[int, ...]],
                 output_shapes: Dict[str, Tuple[int, ...]]) -> None:
            feeds = {name: self._at(memory, name, shape).copy() for name, shape in input_shapes.items()}
            for name, value in self.engine.run(feeds).items():
                np.copyto(self._at(memory, name, output_shapes[name]), value.reshape(output_shapes[name]))

        def _at(self, memory: Any, name: str, shape: Tuple[int, ...]) -> np.ndarray:
            dtype = np.dtype(self.engine.numpy_dtype(name))
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            return memory.resolve(self.addresses[name], nbytes).view(dtype).reshape(shape)

        def _inputs_set(self) -> bool:
            return all(t.name in self.shapes or -1 not in t.shape for t in self.engine.inputs())

        def _input_shapes(self) -> Dict[str, Tuple[int, ...]]:
            return {t.name: self.shapes.get(t.name, tuple(t.shape)) for t in self.engine.inputs()}

    class ICudaEngine:
        def __init__(self, plan: FakePlan, logger: Any) -> None:
            self.plan = plan
            self.logger = logger
            self._session: Any = None
            self._shapes: Dict[Tuple[Tuple[int, ...], ...], Dict[str, Tuple[int, ...]]] = {}

        @property
        def num_io_tensors(self) -> int:
            return len(self.plan.tensors)

        @property
        def device_memory_size(self) -> int:
            return self.plan.device_memory_size

        def get_tensor_name(self, index: int) -> str:
            return self.plan.tensors[index].name

        def get_tensor_mode(self, name: str) -> Any:
            tensor = self.tensor(name)
            return module.TensorIOMode[tensor.mode] if tensor else module.TensorIOMode.NONE

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            tensor = self.tensor(name)
            return tuple(tensor.shape) if tensor else ()

        def get_tensor_dtype(self, name: str) -> Any:
            tensor = self.tensor(name)
            if tensor is None:
                raise KeyError(name)
            return module.DataType[tensor.dtype]

        def create_execution_context(self) -> Optional[IExecutionContext]:
            record("engine.create_execution_context")
            if getattr(module, "fail_context", False):
                self.error("createExecutionContext: out of device memory (injected)")
                return None
            return IExecutionContext(self)

        # -- for the context ------------------------------------------------------------
        def tensor(self, name: str) -> Optional[FakeTensor]:
            return next((t for t in self.plan.tensors if t.name == name), None)

        def inputs(self) -> List[FakeTensor]:
            return [t for t in self.plan.tensors if t.mode == "INPUT"]

        def numpy_dtype(self, name: str) -> str:
            tensor = self.tensor(name)
            assert tensor is not None
            return _NUMPY[tensor.dtype]

        def error(self, message: str) -> None:
            self.logger.log(module.ILogger.Severity.ERROR, message)

        def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            if self._session is None:
                import onnxruntime

                self._session = onnxruntime.InferenceSession(self.plan.onnx, providers=["CPUExecutionProvider"])
            names = [o.name for o in self._session.get_outputs()]
            return dict(zip(names, self._session.run(None, feeds)))

        def output_shapes(self, input_shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, Tuple[int, ...]]:
            key = tuple(input_shapes[t.name] for t in self.inputs())
            if key not in self._shapes:
                zeros = {name: np.zeros(shape, self.numpy_dtype(name)) for name, shape in input_shapes.items()}
                self._shapes[key] = {name: tuple(value.shape) for name, value in self.run(zeros).items()}
            return self._shapes[key]

    class Runtime:
        def __init__(self, logger: Any) -> None:
            record("Runtime", logger)
            self.logger = logger
            self.DLA_core = -1

        def deserialize_cuda_engine(self, data: Any) -> Optional[ICudaEngine]:
            record("runtime.deserialize_cuda_engine", len(bytes(data)))
            plan = FakePlan.from_bytes(data)
            if plan is None:
                self.logger.log(module.ILogger.Severity.ERROR,
                                "1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: Serialization "
                                "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
                return None
            if plan.trt_version.split(".")[:2] != str(module.__version__).split(".")[:2]:
                self.logger.log(module.ILogger.Severity.ERROR,
                                f"6: The engine plan file is not compatible with this version of TensorRT, "
                                f"expecting library version {module.__version__} got {plan.trt_version}")
                return None
            if major < 10 and any(t.dtype == "INT64" for t in plan.tensors):
                self.logger.log(module.ILogger.Severity.ERROR, "INT64 I/O needs TensorRT 10")
                return None
            return ICudaEngine(plan, self.logger)

    module.Runtime = Runtime
    module.ICudaEngine = ICudaEngine
    module.IExecutionContext = IExecutionContext


_ONNX_TYPES = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 9: "BOOL", 2: "UINT8", 7: "INT64"}


def plan_from_onnx(onnx_bytes: bytes, trt_version: str = "8.5.2.2",
                   profile: Optional[Dict[str, List[List[int]]]] = None, device_memory_size: int = 1 << 20,
                   static_shapes: Optional[Dict[str, List[int]]] = None) -> FakePlan:
    """A FakePlan for an ONNX model: its I/O (symbolic dims → -1, or ``static_shapes``), ``profile`` per input.

    ``profile`` None: batch axis 1..32 and other dynamic dims 1..512, as agx-xavier.yaml builds them.
    """
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    tensors = []
    for mode, values in (("INPUT", graph.input), ("OUTPUT", graph.output)):
        for value in values:
            kind = value.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
            shape = list((static_shapes or {}).get(value.name, shape))
            tensors.append(FakeTensor(value.name, mode, _ONNX_TYPES[kind.elem_type], shape))
    if profile is None:  # what the builder makes from agx-xavier.yaml: batch 1..32, other dynamic dims 1..512
        profile = {t.name: [[1 if d < 0 else d for d in t.shape], [8 if d < 0 else d for d in t.shape],
                            [(32 if axis == 0 else 512) if d < 0 else d for axis, d in enumerate(t.shape)]]
                   for t in tensors if t.mode == "INPUT" and -1 in t.shape}
    return FakePlan(trt_version=trt_version, tensors=tensors, onnx=onnx_bytes, profile=profile,
                    device_memory_size=device_memory_size)
