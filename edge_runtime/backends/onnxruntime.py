"""The embedded default backend: ONNX Runtime on the CPU, so everything runs on a laptop too.

Hot path: for models whose shapes are fixed except for the batch axis, input and output arrays
are allocated once at the largest batch size, and each batch size binds its leading rows through
IOBinding (the CPU counterpart of pinned CUDA buffers); a request then costs one copy in and one
copy out, and ONNX Runtime allocates no I/O tensors. One set of buffers instead of one per batch
size: for a ResNet-18 served at batches 1 to 8 that is 8 images of input buffers, not 36 (16 MB).
The copy out is needed because the output arrays are reused by the next batch while the previous
one is still being serialized. Other models use ``session.run``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from edge_runtime.backends.base import Backend, BackendOptions, batch_limit
from edge_runtime.backends.onnx_external_data import external_initializers
from edge_runtime.bundle.manifest import Artifact, Manifest, TensorSpec
from edge_runtime.bundle.verify import VerifiedBundle
from edge_runtime.config import DeviceConfig
from edge_runtime.errors import BackendUnavailableError, BundleError, InferenceError

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError.missing_module("onnxruntime", "cpu") from exc
    return onnxruntime


def select_onnx_artifact(manifest: Manifest, device: DeviceConfig) -> Artifact:
    """The ONNX file to run on ``device``: its target's own model, else the portable FP32 one."""
    target = next((t for t in manifest.targets if t.name == device.name), None)
    if target is not None and target.backend == "onnxruntime":
        own = manifest.artifacts_of("onnx", target.name)
        if own:
            return own[0]
    portable = [a for a in manifest.artifacts_of("onnx") if a.target is None]
    if not portable:
        raise BundleError(f"bundle '{manifest.name}' has no ONNX model for '{device.name}' and no portable model")
    log.warning("bundle '%s': %s; serving the portable %s", manifest.name, _why_portable(manifest, device.name),
                portable[0].path)
    return portable[0]


def _why_portable(manifest: Manifest, device_name: str) -> str:
    """Why a device's own model is not used: no such target, another backend, or no ONNX file of its own."""
    target = next((t for t in manifest.targets if t.name == device_name), None)
    if target is None:
        known = ", ".join(t.name for t in manifest.targets) or "none"
        return f"no target '{device_name}' (targets: {known})"
    if target.backend != "onnxruntime":
        return f"target '{device_name}' is built for {target.backend}, not onnxruntime"
    return f"target '{device_name}' has no ONNX model of its own"


def _spec(node: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(node.type)
    if dtype is None:
        raise BundleError(f"tensor '{node.name}' has type {node.type}, which this runtime does not serve")
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in node.shape)
    return TensorSpec(name=node.name, dtype=dtype, shape=shape)


@dataclass
class _Bound:
    """One batch size's binding: views of the first rows of the max-batch buffers."""

    binding: Any
    inputs: Dict[str, np.ndarray]
    outputs: Dict[str, np.ndarray]


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime, CPUExecutionProvider."""

    name = "onnxruntime"

    def __init__(self) -> None:
        super().__init__()
        self._session: Any = None
        self._bound: Dict[int, _Bound] = {}
        self._buffers: Dict[str, Dict[str, np.ndarray]] = {}  # "inputs"/"outputs" -> name -> max-batch array
        self._static = False
        self._external: List[Any] = []

    def _load(self, bundle: Optional[VerifiedBundle], device: DeviceConfig, options: BackendOptions) -> None:
        if bundle is None:
            raise BundleError("the onnxruntime backend needs a bundle")
        ort = _import_ort()
        artifact = select_onnx_artifact(bundle.manifest, device)
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        if options.intra_op_threads:
            session_options.intra_op_num_threads = options.intra_op_threads
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spinning else "0")
        model_bytes = bundle.read_verified(artifact)  # ORT gets the hashed bytes, never the path
        names, values = external_initializers(model_bytes, bundle)  # listed files only, verified bytes
        if names:
            self._external = [ort.OrtValue.ortvalue_from_numpy(v) for v in values]  # kept for the session's life
            session_options.add_external_initializers(names, self._external)
        try:
            self._session = ort.InferenceSession(model_bytes, session_options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/RuntimeException types
            raise BundleError(f"ONNX Runtime cannot load {artifact.path}: {exc}") from exc
        self._inputs = tuple(_spec(node) for node in self._session.get_inputs())
        self._outputs = tuple(_spec(node) for node in self._session.get_outputs())
        self._max_batch_size = batch_limit(self._inputs, options.max_batch_size)
        self._static = bool(self._max_batch_size) and all(
            -1 not in spec.shape[1:] for spec in self._inputs + self._outputs
        ) and all(spec.shape[:1] == (-1,) for spec in self._outputs)
        self.artifact = artifact.path

    def _infer(self, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            if not self._static:
                results = self._session.run(None, dict(inputs))
                return {spec.name: result for spec, result in zip(self._outputs, results)}
            bound = self._binding_for(len(next(iter(inputs.values()))))
            for name, array in inputs.items():
                np.copyto(bound.inputs[name], array)
            self._session.run_with_iobinding(bound.binding)
            return {name: array.copy() for name, array in bound.outputs.items()}
        except Exception as exc:  # a failure inside ORT on validated input is the server's problem
            raise InferenceError(f"ONNX Runtime failed: {exc}") from exc

    def _binding_for(self, batch: int) -> _Bound:
        bound = self._bound.get(batch)
        if bound is None:
            bound = self._bound[batch] = self._bind(batch)
        return bound

    def _bind(self, batch: int) -> _Bound:
        """Bind the first ``batch`` rows of the max-batch buffers: one set of buffers serves every size."""
        if not self._buffers:
            self._buffers = {
                kind: {s.name: np.empty((self._max_batch_size, *s.shape[1:]), dtype=s.dtype) for s in specs}
                for kind, specs in (("inputs", self._inputs), ("outputs", self._outputs))
            }
        binding = self._session.io_binding()
        inputs = {name: buffer[:batch] for name, buffer in self._buffers["inputs"].items()}
        outputs = {name: buffer[:batch] for name, buffer in self._buffers["outputs"].items()}
        for name, array in inputs.items():
            binding.bind_input(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        for name, array in outputs.items():
            binding.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        return _Bound(binding, inputs, outputs)

    def _close(self) -> None:
        self._bound.clear()
        self._buffers.clear()
        self._session = None
        self._external = []
