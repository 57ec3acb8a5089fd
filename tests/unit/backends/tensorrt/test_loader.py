"""The loader: fingerprint check before deserializing, rebuild on mismatch, build on the device, engine cache."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import pytest

from edge_runtime.backends.base import BackendOptions
from edge_runtime.backends.tensorrt import build, loader
from edge_runtime.backends.tensorrt.engine_cache import EngineCache
from edge_runtime.bundle.fingerprint import HostFingerprint
from edge_runtime.bundle.manifest import TargetInfo, TensorSpec
from edge_runtime.bundle.signing import load_private_key, load_public_key
from edge_runtime.bundle.verify import VerifiedBundle, open_bundle
from edge_runtime.bundle.writer import ArtifactSpec, finalize_bundle
from edge_runtime.config import DeviceConfig, DlaSettings, load_device_config
from edge_runtime.errors import BundleError, FingerprintMismatchError

XAVIER = HostFingerprint(tensorrt_version="8.5.2.2", compute_capability="7.2", l4t="35.4.1",
                         device_model="NVIDIA Jetson AGX Xavier Developer Kit", dla_cores=2)
ORIN = HostFingerprint(tensorrt_version="8.6.2.3", compute_capability="8.7", l4t="36.3.0",
                       device_model="NVIDIA Jetson AGX Orin Developer Kit", dla_cores=2)
INPUTS = (TensorSpec("x", "float32", (-1, 4)),)
OUTPUTS = (TensorSpec("y", "float32", (-1, 4)),)


class StubEngine:
    """An engine whose input shape says its batch: plans named b"static:N" have a fixed batch N."""

    def __init__(self, plan: bytes) -> None:
        self.plan = plan
        self.batch = int(plan.split(b":")[1]) if plan.startswith(b"static:") else -1

    def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
        return (self.batch, 4)


class RecordingRuntime:
    """A stand-in for ``tensorrt.Runtime``: records what it was asked to deserialize."""

    def __init__(self, refuse: Sequence[bytes] = ()) -> None:
        self.deserialized: List[bytes] = []
        self.refuse = set(refuse)

    def deserialize_cuda_engine(self, plan: bytes) -> Optional[Any]:
        self.deserialized.append(bytes(plan))
        return None if bytes(plan) in self.refuse else StubEngine(bytes(plan))


class StubBuilder:
    """Replaces build.build_engine: returns a plan naming what was asked, records each request."""

    def __init__(self) -> None:
        self.requests: List[build.BuildRequest] = []

    def __call__(self, trt: Any, request: build.BuildRequest, progress: Any = None) -> build.BuildResult:
        self.requests.append(request)
        plan = f"plan {request.precision} {request.dla_core} {request.batch.max} #{len(self.requests)}".encode()
        return build.BuildResult(plan=plan, timing_cache=b"timing", seconds=1.5,
                                 dla_layers=(3, 4) if request.dla_core is not None else None)


@pytest.fixture()
def builder(monkeypatch: pytest.MonkeyPatch) -> StubBuilder:
    stub = StubBuilder()
    monkeypatch.setattr(build, "build_engine", stub)
    return stub


@pytest.fixture()
def xavier(device_configs_dir: Path) -> DeviceConfig:
    return load_device_config(device_configs_dir / "agx-xavier.yaml")


def _bundle(directory: Path, keypair: Tuple[Path, Path], engine: Optional[bytes], target: TargetInfo,
            own_onnx: bool = False, calib: bool = False, inputs: Sequence[TensorSpec] = INPUTS) -> VerifiedBundle:
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(b"fp32 onnx")
    artifacts = [ArtifactSpec("model.onnx", "onnx", None, "fp32")]
    if own_onnx:
        (directory / "onnx").mkdir()
        (directory / "onnx" / f"{target.name}.int8.onnx").write_bytes(b"qdq onnx")
        artifacts.append(ArtifactSpec(f"onnx/{target.name}.int8.onnx", "onnx", target.name, "int8"))
    if engine is not None:
        (directory / "engines").mkdir()
        (directory / "engines" / f"{target.name}.plan").write_bytes(engine)
        artifacts.append(ArtifactSpec(f"engines/{target.name}.plan", "engine", target.name, target.precision))
    if own_onnx or calib:  # every INT8 target records its quantizer's ranges as calib/<target>.calib.json
        (directory / "calib").mkdir()
        (directory / "calib" / f"{target.name}.calib.json").write_bytes(b"{}")
        artifacts.append(ArtifactSpec(f"calib/{target.name}.calib.json", "calib", target.name, "int8"))
    if calib:
        (directory / "calib" / f"{target.name}.cache").write_bytes(b"TRT-8502-EntropyCalibration2\n")
        artifacts.append(ArtifactSpec(f"calib/{target.name}.cache", "calib", target.name, "int8"))
    finalize_bundle(directory, name="m", version="1", inputs=list(inputs), outputs=list(OUTPUTS),
                    source_model_sha256="0" * 64, artifacts=artifacts, targets=[target],
                    private_key=load_private_key(keypair[0]))
    return open_bundle(directory, [load_public_key(keypair[1])])


def _target(precision: str = "int8", host: HostFingerprint = XAVIER, dla_core: Optional[int] = None) -> TargetInfo:
    return TargetInfo(name="agx-xavier", device_class="jetson-agx-xavier", backend="tensorrt", precision=precision,
                      compute_capability=host.compute_capability, tensorrt_version=host.tensorrt_version,
                      l4t=host.l4t, dla_core=dla_core)


def _options(tmp_path: Path) -> BackendOptions:
    return BackendOptions(engine_cache_dir=tmp_path / "cache", progress=lambda line: None)


def _with(device: DeviceConfig, **tensorrt: Any) -> DeviceConfig:
    return dataclasses.replace(device, tensorrt=dataclasses.replace(device.tensorrt, **tensorrt))


def test_matching_engine_in_the_bundle_is_deserialized_from_verified_bytes(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig, builder: StubBuilder) -> None:
    bundle = _bundle(tmp_path / "b", keypair, b"bundle plan", _target(), own_onnx=True)
    runtime = RecordingRuntime()
    engines = loader.load_engines(None, runtime, bundle, xavier, _options(tmp_path), XAVIER)
    assert runtime.deserialized == [b"bundle plan"]
    assert [e.description for e in engines] == ["engines/agx-xavier.plan"]
    assert engines[0].plan_size == len(b"bundle plan") and engines[0].static_batch is None
    assert builder.requests == []


def test_a_static_shape_engine_in_the_bundle_runs_its_one_batch_size(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig, builder: StubBuilder) -> None:
    bundle = _bundle(tmp_path / "b", keypair, b"static:8", _target(dla_core=0), own_onnx=True)
    engines = loader.load_engines(None, RecordingRuntime(), bundle, xavier, _options(tmp_path), XAVIER)
    assert [e.static_batch for e in engines] == [8]


def test_mismatched_engine_is_refused_before_deserializing(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig, builder: StubBuilder) -> None:
    bundle = _bundle(tmp_path / "b", keypair, b"bundle plan", _target(host=ORIN), own_onnx=True)
    runtime = RecordingRuntime()
    with pytest.raises(FingerprintMismatchError) as caught:
        loader.load_engines(None, runtime, bundle, _with(xavier, rebuild_on_mismatch=False), _options(tmp_path),
                            XAVIER)
    message = str(caught.value)
    assert "TensorRT: built for 8.6.2.3, this host has 8.5.2.2" in message
    assert "compute capability: built for 8.7, this host has 7.2" in message
    assert "rebuild_on_mismatch" in message and "\n" not in message
    assert runtime.deserialized == [] and builder.requests == []


def test_tampered_engine_is_refused_before_deserializing(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig) -> None:
    bundle = _bundle(tmp_path / "b", keypair, b"bundle plan", _target(), own_onnx=True)
    (tmp_path / "b" / "engines" / "agx-xavier.plan").write_bytes(b"bundle PLAN")  # same size, other bytes
    runtime = RecordingRuntime()
    with pytest.raises(BundleError, match="sha256"):
        loader.load_engines(None, runtime, bundle, xavier, _options(tmp_path), XAVIER)
    assert runtime.deserialized == []


def test_mismatch_rebuilds_from_the_qdq_onnx_into_the_cache_and_reuses_it(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig, builder: StubBuilder) -> None:
    bundle = _bundle(tmp_path / "b", keypair, b"orin plan", _target(host=ORIN), own_onnx=True)
    device = _with(xavier, rebuild_on_mismatch=True)
    runtime = RecordingRuntime()
    first = loader.load_engines(None, runtime, bundle, device, _options(tmp_path), XAVIER)
    assert b"orin plan" not in runtime.deserialized  # the foreign engine is never deserialized
    assert [r.onnx for r in builder.requests] == [b"qdq onnx"]
    request = builder.requests[0]
    assert (request.precision, request.batch, request.dla_core) == ("int8", xavier.batch, None)
    assert request.workspace_mb == xavier.workspace_mb and request.timing_cache is None
    assert first[0].description.startswith("engine cache: m v1 agx-xavier int8")
    records = list((tmp_path / "cache").glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["fingerprint"]["host"]["tensorrt_version"] == "8.5.2.2"
    assert record["fingerprint"]["build"] == {"precision": "int8", "format_version": 1, "dla_core": None}
    # a second load (a restart) takes the cached engine and passes the saved timing cache to no build
    runtime2 = RecordingRuntime()
    loader.load_engines(None, runtime2, bundle, device, _options(tmp_path), XAVIER)
    assert len(builder.requests) == 1 and runtime2.deserialized == [runtime.deserialized[-1]]
    assert EngineCache(tmp_path / "cache").timing_cache(XAVIER) == b"timing"


def test_no_engine_builds_on_the_device_and_a_corrupted_cache_entry_is_rebuilt(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig, builder: StubBuilder) -> None:
    bundle = _bundle(tmp_path / "b", keypair, None, _target(), own_onnx=True)
    runtime = RecordingRuntime()
    loader.load_engines(None, runtime, bundle, xavier, _options(tmp_path), XAVIER)
    plan_file = next((tmp_path / "cache").glob("*.plan"))
    plan_file.write_bytes(b"corrupted!")
    runtime2 = RecordingRuntime()
    loader.load_engines(None, runtime2, bundle, xavier, _options(tmp_path), XAVIER)
    assert b"corrupted!" not in runtime2.deserialized  # re-verified against its record first
    assert len(builder.requests) == 2
    assert builder.requests[1].timing_cache == b"timing"  # the first build's timing cache was kept


def test_a_new_engine_that_does_not_deserialize_is_not_cached(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig, builder: StubBuilder) -> None:
    bundle = _bundle(tmp_path / "b", keypair, None, _target("fp16"))
    runtime = RecordingRuntime(refuse=[b"plan fp16 None 32 #1"])
    with pytest.raises(BundleError, match="cannot deserialize"):
        loader.load_engines(None, runtime, bundle, xavier, _options(tmp_path), XAVIER)
    assert list((tmp_path / "cache").glob("*.json")) == []
    assert builder.requests[0].onnx == b"fp32 onnx"


def test_build_on_device_off_is_a_clear_error(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig, builder: StubBuilder) -> None:
    bundle = _bundle(tmp_path / "b", keypair, None, _target(), own_onnx=True)
    with pytest.raises(BundleError, match=r"no TensorRT engine for agx-xavier, and tensorrt\.build_on_device is off"):
        loader.load_engines(None, RecordingRuntime(), bundle, _with(xavier, build_on_device=False),
                            _options(tmp_path), XAVIER)
    assert builder.requests == []


def test_dla_int8_builds_one_static_engine_per_batch_size_from_fp32_and_the_calibration_cache(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig, builder: StubBuilder) -> None:
    bundle = _bundle(tmp_path / "b", keypair, None, _target(dla_core=0), own_onnx=True, calib=True)
    device = _with(xavier, dla=DlaSettings(core=1, batch_sizes=(1, 8)))
    engines = loader.load_engines(None, RecordingRuntime(), bundle, device, _options(tmp_path), XAVIER)
    assert [e.static_batch for e in engines] == [1, 8]
    assert [(r.batch.min, r.batch.opt, r.batch.max) for r in builder.requests] == [(1, 1, 1), (8, 8, 8)]
    assert {r.onnx for r in builder.requests} == {b"fp32 onnx"}  # implicit quantization: not the QDQ model
    assert {r.calibration_cache for r in builder.requests} == {b"TRT-8502-EntropyCalibration2\n"}
    assert {r.dla_core for r in builder.requests} == {1}


def test_dla_int8_without_a_calibration_cache_says_what_is_missing(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig, builder: StubBuilder) -> None:
    bundle = _bundle(tmp_path / "b", keypair, None, _target(), own_onnx=True)
    with pytest.raises(BundleError, match="no calibration cache for agx-xavier"):
        loader.load_engines(None, RecordingRuntime(), bundle, _with(xavier, dla=DlaSettings(0, (1,))),
                            _options(tmp_path), XAVIER)


@pytest.mark.parametrize("precision, inputs, why", [
    ("fp32", INPUTS, "DLA runs FP16/INT8 only"),
    ("fp16", (TensorSpec("ids", "int64", (-1, -1)),), "DLA needs static shapes"),
])
def test_dla_that_cannot_help_builds_for_the_gpu_and_says_why(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig, builder: StubBuilder,
        caplog: pytest.LogCaptureFixture, precision: str, inputs: Sequence[TensorSpec], why: str) -> None:
    bundle = _bundle(tmp_path / "b", keypair, None, _target(precision), inputs=inputs)
    loader.load_engines(None, RecordingRuntime(), bundle, _with(xavier, dla=DlaSettings(0, (1,))),
                        _options(tmp_path), XAVIER)
    assert [r.dla_core for r in builder.requests] == [None]
    assert why in caplog.text and "building for the GPU" in caplog.text


def test_without_an_engine_cache_the_engine_is_built_and_not_kept(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig, builder: StubBuilder,
        caplog: pytest.LogCaptureFixture) -> None:
    bundle = _bundle(tmp_path / "b", keypair, None, _target("fp16"))
    engines = loader.load_engines(None, RecordingRuntime(), bundle, xavier, BackendOptions(), XAVIER)
    assert engines[0].description.startswith("built on this device")
    assert "built again at every load" in caplog.text
    assert np.all([not p.exists() for p in [tmp_path / "cache"]])
