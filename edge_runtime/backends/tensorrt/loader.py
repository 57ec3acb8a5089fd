"""Which TensorRT engines a model runs with: fingerprint check, then deserialize, or build on the device.

Loading apart from running, as in Polygraphy: :func:`load_engines` returns deserialized engines,
the runner (:mod:`.runner`) makes contexts and buffers for them. The order, for this device's
target in the bundle (``device.name``):

1. The bundle carries engines for the target: their fingerprint (the target's TensorRT version,
   compute capability, L4T, device, DLA core) is compared with this host's **before** any byte is
   deserialized (:func:`~edge_runtime.bundle.fingerprint.match`). Compatible: deserialize the
   verified bytes. Not compatible: :class:`FingerprintMismatchError` naming every reason, or, with
   ``tensorrt.rebuild_on_mismatch``, a rebuild on the device (step 2).
2. No usable engine in the bundle: with ``tensorrt.build_on_device`` an engine is built from the
   bundle's ONNX (the target's QDQ model for GPU INT8; the portable FP32 model for FP16/FP32 and
   for DLA, whose INT8 reads ``calib/<target>.cache``) into the device-local engine cache
   (:mod:`.engine_cache`), or taken from that cache when an earlier load built it. A new engine
   is stored only after it deserialized: whatever served before keeps serving until then.

DLA engines have static shapes, so a DLA target gets one engine per ``tensorrt.dla.batch_sizes``
entry. Where DLA cannot help (FP32 only, or dynamic non-batch dimensions) the loader says so and
builds for the GPU instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

from edge_runtime.backends.base import BackendOptions
from edge_runtime.backends.tensorrt import api
from edge_runtime.backends.tensorrt.engine_cache import CacheKey, EngineCache
from edge_runtime.bundle.fingerprint import BuildFingerprint, EngineFingerprint, HostFingerprint, match
from edge_runtime.bundle.manifest import FORMAT_VERSION, ONNX_DATA, Artifact, Manifest, TargetInfo
from edge_runtime.bundle.verify import VerifiedBundle
from edge_runtime.config import BatchProfile, DeviceConfig
from edge_runtime.errors import BundleError, FingerprintMismatchError, OutputError

if TYPE_CHECKING:
    import tensorrt

log = logging.getLogger(__name__)


@dataclass
class LoadedEngine:
    """One deserialized engine and what the runner needs to know about it."""

    engine: Any  # tensorrt.ICudaEngine
    static_batch: Optional[int]  # DLA engines run one batch size; None: the dynamic batch profile
    plan_size: int  # bytes of the serialized plan (the memory budget counts it)
    description: str  # where it came from, for logs and metadata


@dataclass(frozen=True)
class _Plan:
    """What to build for one engine: its source model, precision and (DLA) batch size."""

    source: Artifact
    precision: str
    dla_core: Optional[int]
    static_batch: Optional[int]
    calibration: Optional[Artifact]


def load_engines(trt: api.TrtModule, runtime: Any, bundle: VerifiedBundle, device: DeviceConfig,
                 options: BackendOptions, host: HostFingerprint,
                 log_errors: Optional[List[str]] = None) -> List[LoadedEngine]:
    """The engines ``bundle`` runs with on this host (see the module docstring); our errors only."""
    manifest = bundle.manifest
    target = next((t for t in manifest.targets if t.name == device.name), None)
    engines = manifest.artifacts_of("engine", device.name)
    errors = log_errors if log_errors is not None else []
    if engines:
        assert target is not None  # the manifest ties every engine to one of its targets
        reasons = match(target.fingerprint, host)
        if not reasons:
            loaded = [_deserialize(runtime, bundle.read_verified(a), a.path, None, errors) for a in engines]
            for item in loaded:
                item.static_batch = _static_batch(item.engine, manifest)
            return loaded
        what = f"the engine of '{manifest.name}' for {device.name} ({engines[0].path})"
        if not device.tensorrt.rebuild_on_mismatch:
            raise FingerprintMismatchError(
                f"{what} cannot run on this host: {'; '.join(reasons)} "
                "(set tensorrt.rebuild_on_mismatch: true to rebuild it here from the bundle's ONNX)")
        log.warning("%s was built for another host (%s): rebuilding it on this device", what, "; ".join(reasons))
    elif not device.tensorrt.build_on_device:
        raise BundleError(f"bundle '{manifest.name}' has no TensorRT engine for {device.name}, and "
                          "tensorrt.build_on_device is off")
    elif target is None:
        log.warning("bundle '%s' has no target '%s' (targets: %s): its engine comes from the portable FP32 model "
                    "at %s", manifest.name, device.name, ", ".join(t.name for t in manifest.targets) or "none",
                    _portable_precision(device))
    else:
        log.info("bundle '%s' carries no engine for %s: it is built on this device (or taken from the engine "
                 "cache)", manifest.name, device.name)
    return [_cached_or_built(trt, runtime, bundle, device, options, host, plan, errors)
            for plan in plan_builds(manifest, target, device)]


def plan_builds(manifest: Manifest, target: Optional[TargetInfo], device: DeviceConfig) -> List[_Plan]:
    """The engines to build on this device for ``manifest``: one for the GPU, or one per DLA batch size."""
    if manifest.artifacts_of(ONNX_DATA):
        raise BundleError(f"bundle '{manifest.name}': building an engine from an ONNX model with external "
                          "data is not supported yet (export the model with its weights inside the .onnx)")
    precision = target.precision if target is not None else _portable_precision(device)
    portable = next((a for a in manifest.artifacts_of("onnx") if a.target is None), None)
    if portable is None:
        raise BundleError(f"bundle '{manifest.name}' has no portable ONNX model to build an engine from")
    dla = device.tensorrt.dla
    pointless = _dla_pointless(manifest, precision) if dla is not None else None
    if dla is not None and pointless:
        log.warning("bundle '%s': no DLA engine for %s: %s; building for the GPU", manifest.name, device.name,
                    pointless)
    if dla is not None and not pointless:
        calibration = None
        if precision == "int8":
            # calib/<target>.calib.json (the quantizer's ranges, for the record) is also of kind calib
            found = [a for a in manifest.artifacts_of("calib", device.name) if a.path.endswith(".cache")]
            if not found:
                raise BundleError(f"bundle '{manifest.name}' has no calibration cache for {device.name} "
                                  "(DLA INT8 needs calib/<target>.cache, written by the export for DLA targets)")
            calibration = found[0]
        return [_Plan(portable, precision, dla.core, size, calibration) for size in dla.batch_sizes]
    source = portable
    if precision == "int8":
        own = manifest.artifacts_of("onnx", device.name)
        if not own:
            raise BundleError(f"bundle '{manifest.name}' has no INT8 (QDQ) model for {device.name}")
        source = own[0]
    return [_Plan(source, precision, None, None, None)]


def _portable_precision(device: DeviceConfig) -> str:
    """Without a target of its own, the bundle's FP32 model is built at FP16 where the device allows it."""
    return "fp16" if "fp16" in device.precisions else "fp32"


def _dla_pointless(manifest: Manifest, precision: str) -> Optional[str]:
    """Why a DLA engine cannot help this model, or None."""
    if precision == "fp32":
        return "the target's precision is FP32 and DLA runs FP16/INT8 only"
    for spec in manifest.inputs:
        if -1 in spec.shape[1:]:
            return f"input '{spec.name}' has dynamic dimensions beyond the batch axis and DLA needs static shapes"
    return None


def _cached_or_built(trt: api.TrtModule, runtime: Any, bundle: VerifiedBundle, device: DeviceConfig,
                     options: BackendOptions, host: HostFingerprint, plan: _Plan, errors: List[str]) -> LoadedEngine:
    manifest = bundle.manifest
    key = CacheKey(hashlib.sha256(manifest.to_json()).hexdigest(), plan.source.path,
                   EngineFingerprint(host, BuildFingerprint(plan.precision, FORMAT_VERSION, plan.dla_core)),
                   plan.static_batch)
    label = _label(manifest, device, plan)
    cache = EngineCache(options.engine_cache_dir) if options.engine_cache_dir is not None else None
    with _build_lock(cache, key):
        if cache is not None:
            cache.clean_interrupted()
        cached = cache.get(key) if cache is not None else None
        if cache is not None and cached is not None:
            try:
                return _deserialize(runtime, cached.plan, f"engine cache: {label}", plan.static_batch, errors)
            except BundleError as exc:
                log.warning("engine cache: %s does not deserialize (%s); rebuilding it", cached.path, exc)
                cache.drop(key)
        return _build_and_store(trt, runtime, bundle, device, options, host, plan, key, cache, label, errors)


def _build_and_store(trt: api.TrtModule, runtime: Any, bundle: VerifiedBundle, device: DeviceConfig,
                     options: BackendOptions, host: HostFingerprint, plan: _Plan, key: CacheKey,
                     cache: Optional[EngineCache], label: str, errors: List[str]) -> LoadedEngine:
    from edge_runtime.backends.tensorrt.build import BuildRequest, build_engine

    progress = options.progress or log.info
    size = plan.static_batch
    request = BuildRequest(
        onnx=bundle.read_verified(plan.source), precision=plan.precision,
        batch=BatchProfile(size, size, size) if size is not None else device.batch,
        dynamic_dim=device.tensorrt.dynamic_dim, workspace_mb=device.workspace_mb, dla_core=plan.dla_core,
        calibration_cache=bundle.read_verified(plan.calibration) if plan.calibration is not None else None,
        timing_cache=cache.timing_cache(host) if cache is not None and device.tensorrt.timing_cache else None,
        label=label,
    )
    result = build_engine(trt, request, progress)  # says what it builds, how far it is, and when it is done
    log.info("engine %s: %.1f MiB plan", label, len(result.plan) / 2**20)
    loaded = _deserialize(runtime, result.plan, f"built on this device: {label}", size, errors)
    if cache is None:
        log.warning("no engine_cache_dir: the engine %s is built again at every load", label)
        return loaded
    if result.timing_cache is not None and device.tensorrt.timing_cache:
        cache.put_timing_cache(host, result.timing_cache)
    try:
        cache.put(key, result.plan, {"label": label, "build_seconds": round(result.seconds, 3),
                                     "dla_layers": list(result.dla_layers) if result.dla_layers else None})
    except OutputError as exc:  # a full or read-only disk costs the next load a build, not this one its model
        log.error("engine cache: cannot keep the engine %s (%s): it is built again at every load", label, exc)
        return loaded
    loaded.description = f"engine cache: {label}"
    return loaded


def _deserialize(runtime: Any, plan: bytes, description: str, static_batch: Optional[int],
                 errors: List[str]) -> LoadedEngine:
    """Deserialize verified plan bytes; None from TensorRT becomes a one-line BundleError."""
    del errors[:]
    engine: Optional[tensorrt.ICudaEngine] = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        detail = "; ".join(errors) or "TensorRT gave no reason"
        raise BundleError(f"TensorRT cannot deserialize {description}: {detail}")
    return LoadedEngine(engine, static_batch, len(plan), description)


def _static_batch(engine: Any, manifest: Manifest) -> Optional[int]:
    """The one batch size a bundle's engine runs (DLA: static shapes), or None for a dynamic batch axis."""
    first = manifest.inputs[0]
    if first.shape[:1] != (-1,):
        return None  # the model has no batch axis
    typed: tensorrt.ICudaEngine = engine
    size = int(typed.get_tensor_shape(first.name)[0])
    return size if size > 0 else None


def _label(manifest: Manifest, device: DeviceConfig, plan: _Plan) -> str:
    where = f" DLA{plan.dla_core} batch {plan.static_batch}" if plan.dla_core is not None else ""
    return f"{manifest.name} v{manifest.version} {device.name} {plan.precision}{where}"


_THREAD_LOCKS: Dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _build_lock(cache: Optional[EngineCache], key: CacheKey) -> Iterator[None]:
    """One build per cache key at a time: across threads (instances) and processes (runtime and agent)."""
    digest = key.digest
    with _THREAD_LOCKS_GUARD:
        lock = _THREAD_LOCKS.setdefault(digest, threading.Lock())
    with lock:
        if cache is None:
            yield
            return
        with _file_lock(cache.directory / f"{digest}.lock"):
            yield


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:  # a read-only cache still serves what it has; builds are then not shared
        log.warning("engine cache: no lock file %s (%s)", path, exc.strerror or exc)
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

