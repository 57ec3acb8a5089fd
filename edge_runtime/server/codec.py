"""KServe v2 inference requests and responses: JSON tensors, binary tensor extension, shared memory.

The wire format is the one tritonclient (the reference client, which must work unmodified)
writes and reads:

- Request: a JSON header, then the raw little-endian bytes of every input that declares
  ``parameters.binary_data_size``, in input order. ``Inference-Header-Content-Length`` gives the
  header's length; without it the whole body is JSON. When the client names no outputs it sets
  ``parameters.binary_data_output: true`` (all outputs come back binary); a requested output
  carries ``parameters.binary_data`` and, for shared memory, ``shared_memory_region`` /
  ``shared_memory_byte_size`` / ``shared_memory_offset`` with ``binary_data: false``.
- Response: the JSON header, then the binary outputs' bytes in output order; the header's length
  is in ``Inference-Header-Content-Length``, and the client finds each output's bytes by adding
  up ``binary_data_size`` of the outputs before it.

Strictness: the fields KServe defines are type-checked and every problem is a one-line
RequestError naming the tensor and field. Unknown keys (top level, tensors, parameters) are
ignored, as Triton does: KServe lets clients add extensions (tritonclient sends ``priority``,
``timeout``, ``sequence_id`` and custom request parameters), and ignoring them costs the server
nothing. The exceptions are keys whose silent omission would change the answer: an output's
``classification`` is refused, since this runtime would return raw tensors instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import orjson

from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.errors import InferenceError, RequestError, SharedMemoryError, UnrepresentableOutputError
from edge_runtime.server.datatypes import numpy_to_kserve
from edge_runtime.server.json_body import (
    check_body_size,
    check_json_depth,
    check_json_size,
    describe,
    get_field,
    load_json,
    parse_json_body,
)
from edge_runtime.server.limits import RequestLimits
from edge_runtime.server.shm import Region, SystemSharedMemoryRegistry
from edge_runtime.server.tensor_decode import BinarySection, ShmRef, decode_input, input_spec, read_shm_ref, tensor_name

__all__ = [
    "HEADER_LENGTH",
    "InferRequest",
    "RequestedOutput",
    "ShmRef",
    "decode_infer_request",
    "encode_infer_response",
    "parse_json_body",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
_DIGITS = re.compile(r"[0-9]{1,20}")


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for; ``binary`` None means the request's default.

    ``target`` is the region ``shm`` named when the request was decoded, held until the response
    is written (``InferRequest.release``): the output goes to that object even if the name is
    unregistered, or registered again for another object, in between.
    """

    name: str
    binary: Optional[bool] = None
    shm: Optional[ShmRef] = None
    target: Optional[Region] = field(default=None, compare=False, repr=False)


@dataclass
class InferRequest:
    """A decoded inference request, its inputs checked against the model's specs."""

    id: Optional[str]
    inputs: Dict[str, np.ndarray]
    outputs: List[RequestedOutput]
    binary_output_default: bool
    parameters: Dict[str, Any]

    def release(self) -> None:
        """Let go of the shared-memory regions the outputs hold (after the response is written)."""
        _release_targets(self.outputs)


def decode_infer_request(
    body: bytes,
    header_length: Optional[str],
    inputs: Sequence[TensorSpec],
    output_names: Sequence[str],
    shm: SystemSharedMemoryRegistry,
    limits: RequestLimits,
) -> InferRequest:
    """Decode an inference request body (JSON header, binary section) for a model's inputs/outputs."""
    check_body_size(len(body), limits)
    view = memoryview(body)
    json_size = _header_size(header_length, len(body))
    check_json_size(json_size, limits, binary=header_length is not None)
    document = load_json(view[:json_size], limits)
    if not isinstance(document, dict):
        raise RequestError(f"request: expected a JSON object, got {describe(document)}")
    check_json_depth(document, limits.max_json_depth, skip=_data_lists(document))
    parameters = get_field(document, "parameters", "object", "request") or {}
    binary_default = get_field(parameters, "binary_data_output", "bool", "request parameters")
    request_id = get_field(document, "id", "str", "request")
    arrays = _decode_inputs(document, inputs, BinarySection(view[json_size:]), shm, limits)
    return InferRequest(
        id=request_id,
        inputs=arrays,
        outputs=_decode_outputs(document, output_names, shm),  # last: nothing fails after it holds regions
        binary_output_default=bool(binary_default),
        parameters=parameters,
    )


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: Dict[str, np.ndarray],
) -> Tuple[bytes, Dict[str, str]]:
    """The response body and headers for the model's ``outputs``, as the request asked for them.

    Shared-memory outputs are written to the regions resolved when the request was decoded.
    """
    requested = {output.name: output for output in request.outputs}
    names = [output.name for output in request.outputs] or list(outputs)
    entries: List[Dict[str, Any]] = []
    chunks: List[memoryview] = []
    for name in names:
        array = _output_array(name, outputs)
        entry: Dict[str, Any] = {"name": name, "datatype": numpy_to_kserve(array.dtype), "shape": list(array.shape)}
        wanted = requested.get(name, RequestedOutput(name))
        if wanted.shm is not None:
            _write_shm(array, wanted, name)
            entry["parameters"] = {
                "shared_memory_region": wanted.shm.region,
                "shared_memory_byte_size": array.nbytes,
            }
        elif request.binary_output_default if wanted.binary is None else wanted.binary:
            entry["parameters"] = {"binary_data_size": array.nbytes}
            chunks.append(array.data)  # joined into the body without an extra copy
        else:
            entry["data"] = _json_values(name, array)
        entries.append(entry)
    response: Dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = entries
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"Content-Type": "application/json"}
    headers = {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}
    return b"".join([header, *chunks]), headers


def _header_size(header_length: Optional[str], body_size: int) -> int:
    if header_length is None:
        return body_size
    text = header_length.strip()
    if not _DIGITS.fullmatch(text) or int(text) > body_size:
        raise RequestError(
            f"{HEADER_LENGTH}: expected an integer from 0 to the body size {body_size}, got {header_length[:40]!r}"
        )
    return int(text)


def _data_lists(document: Dict[str, Any]) -> Set[int]:
    # The depth walk skips these: decode_json_data bounds their nesting by the input's rank.
    items = document.get("inputs")
    if not isinstance(items, list):
        return set()
    return {id(item["data"]) for item in items if isinstance(item, dict) and isinstance(item.get("data"), list)}


def _decode_inputs(
    document: Dict[str, Any],
    specs: Sequence[TensorSpec],
    binary: BinarySection,
    shm: SystemSharedMemoryRegistry,
    limits: RequestLimits,
) -> Dict[str, np.ndarray]:
    items = get_field(document, "inputs", "list", "request", required=True)
    if not items:
        raise RequestError("request: inputs: expected at least one input")
    by_name = {spec.name: spec for spec in specs}
    arrays: Dict[str, np.ndarray] = {}
    for index, item in enumerate(items):
        spec = input_spec(item, index, by_name)
        if spec.name in arrays:
            raise RequestError(f"inputs[{index}]: input {spec.name!r} is given twice")
        arrays[spec.name] = decode_input(item, spec, binary, shm, limits)
    missing = [spec.name for spec in specs if spec.name not in arrays]
    if missing:
        raise RequestError(f"request: missing input(s) {', '.join(missing)}")
    binary.check_consumed()
    return arrays


def _decode_outputs(
    document: Dict[str, Any], output_names: Sequence[str], shm: SystemSharedMemoryRegistry
) -> List[RequestedOutput]:
    items = get_field(document, "outputs", "list", "request") or []
    result: List[RequestedOutput] = []
    try:
        for index, item in enumerate(items):
            where = f"outputs[{index}]"
            name = tensor_name(item, where, "output", output_names)
            if any(output.name == name for output in result):
                raise RequestError(f"{where}: output {name!r} is requested twice")
            result.append(_requested_output(item, name, shm))
    except BaseException:
        _release_targets(result)
        raise
    return result


def _release_targets(outputs: List[RequestedOutput]) -> None:
    for output in outputs:
        if output.target is not None:
            output.target.release()


def _requested_output(item: Dict[str, Any], name: str, shm: SystemSharedMemoryRegistry) -> RequestedOutput:
    where = f"output {name!r} parameters"
    parameters = get_field(item, "parameters", "object", f"output {name!r}") or {}
    if "classification" in parameters:
        raise RequestError(f"{where}: classification is not supported by this runtime")
    binary = get_field(parameters, "binary_data", "bool", where)
    ref = read_shm_ref(parameters, where)
    if ref is None:
        return RequestedOutput(name=name, binary=binary)
    if binary:
        raise RequestError(f"{where}: binary_data and shared_memory_region exclude each other")
    target = shm.acquire(ref.region, ref.offset, ref.byte_size)  # unknown region/range: fail now
    return RequestedOutput(name=name, binary=binary, shm=ref, target=target)


def _output_array(name: str, outputs: Dict[str, np.ndarray]) -> np.ndarray:
    if name not in outputs:
        raise InferenceError(f"the model produced no output {name!r}")
    array = np.asarray(outputs[name])
    try:
        numpy_to_kserve(array.dtype)
    except ValueError as exc:
        raise InferenceError(f"output {name!r}: {exc}") from exc
    return array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)  # keeps 0-d arrays 0-d


def _json_values(name: str, array: np.ndarray) -> np.ndarray:
    # orjson writes numpy arrays itself (OPT_SERIALIZE_NUMPY); float16 only in recent releases,
    # and float32 prints the same values (every float16 is exactly a float32). It writes inf and
    # NaN as null, which clients read back as NaN: right for NaN, a silent change for an
    # infinity, so an output holding one is refused (the client asks for it in binary).
    flat = array.reshape(-1)
    if flat.dtype.kind != "f":
        return flat
    if np.isinf(flat).any():
        raise UnrepresentableOutputError(
            f"output {name!r} holds an infinite value, which JSON cannot represent (it would arrive as NaN): "
            "request it with parameters.binary_data: true, or in shared memory"
        )
    return flat.astype(np.float32) if flat.dtype.itemsize == 2 else flat


def _write_shm(array: np.ndarray, wanted: RequestedOutput, name: str) -> None:
    ref, target = wanted.shm, wanted.target
    assert ref is not None and target is not None  # set together by _requested_output
    if array.nbytes > ref.byte_size:
        raise SharedMemoryError(
            f"output {name!r}: {array.nbytes} bytes do not fit in the {ref.byte_size} bytes requested "
            f"in shared memory region {ref.region!r}"
        )
    if array.nbytes:
        target.write(ref.offset, array.reshape(-1).view(np.uint8).data)
