"""The ONNX Runtime backend on a real signed bundle: artifact choice, IOBinding hot path, validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
from runtime_support import B, W, affine, write_tiny_bundle

from edge_runtime.backends.base import BackendOptions
from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
from edge_runtime.bundle.manifest import TargetInfo, TensorSpec
from edge_runtime.bundle.signing import load_private_key, load_public_key
from edge_runtime.bundle.verify import open_bundle
from edge_runtime.bundle.writer import ArtifactSpec, finalize_bundle
from edge_runtime.config import load_device_config
from edge_runtime.errors import BundleError, IntegrityError, RequestError


@pytest.fixture()
def backend(tmp_path: Path, keypair: Tuple[Path, Path], device_configs_dir: Path):  # type: ignore[no-untyped-def]
    write_tiny_bundle(tmp_path / "b", keypair[0], "1")
    bundle = open_bundle(tmp_path / "b", [load_public_key(keypair[1])])
    loaded = OnnxRuntimeBackend()
    loaded.load(bundle, load_device_config(device_configs_dir / "x86-cpu.yaml"), BackendOptions(max_batch_size=4))
    yield loaded
    loaded.close()


def test_specs_batch_limit_and_artifact(backend: OnnxRuntimeBackend) -> None:
    assert [(s.name, s.dtype, s.shape) for s in backend.inputs] == [("input", "float32", (-1, 4))]
    assert [(s.name, s.shape) for s in backend.outputs] == [("output", (-1, 3))]
    assert backend.max_batch_size == 4
    assert backend.artifact == "model.onnx"


def test_iobinding_buffers_are_reused_and_results_are_not_aliased(backend: OnnxRuntimeBackend) -> None:
    x1 = np.random.default_rng(1).random((2, 4), dtype=np.float32)
    x2 = np.random.default_rng(2).random((2, 4), dtype=np.float32)
    first = backend.infer({"input": x1})["output"]
    bound = backend._bound[2]
    second = backend.infer({"input": x2})["output"]
    assert backend._bound[2] is bound  # the same preallocated arrays, no new binding
    np.testing.assert_allclose(first, affine(x1), rtol=1e-6)  # not overwritten by the second run
    np.testing.assert_allclose(second, affine(x2), rtol=1e-6)
    backend.infer({"input": x1[:1]})
    assert sorted(backend._bound) == [1, 2]  # one binding per batch size seen


def test_every_batch_size_binds_rows_of_one_max_batch_buffer(backend: OnnxRuntimeBackend) -> None:
    rng = np.random.default_rng(3)
    for batch in (4, 1, 3, 2, 4, 1):  # sizes interleaved, so a stale row or a wrong view shows
        x = rng.random((batch, 4), dtype=np.float32)
        np.testing.assert_allclose(backend.infer({"input": x})["output"], affine(x), rtol=1e-5, atol=1e-6)
    (buffer,) = backend._buffers["inputs"].values()
    assert buffer.shape == (4, 4)  # allocated once, at the largest batch
    for batch, bound in backend._bound.items():
        assert bound.inputs["input"].shape == (batch, 4)
        assert np.shares_memory(bound.inputs["input"], buffer)


@pytest.mark.parametrize(
    "inputs, message",
    [({"input": np.zeros((5, 4), np.float32)}, "outside 1..4"),
     ({"input": np.zeros((1, 4), np.float16)}, "is float16"),
     ({"input": np.zeros((1, 5), np.float32)}, "has shape")],
    ids=["batch", "dtype", "shape"],
)
def test_base_class_validates_before_the_session_runs(backend: OnnxRuntimeBackend, inputs: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        backend.infer(inputs)


# --- what is loaded is what was hashed (issue 13) -------------------------------------------


def _load(bundle_dir: Path, keypair: Tuple[Path, Path], device_configs_dir: Path) -> OnnxRuntimeBackend:
    bundle = open_bundle(bundle_dir, [load_public_key(keypair[1])])
    loaded = OnnxRuntimeBackend()
    loaded.load(bundle, load_device_config(device_configs_dir / "x86-cpu.yaml"), BackendOptions(max_batch_size=4))
    return loaded


def test_a_model_swapped_after_verification_is_not_served(
        tmp_path: Path, keypair: Tuple[Path, Path], device_configs_dir: Path) -> None:
    write_tiny_bundle(tmp_path / "b", keypair[0], "1")
    write_tiny_bundle(tmp_path / "other", keypair[0], "1")
    bundle = open_bundle(tmp_path / "b", [load_public_key(keypair[1])])
    model = tmp_path / "b" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0x01  # another valid-looking model of the same size, swapped in after verification
    (tmp_path / "swap").write_bytes(bytes(data))
    os.replace(tmp_path / "swap", model)
    backend = OnnxRuntimeBackend()
    with pytest.raises(IntegrityError, match=r"model\.onnx: sha256 mismatch"):
        backend.load(bundle, load_device_config(device_configs_dir / "x86-cpu.yaml"), BackendOptions())


def _external_bundle(directory: Path, key: Path, location: str, list_data: bool = True,
                     data_kind: str = "onnx_data") -> None:
    """The affine model with W as ONNX external data at ``location``; data.bin is listed when asked."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(W, "W")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(W.nbytes))):
        weights.external_data.add(key=k, value=v)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["output"])],
        "affine", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        [weights, numpy_helper.from_array(B, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    artifacts = [ArtifactSpec("model.onnx", "onnx", None, "fp32")]
    if list_data:
        (directory / "data.bin").write_bytes(W.tobytes())
        # As onnx_data it goes first: it must never be taken for the model (the first portable ONNX).
        artifacts.insert(0 if data_kind == "onnx_data" else 1, ArtifactSpec("data.bin", data_kind, None, "fp32"))
    finalize_bundle(directory, name="tiny", version="1",
                    inputs=[TensorSpec(name="input", dtype="float32", shape=(-1, 4))],
                    outputs=[TensorSpec(name="output", dtype="float32", shape=(-1, 3))],
                    source_model_sha256="0" * 64, artifacts=artifacts,
                    targets=[TargetInfo(name="x86-cpu", device_class="x86-cpu", backend="onnxruntime",
                                        precision="fp32")],
                    private_key=load_private_key(key))


def test_external_data_from_a_listed_file_is_served_from_verified_bytes(
        tmp_path: Path, keypair: Tuple[Path, Path], device_configs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _external_bundle(tmp_path / "b", keypair[0], "data.bin")
    monkeypatch.chdir(tmp_path)  # ORT must not resolve the location itself (from bytes: the working directory)
    backend = _load(tmp_path / "b", keypair, device_configs_dir)
    try:
        x = np.ones((2, 4), np.float32)
        np.testing.assert_allclose(backend.infer({"input": x})["output"], affine(x), rtol=1e-6)
    finally:
        backend.close()


@pytest.mark.parametrize("escape", ["../../../x.bin", "absolute", "unlisted.bin"])
def test_external_data_outside_the_manifest_is_refused(
        tmp_path: Path, keypair: Tuple[Path, Path], device_configs_dir: Path, escape: str) -> None:
    outside = tmp_path / "x.bin"
    outside.write_bytes(W.tobytes())  # present, so ORT 1.19 would read it
    location = str(outside) if escape == "absolute" else escape
    _external_bundle(tmp_path / "a" / "b" / "c", keypair[0], location, list_data=False)
    with pytest.raises(BundleError, match=r"initializer 'W' takes its values from .*not a file listed"):
        _load(tmp_path / "a" / "b" / "c", keypair, device_configs_dir)


def test_external_data_listed_as_a_model_is_refused(
        tmp_path: Path, keypair: Tuple[Path, Path], device_configs_dir: Path) -> None:
    _external_bundle(tmp_path / "b", keypair[0], "data.bin", data_kind="onnx")
    with pytest.raises(BundleError, match=r"'data\.bin', which the manifest lists as kind 'onnx', not 'onnx_data'"):
        _load(tmp_path / "b", keypair, device_configs_dir)
