"""The engine builder against the recording fake ``tensorrt`` (8.5 and 10.x): calls, flags, DLA, profiles, progress."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Callable, Iterator, List

import numpy as np
import pytest
from trt_fakes.fake_tensorrt import FakePlan, make_tensorrt

from edge_runtime.backends.tensorrt import build as build_module
from edge_runtime.backends.tensorrt.build import BuildRequest, build_engine
from edge_runtime.config.device import BatchProfile, DimRange
from edge_runtime.errors import BundleError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TRT8, TRT10 = "8.5.2.2", "10.3.0.26"


def _model(nodes: List[Any], inputs: List[Any], outputs: List[Any], weights: List[Any]) -> bytes:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def affine_onnx() -> bytes:
    """x[batch, 4] @ W + B: dynamic batch only."""
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "B")
    return _model([helper.make_node("MatMul", ["input", "W"], ["xw"], name="mm"),
                   helper.make_node("Add", ["xw", "B"], ["output"], name="add")],
                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
                  [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])], [w, b])


def sequence_onnx() -> bytes:
    """tokens[batch, seq, 8] @ W then Softmax: a dynamic sequence dimension besides the batch."""
    w = numpy_helper.from_array(np.eye(8, dtype=np.float32), "W")
    return _model([helper.make_node("MatMul", ["tokens", "W"], ["h"], name="mm"),
                   helper.make_node("Softmax", ["h"], ["probs"], name="softmax", axis=-1)],
                  [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "seq", 8])],
                  [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", "seq", 8])], [w])


def conv_onnx() -> bytes:
    """image[batch, 1, 4, 4] → Conv → Relu → Flatten → Softmax: static but for the batch; DLA cannot run Softmax."""
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "W")
    return _model([helper.make_node("Conv", ["image", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                   helper.make_node("Relu", ["c"], ["r"], name="relu"),
                   helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
                   helper.make_node("Softmax", ["f"], ["scores"], name="softmax")],
                  [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 4, 4])],
                  [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 32])], [w])


def request(onnx_bytes: bytes, precision: str = "fp16", **changes: Any) -> BuildRequest:
    base = BuildRequest(onnx=onnx_bytes, precision=precision, batch=BatchProfile(1, 4, 8),
                        dynamic_dim=DimRange(1, 64, 128), workspace_mb=256, label="tiny v1 test")
    return replace(base, **changes)


def dla_request(precision: str = "fp16", **changes: Any) -> BuildRequest:
    return request(conv_onnx(), precision, **{"batch": BatchProfile(2, 2, 2), "dla_core": 1, **changes})


def names(trt: Any) -> List[str]:
    return [name for name, _ in trt.calls]


def args_of(trt: Any, name: str) -> List[Any]:
    return [args for called, args in trt.calls if called == name]


def plan_of(result: Any) -> FakePlan:
    plan = FakePlan.from_bytes(result.plan)
    assert plan is not None
    return plan


# --- the call sequence ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, flags", [(TRT8, 1), (TRT10, 0)])
def test_build_calls_tensorrt_in_order(version: str, flags: int) -> None:
    trt = make_tensorrt(version)
    result = build_engine(trt, request(affine_onnx()))
    wanted = ["Builder", "Builder.create_network", "OnnxParser", "OnnxParser.parse", "Builder.create_builder_config",
              "IBuilderConfig.set_memory_pool_limit", "IBuilderConfig.set_flag",
              "Builder.create_optimization_profile", "IOptimizationProfile.set_shape",
              "IBuilderConfig.add_optimization_profile", "IBuilderConfig.create_timing_cache",
              "IBuilderConfig.set_timing_cache", "Builder.build_serialized_network",
              "IBuilderConfig.get_timing_cache", "ITimingCache.serialize"]
    assert [n for n in names(trt) if n in wanted] == wanted
    assert args_of(trt, "Builder.create_network") == [(flags,)]  # EXPLICIT_BATCH on 8.5, nothing on 10.x
    assert args_of(trt, "IBuilderConfig.set_memory_pool_limit") == [(trt.MemoryPoolType.WORKSPACE, 256 << 20)]
    assert isinstance(result.plan, bytes) and isinstance(result.timing_cache, bytes)
    assert result.dla_layers is None
    assert plan_of(result).onnx == affine_onnx()


def test_timing_cache_is_loaded_and_the_grown_cache_returned() -> None:
    trt = make_tensorrt(TRT8)
    first = build_engine(trt, request(affine_onnx()))
    trt = make_tensorrt(TRT8)
    second = build_engine(trt, request(affine_onnx(), timing_cache=first.timing_cache))
    assert args_of(trt, "IBuilderConfig.create_timing_cache") == [(first.timing_cache,)]
    assert args_of(trt, "IBuilderConfig.set_timing_cache") == [(False,)]
    assert second.timing_cache is not None and len(second.timing_cache) > len(first.timing_cache or b"")


def test_without_a_timing_cache_an_empty_one_is_created() -> None:
    trt = make_tensorrt(TRT10)
    build_engine(trt, request(affine_onnx()))
    assert args_of(trt, "IBuilderConfig.create_timing_cache") == [(b"",)]


# --- precision --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [TRT8, TRT10])
@pytest.mark.parametrize("precision, flags", [("fp32", []), ("fp16", ["FP16"]), ("int8", ["INT8"])])
def test_precision_flags(version: str, precision: str, flags: List[str]) -> None:
    trt = make_tensorrt(version)
    plan = plan_of(build_engine(trt, request(affine_onnx(), precision)))
    assert plan.flags == flags
    assert plan.dla_core is None
    # GPU INT8 is explicit quantization (Q/DQ in the ONNX): no calibrator, even when a cache is at hand
    assert not any(name == "IBuilderConfig.int8_calibrator" for name in names(trt))
    assert plan.calibration_cache is False


def test_gpu_int8_ignores_a_calibration_cache() -> None:
    trt = make_tensorrt(TRT8)
    plan = plan_of(build_engine(trt, request(affine_onnx(), "int8", calibration_cache=b"TRT-8502-EntropyCalibration2")))
    assert "IBuilderConfig.int8_calibrator" not in names(trt)
    assert plan.calibration_cache is False


def test_unknown_precision_is_refused_before_tensorrt_is_touched() -> None:
    trt = make_tensorrt(TRT8)
    with pytest.raises(BundleError, match="unknown precision 'bf16'"):
        build_engine(trt, request(affine_onnx(), "bf16"))
    assert trt.calls == []


# --- optimization profile ---------------------------------------------------------------------------------------

def test_profile_takes_the_batch_axis_from_batch_and_other_dynamic_dims_from_dynamic_dim() -> None:
    trt = make_tensorrt(TRT8)
    plan = plan_of(build_engine(trt, request(sequence_onnx())))
    assert args_of(trt, "IOptimizationProfile.set_shape") == [("tokens", (1, 1, 8), (4, 64, 8), (8, 128, 8))]
    assert plan.profile == {"tokens": [[1, 1, 8], [4, 64, 8], [8, 128, 8]]}


def test_profile_keeps_fixed_dimensions() -> None:
    trt = make_tensorrt(TRT10)
    build_engine(trt, request(conv_onnx()))
    assert args_of(trt, "IOptimizationProfile.set_shape") == [("image", (1, 1, 4, 4), (4, 1, 4, 4), (8, 1, 4, 4))]


# --- DLA --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [TRT8, TRT10])
def test_dla_fp16_build_targets_the_core_with_gpu_fallback_and_a_static_profile(version: str) -> None:
    trt = make_tensorrt(version)
    result = build_engine(trt, dla_request())
    assert args_of(trt, "IBuilderConfig.default_device_type") == [(trt.DeviceType.DLA,)]
    assert args_of(trt, "IBuilderConfig.DLA_core") == [(1,)]
    assert (trt.BuilderFlag.GPU_FALLBACK,) in args_of(trt, "IBuilderConfig.set_flag")
    assert args_of(trt, "IOptimizationProfile.set_shape") == [("image", (2, 1, 4, 4), (2, 1, 4, 4), (2, 1, 4, 4))]
    plan = plan_of(result)
    assert plan.dla_core == 1
    assert plan.flags == ["FP16", "GPU_FALLBACK"]


def test_dla_layers_are_counted_and_reported() -> None:
    trt = make_tensorrt(TRT8)
    lines: List[str] = []
    result = build_engine(trt, dla_request(), lines.append)
    assert result.dla_layers == (3, 4)  # conv, relu, flatten on DLA; softmax on the GPU
    assert args_of(trt, "IBuilderConfig.can_run_on_DLA") == [("conv",), ("relu",), ("flatten",), ("softmax",)]
    assert "tiny v1 test: DLA runs 3 of 4 layers; 1 fall back to the GPU" in lines


def test_dla_layer_count_follows_what_dla_cannot_run() -> None:
    trt = make_tensorrt(TRT8, dla_unsupported_ops={"Conv", "Softmax"})
    assert build_engine(trt, dla_request()).dla_layers == (2, 4)


def test_dla_int8_reads_the_calibration_cache_through_a_calibrator() -> None:
    trt = make_tensorrt(TRT8)
    plan = plan_of(build_engine(trt, dla_request("int8", calibration_cache=b"TRT-8502-EntropyCalibration2\n")))
    [(calibrator,)] = args_of(trt, "IBuilderConfig.int8_calibrator")
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2)
    assert calibrator.read_calibration_cache() == b"TRT-8502-EntropyCalibration2\n"
    assert calibrator.get_batch(["image"]) is None
    assert plan.calibration_cache is True
    assert plan.flags == ["FP16", "GPU_FALLBACK", "INT8"]  # FP16 too: what DLA cannot run in INT8 stays on it


def test_dla_int8_without_a_calibration_cache_says_where_it_comes_from() -> None:
    trt = make_tensorrt(TRT8)
    with pytest.raises(BundleError, match=r"writes calib/<target>\.cache for DLA INT8 targets"):
        build_engine(trt, dla_request("int8"))
    assert trt.calls == []


def test_fp32_on_dla_is_refused() -> None:
    trt = make_tensorrt(TRT8)
    with pytest.raises(BundleError, match="DLA runs FP16/INT8 only"):
        build_engine(trt, dla_request("fp32"))
    assert "Builder.build_serialized_network" not in names(trt)


def test_dynamic_dimensions_on_dla_are_refused() -> None:
    trt = make_tensorrt(TRT8)
    bad = request(sequence_onnx(), batch=BatchProfile(1, 1, 1), dla_core=0)
    with pytest.raises(BundleError, match="DLA: static shapes only, and input 'tokens' has dynamic dimension"):
        build_engine(trt, bad)
    assert "Builder.build_serialized_network" not in names(trt)


def test_a_batch_range_on_dla_is_refused() -> None:
    with pytest.raises(BundleError, match="DLA: static shapes only, one engine per batch size"):
        build_engine(make_tensorrt(TRT8), dla_request(batch=BatchProfile(1, 2, 4)))


# --- failures: one line each ------------------------------------------------------------------------------------

def test_parse_failure_is_one_line_with_the_parser_errors() -> None:
    trt = make_tensorrt(TRT8)
    with pytest.raises(BundleError) as caught:
        build_engine(trt, request(b"not an onnx model"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("TensorRT cannot parse the ONNX of tiny v1 test: ModelImporter.cpp:730")
    assert "Builder.create_builder_config" not in names(trt)


def test_build_failure_is_one_line_with_the_logged_errors() -> None:
    trt = make_tensorrt(TRT10, build_error="Internal Error (could not find any implementation for node mm\n"
                                           "  [ForeignNode])")
    with pytest.raises(BundleError) as caught:
        build_engine(trt, request(affine_onnx()))
    assert str(caught.value) == ("TensorRT could not build tiny v1 test: Internal Error (could not find any "
                                 "implementation for node mm [ForeignNode])")
    assert "ITimingCache.serialize" not in names(trt)


# --- progress -----------------------------------------------------------------------------------------------------

class StepClock:
    """A clock that moves 10 s each time it is read."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


@pytest.fixture()
def live_threads() -> Iterator[Callable[[], List[threading.Thread]]]:
    before = set(threading.enumerate())
    yield lambda: [t for t in threading.enumerate() if t not in before and t.name.startswith("trt-build-ticker")]


def _slow_build(trt: Any, ticks: threading.Event, fail: bool) -> None:
    """Make build_serialized_network wait until the ticker has spoken twice (no sleeps: an event)."""
    original = trt.Builder.build_serialized_network

    def waiting(self: Any, network: Any, config: Any) -> Any:
        assert ticks.wait(30), "the ticker never reported"
        if fail:
            raise RuntimeError("out of memory")
        return original(self, network, config)

    trt.Builder.build_serialized_network = waiting


def test_8_5_reports_elapsed_time_from_a_timer_thread(live_threads: Callable[[], List[threading.Thread]]) -> None:
    trt = make_tensorrt(TRT8)
    lines: List[str] = []
    ticks = threading.Event()

    def report(line: str) -> None:
        lines.append(line)
        if sum("…" in x and x.endswith(" s") for x in lines) >= 2:
            ticks.set()

    _slow_build(trt, ticks, fail=False)
    build_engine(trt, request(affine_onnx()), report, clock=StepClock(), interval_s=0.001)
    assert lines[0] == "building tiny v1 test (fp16, batch 1-8) with TensorRT 8.5.2…"
    assert lines[1] == "building tiny v1 test… 10 s"  # start read at 110, the first tick at 120
    assert lines[-1].startswith("built tiny v1 test in ")
    assert live_threads() == []


def test_the_timer_thread_stops_when_the_build_raises(live_threads: Callable[[], List[threading.Thread]]) -> None:
    trt = make_tensorrt(TRT8)
    lines: List[str] = []
    ticks = threading.Event()

    def report(line: str) -> None:
        lines.append(line)
        if line.endswith(" s"):
            ticks.set()

    _slow_build(trt, ticks, fail=True)
    with pytest.raises(RuntimeError, match="out of memory"):
        build_engine(trt, request(affine_onnx()), report, clock=StepClock(), interval_s=0.001)
    assert live_threads() == []


def test_8_5_has_no_progress_monitor() -> None:
    trt = make_tensorrt(TRT8)
    build_engine(trt, request(affine_onnx()))
    assert not hasattr(trt, "IProgressMonitor")
    assert "IBuilderConfig.progress_monitor" not in names(trt)
    with pytest.raises(AttributeError):  # as on 8.5: the config has no such attribute
        trt.IBuilderConfig().progress_monitor = object()


def test_10_x_reports_the_builders_phases(live_threads: Callable[[], List[threading.Thread]]) -> None:
    trt = make_tensorrt(TRT10)
    lines: List[str] = []
    build_engine(trt, request(affine_onnx()), lines.append, clock=StepClock())
    [(monitor,)] = args_of(trt, "IBuilderConfig.progress_monitor")
    assert isinstance(monitor, trt.IProgressMonitor)
    assert lines[1:4] == ["building tiny v1 test: Building engine (2 steps)… 10 s",
                          "building tiny v1 test: Computing costs (3 steps)… 20 s",
                          "building tiny v1 test: Serializing… 30 s"]  # per-layer tactic phases left out
    assert lines[-1] == "built tiny v1 test in 40 s"
    assert live_threads() == []  # 10.x needs no timer thread


def test_removed_tensorrt_10_names_are_not_used() -> None:
    trt = make_tensorrt(TRT10)
    build_engine(trt, dla_request("int8", calibration_cache=b"cache"))
    config = trt.IBuilderConfig()
    assert not hasattr(config, "max_workspace_size")
    assert not hasattr(trt.Builder(None), "build_engine")
    assert not any("STRICT_TYPES" in str(args) for _, args in trt.calls)


def test_module_exports_the_interface() -> None:
    assert set(build_module.__all__) >= {"BuildRequest", "BuildResult", "build_engine"}
