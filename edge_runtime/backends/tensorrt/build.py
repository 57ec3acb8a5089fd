"""The TensorRT engine builder: a bundle's ONNX to a serialized plan, on the device or a matching export host.

An engine runs only on the GPU and TensorRT version it was built with, so Jetson engines are built
on the device (TensorRT 8.5 on JetPack 5, Python 3.8) or by ``export/steps/trt_build.py`` on a host
whose fingerprint matches (TensorRT 10.x possible). Both call :func:`build_engine`, which keeps to
the API the two versions share (docs/jetson.md); what differs is decided in :mod:`.api`.

Precision: GPU INT8 is explicit quantization from the target's symmetric Q/DQ ONNX (no calibrator);
DLA INT8 is implicit quantization from the bundle's TensorRT calibration cache (:mod:`.calibrator`),
with FP16 allowed too so layers DLA cannot run in INT8 stay on the DLA in FP16 rather than fall back.
DLA builds are static (one engine per batch size, profile min = opt = max), FP16/INT8 only, with GPU
fallback for the layers DLA cannot run; how many those are is reported before the build.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, cast

from edge_runtime.backends.tensorrt import api
from edge_runtime.backends.tensorrt.calibrator import make_cache_calibrator
from edge_runtime.backends.tensorrt.progress import Clock, ElapsedTicker, Report, make_progress_monitor
from edge_runtime.config.device import BatchProfile, DimRange
from edge_runtime.errors import BundleError

if TYPE_CHECKING:
    import tensorrt

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
TICK_S = 15.0  # how often TensorRT 8.5 builds say they are still building


@dataclass(frozen=True)
class BuildRequest:
    """What to build: the model and the builder settings taken from the device config."""

    onnx: bytes  # the target's symmetric QDQ ONNX for GPU INT8; the FP32 ONNX otherwise (FP16, FP32, DLA)
    precision: str  # "fp32" | "fp16" | "int8"
    batch: BatchProfile  # min/opt/max of the batch axis (the first, when dynamic); DLA: min = opt = max
    dynamic_dim: DimRange  # min/opt/max for every other dynamic dimension
    workspace_mb: int
    dla_core: Optional[int] = None  # build for this DLA core with GPU fallback
    calibration_cache: Optional[bytes] = None  # DLA INT8: TensorRT calibration cache (implicit quantization)
    timing_cache: Optional[bytes] = None  # a previous build's timing cache
    label: str = "engine"  # for progress lines, e.g. "digits v1 agx-xavier fp16"


@dataclass(frozen=True)
class BuildResult:
    """A built engine, the timing cache to keep for the next build, and what DLA runs of it."""

    plan: bytes
    timing_cache: Optional[bytes]
    seconds: float
    dla_layers: Optional[Tuple[int, int]]  # (layers DLA runs, all layers) for a DLA build


def _ignore(line: str) -> None:
    pass


def build_engine(trt: api.TrtModule, request: BuildRequest, progress: Report = _ignore,
                 clock: Clock = time.monotonic, interval_s: float = TICK_S) -> BuildResult:
    """Build ``request`` into a serialized engine; BundleError (one line) when the model cannot be built.

    ``progress`` gets one-line messages, also from TensorRT's and a timer's threads.
    """
    _check_request(request)
    feats = api.features(trt)
    errors: List[str] = []
    logger = api.make_logger(trt, errors, lambda msg: log.warning("TensorRT: %s", msg))
    builder: tensorrt.Builder = trt.Builder(logger)
    network: tensorrt.INetworkDefinition = builder.create_network(api.network_flags(trt, feats))
    parser: tensorrt.OnnxParser = trt.OnnxParser(network, logger)
    _parse(parser, request)
    config: tensorrt.IBuilderConfig = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_mb << 20)
    calibrator = _set_precision(trt, config, request)
    dla_layers = _set_dla(trt, config, network, request, progress) if request.dla_core is not None else None
    _add_profile(builder, config, network, request)
    cache: tensorrt.ITimingCache = config.create_timing_cache(request.timing_cache or b"")
    config.set_timing_cache(cache, False)

    start = clock()
    progress(f"building {request.label} ({_describe(request)}) with TensorRT {feats.label}…")
    if feats.has_progress_monitor:
        monitor = make_progress_monitor(trt, progress, request.label, clock, start)
        config.progress_monitor = monitor  # TensorRT holds no reference: ``monitor`` lives until the build ends
        plan = builder.build_serialized_network(network, config)
    else:
        with ElapsedTicker(progress, request.label, clock, start, interval_s):
            plan = builder.build_serialized_network(network, config)
    seconds = clock() - start
    del calibrator  # kept alive through the build for the same reason as the monitor
    if plan is None:
        raise BundleError(f"TensorRT could not build {request.label}: {_one_line(errors) or 'no reason given'}")
    progress(f"built {request.label} in {seconds:.0f} s")
    timing: tensorrt.ITimingCache = config.get_timing_cache()
    timing_bytes = bytes(timing.serialize()) if timing is not None else None
    return BuildResult(plan=bytes(plan), timing_cache=timing_bytes, seconds=seconds, dla_layers=dla_layers)


def _check_request(request: BuildRequest) -> None:
    """Refuse what no TensorRT can build before any TensorRT work starts."""
    if request.precision not in PRECISIONS:
        raise BundleError(f"{request.label}: unknown precision '{request.precision}' (fp32, fp16 or int8)")
    if request.dla_core is None:
        return
    if request.precision == "fp32":
        raise BundleError(f"{request.label}: DLA runs FP16/INT8 only, not FP32")
    batch = request.batch
    if not batch.min == batch.opt == batch.max:
        raise BundleError(f"{request.label}: DLA: static shapes only, one engine per batch size "
                          f"(got batch {batch.min}/{batch.opt}/{batch.max})")
    if request.precision == "int8" and not request.calibration_cache:
        raise BundleError(f"{request.label}: DLA INT8 needs a TensorRT calibration cache: the export writes "
                          "calib/<target>.cache for DLA INT8 targets (re-export the bundle for this device)")


def _parse(parser: tensorrt.OnnxParser, request: BuildRequest) -> None:
    if parser.parse(request.onnx):
        return
    problems = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
    raise BundleError(f"TensorRT cannot parse the ONNX of {request.label}: {_one_line(problems) or 'no reason given'}")


def _set_precision(trt: api.TrtModule, config: tensorrt.IBuilderConfig,
                   request: BuildRequest) -> Optional[tensorrt.IInt8EntropyCalibrator2]:
    """Set the precision flags; the DLA INT8 calibrator, which must outlive the build, or None."""
    if request.precision == "fp16" or (request.precision == "int8" and request.dla_core is not None):
        config.set_flag(trt.BuilderFlag.FP16)
    if request.precision != "int8":
        return None
    config.set_flag(trt.BuilderFlag.INT8)
    if request.dla_core is None:
        return None  # explicit quantization: the Q/DQ nodes carry the scales
    calibrator = make_cache_calibrator(trt, request.calibration_cache or b"")
    config.int8_calibrator = calibrator
    return calibrator


def _set_dla(trt: api.TrtModule, config: tensorrt.IBuilderConfig, network: tensorrt.INetworkDefinition,
             request: BuildRequest, progress: Report) -> Tuple[int, int]:
    """Put the build on the DLA core with GPU fallback; (layers DLA runs, all layers)."""
    for index in range(network.num_inputs):
        tensor: tensorrt.ITensor = network.get_input(index)
        shape = _dims(tensor)
        dynamic = [axis for axis, dim in enumerate(shape) if dim < 0 and axis > 0]
        if dynamic:
            raise BundleError(f"{request.label}: DLA: static shapes only, and input '{tensor.name}' has dynamic "
                              f"dimension(s) {dynamic} of {shape}: serve this model on the GPU")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = cast(int, request.dla_core)
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    total = network.num_layers
    on_dla = sum(1 for index in range(total) if config.can_run_on_DLA(network.get_layer(index)))
    progress(f"{request.label}: DLA runs {on_dla} of {total} layers; {total - on_dla} fall back to the GPU")
    return on_dla, total


def _add_profile(builder: tensorrt.Builder, config: tensorrt.IBuilderConfig, network: tensorrt.INetworkDefinition,
                 request: BuildRequest) -> None:
    """One optimization profile: the batch axis from ``request.batch``, other dynamic dims from ``dynamic_dim``."""
    profile: tensorrt.IOptimizationProfile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor: tensorrt.ITensor = network.get_input(index)
        shape = _dims(tensor)
        bounds = [_bounds(axis, dim, request) for axis, dim in enumerate(shape)]
        low, opt, high = ([bound[k] for bound in bounds] for k in range(3))
        profile.set_shape(tensor.name, _as_dims(low), _as_dims(opt), _as_dims(high))
    config.add_optimization_profile(profile)


def _bounds(axis: int, dim: int, request: BuildRequest) -> Tuple[int, int, int]:
    if dim >= 0:
        return dim, dim, dim
    source = request.batch if axis == 0 else request.dynamic_dim
    return source.min, source.opt, source.max


def _dims(tensor: tensorrt.ITensor) -> List[int]:
    return [int(tensor.shape[axis]) for axis in range(len(tensor.shape))]


def _as_dims(shape: Sequence[int]) -> tensorrt.Dims:
    # TensorRT (8.5 and 10.x) converts any Python sequence of ints to Dims where one is expected
    return cast("tensorrt.Dims", tuple(shape))


def _describe(request: BuildRequest) -> str:
    batch = request.batch
    where = f", DLA core {request.dla_core}" if request.dla_core is not None else ""
    sizes = f"batch {batch.min}" if batch.min == batch.max else f"batch {batch.min}-{batch.max}"
    return f"{request.precision}, {sizes}{where}"


def _one_line(messages: Sequence[str]) -> str:
    return "; ".join(" ".join(message.split()) for message in messages if message.strip())


__all__ = ["PRECISIONS", "BuildRequest", "BuildResult", "build_engine"]
