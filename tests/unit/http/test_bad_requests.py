"""Bad requests against the whole HTTP API: each gets its 4xx status and a JSON ``{"error": ...}`` that says why.

One table: every row is a request that differs from a valid one (see ``test_valid_baselines``) by one
defect, the status it must get, and a piece of the error message that names the defect. No row may
answer 500 or anything but JSON (DESIGN rule 7).
"""

from __future__ import annotations

import copy
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import pytest
from flask import Flask
from flask.testing import FlaskClient

from edge_runtime.config import LimitSettings

HEADER_LENGTH = "Inference-Header-Content-Length"
FAKE_INFER = "/v2/models/fake/infer"
MULTI_INFER = "/v2/models/multi/infer"
SHM_REGION = "region0"  # registered over HTTP by the rows that need it (needs_shm)
SHM_REGION_BYTES = 64  # one FP32 [1, 16] tensor
SMALL_BODY_LIMIT = 1024  # the body cap of the app that the small_limit rows go to
NO_BODY = object()
MakeApp = Callable[..., Flask]
MakeShm = Callable[[int], str]


@dataclass(frozen=True)
class BadRequest:
    """A request, what must come back, and what has to be sent first (``before``: method, path)."""

    method: str
    path: str
    status: int
    message: str
    body: Any = NO_BODY  # bytes are sent as they are; anything else as JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    before: Tuple[Tuple[str, str], ...] = ()
    small_limit: bool = False  # send it to the app with a SMALL_BODY_LIMIT body cap
    json_limit: bool = False  # send it to the app with a SMALL_BODY_LIMIT JSON cap (limits.max_json_bytes)
    needs_shm: bool = False  # needs region SHM_REGION registered (POSIX shared memory)


def fp32_input(**changes: Any) -> Dict[str, Any]:
    """A valid INPUT0 of ``fake`` (FP32 [1, 16]), with ``changes`` applied (None removes a key)."""
    item: Dict[str, Any] = {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}
    for key, value in changes.items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


def fake_request(*inputs: Dict[str, Any], **top: Any) -> Dict[str, Any]:
    """An inference request for ``fake``: the given inputs (default: one valid one) plus top-level keys."""
    return {"inputs": list(inputs) if inputs else [fp32_input()], **top}


def multi_request(a: Optional[Dict[str, Any]] = None, b: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """An inference request for ``multi``: A INT32 [1, 4] and B BOOL [1, 2], either replaced."""
    a = a or {"name": "A", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3, 4]}
    b = b or {"name": "B", "shape": [1, 2], "datatype": "BOOL", "data": [True, False]}
    return {"inputs": [a, b]}


def shm_input(**parameters: Any) -> Dict[str, Any]:
    """INPUT0 read from shared memory with the given parameters."""
    return fp32_input(data=None, parameters=parameters)


def binary(document: Dict[str, Any], tensors: bytes) -> Tuple[bytes, Dict[str, str]]:
    """Body and headers of a binary-extension request: the JSON header, then ``tensors``."""
    header = json.dumps(document).encode()
    return header + tensors, {HEADER_LENGTH: str(len(header))}


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text of ``depth`` nested lists around ``leaf``."""
    return "[" * depth + leaf + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def raw_fake(data_json: str) -> bytes:
    """A ``fake`` request whose INPUT0 data is the literal JSON text ``data_json``."""
    return ('{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"FP32","data":' + data_json + "}]}").encode()


BINARY_INPUT = fp32_input(data=None, parameters={"binary_data_size": 64})
FLOATS = struct.pack("<16f", *([0.5] * 16))
BINARY_BODY, BINARY_HEADERS = binary(fake_request(BINARY_INPUT), FLOATS)
OVER_SMALL_LIMIT = json.dumps(fake_request(fp32_input(data=[0.5] * 16), id="x" * SMALL_BODY_LIMIT)).encode()
DEEP_PARAMETERS = ('{"parameters":' + nested_objects(1000) + ',"inputs":[]}').encode()
DEEP_INPUT_PARAMETERS = (
    '{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"FP32","data":[0],"parameters":'
    + nested_objects(1000) + "}]}"
).encode()
SHM_OK = {"shared_memory_region": SHM_REGION, "shared_memory_byte_size": SHM_REGION_BYTES}
# Under the body cap of the json_limit app, over its JSON cap: a whole JSON body, and a binary request's header
OVER_JSON_LIMIT = json.dumps(fake_request(id="x" * SMALL_BODY_LIMIT)).encode()
BIG_HEADER_BODY, BIG_HEADER_HEADERS = binary(fake_request(BINARY_INPUT, id="x" * SMALL_BODY_LIMIT), FLOATS)
# numpy used to guess a '<U10000' array for this before checking count and types (1.2 GB at 30 000 strings)
AMPLIFYING_DATA = '["' + "x" * 10000 + '"' + ',"a"' * 15 + "]"
INFINITE_BODY, INFINITE_HEADERS = binary(
    fake_request(BINARY_INPUT, outputs=[{"name": "OUTPUT0", "parameters": {"binary_data": False}}]),
    struct.pack("<16f", float("inf"), *([0.5] * 15)),
)


UNKNOWN_NOSUCH = "Request for unknown model: 'nosuch' is not found"  # Triton's text


def case(name: str, request: BadRequest) -> Any:
    return pytest.param(request, id=name)


def infer(status: int, message: str, body: Any, headers: Optional[Mapping[str, str]] = None,
          path: str = FAKE_INFER, **options: Any) -> BadRequest:
    """A bad POST to fake's (or ``path``'s) infer endpoint."""
    return BadRequest("POST", path, status, message, body=body, headers=dict(headers or {}), **options)


CASES: List[Any] = [
    # --- JSON syntax, type of the document, nesting and size caps
    case("malformed-json", infer(400, "malformed JSON", b"{inputs: [}")),
    case("truncated-json", infer(400, "malformed JSON", b'{"inputs": [{"name": "INPUT0", "shape": [1,')),
    case("empty-body", infer(400, "malformed JSON", b"")),
    case("invalid-utf8", infer(400, "malformed JSON", b'{"id": "\xff\xfe", "inputs": []}')),
    case("json-is-a-list", infer(400, "expected a JSON object, got a list", [fake_request()])),
    case("json-is-a-number", infer(400, "expected a JSON object, got an integer", 42)),
    case("json-is-a-string", infer(400, "expected a JSON object, got a string", "inputs")),
    case("nan-literal", infer(400, "malformed JSON", raw_fake("[NaN" + ",0" * 15 + "]"))),
    case("infinity-literal", infer(400, "malformed JSON", raw_fake("[Infinity" + ",0" * 15 + "]"))),
    case("number-beyond-double", infer(400, "malformed JSON", raw_fake("[1e999" + ",0" * 15 + "]"))),
    case("depth-1000-in-input-data", infer(400, "nested deeper than the shape's 2 dims", raw_fake(nested(1000)))),
    case("depth-1000-in-parameters", infer(400, "deeper than 64 levels", DEEP_PARAMETERS)),
    case("depth-1000-in-input-parameters", infer(400, "deeper than 64 levels", DEEP_INPUT_PARAMETERS)),
    case("depth-65-in-unknown-key", infer(400, "deeper than 64 levels",
                                          ('{"extension":' + nested(65) + ',"inputs":[]}').encode())),
    case("depth-2000-past-parser-limit", infer(400, "malformed JSON", raw_fake(nested(2000)))),
    case("depth-1000-top-level-list", infer(400, "expected a JSON object, got a list", nested(1000).encode())),
    case("body-over-cap", infer(413, "exceeds the capacity limit", OVER_SMALL_LIMIT, small_limit=True)),
    case("body-over-cap-repository-index", BadRequest("POST", "/v2/repository/index", 413, "exceeds the capacity",
                                                      body=b" " * (SMALL_BODY_LIMIT + 1), small_limit=True)),
    case("json-body-over-json-cap", infer(413, "over the limit of 1024 bytes for JSON", OVER_JSON_LIMIT,
                                          json_limit=True)),
    case("binary-header-over-json-cap", infer(413, "the JSON header of the request of", BIG_HEADER_BODY,
                                              BIG_HEADER_HEADERS, json_limit=True)),
    case("shm-register-over-json-cap", BadRequest("POST", "/v2/systemsharedmemory/region/r1/register", 413,
                                                  "binary tensor extension", body=b" " * (SMALL_BODY_LIMIT + 1),
                                                  json_limit=True)),
    case("data-amplifying-strings", infer(400, "FP32 takes JSON numbers, got strings", raw_fake(AMPLIFYING_DATA))),
    case("data-boolean-among-numbers", infer(400, "FP32 takes JSON numbers, got values of mixed JSON types",
                                             raw_fake("[true" + ",0" * 15 + "]"))),
    case("output-infinite-as-json", infer(422, "output 'OUTPUT0' holds an infinite value", INFINITE_BODY,
                                          INFINITE_HEADERS)),
    # --- the request object
    case("inputs-missing", infer(400, "request: inputs: required", {"id": "1"})),
    case("inputs-empty", infer(400, "expected at least one input", {"inputs": []})),
    case("inputs-not-a-list", infer(400, "inputs: expected a list, got an object", {"inputs": {"INPUT0": [0]}})),
    case("input-not-an-object", infer(400, "inputs[0]: expected an object, got an integer", {"inputs": [1]})),
    case("id-not-a-string", infer(400, "id: expected a string, got an integer", fake_request(id=7))),
    case("parameters-not-an-object", infer(400, "parameters: expected an object, got a list",
                                           fake_request(parameters=["binary_data_output"]))),
    case("binary-data-output-not-a-bool", infer(400, "binary_data_output: expected a boolean, got a string",
                                                fake_request(parameters={"binary_data_output": "yes"}))),
    # --- inputs: names
    case("input-name-not-a-string", infer(400, "inputs[0]: name: expected a string, got an integer",
                                          fake_request(fp32_input(name=0)))),
    case("input-name-missing", infer(400, "inputs[0]: name: required", fake_request(fp32_input(name=None)))),
    case("missing-input", infer(400, "missing input(s) B", {"inputs": multi_request()["inputs"][:1]},
                                path=MULTI_INFER)),
    case("extra-input", infer(400, "'EXTRA' is not an input of the model",
                              fake_request(fp32_input(), fp32_input(name="EXTRA")))),
    case("duplicate-input", infer(400, "input 'INPUT0' is given twice", fake_request(fp32_input(), fp32_input()))),
    # --- inputs: datatype
    case("datatype-int32-for-fp32", infer(400, "datatype INT32 does not match the model's FP32",
                                          fake_request(fp32_input(datatype="INT32", data=[0] * 16)))),
    case("datatype-unknown", infer(400, "unknown datatype 'FP128'", fake_request(fp32_input(datatype="FP128")))),
    case("datatype-lowercase", infer(400, "unknown datatype 'fp32'", fake_request(fp32_input(datatype="fp32")))),
    case("datatype-bytes", infer(400, "BYTES tensors are not supported", fake_request(fp32_input(datatype="BYTES")))),
    case("datatype-not-a-string", infer(400, "datatype: expected a string, got an integer",
                                        fake_request(fp32_input(datatype=11)))),
    case("datatype-missing", infer(400, "datatype: required", fake_request(fp32_input(datatype=None)))),
    # --- inputs: shape
    case("shape-missing", infer(400, "shape: required", fake_request(fp32_input(shape=None)))),
    case("shape-not-a-list", infer(400, "shape: expected a list, got a string",
                                   fake_request(fp32_input(shape="1,16")))),
    case("shape-with-a-float", infer(400, "shape[0]: expected an integer >= 0, got 1.0",
                                     fake_request(fp32_input(shape=[1.0, 16])))),
    case("shape-with-a-string", infer(400, "shape[1]: expected an integer >= 0, got a string",
                                      fake_request(fp32_input(shape=[1, "16"])))),
    case("shape-with-a-bool", infer(400, "shape[0]: expected an integer >= 0",
                                    fake_request(fp32_input(shape=[True, 16])))),
    case("shape-negative-dim", infer(400, "shape[0]: expected an integer >= 0, got -1",
                                     fake_request(fp32_input(shape=[-1, 16])))),
    case("shape-product-overflows-int64", infer(400, "more than the limit of 67108864 elements",
                                                fake_request(fp32_input(shape=[2**32, 2**32])))),
    case("shape-dims-beyond-int64", infer(400, "shape[0]: expected an integer >= 0, got 1.8446744073709552e+19",
                                          fake_request(fp32_input(shape=[2**64, 16])))),
    case("shape-huge-declared-2**40-elements", infer(400, "more than the limit of 67108864 elements",
                                                     fake_request(fp32_input(shape=[1 << 36, 16])))),
    case("shape-too-many-dims", infer(400, "9 dims, more than the limit of 8",
                                      fake_request(fp32_input(shape=[1] * 9)))),
    case("shape-wrong-rank", infer(400, "shape [16] does not fit the model's [-1, 16]",
                                   fake_request(fp32_input(shape=[16])))),
    case("shape-wrong-dim", infer(400, "shape [2, 8] does not fit the model's [-1, 16]",
                                  fake_request(fp32_input(shape=[2, 8])))),
    # --- inputs: JSON data
    case("data-count-mismatch", infer(400, "data holds 16 values but shape [2, 16] needs 32",
                                      fake_request(fp32_input(shape=[2, 16])))),
    case("data-nested-unlike-shape", infer(400, "data is nested as [2, 8]",
                                           fake_request(fp32_input(data=[[0.5] * 8, [0.5] * 8])))),
    case("data-ragged", infer(400, "not a regular array of numbers",
                              fake_request(fp32_input(shape=[2, 16], data=[[0.5] * 16, [0.5] * 15])))),
    case("data-not-a-list", infer(400, "data: expected a list, got a number", fake_request(fp32_input(data=0.5)))),
    case("data-strings-for-fp32", infer(400, "FP32 takes JSON numbers, got strings",
                                        fake_request(fp32_input(data=["0.5"] * 16)))),
    case("data-booleans-for-fp32", infer(400, "FP32 takes JSON numbers, got booleans",
                                         fake_request(fp32_input(data=[True] * 16)))),
    case("data-nulls-for-fp32", infer(400, "FP32 takes JSON numbers, got values of mixed JSON types",
                                      fake_request(fp32_input(data=[None] * 16)))),
    case("data-out-of-range-for-fp32", infer(400, "a value is out of range for FP32",
                                             fake_request(fp32_input(data=[1e39] * 16)))),
    case("data-floats-for-int32", infer(400, "INT32 takes JSON integers, got floating-point numbers",
                                        multi_request(a={"name": "A", "shape": [1, 4], "datatype": "INT32",
                                                         "data": [1.5, 2, 3, 4]}), path=MULTI_INFER)),
    case("data-above-int32", infer(400, "2147483648 is out of range for INT32",
                                   multi_request(a={"name": "A", "shape": [1, 4], "datatype": "INT32",
                                                    "data": [2**31, 0, 0, 0]}), path=MULTI_INFER)),
    case("data-below-int32", infer(400, "-2147483649 is out of range for INT32",
                                   multi_request(a={"name": "A", "shape": [1, 4], "datatype": "INT32",
                                                    "data": [-(2**31) - 1, 0, 0, 0]}), path=MULTI_INFER)),
    case("data-numbers-for-bool", infer(400, "BOOL takes JSON booleans, got integers",
                                        multi_request(b={"name": "B", "shape": [1, 2], "datatype": "BOOL",
                                                         "data": [1, 0]}), path=MULTI_INFER)),
    case("data-and-binary-both-given", infer(400, "got data and parameters.binary_data_size",
                                             fake_request(fp32_input(parameters={"binary_data_size": 64})))),
    case("no-data-source", infer(400, "expected exactly one of data", fake_request(fp32_input(data=None)))),
    case("input-parameters-not-an-object", infer(400, "input 'INPUT0': parameters: expected an object",
                                                 fake_request(fp32_input(parameters=[1])))),
    # --- binary tensor extension
    case("binary-data-size-without-header", infer(400, "goes past the end of the binary data (0 bytes left)",
                                                  fake_request(BINARY_INPUT))),
    case("binary-byte-size-mismatch", infer(400, "binary_data_size is 60 but the shape and datatype need 64 bytes",
                                            *binary(fake_request(fp32_input(data=None, parameters={
                                                "binary_data_size": 60})), FLOATS[:60]))),
    # One byte off, with a binary section of that size: numpy cannot view 63 or 65 bytes as FP32 (a 500 if unchecked)
    case("binary-data-size-one-byte-short", infer(400, "binary_data_size is 63 but the shape and datatype need 64",
                                                  *binary(fake_request(fp32_input(data=None, parameters={
                                                      "binary_data_size": 63})), FLOATS[:63]))),
    case("binary-data-size-one-byte-long", infer(400, "binary_data_size is 65 but the shape and datatype need 64",
                                                 *binary(fake_request(fp32_input(data=None, parameters={
                                                     "binary_data_size": 65})), FLOATS + b"\0"))),
    case("binary-data-size-negative", infer(400, "binary_data_size: expected an integer >= 0, got -64",
                                            fake_request(fp32_input(data=None, parameters={
                                                "binary_data_size": -64})))),
    case("binary-bool-byte-not-0-or-1", infer(400, "BOOL bytes must be 0 or 1", *binary(multi_request(b={
        "name": "B", "shape": [1, 2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}}), b"\x01\x02"),
        path=MULTI_INFER)),
    case("header-length-larger-than-body", infer(400, "expected an integer from 0 to the body size",
                                                 BINARY_BODY, headers={HEADER_LENGTH: str(len(BINARY_BODY) + 1)})),
    case("header-length-negative", infer(400, "got '-5'", BINARY_BODY, headers={HEADER_LENGTH: "-5"})),
    case("header-length-not-a-number", infer(400, "got 'abc'", BINARY_BODY, headers={HEADER_LENGTH: "abc"})),
    case("header-length-shorter-than-json", infer(400, "malformed JSON", BINARY_BODY, headers={HEADER_LENGTH: "10"})),
    case("trailing-bytes-after-binary", infer(400, "is 68 bytes but the inputs' binary_data_size add up to 64",
                                              BINARY_BODY + b"\0\0\0\0", headers=BINARY_HEADERS)),
    case("binary-section-with-json-inputs", infer(400, "is 64 bytes but the inputs' binary_data_size add up to 0",
                                                  *binary(fake_request(), FLOATS))),
    # --- requested outputs
    case("output-unknown", infer(400, "'NOPE' is not an output of the model",
                                 fake_request(outputs=[{"name": "NOPE"}]))),
    case("output-duplicate", infer(400, "output 'OUTPUT0' is requested twice",
                                   fake_request(outputs=[{"name": "OUTPUT0"}, {"name": "OUTPUT0"}]))),
    case("outputs-not-a-list", infer(400, "outputs: expected a list, got an object",
                                     fake_request(outputs={"name": "OUTPUT0"}))),
    case("output-name-missing", infer(400, "outputs[0]: name: required", fake_request(outputs=[{}]))),
    case("output-classification", infer(400, "classification is not supported",
                                        fake_request(outputs=[{"name": "OUTPUT0", "parameters": {
                                            "classification": 3}}]))),
    case("output-binary-data-not-a-bool", infer(400, "binary_data: expected a boolean, got an integer",
                                                fake_request(outputs=[{"name": "OUTPUT0", "parameters": {
                                                    "binary_data": 1}}]))),
    case("output-binary-and-shm", infer(400, "binary_data and shared_memory_region exclude each other",
                                        fake_request(outputs=[{"name": "OUTPUT0", "parameters": {
                                            "binary_data": True, **SHM_OK}}]), needs_shm=True)),
    case("output-unknown-shm-region", infer(400, "unknown shared memory region 'nope'",
                                            fake_request(outputs=[{"name": "OUTPUT0", "parameters": {
                                                "shared_memory_region": "nope", "shared_memory_byte_size": 64}}]))),
    # --- shared-memory inputs
    case("shm-byte-size-missing", infer(400, "shared_memory_byte_size: required with shared_memory_region",
                                        fake_request(shm_input(shared_memory_region=SHM_REGION)))),
    case("shm-offset-without-region", infer(400, "given without shared_memory_region",
                                            fake_request(fp32_input(parameters={"shared_memory_offset": 0})))),
    case("shm-unknown-region", infer(400, "unknown shared memory region 'nope'",
                                     fake_request(shm_input(shared_memory_region="nope",
                                                            shared_memory_byte_size=64)))),
    case("shm-offset-out-of-range", infer(400, "64 bytes at offset 32 do not fit in its 64 bytes",
                                          fake_request(shm_input(shared_memory_offset=32, **SHM_OK)),
                                          needs_shm=True)),
    case("shm-byte-size-mismatch", infer(400, "shared_memory_byte_size is 32 but the shape and datatype need 64",
                                         fake_request(shm_input(shared_memory_region=SHM_REGION,
                                                                shared_memory_byte_size=32)))),
    # --- the model's batch limit (checked after decoding)
    case("batch-over-max", infer(400, "batch size 9 is outside 1..8",
                                 fake_request(fp32_input(shape=[9, 16], data=[0.5] * 144)))),
    case("batch-zero", infer(400, "batch size 0 is outside 1..8", fake_request(fp32_input(shape=[0, 16], data=[])))),
    case("batch-disagrees-between-inputs", infer(400, "inputs disagree on the batch size", multi_request(
        b={"name": "B", "shape": [2, 2], "datatype": "BOOL", "data": [True] * 4}), path=MULTI_INFER)),
    # --- models and versions
    case("infer-unknown-model", infer(404, UNKNOWN_NOSUCH, fake_request(), path="/v2/models/nosuch/infer")),
    case("infer-unknown-version", infer(404, "'fake' version 7 is not found", fake_request(),
                                        path="/v2/models/fake/versions/7/infer")),
    case("infer-unloaded-model", infer(503, "model 'fake' is not loaded", fake_request(),
                                       before=(("POST", "/v2/repository/models/fake/unload"),))),
    case("metadata-unknown-model", BadRequest("GET", "/v2/models/nosuch", 404, UNKNOWN_NOSUCH)),
    case("metadata-unknown-version", BadRequest("GET", "/v2/models/fake/versions/2", 404,
                                                "'fake' version 2 is not found")),
    case("ready-unknown-model", BadRequest("GET", "/v2/models/nosuch/ready", 404, UNKNOWN_NOSUCH)),
    case("config-unknown-version", BadRequest("GET", "/v2/models/fake/versions/0/config", 404,
                                              "'fake' version 0 is not found")),
    case("stats-unknown-model", BadRequest("GET", "/v2/models/nosuch/stats", 404, UNKNOWN_NOSUCH)),
    # --- transport: encodings, methods, routes
    case("content-encoding-gzip", infer(415, "Content-Encoding 'gzip' is not supported", fake_request(),
                                        headers={"Content-Encoding": "gzip"})),
    case("get-on-infer", BadRequest("GET", FAKE_INFER, 405, "method is not allowed")),
    case("delete-on-model", BadRequest("DELETE", "/v2/models/fake", 405, "method is not allowed")),
    case("post-on-health", BadRequest("POST", "/v2/health/ready", 405, "method is not allowed", body={})),
    case("unknown-route", BadRequest("GET", "/v2/nosuch", 404, "not found on the server")),
    case("model-route-with-extra-segment", BadRequest("GET", "/v2/models/fake/ready/now", 404, "not found")),
    # --- system shared-memory extension
    case("shm-register-no-body", BadRequest("POST", "/v2/systemsharedmemory/region/r1/register", 400,
                                            "register needs a JSON object")),
    case("shm-register-body-a-list", BadRequest("POST", "/v2/systemsharedmemory/region/r1/register", 400,
                                                "the register request body must be a JSON object",
                                                body=[{"key": "/k"}])),
    case("shm-register-missing-key", BadRequest("POST", "/v2/systemsharedmemory/region/r1/register", 400,
                                                "'key' must be a string", body={"offset": 0, "byte_size": 64})),
    case("shm-register-unknown-key", BadRequest("POST", "/v2/systemsharedmemory/region/r1/register", 400,
                                                "cannot open key '/edge-runtime-test-no-such-key'",
                                                body={"key": "/edge-runtime-test-no-such-key", "byte_size": 64})),
    case("shm-register-key-with-path", BadRequest("POST", "/v2/systemsharedmemory/region/r1/register", 400,
                                                  "invalid shared memory key '/../etc/passwd'",
                                                  body={"key": "/../etc/passwd", "byte_size": 64})),
    case("shm-register-byte-size-string", BadRequest("POST", "/v2/systemsharedmemory/region/r1/register", 400,
                                                     "'byte_size' must be an integer",
                                                     body={"key": "/k", "byte_size": "64"})),
    case("shm-register-byte-size-missing", BadRequest("POST", "/v2/systemsharedmemory/region/r1/register", 400,
                                                      "'byte_size' must be an integer", body={"key": "/k"})),
    case("shm-register-byte-size-zero", BadRequest("POST", "/v2/systemsharedmemory/region/r1/register", 400,
                                                   "byte_size must be an integer >= 1", body={"key": "/k",
                                                                                            "byte_size": 0})),
    case("shm-register-negative-offset", BadRequest("POST", "/v2/systemsharedmemory/region/r1/register", 400,
                                                    "offset must be an integer >= 0",
                                                    body={"key": "/k", "offset": -1, "byte_size": 4})),
    case("shm-register-name-taken", BadRequest("POST", f"/v2/systemsharedmemory/region/{SHM_REGION}/register", 400,
                                               f"region '{SHM_REGION}' is already registered",
                                               body={"key": "/k", "byte_size": 4}, needs_shm=True)),
    case("cuda-shm-register", BadRequest("POST", "/v2/cudasharedmemory/region/r1/register", 400,
                                         "failed to register CUDA shared memory region: 'r1', GPUs not supported",
                                         body={"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 4})),
    case("cuda-shm-region-status-unknown", BadRequest("GET", "/v2/cudasharedmemory/region/r1/status", 404,
                                                      "Unable to find cuda shared memory region: 'r1'")),
    case("shm-region-status-unknown", BadRequest("GET", "/v2/systemsharedmemory/region/nope/status", 400,
                                                 "unknown shared memory region 'nope'")),
    # --- model-repository extension
    case("repository-load-unknown-model", BadRequest("POST", "/v2/repository/models/nosuch/load", 404,
                                                     "no model 'nosuch' in the repository")),
    case("repository-load-config-not-json", BadRequest("POST", "/v2/repository/models/fake/load", 400,
                                                       "parameters.config is not valid JSON",
                                                       body={"parameters": {"config": "not json"}})),
    case("repository-load-file-override", BadRequest("POST", "/v2/repository/models/fake/load", 400,
                                                     "ship a signed bundle",
                                                     body={"parameters": {"file:1/model.onnx": "AAAA"}})),
    case("repository-load-parameters-a-list", BadRequest("POST", "/v2/repository/models/fake/load", 400,
                                                         "'parameters' must be a JSON object",
                                                         body={"parameters": ["config"]})),
    case("repository-load-body-a-list", BadRequest("POST", "/v2/repository/models/fake/load", 400,
                                                   "the load request body must be a JSON object", body=["fake"])),
    case("repository-unload-unknown-model", BadRequest("POST", "/v2/repository/models/nosuch/unload", 404,
                                                       "model 'nosuch' is not loaded")),
    case("repository-unload-twice", BadRequest("POST", "/v2/repository/models/multi/unload", 404,
                                               "model 'multi' is not loaded",
                                               before=(("POST", "/v2/repository/models/multi/unload"),))),
    case("repository-unload-body-a-number", BadRequest("POST", "/v2/repository/models/multi/unload", 400,
                                                       "the unload request body must be a JSON object", body=1)),
    case("repository-index-body-a-string", BadRequest("POST", "/v2/repository/index", 400,
                                                      "the index request body must be a JSON object", body="ready")),
    case("repository-index-body-null", BadRequest("POST", "/v2/repository/index", 400,
                                                  "the index request body must be a JSON object", body=b"null")),
    case("repository-index-ready-not-boolean", BadRequest("POST", "/v2/repository/index", 400,
                                                          "'ready' must be a boolean", body={"ready": {}})),
    case("repository-load-parameters-null", BadRequest("POST", "/v2/repository/models/fake/load", 400,
                                                       "'parameters' must be a JSON object",
                                                       body={"parameters": None})),
    case("repository-unload-parameters-a-string", BadRequest("POST", "/v2/repository/models/multi/unload", 400,
                                                             "'parameters' must be a JSON object",
                                                             body={"parameters": "x"})),
    case("repository-index-malformed", BadRequest("POST", "/v2/repository/index", 400, "malformed JSON",
                                                  body=b'{"ready": tru')),
    # Only a zero-byte body is empty (as in Triton): whitespace alone is not a JSON text (was 200), and a
    # vertical tab or form feed is not even JSON whitespace
    case("repository-index-json-whitespace", BadRequest("POST", "/v2/repository/index", 400, "malformed JSON",
                                                        body=b" \t\r\n")),
    case("repository-index-vertical-tab", BadRequest("POST", "/v2/repository/index", 400, "malformed JSON",
                                                     body=b"\x0b")),
    case("shm-register-form-feed", BadRequest("POST", "/v2/systemsharedmemory/region/r/register", 400,
                                              "malformed JSON", body=b"\x0c")),
    case("repository-index-depth-1000", BadRequest("POST", "/v2/repository/index", 400, "deeper than 64 levels",
                                                   body=('{"ready":' + nested(1000) + "}").encode())),
]


def send(client: FlaskClient, request: BadRequest) -> Any:
    kwargs: Dict[str, Any] = {"method": request.method, "headers": dict(request.headers)}
    if isinstance(request.body, bytes):
        kwargs["data"] = request.body
    elif request.body is not NO_BODY:
        kwargs["data"] = json.dumps(request.body)
        kwargs["content_type"] = "application/json"
    return client.open(request.path, **kwargs)


def register_region(client: FlaskClient, make_shm: MakeShm) -> None:
    """Register a fresh shm object of SHM_REGION_BYTES bytes as SHM_REGION, over HTTP."""
    body = {"key": make_shm(SHM_REGION_BYTES), "offset": 0, "byte_size": SHM_REGION_BYTES}
    response = client.post(f"/v2/systemsharedmemory/region/{SHM_REGION}/register", json=body)
    assert response.status_code == 200, response.get_data()


@pytest.mark.parametrize("bad", CASES)
def test_bad_request(bad: BadRequest, client: FlaskClient, make_app: MakeApp, request: pytest.FixtureRequest) -> None:
    target = client
    if bad.small_limit:
        target = make_app(LimitSettings(max_request_bytes=SMALL_BODY_LIMIT)).test_client()
    elif bad.json_limit:
        target = make_app(LimitSettings(max_json_bytes=SMALL_BODY_LIMIT)).test_client()
    if bad.needs_shm:
        register_region(target, request.getfixturevalue("make_shm"))  # skips without /dev/shm
    for method, path in bad.before:
        assert target.open(path, method=method).status_code == 200
    response = send(target, bad)
    assert response.status_code != 500, response.get_data(as_text=True)
    assert response.is_json, f"{response.status_code} {response.content_type}: {response.get_data()[:200]!r}"
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert bad.message in body["error"]
    assert response.status_code == bad.status, body


def test_the_table_is_large_and_its_names_unique() -> None:
    names = [param.id for param in CASES]
    assert len(names) >= 45
    assert len(set(names)) == len(names)


VALID = [
    pytest.param(("POST", FAKE_INFER, fake_request(), {}), id="json-fake"),
    pytest.param(("POST", MULTI_INFER, multi_request(), {}), id="json-multi"),
    pytest.param(("POST", FAKE_INFER, BINARY_BODY, BINARY_HEADERS), id="binary-fake"),
    pytest.param(("POST", FAKE_INFER, fake_request(fp32_input(data=[[0.5] * 16])), {}), id="json-nested-data"),
    pytest.param(("POST", FAKE_INFER, fake_request(shm_input(**SHM_OK)), {}), id="shm-fake"),
    pytest.param(("POST", "/v2/repository/models/fake/load", {"parameters": {}}, {}), id="repository-load"),
    pytest.param(("POST", "/v2/repository/index", b"", {}), id="repository-index"),
    pytest.param(("GET", "/v2/cudasharedmemory/status", b"", {}), id="cuda-shm-status"),
    pytest.param(("POST", "/v2/cudasharedmemory/unregister", b"", {}), id="cuda-shm-unregister-all"),
    pytest.param(("POST", "/v2/cudasharedmemory/region/r1/unregister", b"", {}), id="cuda-shm-unregister-one"),
]


@pytest.mark.parametrize("valid", VALID)
def test_valid_baselines(
    valid: Tuple[str, str, Any, Dict[str, str]], client: FlaskClient, request: pytest.FixtureRequest
) -> None:
    """The requests the table breaks are accepted as they are: each row fails for its own defect."""
    method, path, body, headers = valid
    if not isinstance(body, bytes) and "shared_memory_region" in json.dumps(body):
        register_region(client, request.getfixturevalue("make_shm"))
    response = send(client, BadRequest(method, path, 200, "", body=copy.deepcopy(body), headers=headers))
    assert response.status_code == 200, response.get_data()[:300]
    if path.endswith("/infer") and HEADER_LENGTH not in response.headers:  # JSON outputs: all values there
        outputs = response.get_json()["outputs"]
        assert outputs and all(len(output["data"]) == output["shape"][0] * output["shape"][1] for output in outputs)


@pytest.mark.parametrize(("method", "path", "status"), [
    pytest.param("GET", "/no/such/path", 404, id="unknown-path"),
    pytest.param("PUT", "/v2/models/fake/infer", 405, id="wrong-method"),
])
def test_routing_errors_answer_json_not_html(client: FlaskClient, method: str, path: str, status: int) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert b"<html" not in response.get_data().lower()
    assert isinstance(response.get_json()["error"], str) and response.get_json()["error"]


def test_405_lists_the_allowed_methods(client: FlaskClient) -> None:
    response = client.get(FAKE_INFER)
    assert response.status_code == 405
    assert "POST" in {method.strip() for method in response.headers.get("Allow", "").split(",")}
