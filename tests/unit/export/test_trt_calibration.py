"""The TensorRT calibration cache for DLA INT8: header, scale bits, and ranges from ORT's calibrator."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from export.errors import ExportError
from export.samples import SampleSet
from export.steps import trt_calibration


@pytest.mark.parametrize(("version", "number"), [("8.5.2", 8502), ("8.5.2.2", 8502), ("8.6.1.6", 8601),
                                                 ("10.3.0", 100300), ("10.13.2.6", 101302)])
def test_header_names_the_tensorrt_version_and_the_entropy2_algorithm(version: str, number: int) -> None:
    assert trt_calibration.cache_header(version) == f"TRT-{number}-EntropyCalibration2"


def test_unreadable_version_is_one_export_error() -> None:
    with pytest.raises(ExportError, match="cannot read the TensorRT version"):
        trt_calibration.cache_header("unknown")


def test_scale_is_the_symmetric_range_over_127_as_big_endian_float_bits() -> None:
    text = trt_calibration.format_cache({"input": (-0.5, 2.0), "relu": (0.0, 1.27), "zero": (0.0, 0.0)}, "8.5.2")
    lines = text.splitlines()
    assert lines[0] == "TRT-8502-EntropyCalibration2"
    # 2.0 / 127 as IEEE-754 float32, big-endian hex (what TensorRT writes)
    assert lines[1] == f"input: {struct.pack('>f', 2.0 / 127).hex()}"
    assert lines[2] == "relu: 3c23d70a"  # 0.01
    assert text.endswith("\n")
    header, scales = trt_calibration.parse_cache(text)
    assert header == "TRT-8502-EntropyCalibration2"
    assert scales["input"] == pytest.approx(2.0 / 127, rel=1e-7)
    assert scales["relu"] == pytest.approx(0.01, rel=1e-7)
    assert scales["zero"] > 0  # an all-zero tensor still gets a usable scale


def test_tensor_names_with_spaces_and_colons_round_trip() -> None:
    # TensorRT's own names look like "(Unnamed Layer* 4) [Fully Connected]_output"; ONNX names like "/a/b:0"
    ranges = {"(Unnamed Layer* 4) [Fully Connected]_output": (-1.0, 1.0), "/conv/Conv:0": (-3.0, 1.0)}
    _, scales = trt_calibration.parse_cache(trt_calibration.format_cache(ranges, "10.3.0"))
    assert scales == pytest.approx({"(Unnamed Layer* 4) [Fully Connected]_output": 1 / 127, "/conv/Conv:0": 3 / 127})


def test_non_finite_ranges_are_refused() -> None:
    with pytest.raises(ExportError, match="cannot go into a TensorRT cache"):
        trt_calibration.format_cache({"x": (float("-inf"), 1.0)}, "8.5.2")


def test_parse_refuses_what_is_not_a_cache() -> None:
    with pytest.raises(ExportError, match="not a TensorRT calibration cache"):
        trt_calibration.parse_cache('{"json": 1}\n')
    with pytest.raises(ExportError, match="line 2"):
        trt_calibration.parse_cache("TRT-8502-EntropyCalibration2\nx: 1.5\n")


def _relu_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [0.5, -1.0, 2.0] * 4)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"), helper.make_node("Relu", ["mm"], ["y"], name="r")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_cache_holds_every_float_tensor_with_its_minmax_scale(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    _relu_model(model)
    x = np.array([[1, -2, 0.5, 3], [-1, 4, 0, 0]], np.float32)
    mm = x @ np.array([[0.5, -1.0, 2.0]] * 4, np.float32).reshape(4, 3)
    out = tmp_path / "calib" / "t.cache"
    count = trt_calibration.write_cache(model, SampleSet.from_batched({"x": x}), "minmax", "8.5.2", out)
    header, scales = trt_calibration.parse_cache(out.read_text())
    assert count == 3 and header == "TRT-8502-EntropyCalibration2"
    assert scales == pytest.approx({"x": 4 / 127, "mm": float(np.abs(mm).max()) / 127,
                                    "y": float(np.maximum(mm, 0).max()) / 127}, rel=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "m.onnx"]  # ORT's temporary files are gone
