"""The health gate: a new model version must serve well beside the active one before it replaces it.

Steps, all through the runtime's restricted repository API on loopback (stdlib HTTP, so the
agent needs no client library): stage the version (the runtime verifies, loads and warms it up
beside the active one), send ``probe_requests`` inferences to ``/v2/models/<m>/versions/<v>/infer``
(the bundle's probe set, else zeros shaped from the version's metadata), then decide: failures
(an error answer or a non-finite output) at most ``max_failures``, p99 latency within
``max_p99_ms`` and, when ``accuracy_min`` is set, enough probes whose top-1 output agrees with
the probe set's expected one. On pass the version is promoted (the runtime writes the pointer and
drains the old version, so requests in flight finish on it); on fail it is unloaded and the
active version is never touched. The result says why, in one line: a gate never raises.

Outputs are asked for in the binary extension, so NaN and infinities come back as they are
(JSON cannot carry an infinity, and NaN would be ``null``).
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote, urlsplit

import numpy as np

from edge_runtime.config.device import HealthGateSettings
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.fleet.errors import RuntimeApiError, RuntimeUnreachableError
from edge_runtime.server.datatypes import kserve_to_numpy, numpy_to_kserve

Tensors = Mapping[str, np.ndarray]
_STAGED_REASON = "loaded beside the active version"  # the index's reason for a staged version


@dataclass(frozen=True)
class GateResult:
    """The gate's decision, why (one line), and what the probes measured.

    ``retry``: the gate could not start because the runtime did not answer; the version was never
    judged, so the next pass gates it again (it is not remembered as refused).
    """

    passed: bool
    reason: str
    p50_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    failures: int = 0
    retry: bool = False


@dataclass(frozen=True)
class ProbeStats:
    """What the probes measured: latencies of the answered ones, failures and the first one's reason."""

    latencies_ms: List[float]
    failures: int
    first_failure: str
    outputs: List[Dict[str, np.ndarray]]


class RuntimeApi:
    """JSON and binary-tensor requests to one runtime over a kept-alive HTTP connection."""

    def __init__(self, runtime_url: str, headers: Optional[Mapping[str, str]] = None,
                 timeout_s: float = 600.0) -> None:
        parts = urlsplit(runtime_url if "://" in runtime_url else "http://" + runtime_url)
        if parts.scheme != "http" or not parts.hostname:
            raise RuntimeApiError(f"runtime URL {runtime_url!r}: expected http://host:port")
        self._host, self._port = parts.hostname, parts.port or 80
        self._headers = dict(headers or {})
        self._timeout_s = timeout_s
        self._connection: Optional[http.client.HTTPConnection] = None

    def close(self) -> None:
        """Close the connection (the next request opens another)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def request(self, method: str, path: str, body: bytes = b"", headers: Optional[Mapping[str, str]] = None,
                timeout_s: Optional[float] = None) -> Tuple[int, Dict[str, str], bytes]:
        """One exchange: status, headers (lower-case), body; RuntimeApiError when there is no answer.

        ``timeout_s``: this request's socket timeout (None: the API's), e.g. a stage that builds an engine.
        """
        for attempt in (1, 2):  # a kept-alive connection the server closed: retry once on a new one
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
            self._set_timeout(self._connection, timeout_s or self._timeout_s)
            try:
                self._connection.request(method, path, body=body, headers={**self._headers, **(headers or {})})
                reply = self._connection.getresponse()
                data = reply.read()
                return reply.status, {k.lower(): v for k, v in reply.getheaders()}, data
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2 or not isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError)):
                    raise RuntimeUnreachableError(f"{method} {path}: no answer from the runtime at "
                                          f"{self._host}:{self._port} ({type(exc).__name__}: {exc})") from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _set_timeout(connection: http.client.HTTPConnection, seconds: float) -> None:
        """The socket timeout of the next exchange (at connect, and on a kept-alive socket)."""
        connection.timeout = seconds
        if connection.sock is not None:
            connection.sock.settimeout(seconds)

    def call(self, method: str, path: str, payload: Optional[Dict[str, Any]] = None,
             timeout_s: Optional[float] = None) -> Any:
        """A JSON request whose answer must be 200; otherwise RuntimeApiError with the runtime's error."""
        body = b"" if payload is None else json.dumps(payload).encode()
        status, _, data = self.request(method, path, body, {"Content-Type": "application/json"}, timeout_s)
        if status != 200:
            raise RuntimeApiError(f"{method} {path}: {status} {_error_text(data)}")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise RuntimeApiError(f"{method} {path}: the answer is not JSON") from exc


def _error_text(data: bytes) -> str:
    """The runtime's ``{"error": ...}`` message, or the start of the body, on one line."""
    try:
        message = str(json.loads(data).get("error", ""))
    except (ValueError, AttributeError):
        message = data[:200].decode("utf-8", "replace")
    return " ".join(message.split()) or "(no message)"


def run_gate(runtime_url: str, model: str, version: str, settings: HealthGateSettings,
             probe_inputs: Optional[Sequence[Tensors]] = None, headers: Optional[Mapping[str, str]] = None,
             expected_outputs: Optional[Sequence[Tensors]] = None) -> GateResult:
    """Stage ``model`` ``version``, probe it, then promote it (pass) or unload it (fail); never raises."""
    if settings.accuracy_min is not None and not (probe_inputs and expected_outputs):
        return GateResult(False, f"{model} version {version}: health_gate.accuracy_min is set but there is "
                                 "no probe set with expected outputs")
    api = RuntimeApi(runtime_url, headers)
    try:
        return _gate(api, model, version, settings, probe_inputs, expected_outputs)
    finally:
        api.close()


def _gate(api: RuntimeApi, model: str, version: str, settings: HealthGateSettings,
          probe_inputs: Optional[Sequence[Tensors]], expected: Optional[Sequence[Tensors]]) -> GateResult:
    base = f"/v2/repository/models/{quote(model, safe='')}/versions/{quote(version, safe='')}"
    where = f"{model} version {version}"
    try:
        _refuse_active(api, model, version)
        api.call("POST", base + "/stage", {}, timeout_s=settings.stage_timeout_s)
    except RuntimeApiError as exc:
        if isinstance(exc.__cause__, socket.timeout):  # still loading, or building an engine: not judged
            return GateResult(False, f"{where}: not staged: the runtime did not answer the stage request within "
                                     f"health_gate.stage_timeout_s ({settings.stage_timeout_s:g} s); an engine "
                                     "build may still be running: the next pass tries again", retry=True)
        return GateResult(False, f"{where}: not staged: {exc}", retry=isinstance(exc, RuntimeUnreachableError))
    try:
        inputs = list(probe_inputs) if probe_inputs else [_zeros(api, model, version)]
        stats = _probe(api, model, version, inputs, settings)
        verdict = _judge(where, stats, settings, expected)
    except EdgeRuntimeError as exc:  # the runtime's API, or probe inputs the API cannot carry
        verdict = GateResult(False, f"{where}: {exc}")
    if verdict.passed:
        try:
            api.call("POST", base + "/promote", {})
            return verdict
        except RuntimeApiError as exc:
            verdict = GateResult(False, f"{where}: passed its probes but was not promoted: {exc}",
                                 verdict.p50_ms, verdict.p99_ms, verdict.failures)
    return _unload_after(api, base, verdict)


def _refuse_active(api: RuntimeApi, model: str, version: str) -> None:
    """RuntimeApiError when ``version`` is already the active one: a failed gate must never unload it."""
    entries = api.call("POST", "/v2/repository/index", {})
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise RuntimeApiError("POST /v2/repository/index: the answer is not a list of entries")
    for entry in entries:
        if (entry.get("name"), entry.get("version")) == (model, version) and entry.get("state") == "READY" \
                and entry.get("reason") != _STAGED_REASON:
            raise RuntimeApiError("it is already the active version")


def _unload_after(api: RuntimeApi, base: str, verdict: GateResult) -> GateResult:
    """Unload the staged version after a failed gate; a failure to do so joins the reason."""
    try:
        api.call("POST", base + "/unload", {})
        reason = verdict.reason + "; unloaded it, the active version is unchanged"
    except RuntimeApiError as exc:
        reason = f"{verdict.reason}; and unloading it failed: {exc}"
    return GateResult(False, reason, verdict.p50_ms, verdict.p99_ms, verdict.failures)


def _zeros(api: RuntimeApi, model: str, version: str) -> Dict[str, np.ndarray]:
    """One probe of zeros shaped from the version's metadata (each dynamic dimension as 1)."""
    metadata = api.call("GET", f"/v2/models/{quote(model, safe='')}/versions/{quote(version, safe='')}")
    try:
        return {spec["name"]: np.zeros([d if d > 0 else 1 for d in spec["shape"]], kserve_to_numpy(spec["datatype"]))
                for spec in metadata["inputs"]}
    except (KeyError, TypeError, EdgeRuntimeError) as exc:
        raise RuntimeApiError(f"cannot shape probe inputs from the metadata ({type(exc).__name__}: {exc})") from exc


def _probe(api: RuntimeApi, model: str, version: str, inputs: Sequence[Tensors],
           settings: HealthGateSettings) -> ProbeStats:
    """Send ``probe_requests`` inferences (cycling through ``inputs``), stopping once too many failed."""
    path = f"/v2/models/{quote(model, safe='')}/versions/{quote(version, safe='')}/infer"
    latencies: List[float] = []
    outputs: List[Dict[str, np.ndarray]] = []
    failures, first = 0, ""
    for index in range(settings.probe_requests):
        body, header_length = _encode(inputs[index % len(inputs)])
        start = time.perf_counter()
        status, reply_headers, data = api.request("POST", path, body, {
            "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)})
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        decoded: Dict[str, np.ndarray] = {}
        problem = f"{status} {_error_text(data)}" if status != 200 else ""
        if not problem:
            latencies.append(elapsed_ms)
            decoded, problem = _decode(reply_headers, data)
        outputs.append(decoded)  # index-aligned with the probes, for the accuracy check
        if problem:
            failures += 1
            first = first or f"probe {index + 1}: {problem}"
            if failures > settings.max_failures:
                break
    return ProbeStats(latencies, failures, first, outputs)


def _encode(inputs: Tensors) -> Tuple[bytes, int]:
    """An inference request in the binary extension: JSON header, then each input's raw bytes."""
    arrays = {name: np.ascontiguousarray(value) for name, value in inputs.items()}
    try:
        specs = [{"name": name, "datatype": numpy_to_kserve(array.dtype), "shape": list(array.shape),
                  "parameters": {"binary_data_size": array.nbytes}} for name, array in arrays.items()]
    except ValueError as exc:
        raise RuntimeApiError(f"a probe input cannot be sent to the runtime ({exc})") from exc
    header = json.dumps({"inputs": specs, "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
                             for array in arrays.values()), len(header)


def _decode(headers: Mapping[str, str], data: bytes) -> Tuple[Dict[str, np.ndarray], str]:
    """The outputs of a binary-extension answer, and a problem ("" if none: every float is finite)."""
    outputs: Dict[str, np.ndarray] = {}
    try:
        length = int(headers.get("inference-header-content-length", len(data)))
        offset = length
        for spec in json.loads(data[:length])["outputs"]:
            size = int(spec.get("parameters", {}).get("binary_data_size", -1))
            if size < 0:
                return outputs, f"output {spec['name']!r} did not come back in binary"
            array = np.frombuffer(data[offset:offset + size], kserve_to_numpy(spec["datatype"]))
            outputs[spec["name"]] = array.reshape(spec["shape"])
            offset += size
    except (KeyError, TypeError, ValueError, EdgeRuntimeError) as exc:
        return {}, f"unreadable answer ({type(exc).__name__}: {exc})"
    for name, array in outputs.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            return outputs, f"output {name!r} holds NaN or infinity"
    return outputs, ""


def _judge(where: str, stats: ProbeStats, settings: HealthGateSettings,
           expected: Optional[Sequence[Tensors]]) -> GateResult:
    """Pass or fail the measured probes against the budget."""
    p50, p99 = _percentile(stats.latencies_ms, 50), _percentile(stats.latencies_ms, 99)
    failures = stats.failures
    if failures > settings.max_failures:
        reason = f"{where}: {failures} probe(s) failed (at most {settings.max_failures} allowed); {stats.first_failure}"
        return GateResult(False, reason, p50, p99, failures)
    if p99 is not None and p99 > settings.max_p99_ms:
        reason = f"{where}: p99 latency {p99:.1f} ms is over the budget of {settings.max_p99_ms:g} ms"
        return GateResult(False, reason, p50, p99, failures)
    if settings.accuracy_min is not None and expected:
        agreement = _agreement(stats.outputs, expected)
        if agreement < settings.accuracy_min:
            reason = (f"{where}: {agreement:.1%} of the probe set agrees with its expected outputs "
                      f"(at least {settings.accuracy_min:.1%} required)")
            return GateResult(False, reason, p50, p99, failures)
    reason = f"{where}: passed {len(stats.latencies_ms)} probe(s) (p50 {p50 or 0:.1f} ms, p99 {p99 or 0:.1f} ms)"
    return GateResult(True, reason, p50, p99, failures)


def _agreement(outputs: Sequence[Mapping[str, np.ndarray]], expected: Sequence[Tensors]) -> float:
    """The fraction of the probe set (one pass) whose every output has the expected top-1 along its last axis."""
    count = min(len(outputs), len(expected))
    if count == 0:
        return 0.0
    agreed = 0
    for got, want in zip(outputs[:count], expected[:count]):
        agreed += all(name in got and got[name].shape == np.shape(value)
                      and np.array_equal(np.argmax(got[name], axis=-1), np.argmax(value, axis=-1))
                      for name, value in want.items())
    return agreed / len(expected)


def _percentile(values: Sequence[float], percent: float) -> Optional[float]:
    """The nearest-rank percentile (None for no values): with 20 probes, p99 is the slowest."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100.0 * len(ordered)) - 1)]
