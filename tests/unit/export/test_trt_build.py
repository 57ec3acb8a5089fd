"""The export's TensorRT step: when an engine can be built here, what is built, and DLA's limits."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path
from typing import Any, List

import pytest
from trt_fakes.fake_pycuda import FakeCuda
from trt_fakes.fake_tensorrt import FakePlan, make_tensorrt

from edge_runtime import host_info
from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.bundle.writer import ArtifactSpec
from edge_runtime.config import BatchProfile, DeviceConfig, DlaSettings, load_device_config
from export.errors import StepUnavailableError
from export.steps import trt_build


@pytest.fixture()
def xavier(device_configs_dir: Path) -> DeviceConfig:
    return load_device_config(device_configs_dir / "agx-xavier.yaml")


def _with_dla(config: DeviceConfig, sizes: tuple = (1, 8)) -> DeviceConfig:
    return dataclasses.replace(config, tensorrt=dataclasses.replace(config.tensorrt, dla=DlaSettings(0, sizes)))


def install_fakes(monkeypatch: pytest.MonkeyPatch, version: str = "8.5.2.2", capability: tuple = (7, 2)) -> Any:
    """Make ``tensorrt`` and ``pycuda.driver`` import as the recording fakes; return the fake tensorrt."""
    trt = make_tensorrt(version)
    package = types.ModuleType("pycuda")
    package.__file__ = __file__  # host_info takes only a real (non-namespace) package for pycuda
    package.driver = FakeCuda(capability=capability)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", package.driver)
    return trt


def as_xavier_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """This host reads as an AGX Xavier on L4T R35.4.1 (2 DLA cores)."""
    monkeypatch.setattr(host_info, "jetson_model", lambda root=None: "NVIDIA Jetson AGX Xavier Developer Kit")
    monkeypatch.setattr(host_info, "l4t_release", lambda root=None: "35.4.1")


def test_dla_limits_name_fp32_and_dynamic_non_batch_dimensions() -> None:
    image = [TensorSpec("input", "float32", (-1, 3, 224, 224))]
    tokens = [TensorSpec("input_ids", "int64", (-1, -1)), TensorSpec("mask", "int64", (-1, 128))]
    assert trt_build.dla_limits(image, "int8") == []
    assert trt_build.dla_limits(image, "fp16") == []
    assert trt_build.dla_limits(image, "fp32") == ["the target's precision is FP32 and DLA runs FP16/INT8 only"]
    limits = trt_build.dla_limits(tokens, "fp16")
    assert len(limits) == 1 and "'input_ids'" in limits[0] and "[1]" in limits[0] and "static shapes" in limits[0]
    assert len(trt_build.dla_limits(tokens, "fp32")) == 2


def test_engine_specs_one_gpu_engine_or_one_static_engine_per_dla_batch(xavier: DeviceConfig) -> None:
    assert trt_build.engine_specs(xavier, on_dla=False) == [
        trt_build.EngineSpec("engines/agx-xavier.plan", BatchProfile(1, 8, 32), None)]
    assert trt_build.engine_specs(_with_dla(xavier), on_dla=True) == [
        trt_build.EngineSpec("engines/agx-xavier.b1.plan", BatchProfile(1, 1, 1), 0),
        trt_build.EngineSpec("engines/agx-xavier.b8.plan", BatchProfile(8, 8, 8), 0)]
    # DLA pointless for the model: the GPU engine
    assert [s.path for s in trt_build.engine_specs(_with_dla(xavier), on_dla=False)] == ["engines/agx-xavier.plan"]


def test_no_tensorrt_here_is_one_line_pointing_to_the_device_build(xavier: DeviceConfig) -> None:
    with pytest.raises(StepUnavailableError) as caught:
        trt_build.ensure_available(xavier, "int8")
    message = str(caught.value)
    assert "\n" not in message
    assert "no TensorRT on this host" in message
    assert "--skip-engine" in message and "first load" in message and "docs/jetson.md" in message


def test_device_config_without_on_device_builds_is_told_how_to_allow_them(xavier: DeviceConfig) -> None:
    config = dataclasses.replace(xavier, tensorrt=dataclasses.replace(xavier.tensorrt, build_on_device=False))
    with pytest.raises(StepUnavailableError, match=r"set tensorrt\.build_on_device: true"):
        trt_build.ensure_available(config, "fp16")


def test_missing_pycuda_is_named(monkeypatch: pytest.MonkeyPatch, xavier: DeviceConfig) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt("8.5.2.2"))
    monkeypatch.setitem(sys.modules, "pycuda", None)  # an import of it fails
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(StepUnavailableError, match=r"pycuda.*--skip-engine"):
        trt_build.ensure_available(xavier, "int8")


def test_matching_host_may_build(monkeypatch: pytest.MonkeyPatch, xavier: DeviceConfig) -> None:
    install_fakes(monkeypatch)
    trt_build.ensure_available(xavier, "int8")  # TensorRT 8.5.2 and sm_72, as agx-xavier.yaml declares


@pytest.mark.parametrize(("version", "capability", "reason"), [
    ("10.3.0", (7, 2), "TensorRT: built for 8.5.2, this host has 10.3.0"),
    ("8.5.2.2", (8, 7), "compute capability: built for 7.2, this host has 8.7"),
])
def test_another_host_is_refused_with_the_fingerprint_reasons(monkeypatch: pytest.MonkeyPatch, xavier: DeviceConfig,
                                                              version: str, capability: tuple, reason: str) -> None:
    install_fakes(monkeypatch, version, capability)
    with pytest.raises(StepUnavailableError) as caught:
        trt_build.ensure_available(xavier, "fp16")
    assert reason in str(caught.value) and "--skip-engine" in str(caught.value)


def test_dla_target_needs_a_host_with_that_dla_core(monkeypatch: pytest.MonkeyPatch, xavier: DeviceConfig) -> None:
    install_fakes(monkeypatch)  # a workstation: no Jetson model, so no known DLA cores
    with pytest.raises(StepUnavailableError, match="DLA core 0"):
        trt_build.ensure_available(_with_dla(xavier), "int8")
    as_xavier_host(monkeypatch)
    trt_build.ensure_available(_with_dla(xavier), "int8")


def _job(config: DeviceConfig, staging: Path, precision: str, notes: List[str]) -> trt_build.TrtJob:
    return trt_build.TrtJob(config, precision, staging, "model.onnx", "onnx/t.int8.onnx", None, False, notes.append)


def test_gpu_engine_built_from_the_given_onnx_with_the_config_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                      xavier: DeviceConfig) -> None:
    from test_trt_calibration import _relu_model

    trt = install_fakes(monkeypatch)
    _relu_model(tmp_path / "model.onnx")
    artifacts: List[ArtifactSpec] = []
    lines: List[str] = []
    host = trt_build.build_engines(_job(xavier, tmp_path, "fp16", lines), "model.onnx",
                                   trt_build.engine_specs(xavier, False), None, artifacts, [])
    assert artifacts == [ArtifactSpec("engines/agx-xavier.plan", "engine", "agx-xavier", "fp16")]
    plan = FakePlan.from_bytes((tmp_path / "engines/agx-xavier.plan").read_bytes())
    assert plan is not None and plan.onnx == (tmp_path / "model.onnx").read_bytes()
    assert plan.profile["x"] == [[1, 4], [8, 4], [32, 4]] and "FP16" in plan.flags and plan.dla_core is None
    assert host.tensorrt_version == "8.5.2.2" and host.compute_capability == "7.2"
    assert any("building" in line for line in lines)  # progress reached the export's output
    assert "Builder.build_serialized_network" in [name for name, _ in trt.calls]


def test_dla_int8_engines_one_per_batch_with_the_calibration_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                   xavier: DeviceConfig) -> None:
    from test_trt_calibration import _relu_model

    trt = install_fakes(monkeypatch)
    as_xavier_host(monkeypatch)
    config = _with_dla(xavier)
    _relu_model(tmp_path / "model.onnx")
    artifacts: List[ArtifactSpec] = []
    notes: List[str] = []
    cache = b"TRT-8502-EntropyCalibration2\nx: 3c23d70a\n"
    host = trt_build.build_engines(_job(config, tmp_path, "int8", []), "model.onnx",
                                   trt_build.engine_specs(config, True), cache, artifacts, notes)
    assert [a.path for a in artifacts] == ["engines/agx-xavier.b1.plan", "engines/agx-xavier.b8.plan"]
    assert {a.precision for a in artifacts} == {"int8"}
    for artifact, size in zip(artifacts, (1, 8)):
        plan = FakePlan.from_bytes((tmp_path / artifact.path).read_bytes())
        assert plan is not None and plan.dla_core == 0 and plan.calibration_cache
        assert plan.profile["x"] == [[size, 4]] * 3 and {"INT8", "GPU_FALLBACK"} <= set(plan.flags)
    assert host.l4t == "35.4.1" and host.dla_cores == 2
    assert len([n for n in notes if "DLA core 0 runs" in n]) == 2
    timing = [args[0] for name, args in trt.calls if name == "IBuilderConfig.create_timing_cache"]
    assert timing[0] == b"" and timing[1]  # the second build starts from the first one's timing cache
