"""docs/openapi.yaml against the app: schemathesis generates requests from the document, in-process (WSGI).

Every operation is fuzzed (explicit examples, coverage cases, then random positive and negative
requests); each response must not be a 5xx and must conform to the document: a documented status,
content type and headers, and a JSON body matching the response schema; and a request that breaks
the document's request schema must be refused with a 4xx (negative_data_rejection). The app serves the fake
models ``fake`` and ``multi``; generated model names are swapped for theirs half the time, so that
model-scoped operations reach past the 404, and half of the inference requests to a served model get
inputs that fit it (names, datatypes, shapes, value counts; random values, batch sizes, requested
outputs; JSON or binary), so that the fuzzing reaches the decoding of values and the model itself.

Two more tests put every operation in front of the middlewares that answer before the app: restricted
API groups (403 for every group restricted) and bounded admission (503 with Retry-After while the
one slot is taken), each answer checked against the document.

CI runs a few examples per operation; ``scripts/bench/api_fuzz.py`` runs many more
(``SCHEMATHESIS_EXAMPLES=1000``) and reads the responses' status codes per operation from the JSON
file named by ``SCHEMATHESIS_TALLY``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis needs Python >= 3.10 (the dev extra)")

import numpy as np  # noqa: E402
from fake_models import multi_backend  # noqa: E402
from flask import Flask  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from edge_runtime.backends.fake import FakeBackend  # noqa: E402
from edge_runtime.config import HttpSettings, RuntimeSettings, SharedMemorySettings, load_device_config  # noqa: E402
from edge_runtime.server.admission import always_admitted  # noqa: E402
from edge_runtime.server.app import EXTENSION_KEY, create_app  # noqa: E402
from edge_runtime.server.restricted import RESTRICTABLE_GROUPS, Restriction  # noqa: E402
from edge_runtime.server.shm import SystemSharedMemoryRegistry  # noqa: E402
from edge_runtime.serving.repository import ModelRepository  # noqa: E402

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
HEADER_LENGTH = "Inference-Header-Content-Length"
# name, datatype, dims after the batch axis, struct format of one element (little-endian)
MODEL_INPUTS = {
    "fake": [("INPUT0", "FP32", [16], "f")],
    "multi": [("A", "INT32", [4], "i"), ("B", "BOOL", [2], "?")],
}
MODEL_OUTPUTS = {"fake": ["OUTPUT0"], "multi": ["A_OUT", "B_OUT"]}
MODELS = tuple(MODEL_INPUTS)
EXAMPLE_SHM_KEY = "input_data"  # the document's register example names the key "/input_data"
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25"))
TALLY_PATH = os.environ.get("SCHEMATHESIS_TALLY")
tally: Dict[str, Counter] = defaultdict(Counter)  # "METHOD path" -> status code -> responses
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]
CONFORMANCE_CHECKS = [check for check in CHECKS if check is not schemathesis.checks.not_a_server_error]

schema = schemathesis.openapi.from_path(str(OPENAPI))
# The fake model computes 2x+1 and casts back: inputs near the ends of the INT32 / FP32 ranges overflow
# there (FP32 to +/-inf, which the JSON response writes as null, as the document says).
pytestmark = [
    pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning"),
]


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: Optional[Dict[str, Any]]) -> st.SearchStrategy:
    """Half the time, name a served model (and its version), so requests get past the 404."""
    if not path_parameters or "model_name" not in path_parameters:
        return st.just(path_parameters)
    served = {"model_name": st.sampled_from(MODELS)}
    if "model_version" in path_parameters:
        served["model_version"] = st.sampled_from(["1", path_parameters["model_version"]])
    return st.one_of(st.just(path_parameters), st.fixed_dictionaries(served))


def _values(datatype: str, wide: bool) -> st.SearchStrategy:
    """Values for one element; ``wide`` reaches past the datatype's range (then a 400 is right)."""
    if datatype == "BOOL":
        return st.booleans()
    if datatype == "INT32":
        return st.integers(-(2**31) - 1, 2**31) if wide else st.integers(-(2**31), 2**31 - 1)
    if wide:
        return st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**64), 2**64))
    return st.one_of(st.floats(-1e30, 1e30), st.integers(-(2**24), 2**24))


@st.composite
def fitting_request(draw: st.DrawFn, model: str, base: Dict[str, Any]) -> Tuple[Dict[str, Any], bytes]:
    """``base`` with inputs that fit ``model`` (and maybe real outputs), and its binary section."""
    batch = draw(st.integers(0, 9), label="batch")
    binary = draw(st.booleans(), label="binary inputs")
    wide = draw(st.integers(0, 3), label="range") == 0  # a quarter of the requests go out of range
    inputs, chunks = [], []
    for name, datatype, dims, fmt in MODEL_INPUTS[model]:
        count = batch * math.prod(dims)
        values = draw(st.lists(_values(datatype, wide), min_size=count, max_size=count), label=name)
        item: Dict[str, Any] = {"name": name, "datatype": datatype, "shape": [batch, *dims]}
        if binary and (fmt != "i" or all(-(2**31) <= v < 2**31 for v in values)):
            chunk = _pack_floats(values) if fmt == "f" else struct.pack(f"<{count}{fmt}", *values)
            item["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            item["data"] = values
        inputs.append(item)
    request = {**base, "inputs": inputs}
    if draw(st.booleans(), label="real outputs"):
        names = draw(st.lists(st.sampled_from(MODEL_OUTPUTS[model]), unique=True), label="outputs")
        request["outputs"] = [{"name": n, "parameters": {"binary_data": draw(st.booleans())}} for n in names]
    return request, b"".join(chunks)


def _pack_floats(values: List[Any]) -> bytes:
    # Values beyond float32's range become +/-inf, as a client's numpy cast would make them.
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float64).astype("<f4").tobytes()


@schema.hook
def flatmap_case(context: Any, case: Any) -> st.SearchStrategy:
    """Half the time, give a positive inference case inputs that fit the served model it names.

    Negative cases stay as generated: a replaced binary body cannot be revalidated, so the case would
    still count as schema-violating and its acceptance be reported.
    """
    model = (case.path_parameters or {}).get("model_name")
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if negative or not case.operation.path.endswith("/infer") or model not in MODEL_INPUTS:
        return st.just(case)
    base = case.body if isinstance(case.body, dict) else {}
    return st.one_of(st.just(case), fitting_request(model, base).map(lambda fitted: _with_body(case, *fitted)))


def _with_body(case: Any, request: Dict[str, Any], section: bytes) -> Any:
    fitted = case.derive()
    header = json.dumps(request).encode()
    if section:
        fitted.media_type = "application/octet-stream"
        fitted.body = header + section
        fitted.headers[HEADER_LENGTH] = str(len(header))
    else:
        fitted.media_type = "application/json"
        fitted.body = request
        fitted.headers.pop(HEADER_LENGTH, None)
    return fitted


# Path parameters naming what the fuzzed server serves (the document's examples).
SERVED_PATH_PARAMETERS = {"model_name": "fake", "model_version": "1", "region_name": EXAMPLE_SHM_KEY}


@dataclass
class FuzzedServer:
    app: Flask
    repository: ModelRepository
    runtime: RuntimeSettings


@pytest.fixture(scope="module")
def server(device_configs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedServer]:
    """The app over ``fake`` and ``multi``, its shared-memory keys confined to a temporary directory."""
    runtime = RuntimeSettings(device_config=str(device_configs_dir / "x86-cpu.yaml"), trusted_keys=("unused.pub",),
                              warmup_runs=1)
    repository = ModelRepository(None, runtime, load_device_config(runtime.device_config), trusted_keys=[])
    repository.add_fake("fake", FakeBackend)
    repository.add_fake("multi", multi_backend)
    repository.load_all()
    app = create_app(runtime, repository)
    # Registration is fuzzed with arbitrary keys: in /dev/shm one could map (and an inference
    # then write into) another process's shared memory. Here keys name files of a private
    # directory, which holds the one object that the document's example registers.
    shm_dir = tmp_path_factory.mktemp("shm")
    (shm_dir / EXAMPLE_SHM_KEY).write_bytes(bytes(4096))
    app.extensions[EXTENSION_KEY].shm = SystemSharedMemoryRegistry(SharedMemorySettings(allow_server_owned=True),
                                                                    directory=str(shm_dir))
    yield FuzzedServer(app, repository, runtime)
    if TALLY_PATH:
        Path(TALLY_PATH).write_text(json.dumps({op: dict(codes) for op, codes in tally.items()}, indent=1))
    app.extensions[EXTENSION_KEY].shm.close()
    repository.close()


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_matches_openapi_document(case: Any, server: FuzzedServer) -> None:
    if case.operation.path == "/v2/models/{model_name}" and case.path_parameters["model_name"] == "stats":
        # Negative generation breaks the document's `not: {enum: [stats]}` with exactly that name, but
        # GET /v2/models/stats is the statistics operation (fuzzed on its own), not metadata.
        return
    response = case.call_and_validate(app=server.app, checks=CHECKS)
    tally[f"{case.operation.method.upper()} {case.operation.path}"][str(response.status_code)] += 1
    # Unloading is fuzzed too; load the model again so that later cases find it serving (not 503).
    if case.operation.path.endswith("/unload") and response.status_code == 200:
        server.repository.load(case.path_parameters["model_name"])


def _served_cases() -> Iterator[Any]:
    """One case per operation of the document, naming the served model, its version and a region."""
    for result in schema.get_all_operations():
        operation = result.ok()
        names = {parameter.name: SERVED_PATH_PARAMETERS[parameter.name] for parameter in operation.path_parameters}
        yield operation.Case(path_parameters=names)


def test_restricted_groups_answer_403_as_documented(server: FuzzedServer) -> None:
    """With every group restricted, every operation answers Triton's 403, which the document must list."""
    rule = Restriction(frozenset(RESTRICTABLE_GROUPS), "admin-key", b"secret")
    app = create_app(server.runtime, server.repository, restrictions=[rule])
    try:
        for case in _served_cases():
            response = case.call_and_validate(app=app, checks=CHECKS)
            assert response.status_code == 403, case.formatted_path
            assert response.json() == {"error": "This API is restricted, expecting header 'admin-key'"}
    finally:
        app.extensions[EXTENSION_KEY].shm.close()


def _ignore_start(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
    return lambda data: None


def test_admission_refusals_answer_503_as_documented(server: FuzzedServer) -> None:
    """With the one admission slot taken, every operation but health, readiness, /v2 and /metrics answers 503."""
    runtime = dataclasses.replace(server.runtime, http=HttpSettings(threads=2, max_in_flight=1, retry_after_s=3))
    app = create_app(runtime, server.repository)
    held: Any = app.wsgi_app(EnvironBuilder(path="/v2/models/stats").get_environ(), _ignore_start)  # holds the slot
    try:
        for case in _served_cases():
            response = case.call_and_validate(app=app, checks=CONFORMANCE_CHECKS)  # a 503 is expected here
            if always_admitted(case.formatted_path):
                assert response.status_code != 503, case.formatted_path
            else:
                assert response.status_code == 503, case.formatted_path
                assert response.headers.get("retry-after") == ["3"], response.headers
    finally:
        held.close()
        app.extensions[EXTENSION_KEY].shm.close()
