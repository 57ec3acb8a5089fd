"""The builder half of the fake ``tensorrt`` module: Builder, networks parsed from real ONNX, configs, a fake build.

``install(module, major)`` puts the classes on ``module`` (each bound to it, so calls land in
``module.calls`` as ``(name, args)``). The ONNX parser reads the bytes with the ``onnx`` package;
``build_serialized_network`` checks what TensorRT checks (a profile for every dynamic input, DLA's
limits, GPU fallback for layers DLA cannot run), then returns a :class:`FakePlan` as host memory, or
None with an ERROR logged. What a test may tune, as attributes of ``module`` (``make_tensorrt``
overrides): ``dla_unsupported_ops`` (ONNX op types DLA "cannot run"), ``build_error`` (a message:
the build fails with it), ``monitor_phases`` (what a 10.x build reports to an IProgressMonitor).
Names TensorRT 10 removed (``max_workspace_size``, ``build_engine``) do not exist here.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from trt_fakes.fake_tensorrt import FakePlan, FakeTensor

DEFAULT_DLA_UNSUPPORTED = frozenset({"Softmax", "TopK", "NonMaxSuppression"})
# (phase, parent, steps): what a 10.x build reports to its progress monitor
DEFAULT_PHASES = (("Building engine", None, 2), ("Computing costs", "Building engine", 3),
                  ("Tactic timing Conv_0", "Computing costs", 4), ("Serializing", "Building engine", 1))
TIMING_MAGIC = b"FAKETIMING\n"

# ONNX TensorProto element types → TensorRT DataType names (INT64 is cast to INT32 by 8.5's parser)
_ONNX_TYPES = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8"}


class _Bound:
    """Base of the fake classes: ``_trt`` is the module they were installed on."""

    _trt: Any = None
    _major: int = 8

    @classmethod
    def _record(cls, name: str, *args: Any) -> None:
        cls._trt.calls.append((name, args))


class FakeHostMemory:
    """What TensorRT returns as serialized data: ``bytes(x)`` works, nothing bytes-like beyond that."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self.nbytes = len(self._data)

    def __bytes__(self) -> bytes:
        return self._data


class ITensor:
    def __init__(self, name: str, dtype: Any, shape: Sequence[int]) -> None:
        self.name = name
        self.dtype = dtype
        self.shape = tuple(shape)


class ILayer:
    def __init__(self, name: str, op_type: str) -> None:
        self.name = name
        self.type = op_type


class ParserError:
    def __init__(self, text: str) -> None:
        self._text = text

    def desc(self) -> str:
        return self._text


class INetworkDefinition(_Bound):
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.inputs: List[ITensor] = []
        self.outputs: List[ITensor] = []
        self.layers: List[ILayer] = []
        self.onnx = b""

    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))
    num_layers = property(lambda self: len(self.layers))

    def get_input(self, index: int) -> ITensor:
        return self.inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self.outputs[index]

    def get_layer(self, index: int) -> ILayer:
        return self.layers[index]

    @property
    def explicit_batch(self) -> bool:
        explicit = 1 << int(self._trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        return self._major >= 10 or bool(self.flags & explicit)


class OnnxParser(_Bound):
    def __init__(self, network: INetworkDefinition, logger: Any) -> None:
        self._record("OnnxParser", network.flags)
        self.network = network
        self.logger = logger
        self.errors: List[ParserError] = []

    num_errors = property(lambda self: len(self.errors))

    def get_error(self, index: int) -> ParserError:
        return self.errors[index]

    def parse(self, model: bytes, path: Optional[str] = None) -> bool:
        self._record("OnnxParser.parse", len(model))
        import onnx
        from google.protobuf.message import DecodeError

        if not self.network.explicit_batch:
            self.errors.append(ParserError("ModelImporter: the ONNX parser needs an explicit batch network"))
            return False
        try:
            proto = onnx.load_from_string(bytes(model))
        except (DecodeError, ValueError) as exc:
            self.errors.append(ParserError(f"ModelImporter.cpp:730: Failed to parse ONNX model from file\n{exc}"))
            return False
        if not proto.graph.node:
            self.errors.append(ParserError("ModelImporter: the model has no nodes"))
            return False
        try:
            self._fill(proto.graph)
        except KeyError as exc:
            self.errors.append(ParserError(f"unsupported ONNX data type {exc}"))
            return False
        self.network.onnx = bytes(model)
        return True

    def _fill(self, graph: Any) -> None:
        weights = {init.name for init in graph.initializer}
        network = self.network
        network.inputs = [self._tensor(info) for info in graph.input if info.name not in weights]
        network.outputs = [self._tensor(info) for info in graph.output]
        network.layers = [ILayer(node.name or f"{node.op_type}_{i}", node.op_type) for i, node in enumerate(graph.node)]

    def _tensor(self, info: Any) -> ITensor:
        kind = info.type.tensor_type
        name = _ONNX_TYPES[kind.elem_type]
        if name == "INT64" and self._major < 10:
            name = "INT32"  # 8.5 casts INT64 down (with a warning)
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
        return ITensor(info.name, self._trt.DataType[name], shape)


class IOptimizationProfile(_Bound):
    def __init__(self) -> None:
        self.shapes: Dict[str, List[List[int]]] = {}

    def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
        self._record("IOptimizationProfile.set_shape", input, tuple(min), tuple(opt), tuple(max))
        self.shapes[input] = [list(min), list(opt), list(max)]


class ITimingCache(_Bound):
    def __init__(self, data: bytes) -> None:
        self.entries: List[str] = []
        if data.startswith(TIMING_MAGIC):
            self.entries = data[len(TIMING_MAGIC):].decode().split("\n") if len(data) > len(TIMING_MAGIC) else []

    def serialize(self) -> FakeHostMemory:
        self._record("ITimingCache.serialize")
        return FakeHostMemory(TIMING_MAGIC + "\n".join(self.entries).encode())


class IInt8EntropyCalibrator2:
    """Subclassable as TensorRT's: subclasses call ``__init__`` and override the get/read/write methods."""

    def __init__(self) -> None:
        pass

    def get_batch_size(self) -> int:
        return 1

    def get_batch(self, names: List[str]) -> Optional[List[int]]:
        return None

    def read_calibration_cache(self) -> Optional[bytes]:
        return None

    def write_calibration_cache(self, cache: bytes) -> None:
        pass


class IProgressMonitor:
    """10.x only: TensorRT calls phase_start / step_complete / phase_finish during a build."""

    def __init__(self) -> None:
        pass


class IBuilderConfig(_Bound):
    _ATTRIBUTES = frozenset({"default_device_type", "DLA_core", "int8_calibrator", "flags", "pools", "profiles",
                             "timing_cache"})

    def __init__(self) -> None:
        object.__setattr__(self, "flags", set())
        object.__setattr__(self, "pools", {})
        object.__setattr__(self, "profiles", [])
        object.__setattr__(self, "timing_cache", None)
        object.__setattr__(self, "default_device_type", self._trt.DeviceType.GPU)
        object.__setattr__(self, "DLA_core", -1)
        object.__setattr__(self, "int8_calibrator", None)
        if self._major >= 10:
            object.__setattr__(self, "progress_monitor", None)

    def __setattr__(self, name: str, value: Any) -> None:
        allowed = self._ATTRIBUTES | ({"progress_monitor"} if self._major >= 10 else set())
        if name not in allowed:  # a pybind object takes no new attributes
            raise AttributeError(f"'tensorrt.IBuilderConfig' object has no attribute '{name}'")
        self._record(f"IBuilderConfig.{name}", value)
        object.__setattr__(self, name, value)

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        self._record("IBuilderConfig.set_memory_pool_limit", pool, pool_size)
        self.pools[pool] = pool_size

    def set_flag(self, flag: Any) -> None:
        self._record("IBuilderConfig.set_flag", flag)
        self.flags.add(self._trt.BuilderFlag(flag))

    def clear_flag(self, flag: Any) -> None:
        self._record("IBuilderConfig.clear_flag", flag)
        self.flags.discard(self._trt.BuilderFlag(flag))

    def get_flag(self, flag: Any) -> bool:
        return flag in self.flags

    def can_run_on_DLA(self, layer: ILayer) -> bool:
        self._record("IBuilderConfig.can_run_on_DLA", layer.name)
        return layer.type not in getattr(self._trt, "dla_unsupported_ops", DEFAULT_DLA_UNSUPPORTED)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self._record("IBuilderConfig.add_optimization_profile", dict(profile.shapes))
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        self._record("IBuilderConfig.create_timing_cache", bytes(serialized_timing_cache))
        return self._trt.ITimingCache(bytes(serialized_timing_cache))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self._record("IBuilderConfig.set_timing_cache", ignore_mismatch)
        object.__setattr__(self, "timing_cache", cache)
        return True

    def get_timing_cache(self) -> Optional[ITimingCache]:
        self._record("IBuilderConfig.get_timing_cache")
        return self.timing_cache


class Builder(_Bound):
    def __init__(self, logger: Any) -> None:
        self._record("Builder")
        self.logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        self._record("Builder.create_network", flags)
        return self._trt.INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        self._record("Builder.create_builder_config")
        return self._trt.IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        self._record("Builder.create_optimization_profile")
        return self._trt.IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> Optional[FakeHostMemory]:
        self._record("Builder.build_serialized_network")
        try:
            plan = _build(self._trt, self._major, network, config)
        except _BuildFailure as failure:
            self.logger.log(self._trt.ILogger.Severity.ERROR, str(failure))
            return None
        if config.timing_cache is not None:
            config.timing_cache.entries.append(f"{len(network.onnx)}:{sorted(f.name for f in config.flags)}")
        return FakeHostMemory(plan.to_bytes())


class _BuildFailure(Exception):
    pass


def _build(trt: Any, major: int, network: INetworkDefinition, config: IBuilderConfig) -> FakePlan:
    """What the real build checks, then the plan; _BuildFailure with TensorRT-like messages."""
    if getattr(trt, "build_error", None):
        raise _BuildFailure(trt.build_error)
    if not network.inputs:
        raise _BuildFailure("Network must have at least one input")
    shapes = _profile_shapes(network, config)
    on_dla = config.default_device_type == trt.DeviceType.DLA
    if on_dla:
        _check_dla(trt, network, config, shapes)
    monitor = getattr(config, "progress_monitor", None)  # 10.x only
    if monitor is not None:
        _report_phases(trt, monitor)
    read_cache = _calibrate(trt, network, config)
    tensors = [FakeTensor(t.name, "INPUT", t.dtype.name, list(t.shape)) for t in network.inputs]
    tensors += [FakeTensor(t.name, "OUTPUT", t.dtype.name, list(t.shape)) for t in network.outputs]
    return FakePlan(trt_version=trt.__version__, tensors=tensors, onnx=network.onnx, profile=shapes,
                    flags=sorted(flag.name for flag in config.flags),
                    dla_core=config.DLA_core if on_dla else None, calibration_cache=read_cache)


def _profile_shapes(network: INetworkDefinition, config: IBuilderConfig) -> Dict[str, List[List[int]]]:
    shapes: Dict[str, List[List[int]]] = config.profiles[0].shapes if config.profiles else {}
    for tensor in network.inputs:
        dynamic = any(dim < 0 for dim in tensor.shape)
        if tensor.name not in shapes:
            if dynamic:
                raise _BuildFailure(f"Network has dynamic or shape inputs, but no optimization profile "
                                    f"has been defined for '{tensor.name}'")
            continue
        low, opt, high = shapes[tensor.name]
        if not len(low) == len(opt) == len(high) == len(tensor.shape):
            raise _BuildFailure(f"{tensor.name}: profile rank differs from the network's {tensor.shape}")
        for axis, dim in enumerate(tensor.shape):
            if not 0 < low[axis] <= opt[axis] <= high[axis] or (dim >= 0 and not low[axis] == high[axis] == dim):
                raise _BuildFailure(f"{tensor.name}: invalid profile dimension {axis}: "
                                    f"{low[axis]}/{opt[axis]}/{high[axis]} for {dim}")
    return {name: [list(s) for s in value] for name, value in shapes.items()}


def _check_dla(trt: Any, network: INetworkDefinition, config: IBuilderConfig,
               shapes: Dict[str, List[List[int]]]) -> None:
    if config.DLA_core < 0:
        raise _BuildFailure("DLA core not set")
    if not config.flags & {trt.BuilderFlag.FP16, trt.BuilderFlag.INT8}:
        raise _BuildFailure("DLA requires FP16 or INT8 precision")
    for name, (low, _opt, high) in shapes.items():
        if low != high:
            raise _BuildFailure(f"DLA does not support dynamic shapes: '{name}' {low} to {high}")
    unsupported = getattr(trt, "dla_unsupported_ops", DEFAULT_DLA_UNSUPPORTED)
    stuck = [layer.name for layer in network.layers if layer.type in unsupported]
    if stuck and trt.BuilderFlag.GPU_FALLBACK not in config.flags:
        raise _BuildFailure(f"{stuck[0]} cannot run on DLA and GPU fallback is not enabled")


def _calibrate(trt: Any, network: INetworkDefinition, config: IBuilderConfig) -> bool:
    """Whether a calibration cache was read: the calibrator is used only for INT8 builds."""
    calibrator = config.int8_calibrator
    if calibrator is None or trt.BuilderFlag.INT8 not in config.flags:
        return False
    if calibrator.read_calibration_cache():
        return True
    if not calibrator.get_batch([t.name for t in network.inputs]):
        raise _BuildFailure("Calibration failure: no calibration cache and no batches")
    return False


def _report_phases(trt: Any, monitor: Any) -> None:
    """Nested as TensorRT does: a phase finishes (its steps complete) before its parent's next child starts."""
    open_phases: List[Tuple[str, int]] = []

    def finish_until(parent: Optional[str]) -> None:
        while open_phases and open_phases[-1][0] != parent:
            phase, steps = open_phases.pop()
            cancelled = any(monitor.step_complete(phase, step) is False for step in range(steps))
            monitor.phase_finish(phase)
            if cancelled:
                raise _BuildFailure("the build was cancelled by the progress monitor")

    for phase, parent, steps in getattr(trt, "monitor_phases", DEFAULT_PHASES):
        finish_until(parent)
        monitor.phase_start(phase, parent, steps)
        open_phases.append((phase, steps))
    finish_until(None)


def install(module: Any, major: int) -> None:
    """Put the builder classes on the fake ``module`` (TensorRT ``major``), bound to its call log."""
    bound = {"_trt": module, "_major": major}
    for cls in (Builder, INetworkDefinition, OnnxParser, IBuilderConfig, IOptimizationProfile, ITimingCache):
        setattr(module, cls.__name__, type(cls.__name__, (cls,), dict(bound)))
    module.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    if major >= 10:
        module.IProgressMonitor = IProgressMonitor
