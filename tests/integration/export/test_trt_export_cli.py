"""edge-export for TensorRT targets: refused in one line without TensorRT; with fake TensorRT an engine and its
fingerprint; for DLA INT8 the calibration cache the device builds from."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np
import pytest
from trt_fakes.fake_pycuda import FakeCuda
from trt_fakes.fake_tensorrt import FakePlan, make_tensorrt

from edge_runtime import host_info
from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.signing import load_public_key
from edge_runtime.bundle.verify import verify_bundle
from export import cli
from export.steps import trt_calibration

FAKE_TRT_VERSION = "8.5.2.2"  # the config declares 8.5.2: the manifest must record the host's own


def _install_fakes(monkeypatch: pytest.MonkeyPatch) -> Any:
    trt = make_tensorrt(FAKE_TRT_VERSION)
    package = types.ModuleType("pycuda")
    package.__file__ = __file__  # host_info takes only a real (non-namespace) package for pycuda
    package.driver = FakeCuda(capability=(7, 2))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", package.driver)
    return trt


def _dla_config(tmp_path: Path, configs: Path) -> Path:
    text = (configs / "agx-xavier.yaml").read_text().replace("# dla: {core: 0, batch_sizes: [1, 8]}",
                                                             "dla: {core: 0, batch_sizes: [1, 8]}")
    assert "  dla: {core: 0" in text
    path = tmp_path / "agx-xavier-dla.yaml"
    path.write_text(text)
    return path


def _calib(tmp_path: Path) -> str:
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((32, 1, 8, 8)).astype(np.float32))
    return str(tmp_path / "calib.npy")


def _export(args: List[str], capsys: pytest.CaptureFixture, key: Path, out: Path) -> Tuple[int, str]:
    code = cli.main(["--quiet", "--latency-runs", "2", "--max-trials", "0", "--key", str(key), "--out", str(out),
                     *args])
    return code, capsys.readouterr().err


def _verified(out: Path, keypair: Tuple[Path, Path]) -> Manifest:
    return verify_bundle(out, [load_public_key(keypair[1])])


def test_no_tensorrt_fails_in_one_line_pointing_to_the_device_build(tmp_path: Path, device_configs_dir: Path,
                                                                    keypair: Tuple[Path, Path],
                                                                    tiny_onnx: Path) -> None:
    out = tmp_path / "bundle"
    result = subprocess.run([sys.executable, "-m", "export.cli", "--model", str(tiny_onnx), "--config",
                             str(device_configs_dir / "agx-xavier.yaml"), "--key", str(keypair[0]), "--out", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-export: error: "), result.stderr
    assert "no TensorRT on this host" in lines[0]
    assert "--skip-engine" in lines[0] and "builds it at first load" in lines[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_fake_tensorrt_builds_the_engine_and_records_this_hosts_fingerprint(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path, device_configs_dir: Path,
        keypair: Tuple[Path, Path], tiny_onnx: Path) -> None:
    trt = _install_fakes(monkeypatch)
    out = tmp_path / "bundle"
    code, err = _export(["--model", str(tiny_onnx), "--config", str(device_configs_dir / "agx-xavier.yaml"),
                         "--precision", "fp16"], capsys, keypair[0], out)
    assert code == 0, err
    manifest = _verified(out, keypair)
    engines = manifest.artifacts_of("engine", "agx-xavier")
    assert [(a.path, a.precision) for a in engines] == [("engines/agx-xavier.plan", "fp16")]
    plan = FakePlan.from_bytes((out / "engines/agx-xavier.plan").read_bytes())
    assert plan is not None and plan.onnx == (out / "model.onnx").read_bytes() and "FP16" in plan.flags
    (target,) = manifest.targets
    assert (target.tensorrt_version, target.compute_capability, target.dla_core) == (FAKE_TRT_VERSION, "7.2", None)
    assert "Builder.build_serialized_network" in [name for name, _ in trt.calls]


def test_gpu_int8_engine_is_built_from_the_targets_qdq_model(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path, device_configs_dir: Path,
        keypair: Tuple[Path, Path], tiny_onnx: Path) -> None:
    _install_fakes(monkeypatch)
    out = tmp_path / "bundle"
    code, err = _export(["--model", str(tiny_onnx), "--config", str(device_configs_dir / "agx-xavier.yaml"),
                         "--calib-data", _calib(tmp_path), "--accuracy-budget", "cosine-mean=0.5,cosine-min=0.1"],
                        capsys, keypair[0], out)
    assert code == 0, err
    manifest = _verified(out, keypair)
    assert [t.precision for t in manifest.targets] == ["int8"]
    plan = FakePlan.from_bytes((out / "engines/agx-xavier.plan").read_bytes())
    assert plan is not None and plan.onnx == (out / "onnx/agx-xavier.int8.onnx").read_bytes()
    assert "INT8" in plan.flags and not plan.calibration_cache  # explicit quantization: no calibrator
    assert not (out / "calib" / "agx-xavier.cache").exists()  # a GPU target needs no TensorRT cache


def test_dla_int8_writes_the_calibration_cache_and_one_engine_per_batch(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path, device_configs_dir: Path,
        keypair: Tuple[Path, Path], tiny_onnx: Path) -> None:
    config = _dla_config(tmp_path, device_configs_dir)
    args = ["--model", str(tiny_onnx), "--config", str(config), "--calib-data", _calib(tmp_path),
            "--accuracy-budget", "cosine-mean=0.5,cosine-min=0.1"]
    skipped = tmp_path / "skipped"
    code, err = _export([*args, "--skip-engine"], capsys, keypair[0], skipped)  # no TensorRT here
    assert code == 0, err
    manifest = _verified(skipped, keypair)
    assert [(t.precision, t.dla_core) for t in manifest.targets] == [("int8", 0)]
    # (the INT8 search also ships ORT's own ranges as calib/<target>.calib.json)
    assert [a.path for a in manifest.artifacts_of("calib", "agx-xavier") if a.path.endswith(".cache")] == [
        "calib/agx-xavier.cache"]
    header, scales = trt_calibration.parse_cache((skipped / "calib/agx-xavier.cache").read_text())
    assert header == "TRT-8502-EntropyCalibration2" and "input" in scales and all(s > 0 for s in scales.values())
    assert not manifest.artifacts_of("engine")
    notes = json.loads((skipped / "report.json").read_text())["notes"]
    assert any("implicit quantization" in note for note in notes)

    _install_fakes(monkeypatch)  # now an AGX Xavier with TensorRT: the DLA engines are built here
    monkeypatch.setattr(host_info, "jetson_model", lambda root=None: "NVIDIA Jetson AGX Xavier Developer Kit")
    monkeypatch.setattr(host_info, "l4t_release", lambda root=None: "35.4.1")
    built = tmp_path / "built"
    code, err = _export(args, capsys, keypair[0], built)
    assert code == 0, err
    manifest = _verified(built, keypair)
    assert [(a.path, a.precision) for a in manifest.artifacts_of("engine", "agx-xavier")] == [
        ("engines/agx-xavier.b1.plan", "int8"), ("engines/agx-xavier.b8.plan", "int8")]
    plan = FakePlan.from_bytes((built / "engines/agx-xavier.b8.plan").read_bytes())
    assert plan is not None and plan.dla_core == 0 and plan.calibration_cache
    assert plan.onnx == (built / "model.onnx").read_bytes()  # implicit INT8 from the FP32 model
    (target,) = manifest.targets
    assert (target.tensorrt_version, target.compute_capability, target.l4t, target.jetpack, target.dla_core) == (
        FAKE_TRT_VERSION, "7.2", "35.4.1", "5.1.2", 0)


def test_dla_at_fp32_is_reported_not_built(capsys: pytest.CaptureFixture, tmp_path: Path, device_configs_dir: Path,
                                           keypair: Tuple[Path, Path], tiny_onnx: Path) -> None:
    out = tmp_path / "bundle"
    code, err = _export(["--model", str(tiny_onnx), "--config", str(_dla_config(tmp_path, device_configs_dir)),
                         "--precision", "fp32", "--skip-engine"], capsys, keypair[0], out)
    assert code == 0, err
    manifest = _verified(out, keypair)
    assert [(t.precision, t.dla_core) for t in manifest.targets] == [("fp32", None)]
    assert not manifest.artifacts_of("calib")
    notes = json.loads((out / "report.json").read_text())["notes"]
    assert any("no DLA engine" in note and "FP16/INT8 only" in note for note in notes)
