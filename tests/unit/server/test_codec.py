"""KServe v2 codec: JSON, binary and shared-memory tensors; wire compatibility with tritonclient."""

from __future__ import annotations

import copy
import json
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Type

import hypothesis.extra.numpy as hnp
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.bundle.manifest import DTYPES, TensorSpec
from edge_runtime.config.runtime import SharedMemorySettings
from edge_runtime.errors import (
    InferenceError,
    RequestError,
    RequestTooLargeError,
    SharedMemoryError,
    UnrepresentableOutputError,
)
from edge_runtime.server.codec import (
    HEADER_LENGTH,
    InferRequest,
    RequestedOutput,
    ShmRef,
    decode_infer_request,
    encode_infer_response,
    parse_json_body,
)
from edge_runtime.server.datatypes import numpy_to_kserve
from edge_runtime.server.limits import RequestLimits
from edge_runtime.server.shm import SystemSharedMemoryRegistry

try:
    import tritonclient.http as triton_http
except ImportError:  # the property test then checks our own decoder only
    triton_http = None

LIMITS = RequestLimits()
INPUTS = (
    TensorSpec("x", "float32", (-1, 3)),
    TensorSpec("u", "uint8", (2,)),
    TensorSpec("i", "int32", (2,)),
    TensorSpec("b", "bool", (2,)),
)
OUTPUTS = ("y", "z")
X = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
U = np.array([0, 255], dtype=np.uint8)
I = np.array([-(2**31), 2**31 - 1], dtype=np.int32)  # noqa: E741
B = np.array([True, False])
ARRAYS: Tuple[np.ndarray, ...] = (X, U, I, B)
DELETE = object()


@pytest.fixture()
def shm() -> Iterator[SystemSharedMemoryRegistry]:
    with SystemSharedMemoryRegistry(SharedMemorySettings(allow_server_owned=True)) as registry:
        yield registry


@pytest.fixture()
def shm_key() -> Iterator[Callable[[int], str]]:
    """Create 'size'-byte POSIX shm objects with unique keys; unlinked afterwards."""
    paths: List[str] = []

    def make(size: int) -> str:
        name = f"edge-runtime-test-{uuid.uuid4().hex}"
        fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        paths.append(f"/dev/shm/{name}")
        os.ftruncate(fd, size)
        os.close(fd)
        return "/" + name

    yield make
    for path in paths:
        os.unlink(path)


@pytest.fixture()
def triton() -> Any:
    return pytest.importorskip("tritonclient.http")


def valid_doc() -> Dict[str, Any]:
    return {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": X.reshape(-1).tolist()},
            {"name": "u", "datatype": "UINT8", "shape": [2], "data": U.tolist()},
            {"name": "i", "datatype": "INT32", "shape": [2], "data": I.tolist()},
            {"name": "b", "datatype": "BOOL", "shape": [2], "data": B.tolist()},
        ],
        "outputs": [{"name": "y"}],
    }


def body_of(doc: Any, binary: bytes = b"") -> Tuple[bytes, Optional[str]]:
    header = orjson.dumps(doc)
    return header + binary, (str(len(header)) if binary else None)


def decode(
    body: bytes,
    header: Optional[str] = None,
    shm: Optional[SystemSharedMemoryRegistry] = None,
    specs: Tuple[TensorSpec, ...] = INPUTS,
    limits: RequestLimits = LIMITS,
) -> InferRequest:
    registry = shm if shm is not None else SystemSharedMemoryRegistry()
    return decode_infer_request(body, header, specs, OUTPUTS, registry, limits)


def request_for(outputs: List[RequestedOutput], binary_default: bool = False, id: Optional[str] = None) -> InferRequest:
    return InferRequest(id=id, inputs={}, outputs=outputs, binary_output_default=binary_default, parameters={})


def encode(request: InferRequest, outputs: Dict[str, np.ndarray]) -> Tuple[bytes, Dict[str, str]]:
    return encode_infer_response(model_name="m", model_version="1", request=request, outputs=outputs)


def split(body: bytes, headers: Dict[str, str]) -> Tuple[Any, bytes]:
    size = int(headers[HEADER_LENGTH]) if HEADER_LENGTH in headers else len(body)
    return orjson.loads(body[:size]), body[size:]


def assert_inputs(request: InferRequest) -> None:
    assert list(request.inputs) == ["x", "u", "i", "b"]
    for name, expected in (("x", X), ("u", U), ("i", I), ("b", B)):
        array = request.inputs[name]
        assert array.dtype == expected.dtype, name
        assert array.shape == expected.shape, name
        np.testing.assert_array_equal(array, expected)


# --- decoding: the three sources ------------------------------------------------------------


def test_json_request_round_trip() -> None:
    doc = valid_doc()
    doc["id"] = "req-7"
    doc["parameters"] = {"priority": 2, "binary_data_output": True}
    doc["inputs"][0]["data"] = X.tolist()  # nested like the shape is accepted as well as flat
    request = decode(*body_of(doc))
    assert_inputs(request)
    assert request.id == "req-7"
    assert request.parameters == {"priority": 2, "binary_data_output": True}
    assert request.binary_output_default is True
    assert request.outputs == [RequestedOutput("y")]


def test_binary_request_round_trip_gives_views_not_copies() -> None:
    doc = valid_doc()
    raw = b""
    for item, array in zip(doc["inputs"], ARRAYS):
        del item["data"]
        item["parameters"] = {"binary_data_size": array.nbytes}
        raw += array.tobytes()
    body, header = body_of(doc, raw)
    request = decode(body, header)
    assert_inputs(request)
    backing = np.frombuffer(body, dtype=np.uint8)
    for array in request.inputs.values():
        assert not array.flags.owndata and not array.flags.writeable
        assert np.shares_memory(array, backing)


def test_mixed_json_and_binary_inputs_consume_the_section_in_input_order() -> None:
    doc = valid_doc()
    for index, array in ((2, I), (0, X)):
        del doc["inputs"][index]["data"]
        doc["inputs"][index]["parameters"] = {"binary_data_size": array.nbytes}
    request = decode(*body_of(doc, X.tobytes() + I.tobytes()))
    assert_inputs(request)


def test_shared_memory_input_and_output(shm: SystemSharedMemoryRegistry, shm_key: Callable[[int], str]) -> None:
    in_key, out_key = shm_key(4096), shm_key(4096)
    with open("/dev/shm" + in_key, "r+b") as handle:
        handle.seek(100)
        handle.write(X.tobytes())
    shm.register("in", in_key, 64, 1024)
    shm.register("out", out_key, 0, 4096)
    doc = valid_doc()
    del doc["inputs"][0]["data"]
    doc["inputs"][0]["parameters"] = {
        "shared_memory_region": "in",
        "shared_memory_byte_size": 24,
        "shared_memory_offset": 36,
    }
    doc["outputs"] = [
        {
            "name": "y",
            "parameters": {
                "shared_memory_region": "out",
                "shared_memory_byte_size": 64,
                "shared_memory_offset": 8,
            },
        }
    ]
    request = decode(*body_of(doc), shm=shm)
    assert_inputs(request)
    assert request.outputs == [RequestedOutput("y", None, ShmRef("out", 64, 8))]
    with open("/dev/shm" + in_key, "r+b") as handle:  # the input is a copy: the client may change its object
        handle.seek(100)
        handle.write(np.float32(42).tobytes())
    assert request.inputs["x"][0, 0] == X[0, 0]

    y = np.array([[1.5, -2.0, 3.25]], dtype=np.float32)
    body, headers = encode(request, {"y": y, "z": np.zeros(1)})
    request.release()
    assert headers == {"Content-Type": "application/json"}
    assert orjson.loads(body)["outputs"] == [
        {
            "name": "y",
            "datatype": "FP32",
            "shape": [1, 3],
            "parameters": {"shared_memory_region": "out", "shared_memory_byte_size": 12},
        }
    ]
    with open("/dev/shm" + out_key, "rb") as handle:
        handle.seek(8)
        assert handle.read(12) == y.tobytes()


def test_shared_memory_output_too_small_is_refused(
    shm: SystemSharedMemoryRegistry, shm_key: Callable[[int], str]
) -> None:
    shm.register("out", shm_key(4096), 0, 4096)
    request = request_for([RequestedOutput("y", shm=ShmRef("out", 8), target=shm.acquire("out", 0, 8))])
    with pytest.raises(SharedMemoryError, match="output 'y': 12 bytes do not fit in the 8 bytes requested"):
        encode(request, {"y": np.zeros(3, dtype=np.float32)})
    request.release()


def _shm_output_doc(region: str) -> Dict[str, Any]:
    doc = valid_doc()
    doc["outputs"] = [{"name": "y", "parameters": {"shared_memory_region": region, "shared_memory_byte_size": 12}}]
    return doc


def test_shared_memory_output_goes_to_the_object_resolved_at_decode(
    shm: SystemSharedMemoryRegistry, shm_key: Callable[[int], str]
) -> None:
    first, second = shm_key(64), shm_key(64)
    shm.register("out", first, 0, 64)
    request = decode(*body_of(_shm_output_doc("out")), shm=shm)
    shm.unregister("out")  # another client re-registers the name for another object meanwhile
    shm.register("out", second, 0, 64)
    y = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    encode(request, {"y": y})
    request.release()
    with open("/dev/shm" + first, "rb") as handle:
        assert handle.read(12) == y.tobytes()
    with open("/dev/shm" + second, "rb") as handle:
        assert handle.read(12) == bytes(12)


def test_a_request_that_fails_after_resolving_outputs_lets_them_go(
    shm: SystemSharedMemoryRegistry, shm_key: Callable[[int], str]
) -> None:
    shm.register("out", shm_key(64), 0, 64)
    doc = _shm_output_doc("out")
    doc["outputs"].append({"name": "z", "parameters": {"shared_memory_region": "nope", "shared_memory_byte_size": 8}})
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(SharedMemoryError, match="unknown shared memory region 'nope'"):
        decode(*body_of(doc), shm=shm)
    shm.unregister("out")  # nothing holds it: its descriptor closes now
    assert len(os.listdir("/proc/self/fd")) == fds - 1


def test_infinite_json_output_is_refused_and_nan_travels_as_null() -> None:
    request = request_for([RequestedOutput("y", False)])
    with pytest.raises(UnrepresentableOutputError, match="output 'y' holds an infinite value") as caught:
        encode(request, {"y": np.array([1.0, -np.inf], dtype=np.float32)})
    assert caught.value.http_status == 422
    body, _ = encode(request, {"y": np.array([1.0, np.nan], dtype=np.float16)})
    assert orjson.loads(body)["outputs"][0]["data"] == [1.0, None]
    binary, _ = encode(request_for([RequestedOutput("y", True)]), {"y": np.array([np.inf], dtype=np.float32)})
    assert binary.endswith(np.array([np.inf], dtype=np.float32).tobytes())


def test_json_cap_applies_to_json_bodies_and_binary_headers_not_binary_data() -> None:
    limits = RequestLimits(max_json_bytes=600)
    specs = (TensorSpec("v", "float32", (-1,)),)
    doc = {"inputs": [{"name": "v", "datatype": "FP32", "shape": [300], "data": [0.5] * 300}]}
    with pytest.raises(RequestTooLargeError, match=r"JSON request body of .* over the limit of 600 bytes for JSON"):
        decode(*body_of(doc), specs=specs, limits=limits)
    doc = {"inputs": [{"name": "v", "datatype": "FP32", "shape": [1000], "parameters": {"binary_data_size": 4000}}]}
    request = decode(*body_of(doc, bytes(4000)), specs=specs, limits=limits)  # 4 KB body, small header
    assert request.inputs["v"].shape == (1000,)
    doc["id"] = "x" * 600
    with pytest.raises(RequestTooLargeError, match=r"the JSON header of the request of .* binary tensor extension"):
        decode(*body_of(doc, bytes(4000)), specs=specs, limits=limits)


@pytest.mark.parametrize(
    ("parameters", "error", "match"),
    [
        (
            {"shared_memory_byte_size": 20},
            RequestError,
            "shared_memory_byte_size is 20 but the shape and datatype need 24",
        ),
        ({"shared_memory_offset": 1010}, SharedMemoryError, "24 bytes at offset 1010 do not fit in its 1024 bytes"),
        ({"shared_memory_region": "other"}, SharedMemoryError, "unknown shared memory region 'other'"),
    ],
)
def test_shared_memory_input_must_fit(
    shm: SystemSharedMemoryRegistry,
    shm_key: Callable[[int], str],
    parameters: Dict[str, Any],
    error: Type[Exception],
    match: str,
) -> None:
    shm.register("in", shm_key(4096), 0, 1024)
    doc = valid_doc()
    del doc["inputs"][0]["data"]
    doc["inputs"][0]["parameters"] = {"shared_memory_region": "in", "shared_memory_byte_size": 24, **parameters}
    with pytest.raises(error, match=re.escape(match)):
        decode(*body_of(doc), shm=shm)


def test_large_json_data_decodes() -> None:
    values = np.arange(1_000_000, dtype=np.float32)
    specs = (TensorSpec("v", "float32", (-1,)),)
    doc = {"inputs": [{"name": "v", "datatype": "FP32", "shape": [values.size], "data": values}]}
    body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    roomy = RequestLimits(max_json_bytes=LIMITS.max_request_bytes)
    np.testing.assert_array_equal(decode(body, specs=specs, limits=roomy).inputs["v"], values)


def test_uint64_json_data_keeps_values_past_2_to_the_63() -> None:
    # numpy infers float64 for [0, 2**63 + 1]; the decoder must not lose the exact value
    specs = (TensorSpec("v", "uint64", (2,)),)
    doc = {"inputs": [{"name": "v", "datatype": "UINT64", "shape": [2], "data": [0, 2**63 + 1]}]}
    assert decode(*body_of(doc), specs=specs).inputs["v"].tolist() == [0, 2**63 + 1]
    doc["inputs"][0]["data"] = [0.5, 2**63 + 1]
    with pytest.raises(RequestError, match="UINT64 takes JSON integers, got floating-point numbers"):
        decode(*body_of(doc), specs=specs)


def test_data_nesting_is_bounded_by_the_rank_not_the_json_depth_walk() -> None:
    specs = (TensorSpec("v", "int64", (-1, -1, -1, -1)),)
    doc: Dict[str, Any] = {
        "inputs": [{"name": "v", "datatype": "INT64", "shape": [1, 1, 2, 1], "data": [[[[1], [2]]]]}]
    }
    shallow = RequestLimits(max_json_depth=5)  # data sits at depth 4 and nests 4 more: not walked
    assert decode(*body_of(doc), specs=specs, limits=shallow).inputs["v"].tolist() == [[[[1], [2]]]]
    doc["parameters"] = {"a": {"b": {"c": {"d": {}}}}}
    with pytest.raises(RequestError, match="JSON nesting is deeper than 5 levels"):
        decode(*body_of(doc), specs=specs, limits=shallow)


# --- wire compatibility with tritonclient ---------------------------------------------------


def test_tritonclient_request_body_decodes(triton: Any) -> None:
    inputs = []
    for spec, array, binary in zip(INPUTS, ARRAYS, (True, False, True, True)):
        tensor = triton.InferInput(spec.name, list(array.shape), numpy_to_kserve(spec.dtype))
        inputs.append(tensor.set_data_from_numpy(array, binary_data=binary))
    outputs = [triton.InferRequestedOutput("y", binary_data=True), triton.InferRequestedOutput("z", binary_data=False)]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id="req-1", priority=3, parameters={"custom": "v"}
    )
    assert json_size is not None and len(body) == json_size + X.nbytes + I.nbytes + B.nbytes
    request = decode(body, str(json_size))  # the client sends json_size as this header
    assert_inputs(request)
    assert request.id == "req-1"
    assert request.parameters == {"priority": 3, "custom": "v"}
    assert request.outputs == [RequestedOutput("y", True), RequestedOutput("z", False)]
    assert request.binary_output_default is False


def test_tritonclient_without_outputs_asks_for_binary_outputs(triton: Any) -> None:
    inputs = [
        triton.InferInput(name, list(array.shape), datatype).set_data_from_numpy(array, binary_data=False)
        for name, array, datatype in (("x", X, "FP32"), ("u", U, "UINT8"), ("i", I, "INT32"), ("b", B, "BOOL"))
    ]
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs)
    assert json_size is None  # all-JSON request: no header, the whole body is JSON
    request = decode(body, None)
    assert_inputs(request)
    assert request.outputs == []
    assert request.binary_output_default is True


def test_tritonclient_shared_memory_request_decodes(
    triton: Any, shm: SystemSharedMemoryRegistry, shm_key: Callable[[int], str]
) -> None:
    shm.register("in", shm_key(4096), 0, 4096)
    shm.register("out", shm_key(4096), 0, 4096)
    x = triton.InferInput("x", [2, 3], "FP32")
    x.set_shared_memory("in", 24, offset=40)
    others = [
        triton.InferInput(name, [2], datatype).set_data_from_numpy(array)
        for name, array, datatype in (("u", U, "UINT8"), ("i", I, "INT32"), ("b", B, "BOOL"))
    ]
    y = triton.InferRequestedOutput("y")  # binary_data=True, turned off by set_shared_memory
    y.set_shared_memory("out", 64, offset=8)
    body, json_size = triton.InferenceServerClient.generate_request_body([x, *others], outputs=[y])
    request = decode(body, str(json_size), shm=shm)
    assert request.inputs["x"].shape == (2, 3)
    assert request.outputs == [RequestedOutput("y", False, ShmRef("out", 64, 8))]


def test_tritonclient_parses_our_binary_and_json_response(triton: Any) -> None:
    y = np.arange(12, dtype=np.float16).reshape(3, 4) / 8
    z = np.array([[True], [False]])
    w = np.array([1.5, np.nan], dtype=np.float64)
    request = request_for([RequestedOutput("y", True), RequestedOutput("w", False), RequestedOutput("z")], id="r1")
    body, headers = encode(request, {"z": z, "y": y, "w": w})
    assert headers["Content-Type"] == "application/octet-stream"
    _, binary = split(body, headers)
    assert binary == y.tobytes()  # z follows the request's default: JSON
    result = triton.InferenceServerClient.parse_response_body(body, header_length=int(headers[HEADER_LENGTH]))
    np.testing.assert_array_equal(result.as_numpy("y"), y)
    np.testing.assert_array_equal(result.as_numpy("z"), z)
    np.testing.assert_array_equal(result.as_numpy("w"), w)  # NaN travels as JSON null
    assert result.as_numpy("y").dtype == np.float16
    response = result.get_response()
    assert (response["id"], response["model_name"], response["model_version"]) == ("r1", "m", "1")
    assert [output["name"] for output in response["outputs"]] == ["y", "w", "z"]


# --- encoding --------------------------------------------------------------------------------


def test_json_response_is_exactly_kserve_json() -> None:
    request = request_for([RequestedOutput("y")], id="abc")
    body, headers = encode(request, {"y": np.array([[1, 2, 3]], dtype=np.int32), "z": np.zeros(2)})
    assert headers == {"Content-Type": "application/json"}
    assert body == (
        b'{"model_name":"m","model_version":"1","id":"abc","outputs":'
        b'[{"name":"y","datatype":"INT32","shape":[1,3],"data":[1,2,3]}]}'
    )


def test_all_outputs_in_dict_order_when_none_requested() -> None:
    z = np.array([[1, 2]], dtype=">i4")  # big-endian and 2-D: sent little-endian, row-major
    y = np.arange(6, dtype=np.float64).reshape(2, 3).T  # not C-contiguous
    body, headers = encode(request_for([], binary_default=True), {"z": z, "y": y})
    header, binary = split(body, headers)
    assert headers[HEADER_LENGTH] == str(len(orjson.dumps(header)))
    assert [(o["name"], o["datatype"], o["shape"], o["parameters"]) for o in header["outputs"]] == [
        ("z", "INT32", [1, 2], {"binary_data_size": 8}),
        ("y", "FP64", [3, 2], {"binary_data_size": 48}),
    ]
    assert "id" not in header
    assert binary == b"\x01\x00\x00\x00\x02\x00\x00\x00" + np.ascontiguousarray(y).tobytes()


def test_bool_binary_output_is_one_byte_per_element() -> None:
    body, headers = encode(request_for([RequestedOutput("z", True)]), {"z": np.array([True, False, True])})
    header, binary = split(body, headers)
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 3}
    assert binary == b"\x01\x00\x01"


def test_missing_or_unencodable_output_is_an_inference_error() -> None:
    with pytest.raises(InferenceError, match="the model produced no output 'z'"):
        encode(request_for([RequestedOutput("z")]), {"y": np.zeros(1)})
    with pytest.raises(InferenceError, match="output 'y': numpy dtype 'object' has no KServe v2 datatype"):
        encode(request_for([]), {"y": np.array([None])})


# --- malformed requests ----------------------------------------------------------------------


@dataclass
class Case:
    id: str
    build: Callable[[], Tuple[bytes, Optional[str]]]
    match: str
    error: Type[RequestError] = RequestError


def raw(body: bytes, header: Optional[str] = None) -> Callable[[], Tuple[bytes, Optional[str]]]:
    return lambda: (body, header)


def edit(
    index: Optional[int] = None,
    binary: bytes = b"",
    header: Optional[str] = None,
    doc: Optional[Callable[[Dict[str, Any]], None]] = None,
    **fields: Any,
) -> Callable[[], Tuple[bytes, Optional[str]]]:
    """A valid request with fields of inputs[index] (or the top level) replaced; DELETE removes."""

    def build() -> Tuple[bytes, Optional[str]]:
        document = valid_doc()
        target = document if index is None else document["inputs"][index]
        for key, value in fields.items():
            if value is DELETE:
                del target[key]
            else:
                target[key] = copy.deepcopy(value)
        if doc is not None:
            doc(document)
        body, size = body_of(document, binary)
        return body, size if header is None else header

    return build


def as_binary(index: int, data: bytes, size: Any) -> Callable[[], Tuple[bytes, Optional[str]]]:
    return edit(index, binary=data, data=DELETE, parameters={"binary_data_size": size})


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


BAD_SHM = {"shared_memory_region": "nope", "shared_memory_byte_size": 24}
CASES = [
    Case("not-an-object", raw(b"[1]"), "request: expected a JSON object, got a list"),
    Case("malformed-json", raw(b'{"inputs": ['), "malformed JSON: "),
    Case("nan-literal", raw(b'{"inputs":[{"name":"x","data":[NaN]}]}'), "malformed JSON: "),
    Case("invalid-utf8", raw(b'{"id":"\xff"}'), "malformed JSON: "),
    Case("too-deep", edit(parameters={"a": nested(70)}), "JSON nesting is deeper than 64 levels"),
    Case("id-not-string", edit(id=5), "request: id: expected a string, got an integer"),
    Case("parameters-not-object", edit(parameters=[1]), "request: parameters: expected an object, got a list"),
    Case(
        "binary-output-not-bool",
        edit(parameters={"binary_data_output": "yes"}),
        "request parameters: binary_data_output: expected a boolean, got a string",
    ),
    Case("inputs-missing", edit(inputs=DELETE), "request: inputs: required"),
    Case("inputs-empty", edit(inputs=[]), "request: inputs: expected at least one input"),
    Case("inputs-not-list", edit(inputs={"x": 1}), "request: inputs: expected a list, got an object"),
    Case("input-not-object", edit(inputs=["x"]), "inputs[0]: expected an object, got a string"),
    Case("input-name-missing", edit(0, name=DELETE), "inputs[0]: name: required"),
    Case("input-name-not-string", edit(0, name=["x"]), "inputs[0]: name: expected a string, got a list"),
    Case("input-unknown", edit(0, name="q"), "inputs[0]: 'q' is not an input of the model (inputs: x, u, i, b)"),
    Case("input-twice", edit(doc=lambda d: d["inputs"].append(d["inputs"][1])), "inputs[4]: input 'u' is given twice"),
    Case("input-missing", edit(doc=lambda d: d["inputs"].pop()), "request: missing input(s) b"),
    Case("datatype-missing", edit(0, datatype=DELETE), "input 'x': datatype: required"),
    Case("datatype-mismatch", edit(0, datatype="FP64"), "input 'x': datatype FP64 does not match the model's FP32"),
    Case("datatype-bytes", edit(0, datatype="BYTES"), "input 'x': BYTES tensors are not supported by this runtime"),
    Case("datatype-unknown", edit(0, datatype="FP8"), "input 'x': unknown datatype 'FP8'"),
    Case("shape-missing", edit(0, shape=DELETE), "input 'x': shape: required"),
    Case("shape-not-list", edit(0, shape="2,3"), "input 'x': shape: expected a list, got a string"),
    Case("shape-string-dim", edit(0, shape=[2, "3"]), "input 'x': shape[1]: expected an integer >= 0, got a string"),
    Case("shape-negative-dim", edit(0, shape=[-1, 3]), "input 'x': shape[0]: expected an integer >= 0, got -1"),
    Case("shape-bool-dim", edit(0, shape=[True, 3]), "input 'x': shape[0]: expected an integer >= 0, got a boolean"),
    Case("shape-float-dim", edit(0, shape=[2.0, 3]), "input 'x': shape[0]: expected an integer >= 0, got 2.0"),
    Case("shape-rank", edit(0, shape=[6]), "input 'x': shape [6] does not fit the model's [-1, 3] (-1: any size)"),
    Case("shape-fixed-dim", edit(0, shape=[3, 2]), "input 'x': shape [3, 2] does not fit the model's [-1, 3]"),
    Case("shape-too-many-dims", edit(0, shape=[1] * 9), "input 'x': shape: 9 dims, more than the limit of 8"),
    Case("shape-too-many-elements", edit(0, shape=[2**40, 3]), "has more than the limit of 67108864 elements"),
    Case("shape-product-past-64-bits", edit(0, shape=[2**63, 2**63]), "has more than the limit of 67108864 elements"),
    Case(
        "no-source",
        edit(0, data=DELETE),
        "input 'x': expected exactly one of data, parameters.binary_data_size, "
        "parameters.shared_memory_region, got none",
    ),
    Case("two-sources", edit(0, parameters={"binary_data_size": 24}), "got data and parameters.binary_data_size"),
    Case(
        "input-parameters-not-object",
        edit(0, parameters=5),
        "input 'x': parameters: expected an object, got an integer",
    ),
    Case("data-not-list", edit(0, data=5), "input 'x': data: expected a list, got an integer"),
    Case("data-count", edit(0, data=[1, 2, 3, 4, 5]), "input 'x': data holds 5 values but shape [2, 3] needs 6"),
    Case("data-strings", edit(0, data=["1"] * 6), "input 'x': data: FP32 takes JSON numbers, got strings"),
    Case("data-null", edit(0, data=[1, 2, 3, 4, 5, None]), "FP32 takes JSON numbers, got values of mixed JSON types"),
    Case("data-objects", edit(0, data=[{}] * 6), "FP32 takes JSON numbers, got values of mixed JSON types"),
    Case("data-ragged", edit(0, data=[[1, 2, 3], [4, 5]]), "input 'x': data: not a regular array of numbers"),
    Case(
        "data-nested-unlike-shape",
        edit(0, data=[[1, 2], [3, 4], [5, 6]]),
        "input 'x': data is nested as [3, 2], which is not the shape [2, 3]",
    ),
    Case(
        "data-too-deep",
        edit(0, data=[[[1, 2, 3]], [[4, 5, 6]]]),
        "input 'x': data: nested deeper than the shape's 2 dims",
    ),
    Case(
        "data-fp32-overflow", edit(0, data=[1e39, 0, 0, 0, 0, 0]), "input 'x': data: a value is out of range for FP32"
    ),
    Case("data-uint8-over", edit(1, data=[300, 1]), "input 'u': data: 300 is out of range for UINT8"),
    Case("data-uint8-negative", edit(1, data=[1, -1]), "input 'u': data: -1 is out of range for UINT8"),
    Case(
        "data-int32-fraction",
        edit(2, data=[1.5, 2]),
        "input 'i': data: INT32 takes JSON integers, got floating-point numbers",
    ),
    Case("data-int32-over", edit(2, data=[2**40, 1]), "input 'i': data: 1099511627776 is out of range for INT32"),
    Case(
        "data-int-past-64-bits",
        raw(orjson.dumps(valid_doc()).replace(b"[-2147483648,", b"[18446744073709551616,")),
        "INT32 takes JSON integers, got floating-point numbers",
    ),  # orjson reads it as a float
    Case(
        "data-int32-booleans", edit(2, data=[True, False]), "input 'i': data: INT32 takes JSON integers, got booleans"
    ),
    Case("data-bool-numbers", edit(3, data=[1, 0]), "input 'b': data: BOOL takes JSON booleans, got integers"),
    Case(
        "binary-size-mismatch",
        as_binary(0, bytes(24), 8),
        "input 'x': binary_data_size is 8 but the shape and datatype need 24 bytes",
    ),
    Case(
        "binary-past-end",
        as_binary(0, bytes(10), 24),
        "input 'x': binary_data_size 24 goes past the end of the binary data (10 bytes left)",
    ),
    Case(
        "binary-leftover",
        as_binary(0, bytes(30), 24),
        "the binary data after the JSON header is 30 bytes but the inputs' binary_data_size add up to 24",
    ),
    Case(
        "binary-size-negative",
        as_binary(0, b"", -24),
        "input 'x' parameters: binary_data_size: expected an integer >= 0, got -24",
    ),
    Case(
        "binary-size-string",
        as_binary(0, b"", "24"),
        "input 'x' parameters: binary_data_size: expected an integer, got a string",
    ),
    Case("binary-bool-byte", as_binary(3, b"\x01\x02", 2), "input 'b': BOOL bytes must be 0 or 1"),
    Case(
        "header-length-text",
        edit(binary=bytes(24), header="abc"),
        "Inference-Header-Content-Length: expected an integer",
    ),
    Case("header-length-negative", edit(header="-1"), "Inference-Header-Content-Length: expected an integer"),
    Case("header-length-signed", edit(header="+5"), "Inference-Header-Content-Length: expected an integer"),
    Case(
        "header-length-past-body",
        raw(b"{}", "3"),
        "Inference-Header-Content-Length: expected an integer from 0 to the body size 2",
    ),
    Case("header-length-cuts-json", raw(b'{"inputs":[]}', "5"), "malformed JSON: "),
    Case(
        "shm-unknown-region",
        edit(0, data=DELETE, parameters=BAD_SHM),
        "unknown shared memory region 'nope'",
        SharedMemoryError,
    ),
    Case(
        "shm-size-without-region",
        edit(0, data=DELETE, parameters={"shared_memory_byte_size": 24}),
        "input 'x' parameters: shared_memory_byte_size/offset given without shared_memory_region",
    ),
    Case(
        "shm-region-without-size",
        edit(0, data=DELETE, parameters={"shared_memory_region": "r"}),
        "input 'x' parameters: shared_memory_byte_size: required with shared_memory_region",
    ),
    Case(
        "shm-offset-negative",
        edit(0, data=DELETE, parameters={**BAD_SHM, "shared_memory_offset": -1}),
        "input 'x' parameters: shared_memory_offset: expected an integer >= 0, got -1",
    ),
    Case(
        "shm-region-not-string",
        edit(0, data=DELETE, parameters={**BAD_SHM, "shared_memory_region": 1}),
        "input 'x' parameters: shared_memory_region: expected a string, got an integer",
    ),
    Case("outputs-not-list", edit(outputs={"name": "y"}), "request: outputs: expected a list, got an object"),
    Case("output-not-object", edit(outputs=["y"]), "outputs[0]: expected an object, got a string"),
    Case("output-name-missing", edit(outputs=[{}]), "outputs[0]: name: required"),
    Case(
        "output-unknown", edit(outputs=[{"name": "w"}]), "outputs[0]: 'w' is not an output of the model (outputs: y, z)"
    ),
    Case("output-twice", edit(outputs=[{"name": "y"}, {"name": "y"}]), "outputs[1]: output 'y' is requested twice"),
    Case(
        "output-binary-not-bool",
        edit(outputs=[{"name": "y", "parameters": {"binary_data": 1}}]),
        "output 'y' parameters: binary_data: expected a boolean, got an integer",
    ),
    Case(
        "output-classification",
        edit(outputs=[{"name": "y", "parameters": {"classification": 3}}]),
        "output 'y' parameters: classification is not supported by this runtime",
    ),
    Case(
        "output-binary-and-shm",
        edit(outputs=[{"name": "y", "parameters": {"binary_data": True, **BAD_SHM}}]),
        "output 'y' parameters: binary_data and shared_memory_region exclude each other",
    ),
    Case(
        "output-shm-unknown",
        edit(outputs=[{"name": "y", "parameters": BAD_SHM}]),
        "unknown shared memory region 'nope'",
        SharedMemoryError,
    ),
    Case(
        "body-too-large",
        raw(b" " * (LIMITS.max_request_bytes + 1)),
        f"request body of {LIMITS.max_request_bytes + 1} bytes is over the limit",
        RequestTooLargeError,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_request_is_refused_with_a_one_line_message(case: Case) -> None:
    body, header = case.build()
    with pytest.raises(case.error, match=re.escape(case.match)) as caught:
        decode(body, header)
    assert type(caught.value) is case.error
    assert "\n" not in str(caught.value)
    assert caught.value.http_status == (413 if case.error is RequestTooLargeError else 400)


def test_the_valid_base_of_the_malformed_table_decodes() -> None:
    assert_inputs(decode(*edit()()))


# --- parse_json_body -------------------------------------------------------------------------


def test_parse_json_body_returns_the_document() -> None:
    assert parse_json_body(b'{"key": "/k", "offset": 0, "byte_size": 8}', LIMITS) == {
        "key": "/k",
        "offset": 0,
        "byte_size": 8,
    }


@pytest.mark.parametrize("depth", [1, 10, 64])
def test_parse_json_body_accepts_nesting_up_to_the_limit(depth: int) -> None:
    document = {"a": nested(depth - 1)}  # the object itself is one level
    assert parse_json_body(orjson.dumps(document), LIMITS) == document


def test_parse_json_body_finds_a_deep_container_among_many_scalars() -> None:
    document = [*range(100_000), nested(64)]
    with pytest.raises(RequestError, match="JSON nesting is deeper than 64 levels"):
        parse_json_body(orjson.dumps(document), LIMITS)
    with pytest.raises(RequestError, match="JSON nesting is deeper than 64 levels"):
        parse_json_body(orjson.dumps({"a": nested(64)}), LIMITS)


@pytest.mark.parametrize(
    ("body", "error", "match"),
    [
        (b"{", RequestError, "malformed JSON: "),
        (b"[Infinity]", RequestError, "malformed JSON: "),
        (b"", RequestError, "malformed JSON: "),
        (b"[" * 2000 + b"]" * 2000, RequestError, "malformed JSON: "),  # orjson's own 1024 cap
        (b"[" * 65 + b"]" * 65, RequestError, "JSON nesting is deeper than 64 levels"),
        (b"1" * (LIMITS.max_request_bytes + 1), RequestTooLargeError, "over the limit of 16777216 bytes"),
    ],
)
def test_parse_json_body_refuses(body: bytes, error: Type[Exception], match: str) -> None:
    with pytest.raises(error, match=re.escape(match)):
        parse_json_body(body, LIMITS)


# --- properties ------------------------------------------------------------------------------


def _as_request(body: bytes, headers: Dict[str, str]) -> Tuple[bytes, Optional[str]]:
    """A response's outputs are valid request inputs: send them back as a request."""
    header, binary = split(body, headers)
    return body_of({"inputs": header["outputs"]}, binary)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_tensors_survive_binary_and_json_round_trips(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(DTYPES), label="dtype")
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4), label="shape")
    dtype = np.dtype(name)
    array = data.draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)))
    spec = TensorSpec("t", name, (-1,) * len(shape))
    for binary in (True, False):
        body, headers = encode(request_for([RequestedOutput("t", binary=binary)]), {"t": array})
        assert (HEADER_LENGTH in headers) is binary
        decoded = decode_infer_request(*_as_request(body, headers), [spec], ["t"], SystemSharedMemoryRegistry(), LIMITS)
        back = decoded.inputs["t"]
        assert back.dtype == dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)
        if triton_http is not None:
            size = int(headers[HEADER_LENGTH]) if binary else None
            parsed = triton_http.InferenceServerClient.parse_response_body(body, header_length=size).as_numpy("t")
            assert parsed.shape == array.shape
            assert parsed.dtype == dtype or array.size == 0  # tritonclient < 2.5x: empty binary -> float64
            np.testing.assert_array_equal(parsed, array)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=4)
    | st.floats(allow_nan=False, allow_infinity=False)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)
_PLAUSIBLE = st.sampled_from(
    ["x", "u", "b", "FP32", "UINT8", "BOOL", [2, 3], [2], [1, 2], [True, False], [0, 255], 24, 2, -1, 0]
)
_PARAMETERS = st.dictionaries(
    st.sampled_from(
        ["binary_data_size", "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset", "binary_data"]
    ),
    _PLAUSIBLE | _JSON,
    max_size=3,
)
_TENSOR = st.dictionaries(
    st.sampled_from(["name", "datatype", "shape", "data"]), _PLAUSIBLE | _JSON, max_size=4
).flatmap(lambda item: st.just(item) | _PARAMETERS.map(lambda parameters: {**item, "parameters": parameters}))
_DOCUMENT = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(_TENSOR, max_size=5) | _JSON,
        "outputs": st.lists(_TENSOR, max_size=3) | _JSON,
        "parameters": st.dictionaries(st.sampled_from(["binary_data_output", "priority"]), _JSON, max_size=2) | _JSON,
        "id": _JSON,
    },
)


@settings(max_examples=400, deadline=None)
@given(document=_DOCUMENT, binary=st.binary(max_size=32), with_header=st.booleans())
def test_arbitrary_documents_raise_only_request_errors(
    document: Dict[str, Any], binary: bytes, with_header: bool
) -> None:
    header = orjson.dumps(document)
    specs = (TensorSpec("x", "float32", (-1, 3)), TensorSpec("u", "uint8", (2,)), TensorSpec("b", "bool", (-1,)))
    try:
        request = decode_infer_request(
            header + binary,
            str(len(header)) if with_header else None,
            specs,
            OUTPUTS,
            SystemSharedMemoryRegistry(),
            LIMITS,
        )
    except RequestError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert set(request.inputs) == {"x", "u", "b"}


_NUMBERS = st.integers(-(2**64), 2**64) | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
_DATA = st.recursive(_NUMBERS | _SCALARS, lambda inner: st.lists(inner, max_size=4), max_leaves=16)


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(DTYPES), shape=st.lists(st.integers(0, 3), max_size=3), data=st.lists(_DATA, max_size=6))
def test_arbitrary_data_lists_raise_only_request_errors(name: str, shape: List[int], data: List[Any]) -> None:
    spec = TensorSpec("t", name, (-1,) * len(shape))
    document = {"inputs": [{"name": "t", "datatype": numpy_to_kserve(name), "shape": shape, "data": data}]}
    body = json.dumps(document).encode()  # the standard library writes integers past 64 bits too
    try:
        request = decode_infer_request(body, None, [spec], ["t"], SystemSharedMemoryRegistry(), LIMITS)
    except RequestError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        array = request.inputs["t"]
        assert array.dtype == np.dtype(name) and list(array.shape) == shape
