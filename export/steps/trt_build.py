"""TensorRT engines for a bundle's TensorRT targets: built here only when this host could run them.

An engine runs only on the GPU and TensorRT release it was built with, and a Xavier's Python is 3.8
while the export needs 3.10+, so engines for Jetsons are normally built on the device at first load
(``tensorrt.build_on_device``, docs/jetson.md). The export builds them itself only when TensorRT and
pycuda import here and this host's fingerprint matches the target's (e.g. exporting on an Orin with
JetPack 6), with the device's own builder (:func:`edge_runtime.backends.tensorrt.build.build_engine`).
Otherwise it stops in one line before any heavy work, unless ``--skip-engine`` says to bundle only
what the device needs to build: the ONNX and, for DLA INT8, the calibration cache.

Artifacts (kind ``engine``, ``target`` the config's name, ``precision`` the engine's):

- ``engines/<target>.plan``: the GPU engine, dynamic batch from the config's ``batch`` profile;
  built from the target's QDQ ONNX for INT8 (explicit quantization), the FP32 ONNX otherwise.
- ``engines/<target>.b<N>.plan``: DLA targets (``tensorrt.dla``), one static engine per batch size N
  of ``tensorrt.dla.batch_sizes``, from the FP32 ONNX; INT8 reads ``calib/<target>.cache``
  (:mod:`export.steps.trt_calibration`), which is written whether or not an engine is built here.

Where DLA cannot help a model (:func:`dla_limits`: FP32, or dynamic non-batch dimensions) the report
says so and the target gets a GPU engine instead, as the device's loader does. The manifest's target
records the fingerprint of the host that built the engine (its TensorRT version, compute capability,
L4T/JetPack where known, DLA core); without an engine, the device config's declared values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from edge_runtime.bundle.fingerprint import BuildFingerprint, EngineFingerprint, HostFingerprint, match
from edge_runtime.bundle.manifest import FORMAT_VERSION, TargetInfo, TensorSpec
from edge_runtime.bundle.writer import ArtifactSpec
from edge_runtime.config import BatchProfile, DeviceConfig
from edge_runtime.errors import BackendUnavailableError, BundleError
from export.errors import ExportError, StepUnavailableError
from export.samples import SampleSet
from export.steps import onnx_export, trt_calibration

Say = Callable[[str], None]
ON_DEVICE = ("pass --skip-engine to bundle the ONNX (and a DLA INT8 target's calibration cache) without an "
             "engine: the device then builds it at first load (tensorrt.build_on_device, docs/jetson.md)")


@dataclass(frozen=True)
class EngineSpec:
    """One engine to build: its bundle path, batch profile and DLA core (None: the GPU)."""

    path: str
    batch: BatchProfile
    dla_core: Optional[int] = None


@dataclass(frozen=True)
class TrtJob:
    """What one TensorRT target's engines and calibration cache are made from."""

    config: DeviceConfig
    precision: str  # the target's shipped precision
    staging: Path
    fp32_file: str  # the portable FP32 ONNX, relative to ``staging``
    model_file: str  # the target's own ONNX (its QDQ model for INT8), relative to ``staging``
    calibration: Optional[SampleSet]  # the INT8 calibration samples (None without INT8)
    skip_engine: bool
    say: Say
    progress: bool = False


def dla_limits(inputs: Sequence[TensorSpec], precision: str) -> List[str]:
    """Why a DLA engine cannot help a model with ``inputs`` at ``precision``; empty when it can."""
    limits = []
    if precision == "fp32":
        limits.append("the target's precision is FP32 and DLA runs FP16/INT8 only")
    for spec in inputs:
        axes = [axis for axis, dim in enumerate(spec.shape) if axis > 0 and dim == -1]
        if axes:
            limits.append(f"input '{spec.name}' has dynamic dimension(s) {axes} beyond the batch axis "
                          "(e.g. a sequence length) and DLA needs static shapes")
    return limits


def engine_specs(config: DeviceConfig, on_dla: bool) -> List[EngineSpec]:
    """The engines of a target: one for the GPU, or one static engine per DLA batch size."""
    dla = config.tensorrt.dla
    if on_dla and dla is not None:
        return [EngineSpec(f"engines/{config.name}.b{size}.plan", BatchProfile(size, size, size), dla.core)
                for size in dla.batch_sizes]
    return [EngineSpec(f"engines/{config.name}.plan", config.batch)]


def _host_problem(config: DeviceConfig, precision: str, dla_core: Optional[int]) -> Tuple[Optional[str], Any]:
    """(why no engine for ``config`` can be built here or None, the tensorrt module when it can)."""
    from edge_runtime import host_info
    from edge_runtime.backends.tensorrt import api

    try:
        trt = api.import_tensorrt()
    except BackendUnavailableError:
        return "no TensorRT on this host", None
    try:
        api.import_cuda()
        api.features(trt)
    except BackendUnavailableError as exc:
        return str(exc), None
    target = EngineFingerprint(config.fingerprint, BuildFingerprint(precision, FORMAT_VERSION, dla_core))
    reasons = match(target, host_info.host_fingerprint())
    if reasons:
        return f"this host's fingerprint does not match the target's: {'; '.join(reasons)}", None
    return None, trt


def ensure_available(config: DeviceConfig, precision: str) -> None:
    """Fail (one line, before any heavy work) when engines for ``config`` cannot be built on this host."""
    dla = config.tensorrt.dla
    problem, _ = _host_problem(config, precision, dla.core if dla is not None else None)
    if problem is not None:
        off = "" if config.tensorrt.build_on_device else " (off in this config: set tensorrt.build_on_device: true)"
        raise StepUnavailableError(f"cannot build the TensorRT engine for '{config.name}' here: {problem}; "
                                   f"{ON_DEVICE}{off}")


def build_engines(job: TrtJob, onnx_file: str, specs: Sequence[EngineSpec], calibration_cache: Optional[bytes],
                  artifacts: List[ArtifactSpec], notes: List[str]) -> HostFingerprint:
    """Build ``specs`` from ``onnx_file`` with the device's builder; return the fingerprint of this host."""
    from edge_runtime import host_info
    from edge_runtime.backends.tensorrt.build import BuildRequest, build_engine

    config = job.config
    problem, trt = _host_problem(config, job.precision, specs[0].dla_core)
    if problem is not None:  # checked at preflight too; the host may have changed since
        raise StepUnavailableError(f"cannot build the TensorRT engine for '{config.name}' here: {problem}")
    onnx = (job.staging / onnx_file).read_bytes()
    timing: Optional[bytes] = None
    for spec in specs:
        batch = f" batch {spec.batch.max}" if spec.dla_core is not None else ""
        request = BuildRequest(onnx=onnx, precision=job.precision, batch=spec.batch,
                               dynamic_dim=config.tensorrt.dynamic_dim, workspace_mb=config.workspace_mb,
                               dla_core=spec.dla_core, calibration_cache=calibration_cache, timing_cache=timing,
                               label=f"{config.name} {job.precision}{batch}")
        try:
            result = build_engine(trt, request, job.say)
        except BundleError as exc:
            raise ExportError(f"TensorRT engine for '{config.name}': {exc}") from exc
        timing = result.timing_cache  # later builds of this export reuse the measured tactics
        (job.staging / "engines").mkdir(exist_ok=True)
        (job.staging / spec.path).write_bytes(result.plan)
        artifacts.append(ArtifactSpec(spec.path, "engine", config.name, job.precision))
        if result.dla_layers is not None:
            on_dla, total = result.dla_layers
            notes.append(f"{config.name}: {spec.path}: DLA core {spec.dla_core} runs {on_dla} of {total} layers; "
                         f"{total - on_dla} fall back to the GPU")
    return dataclasses.replace(host_info.host_fingerprint(), tensorrt_version=str(trt.__version__))


def _calibration_cache(job: TrtJob, artifacts: List[ArtifactSpec]) -> bytes:
    """Write ``calib/<target>.cache`` (DLA INT8's implicit quantization) from the INT8 calibration samples."""
    config = job.config
    assert job.calibration is not None and config.tensorrt_version is not None  # INT8 ran; TensorRT configs have it
    path = f"calib/{config.name}.cache"
    count = trt_calibration.write_cache(job.staging / job.fp32_file, job.calibration,
                                        config.quantization.calibration_method, config.tensorrt_version,
                                        job.staging / path, job.progress)
    artifacts.append(ArtifactSpec(path, "calib", config.name, "int8"))
    job.say(f"{config.name}: TensorRT calibration cache for DLA INT8: {count} tensors, {path}")
    return (job.staging / path).read_bytes()


def add_target(job: TrtJob, artifacts: List[ArtifactSpec], notes: List[str]) -> TargetInfo:
    """A TensorRT target's calibration cache and engines (unless --skip-engine); its manifest entry."""
    config = job.config
    on_dla = config.tensorrt.dla is not None
    if on_dla:
        inputs, _ = onnx_export.onnx_io_specs(job.staging / job.fp32_file)
        limits = dla_limits(inputs, job.precision)
        if limits:
            notes.append(f"{config.name}: no DLA engine: {'; '.join(limits)}; the GPU runs this model")
            on_dla = False
    cache = _calibration_cache(job, artifacts) if on_dla and job.precision == "int8" else None
    if cache is not None:
        notes.append(f"{config.name}: DLA INT8 is implicit quantization from calib/{config.name}.cache; the "
                     "INT8 accuracy reported here is the QDQ model's, not measured for the DLA engine")
    specs = engine_specs(config, on_dla)
    dla_core = specs[0].dla_core
    if job.skip_engine:
        notes.append(f"{config.name}: no TensorRT engine built (--skip-engine): the device builds it at first "
                     "load; its accuracy and latency here are ONNX Runtime CPU running the bundled ONNX")
        return _target_info(config, job.precision, config.fingerprint, dla_core)
    # GPU INT8 is explicit quantization from the target's QDQ model; DLA and FP16/FP32 build the FP32 model
    source = job.model_file if job.precision == "int8" and not on_dla else job.fp32_file
    host = build_engines(job, source, specs, cache, artifacts, notes)
    notes.append(f"{config.name}: TensorRT {host.tensorrt_version} engine(s) built on this host; accuracy and "
                 "latency here are ONNX Runtime CPU running the bundled ONNX")
    return _target_info(config, job.precision, host, dla_core)


def _target_info(config: DeviceConfig, precision: str, host: HostFingerprint, dla_core: Optional[int]) -> TargetInfo:
    return TargetInfo(name=config.name, device_class=config.device_class, backend=config.backend,
                      precision=precision, compute_capability=host.compute_capability,
                      tensorrt_version=host.tensorrt_version, jetpack=host.jetpack, l4t=host.l4t, dla_core=dla_core)
