"""The TensorRT runner through its seam: fake ``tensorrt`` and ``pycuda`` modules that record every call.

The fake engine runs the plan's ONNX with ONNX Runtime on the bytes at its tensor addresses in the
fake CUDA memory, and queued work runs at ``synchronize``: a missing copy, a wrong address or a
missing synchronize gives wrong numbers here, as on a GPU.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np
import pytest
from trt_fakes.fake_pycuda import FakeCuda
from trt_fakes.fake_tensorrt import FakePlan, make_tensorrt
from trt_fakes.fake_trt_runtime import plan_from_onnx

from edge_runtime.backends.base import BackendOptions
from edge_runtime.backends.tensorrt.loader import LoadedEngine
from edge_runtime.backends.tensorrt.runner import TensorRTBackend
from edge_runtime.bundle.fingerprint import HostFingerprint
from edge_runtime.bundle.manifest import TargetInfo, TensorSpec
from edge_runtime.bundle.signing import load_private_key, load_public_key
from edge_runtime.bundle.verify import VerifiedBundle, open_bundle
from edge_runtime.bundle.writer import ArtifactSpec, finalize_bundle
from edge_runtime.config import DeviceConfig, load_device_config
from edge_runtime.errors import BundleError, ConfigError, InferenceError, MemoryBudgetError, RequestError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

XAVIER = HostFingerprint(tensorrt_version="8.5.2.2", compute_capability="7.2", l4t="35.4.1",
                         device_model="NVIDIA Jetson AGX Xavier Developer Kit", dla_cores=2)
NO_BUNDLE = cast(VerifiedBundle, object())  # the stub loaders below do not read it
MAX_BATCH = 4


def _model(nodes: List[Any], inputs: List[Any], outputs: List[Any], initializers: Sequence[Any] = ()) -> bytes:
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime 1.19 (Python 3.8) reads it
    return cast(bytes, model.SerializeToString())


def affine_onnx() -> bytes:
    """``y = x * 2 + 1`` on float32 ``x [batch, 4]``."""
    return _model(
        [helper.make_node("Mul", ["x", "two"], ["x2"]), helper.make_node("Add", ["x2", "one"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("two", 2), ("one", 1))])


def sequence_onnx() -> bytes:
    """``y = x * 3`` and ``s = sum(x, axis=1)`` on float32 ``x [batch, seq]``: a dynamic sequence dimension."""
    return _model(
        [helper.make_node("Mul", ["x", "three"], ["y"]),
         helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.array(3, np.float32), "three"), numpy_helper.from_array(np.array([1]), "axes")])


DTYPES = {"f": (TensorProto.FLOAT, np.float32, 3), "h": (TensorProto.FLOAT16, np.float16, 5),
          "c": (TensorProto.INT8, np.int8, 7), "i": (TensorProto.INT32, np.int32, 2),
          "b": (TensorProto.BOOL, np.bool_, 9)}


def dtypes_onnx(kinds: Dict[str, Tuple[int, Any, int]]) -> bytes:
    """One Identity per dtype: input ``<k>_in [batch, n]`` → output ``<k>_out``."""
    return _model(
        [helper.make_node("Identity", [f"{k}_in"], [f"{k}_out"]) for k in kinds],
        [helper.make_tensor_value_info(f"{k}_in", t, ["batch", n]) for k, (t, _, n) in kinds.items()],
        [helper.make_tensor_value_info(f"{k}_out", t, ["batch", n]) for k, (t, _, n) in kinds.items()])


def batch_profile(names: Sequence[str], rest: Sequence[int], high: int = 32) -> Dict[str, List[List[int]]]:
    return {name: [[1, *rest], [8, *rest], [high, *rest]] for name in names}


def stub_loader(plans: Sequence[Tuple[FakePlan, Optional[int]]], corrupt: bool = False) -> Callable[..., Any]:
    """A ``load_engines`` that deserializes ``plans`` with the runner's Runtime, as the real loader does."""

    def load(trt: Any, runtime: Any, bundle: Any, device: Any, options: Any, host: Any,
             log_errors: Optional[List[str]] = None) -> List[LoadedEngine]:
        loaded = []
        for plan, static in plans:
            data = b"not a plan" if corrupt else plan.to_bytes()
            engine = runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise BundleError(f"TensorRT cannot deserialize the plan: {'; '.join(log_errors or [])}")
            loaded.append(LoadedEngine(engine, static, len(data), f"plan-{static}"))
        return loaded

    return load


@dataclasses.dataclass
class Rig:
    calls: List[Tuple[str, Tuple[Any, ...]]]
    cuda: FakeCuda
    trt: Any
    backend: TensorRTBackend
    device: DeviceConfig
    options: BackendOptions

    def load(self) -> TensorRTBackend:
        self.backend.load(NO_BUNDLE, self.device, self.options)
        return self.backend

    def names(self, *wanted: str) -> List[str]:
        return [name for name, _ in self.calls if name in wanted]

    def args(self, name: str) -> List[Tuple[Any, ...]]:
        return [args for called, args in self.calls if called == name]


@pytest.fixture()
def xavier(device_configs_dir: Path) -> DeviceConfig:
    return load_device_config(device_configs_dir / "agx-xavier.yaml")


def make_rig(device: DeviceConfig, plans: Sequence[Tuple[FakePlan, Optional[int]]], zero_copy: bool = False,
             version: str = "8.5.2.2", memory_check: Optional[Callable[[float], None]] = None,
             corrupt: bool = False, **cuda_options: Any) -> Rig:
    calls: List[Tuple[str, Tuple[Any, ...]]] = []
    cuda = FakeCuda(calls, **cuda_options)
    trt = make_tensorrt(version, calls, cuda_memory=cuda)
    device = dataclasses.replace(device, tensorrt=dataclasses.replace(device.tensorrt, zero_copy=zero_copy))
    backend = TensorRTBackend(trt=trt, cuda=cuda, host=XAVIER, load_engines=stub_loader(plans, corrupt))
    return Rig(calls, cuda, trt, backend, device, BackendOptions(max_batch_size=MAX_BATCH, memory_check=memory_check))


def affine_rig(device: DeviceConfig, **options: Any) -> Rig:
    return make_rig(device, [(plan_from_onnx(affine_onnx(), profile=batch_profile(["x"], [4])), None)], **options)


def assert_all_released(rig: Rig) -> None:
    assert rig.cuda.live() == [], "a buffer was not freed"
    assert rig.cuda.current_context() is None, "the CUDA context is still current"
    assert rig.names("cuda.ctx.push").__len__() == rig.names("cuda.ctx.pop").__len__() == 1
    assert len(rig.names("cuda.ctx.detach")) == 1


def _x(batch: int, width: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, width), dtype=np.float32)


INFER_CALLS = ("cuda.ctx.push", "Runtime", "runtime.deserialize_cuda_engine", "engine.create_execution_context",
               "context.set_input_shape", "context.set_tensor_address", "cuda.memcpy_htod_async",
               "context.execute_async_v3", "cuda.memcpy_dtoh_async", "cuda.stream.synchronize", "cuda.ctx.pop")


def test_call_order_for_load_and_pinned_inference(xavier: DeviceConfig) -> None:
    rig = affine_rig(xavier)
    backend = rig.load()
    x = _x(MAX_BATCH)
    np.testing.assert_allclose(backend.infer({"x": x})["y"], x * 2 + 1, rtol=1e-6)
    backend.close()
    assert rig.names(*INFER_CALLS) == [
        "cuda.ctx.push", "Runtime", "runtime.deserialize_cuda_engine", "engine.create_execution_context",
        "context.set_input_shape", "context.set_tensor_address", "context.set_tensor_address",
        "cuda.memcpy_htod_async", "context.execute_async_v3", "cuda.memcpy_dtoh_async", "cuda.stream.synchronize",
        "cuda.ctx.pop"]
    stream = rig.args("cuda.Stream")
    assert stream == [()] and rig.args("context.execute_async_v3")[0][0] == rig.args("cuda.stream.synchronize")[0][0]
    assert backend.inputs == (TensorSpec("x", "float32", (-1, 4)),)
    assert backend.outputs == (TensorSpec("y", "float32", (-1, 4)),)
    assert backend.max_batch_size == MAX_BATCH and backend.artifact == "plan-None"
    assert_all_released(rig)


def test_pinned_engine_addresses_are_the_device_buffers_and_copies_move_the_request_bytes(xavier: DeviceConfig) -> None:
    rig = affine_rig(xavier)
    backend = rig.load()
    devices = {m.address: m.nbytes for m in rig.cuda.live() if m.kind == "device"}
    addresses = dict((name, address) for name, address in rig.args("context.set_tensor_address"))
    assert set(addresses.values()) == set(devices) and devices[addresses["x"]] == MAX_BATCH * 4 * 4
    backend.infer({"x": _x(3)})
    assert rig.args("cuda.memcpy_htod_async")[-1][:2] == (addresses["x"], 3 * 4 * 4)
    assert rig.args("cuda.memcpy_dtoh_async")[-1][:2] == (addresses["y"], 3 * 4 * 4)
    backend.close()


def test_zero_copy_makes_no_copies_and_the_engine_uses_the_mapped_host_pointers(xavier: DeviceConfig) -> None:
    rig = affine_rig(xavier, zero_copy=True)
    backend = rig.load()
    mapped = {m.address for m in rig.cuda.live() if m.kind == "mapped"}
    assert {m.kind for m in rig.cuda.live()} == {"mapped"}
    assert {address for _, address in rig.args("context.set_tensor_address")} == mapped and len(mapped) == 2
    for batch in (1, 3, MAX_BATCH):
        x = _x(batch, seed=batch)
        np.testing.assert_allclose(backend.infer({"x": x})["y"], x * 2 + 1, rtol=1e-6)
    assert rig.names("cuda.memcpy_htod_async", "cuda.memcpy_dtoh_async", "cuda.mem_alloc") == []
    backend.close()
    assert_all_released(rig)


def test_zero_copy_on_a_device_that_cannot_map_host_memory_is_refused(xavier: DeviceConfig) -> None:
    rig = affine_rig(xavier, zero_copy=True, can_map_host_memory=False)
    with pytest.raises(ConfigError, match=r"cannot map host memory: set tensorrt\.zero_copy: false"):
        rig.load()
    assert_all_released(rig)


@pytest.mark.parametrize("zero_copy", [False, True], ids=["pinned", "zero-copy"])
def test_dynamic_batch_and_sequence_match_onnxruntime(xavier: DeviceConfig, zero_copy: bool) -> None:
    model = sequence_onnx()
    plan = plan_from_onnx(model, profile={"x": [[1, 1], [8, 128], [32, 512]]})
    rig = make_rig(xavier, [(plan, None)], zero_copy=zero_copy)
    backend = rig.load()
    assert backend.inputs == (TensorSpec("x", "float32", (-1, -1)),)
    sizes = sorted(m.nbytes for m in rig.cuda.live() if m.kind in ("device", "mapped"))
    assert sizes == [MAX_BATCH * 4] + [MAX_BATCH * 512 * 4] * 2  # s [4]; x, y [4, 512]: dynamic_dim.max
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    for batch, seq in ((2, 7), (MAX_BATCH, 512), (1, 1), (3, 100)):
        x = _x(batch, seq, seed=seq)
        got = backend.infer({"x": x})
        want = dict(zip(["y", "s"], session.run(None, {"x": x})))
        assert got["y"].shape == (batch, seq) and got["s"].shape == (batch,)
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6)
        np.testing.assert_allclose(got["s"], want["s"], rtol=1e-5)
    backend.close()


def test_input_shape_is_set_only_when_it_changes(xavier: DeviceConfig) -> None:
    rig = affine_rig(xavier)
    backend = rig.load()
    del rig.calls[:]
    for batch in (2, 2, 3, 3, 2):
        backend.infer({"x": _x(batch)})
    assert rig.args("context.set_input_shape") == [("x", (2, 4)), ("x", (3, 4)), ("x", (2, 4))]
    backend.close()


def test_shape_outside_the_profile_is_a_request_error_and_the_model_keeps_serving(xavier: DeviceConfig) -> None:
    plan = plan_from_onnx(sequence_onnx(), profile={"x": [[1, 2], [8, 128], [32, 512]]})  # engine: seq >= 2
    rig = make_rig(xavier, [(plan, None)])
    backend = rig.load()
    with pytest.raises(RequestError, match=r"input 'x' has shape \[1, 513\]; .* takes \[1..4, 1..512\]") as caught:
        backend.infer({"x": _x(1, 513)})  # over tensorrt.dynamic_dim.max: refused before TensorRT sees it
    assert caught.value.http_status == 400
    assert ("x", (1, 513)) not in rig.args("context.set_input_shape")
    with pytest.raises(RequestError, match=r"\[1, 1\].*outside the profile"):
        backend.infer({"x": _x(1, 1)})  # in the config's range, but TensorRT's set_input_shape says False
    x = _x(2, 9)
    np.testing.assert_allclose(backend.infer({"x": x})["y"], x * 3, rtol=1e-6)
    backend.close()


def test_buffer_sizes_follow_dtype_and_max_shape(xavier: DeviceConfig) -> None:
    rig = make_rig(xavier, [(plan_from_onnx(dtypes_onnx(DTYPES)), None)])
    backend = rig.load()
    by_address = {m.address: m.nbytes for m in rig.cuda.live() if m.kind == "device"}
    addresses = dict(rig.args("context.set_tensor_address"))
    for kind, (_, dtype, width) in DTYPES.items():
        for name in (f"{kind}_in", f"{kind}_out"):
            assert by_address[addresses[name]] == MAX_BATCH * width * np.dtype(dtype).itemsize, name
    hosts = sorted((str(m.__array_interface__["typestr"]), m.nbytes) for m in rig.cuda.live() if m.kind == "host")
    assert ("<f2", MAX_BATCH * 5 * 2) in hosts and ("|b1", MAX_BATCH * 9) in hosts
    inputs = {f"{k}_in": (np.arange(3 * w) % 2).reshape(3, w).astype(d) for k, (_, d, w) in DTYPES.items()}
    outputs = backend.infer(inputs)
    for kind in DTYPES:
        np.testing.assert_array_equal(outputs[f"{kind}_out"], inputs[f"{kind}_in"])
        assert outputs[f"{kind}_out"].dtype == inputs[f"{kind}_in"].dtype
    backend.close()


def test_int64_tensors_on_tensorrt_10(xavier: DeviceConfig) -> None:
    kinds = {"l": (TensorProto.INT64, np.int64, 3)}
    rig = make_rig(xavier, [(plan_from_onnx(dtypes_onnx(kinds), trt_version="10.3.0"), None)], version="10.3.0")
    backend = rig.load()
    assert sorted(m.nbytes for m in rig.cuda.live() if m.kind == "device") == [MAX_BATCH * 3 * 8] * 2
    x = np.arange(6, dtype=np.int64).reshape(2, 3) - 2**40
    np.testing.assert_array_equal(backend.infer({"l_in": x})["l_out"], x)
    backend.close()


def test_memory_check_comes_before_any_execution_context(xavier: DeviceConfig) -> None:
    seen: List[float] = []
    rig = affine_rig(xavier, memory_check=lambda mib: (seen.append(mib), rig.calls.append(("memory_check", ()))))
    backend = rig.load()
    plan_size = len(plan_from_onnx(affine_onnx(), profile=batch_profile(["x"], [4])).to_bytes())
    assert seen == [((1 << 20) + plan_size) / 2**20] and backend.memory_mb == seen[0]
    assert rig.names("memory_check", "engine.create_execution_context") == ["memory_check",
                                                                            "engine.create_execution_context"]
    backend.close()


def _refuse(mib: float) -> None:
    raise MemoryBudgetError(f"the model needs {mib:.1f} MiB")


FAILED_LOADS = {
    "mem_alloc-3rd": (lambda cuda: cuda.fail("mem_alloc", 3), {}, MemoryBudgetError, "CUDA: allocating"),
    "pagelocked-2nd": (lambda cuda: cuda.fail("pagelocked_empty", 2), {}, MemoryBudgetError, "page-locked"),
    "mapped-3rd": (lambda cuda: cuda.fail("pagelocked_empty", 3), {"zero_copy": True}, MemoryBudgetError, "mapped"),
    "memory-budget": (None, {"memory_check": _refuse}, MemoryBudgetError, "the model needs"),
    "deserialize-none": (None, {"corrupt": True}, BundleError, "Magic tag does not match"),
    "stream": (lambda cuda: cuda.fail("Stream", 1), {}, MemoryBudgetError, "creating a stream"),
}


@pytest.mark.parametrize("inject, options, error, message", list(FAILED_LOADS.values()), ids=list(FAILED_LOADS))
def test_a_failed_load_frees_everything_it_took(xavier: DeviceConfig, inject: Any, options: Dict[str, Any],
                                                error: type, message: str) -> None:
    rig = make_rig(xavier, [(plan_from_onnx(dtypes_onnx(DTYPES)), None)], **options)
    if inject is not None:
        inject(rig.cuda)
    with pytest.raises(error, match=message):
        rig.load()
    assert not rig.backend.loaded
    assert_all_released(rig)
    if error is MemoryBudgetError and "memory_check" in options:
        assert rig.names("engine.create_execution_context", "cuda.mem_alloc") == []


def test_no_execution_context_or_a_data_dependent_output_fails_the_load_cleanly(xavier: DeviceConfig) -> None:
    rig = affine_rig(xavier)
    rig.trt.fail_context = True
    with pytest.raises(BundleError, match=r"cannot create an execution context for plan-None: .*out of device memory"):
        rig.load()
    assert_all_released(rig)
    rig = affine_rig(xavier)
    rig.trt.data_dependent_outputs = {"y"}
    with pytest.raises(BundleError, match="output 'y' has a data-dependent shape"):
        rig.load()
    assert_all_released(rig)


def test_a_failed_run_is_an_inference_error_with_tensorrt_s_message(xavier: DeviceConfig) -> None:
    rig = affine_rig(xavier)
    backend = rig.load()
    rig.trt.fail_execute = True
    with pytest.raises(InferenceError, match="TensorRT failed to run the engine: enqueueV3: an injected failure"):
        backend.infer({"x": _x(1)})
    backend.close()
    assert_all_released(rig)


def test_close_frees_every_buffer_once_and_is_safe_twice(xavier: DeviceConfig) -> None:
    rig = make_rig(xavier, [(plan_from_onnx(dtypes_onnx(DTYPES)), None)])
    backend = rig.load()
    assert len(rig.cuda.live()) == 2 * 2 * len(DTYPES)  # a host and a device buffer per tensor
    backend.close()
    backend.close()
    assert_all_released(rig)
    assert len(rig.names("cuda.free")) == 2 * 2 * len(DTYPES)  # the fake raises on a second free


def test_cuda_runs_on_the_thread_that_loaded_the_model(xavier: DeviceConfig) -> None:
    rig = affine_rig(xavier)
    results: Dict[str, Any] = {}
    loaded, checked = threading.Event(), threading.Event()

    def worker() -> None:  # as serving/instance.py: load, run and close on one thread
        backend = rig.load()
        results["y"] = backend.infer({"x": _x(2)})["y"]
        loaded.set()
        checked.wait(30)
        backend.close()

    thread = threading.Thread(target=worker)
    thread.start()
    loaded.wait(30)
    try:
        assert rig.cuda.current_context() is None  # never pushed on this (main) thread
        with pytest.raises(InferenceError, match="runs on the thread that loaded it"):
            rig.backend.infer({"x": _x(1)})
    finally:
        checked.set()
        thread.join()
    np.testing.assert_allclose(results["y"], _x(2) * 2 + 1, rtol=1e-6)
    assert rig.args("cuda.ctx.push") == rig.args("cuda.ctx.pop") == [(thread.ident,)]
    assert rig.cuda.live() == []


def test_dla_static_engines_run_the_smallest_batch_that_fits_zero_padded(xavier: DeviceConfig) -> None:
    model = affine_onnx()
    plans = [(plan_from_onnx(model, static_shapes={"x": [b, 4], "y": [b, 4]}), b) for b in (4, 1)]
    rig = make_rig(xavier, plans)
    backend = rig.load()
    assert backend.inputs == (TensorSpec("x", "float32", (-1, 4)),) and backend.max_batch_size == 4
    assert rig.names("context.set_input_shape") == []  # static shapes: nothing to set
    assert backend.artifact == "plan-4; plan-1"
    for batch, copied in ((3, 4), (1, 1), (4, 4), (2, 4)):
        x = _x(batch, seed=batch)
        y = backend.infer({"x": x})["y"]
        assert y.shape == (batch, 4)
        np.testing.assert_allclose(y, x * 2 + 1, rtol=1e-6)
        assert rig.args("cuda.memcpy_htod_async")[-1][1] == copied * 4 * 4
    backend.close()
    assert_all_released(rig)


def test_results_are_copies_not_views_of_the_reused_buffers(xavier: DeviceConfig) -> None:
    rig = affine_rig(xavier, zero_copy=True)
    backend = rig.load()
    first = backend.infer({"x": _x(2, seed=1)})["y"]
    backend.infer({"x": _x(2, seed=2)})
    np.testing.assert_allclose(first, _x(2, seed=1) * 2 + 1, rtol=1e-6)
    backend.close()


def test_through_the_real_loader_with_a_fake_plan_in_the_bundle(
        tmp_path: Path, keypair: Tuple[Path, Path], xavier: DeviceConfig) -> None:
    model = affine_onnx()
    directory = tmp_path / "bundle"
    (directory / "engines").mkdir(parents=True)
    (directory / "model.onnx").write_bytes(model)
    (directory / "engines" / "agx-xavier.plan").write_bytes(
        plan_from_onnx(model, profile=batch_profile(["x"], [4])).to_bytes())
    target = TargetInfo(name="agx-xavier", device_class="jetson-agx-xavier", backend="tensorrt", precision="fp16",
                        compute_capability="7.2", tensorrt_version="8.5.2.2", l4t="35.4.1")
    finalize_bundle(directory, name="affine", version="1", inputs=[TensorSpec("x", "float32", (-1, 4))],
                    outputs=[TensorSpec("y", "float32", (-1, 4))], source_model_sha256="0" * 64,
                    artifacts=[ArtifactSpec("model.onnx", "onnx", None, "fp32"),
                               ArtifactSpec("engines/agx-xavier.plan", "engine", "agx-xavier", "fp16")],
                    targets=[target], private_key=load_private_key(keypair[0]))
    bundle = open_bundle(directory, [load_public_key(keypair[1])])
    calls: List[Tuple[str, Tuple[Any, ...]]] = []
    cuda = FakeCuda(calls)
    backend = TensorRTBackend(trt=make_tensorrt("8.5.2.2", calls, cuda_memory=cuda), cuda=cuda, host=XAVIER)
    backend.load(bundle, xavier, BackendOptions(max_batch_size=MAX_BATCH))
    assert backend.artifact == "engines/agx-xavier.plan"
    x = _x(3)
    np.testing.assert_allclose(backend.infer({"x": x})["y"], x * 2 + 1, rtol=1e-6)
    backend.close()
    assert cuda.live() == [] and [n for n, _ in calls if n.startswith("builder")] == []
