"""The health gate's decisions against a fake runtime API: pass → promote; any failure → unload, one-line reason."""

from __future__ import annotations

import json
import socket
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import pytest

from edge_runtime.config.device import HealthGateSettings, device_config_from_mapping
from edge_runtime.errors import ConfigError
from edge_runtime.fleet import health_gate
from edge_runtime.fleet.health_gate import GateResult, RuntimeApiError, run_gate

Reply = Tuple[int, Dict[str, str], bytes]
BASE = "/v2/repository/models/tiny/versions/2"
STAGED = (200, {"content-type": "application/json"}, b'{"name": "tiny", "version": "2", "state": "READY"}')


def binary_reply(output: np.ndarray) -> Reply:
    """An inference answer in the binary extension holding one FP32 output."""
    header = json.dumps({"model_name": "tiny", "model_version": "2", "outputs": [
        {"name": "output", "datatype": "FP32", "shape": list(output.shape),
         "parameters": {"binary_data_size": output.nbytes}}]}).encode()
    return 200, {"inference-header-content-length": str(len(header))}, header + output.astype("<f4").tobytes()


def json_reply(status: int, payload: Any) -> Reply:
    return status, {"content-type": "application/json"}, json.dumps(payload).encode()


class Clock:
    """A fake perf_counter the fake runtime advances: latencies without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRuntime:
    """The runtime's HTTP API as the gate sees it; records every request."""

    def __init__(self, clock: Clock, infer: Optional[Callable[[int], Reply]] = None,
                 stage: Reply = STAGED,
                 infer_ms: float = 2.0, index: Optional[List[Dict[str, str]]] = None) -> None:
        self.clock, self.stage, self.infer_ms = clock, stage, infer_ms
        self.infer = infer or (lambda n: binary_reply(np.ones((1, 3), np.float32)))
        self.index = index if index is not None else [
            {"name": "tiny", "version": "1", "state": "READY", "reason": ""},
            {"name": "tiny", "version": "2", "state": "UNAVAILABLE", "reason": "not loaded"}]
        self.calls: List[Tuple[str, str]] = []
        self.bodies: List[bytes] = []
        self.headers: List[Dict[str, str]] = []
        self.timeouts: List[Optional[float]] = []  # each request's own timeout (None: the API's)
        self.infers = 0

    def __call__(self, runtime_url: str, headers: Optional[Mapping[str, str]] = None) -> FakeRuntime:
        self.default_headers = dict(headers or {})
        return self

    def close(self) -> None:
        pass

    def request(self, method: str, path: str, body: bytes = b"", headers: Optional[Mapping[str, str]] = None,
                timeout_s: Optional[float] = None) -> Reply:
        self.calls.append((method, path))
        self.timeouts.append(timeout_s)
        self.bodies.append(body)
        self.headers.append({**self.default_headers, **(headers or {})})
        if path.endswith("/infer"):
            self.infers += 1
            self.clock.now += self.infer_ms / 1000.0
            return self.infer(self.infers)
        if path == "/v2/repository/index":
            return json_reply(200, self.index)
        if path == BASE + "/stage":
            return self.stage
        if path in (BASE + "/promote", BASE + "/unload"):
            return json_reply(200, {})
        if path == "/v2/models/tiny/versions/2":
            return json_reply(200, {"name": "tiny", "versions": ["2"], "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [-1, 4]}], "outputs": []})
        return json_reply(404, {"error": f"no route {path}"})

    call = health_gate.RuntimeApi.call

    def acts(self) -> List[str]:
        """The repository acts, in order (stage, promote, unload)."""
        return [path.rsplit("/", 1)[1] for _, path in self.calls if path.startswith(BASE)]


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(health_gate.time, "perf_counter", fake)
    return fake


def gate(monkeypatch: pytest.MonkeyPatch, runtime: FakeRuntime, settings: Optional[HealthGateSettings] = None,
         **kwargs: Any) -> GateResult:
    monkeypatch.setattr(health_gate, "RuntimeApi", runtime)
    return run_gate("http://127.0.0.1:8000", "tiny", "2", settings or HealthGateSettings(probe_requests=5),
                    headers={"repo-key": "s3cret"}, **kwargs)


def test_a_healthy_version_is_promoted(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    runtime = FakeRuntime(clock)
    result = gate(monkeypatch, runtime)
    assert result.passed and result.failures == 0
    assert result.p50_ms == pytest.approx(2.0) and result.p99_ms == pytest.approx(2.0)
    assert runtime.acts() == ["stage", "promote"] and runtime.infers == 5
    assert all(h.get("repo-key") == "s3cret" for h in runtime.headers)  # the restricted header on every call


def test_default_probe_is_zeros_shaped_from_the_metadata(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    runtime = FakeRuntime(clock)
    gate(monkeypatch, runtime)
    first = next(i for i, (_, path) in enumerate(runtime.calls) if path == "/v2/models/tiny/versions/2/infer")
    body, length = runtime.bodies[first], int(runtime.headers[first]["Inference-Header-Content-Length"])
    header = json.loads(body[:length])
    assert header["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                 "parameters": {"binary_data_size": 16}}]
    assert body[length:] == bytes(16) and header["parameters"] == {"binary_data_output": True}


def test_a_failed_probe_unloads_the_version(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    runtime = FakeRuntime(clock, infer=lambda n: json_reply(500, {"error": "backend\nexploded"}) if n == 3
                          else binary_reply(np.zeros((1, 3), np.float32)))
    result = gate(monkeypatch, runtime)
    assert not result.passed and result.failures == 1
    assert runtime.acts() == ["stage", "unload"]
    assert "probe 3: 500 backend exploded" in result.reason and "\n" not in result.reason
    assert "active version is unchanged" in result.reason


def test_failures_within_max_failures_pass(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    runtime = FakeRuntime(clock, infer=lambda n: json_reply(503, {"error": "busy"}) if n == 2
                          else binary_reply(np.zeros((1, 3), np.float32)))
    result = gate(monkeypatch, runtime, HealthGateSettings(probe_requests=5, max_failures=1))
    assert result.passed and result.failures == 1 and runtime.acts() == ["stage", "promote"]


def test_a_slow_version_fails_on_p99(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    runtime = FakeRuntime(clock, infer_ms=250.0)
    result = gate(monkeypatch, runtime, HealthGateSettings(probe_requests=5, max_p99_ms=100.0))
    assert not result.passed and result.p99_ms == pytest.approx(250.0)
    assert "p99 latency 250.0 ms is over the budget of 100 ms" in result.reason
    assert runtime.acts() == ["stage", "unload"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_output_fails(monkeypatch: pytest.MonkeyPatch, clock: Clock, bad: float) -> None:
    runtime = FakeRuntime(clock, infer=lambda n: binary_reply(np.array([[1.0, bad, 0.0]], np.float32)))
    result = gate(monkeypatch, runtime)
    assert not result.passed and "output 'output' holds NaN or infinity" in result.reason
    assert runtime.acts() == ["stage", "unload"] and runtime.infers == 1  # stops once over max_failures


def test_a_refused_stage_is_the_reason_and_nothing_else_happens(monkeypatch: pytest.MonkeyPatch,
                                                                 clock: Clock) -> None:
    runtime = FakeRuntime(clock, stage=json_reply(422, {"error": "failed to load 'tiny' version 2: bad signature"}))
    result = gate(monkeypatch, runtime)
    assert not result.passed and runtime.acts() == ["stage"] and runtime.infers == 0
    assert result.reason == ("tiny version 2: not staged: POST /v2/repository/models/tiny/versions/2/stage: "
                             "422 failed to load 'tiny' version 2: bad signature")


def test_the_active_version_is_never_gated(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    runtime = FakeRuntime(clock, index=[{"name": "tiny", "version": "2", "state": "READY", "reason": ""}])
    result = gate(monkeypatch, runtime)
    assert not result.passed and "already the active version" in result.reason and runtime.acts() == []


def test_a_failed_promote_unloads(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    runtime = FakeRuntime(clock)
    original = runtime.request

    def refuse_promote(method: str, path: str, body: bytes = b"", headers: Optional[Mapping[str, str]] = None,
                       timeout_s: Optional[float] = None) -> Reply:
        if path.endswith("/promote"):
            runtime.calls.append((method, path))
            return json_reply(500, {"error": "cannot record version 2 as active"})
        return original(method, path, body, headers, timeout_s)

    monkeypatch.setattr(runtime, "request", refuse_promote)
    result = gate(monkeypatch, runtime)
    assert not result.passed and runtime.acts() == ["stage", "promote", "unload"]
    assert "passed its probes but was not promoted" in result.reason


def test_an_unreachable_runtime_is_a_one_line_reason() -> None:
    result = run_gate("http://127.0.0.1:9", "tiny", "2", HealthGateSettings(probe_requests=1))
    assert not result.passed and "no answer from the runtime at 127.0.0.1:9" in result.reason
    assert "\n" not in result.reason and "Traceback" not in result.reason
    assert result.retry  # never judged: the sync pass tries the version again later


def test_a_refused_stage_is_a_verdict_not_a_retry(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    runtime = FakeRuntime(clock, stage=json_reply(422, {"error": "failed to load 'tiny' version 2"}))
    assert not gate(monkeypatch, runtime).retry


def test_accuracy_against_the_probe_set(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    probes = [{"input": np.zeros((1, 4), np.float32)}] * 4
    expected = [{"output": np.array([[0.0, 1.0, 0.0]], np.float32)}] * 4
    answers = {1: [0, 1, 0], 2: [0, 1, 0], 3: [1, 0, 0], 4: [0, 1, 0]}  # 3 of 4 agree on top-1
    runtime = FakeRuntime(clock, infer=lambda n: binary_reply(np.array([answers.get(n, [0, 1, 0])], np.float32)))
    passed = gate(monkeypatch, runtime, HealthGateSettings(probe_requests=4, accuracy_min=0.75),
                  probe_inputs=probes, expected_outputs=expected)
    assert passed.passed
    runtime = FakeRuntime(clock, infer=lambda n: binary_reply(np.array([answers.get(n, [0, 1, 0])], np.float32)))
    failed = gate(monkeypatch, runtime, HealthGateSettings(probe_requests=4, accuracy_min=0.9),
                  probe_inputs=probes, expected_outputs=expected)
    assert not failed.passed and "75.0% of the probe set agrees" in failed.reason


def test_accuracy_without_a_probe_set_fails_before_staging(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    runtime = FakeRuntime(clock)
    result = gate(monkeypatch, runtime, HealthGateSettings(probe_requests=4, accuracy_min=0.9))
    assert not result.passed and "no probe set" in result.reason and runtime.calls == []


def test_probe_inputs_the_api_cannot_carry_fail_and_unload(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    runtime = FakeRuntime(clock)
    result = gate(monkeypatch, runtime, probe_inputs=[{"input": np.array([[1 + 2j]])}])
    assert not result.passed and runtime.acts() == ["stage", "unload"] and "\n" not in result.reason


def test_the_stage_request_has_its_own_timeout(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """Staging may build a TensorRT engine on the device (minutes): it waits stage_timeout_s, the rest do not."""
    runtime = FakeRuntime(clock)
    assert gate(monkeypatch, runtime, HealthGateSettings(probe_requests=2, stage_timeout_s=5400.0)).passed
    timeouts = dict(zip([path for _, path in runtime.calls], runtime.timeouts))
    assert timeouts[BASE + "/stage"] == 5400.0
    assert {t for path, t in timeouts.items() if path != BASE + "/stage"} == {None}  # the API's own


class _Answer:
    """What http.client's getresponse gives, enough for RuntimeApi."""

    def __init__(self, payload: Any) -> None:
        self.status, self._data = 200, json.dumps(payload).encode()

    def read(self) -> bytes:
        return self._data

    def getheaders(self) -> List[Tuple[str, str]]:
        return [("Content-Type", "application/json")]


class _SlowStageConnection:
    """An HTTPConnection whose stage request times out (an engine still building); records socket timeouts."""

    made: List[_SlowStageConnection] = []

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.timeout, self.sock = timeout, None
        self.paths: List[str] = []
        self.timeouts: List[float] = []  # the socket timeout of each request
        _SlowStageConnection.made.append(self)

    def request(self, method: str, path: str, body: bytes = b"", headers: Optional[Mapping[str, str]] = None) -> None:
        self.paths.append(path)
        self.timeouts.append(self.timeout)

    def getresponse(self) -> _Answer:
        if self.paths[-1].endswith("/stage"):
            raise socket.timeout("timed out")
        return _Answer([{"name": "tiny", "version": "1", "state": "READY", "reason": ""}])

    def close(self) -> None:
        pass


def test_a_stage_past_stage_timeout_s_is_retried_later_not_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    _SlowStageConnection.made = []
    monkeypatch.setattr(health_gate.http.client, "HTTPConnection", _SlowStageConnection)
    result = run_gate("http://127.0.0.1:8000", "tiny", "2", HealthGateSettings(probe_requests=1, stage_timeout_s=90))
    assert not result.passed and result.retry  # never judged: the next pass stages it again (the engine cached)
    assert "did not answer the stage request within health_gate.stage_timeout_s (90 s)" in result.reason
    assert "\n" not in result.reason
    sent = [(path, timeout) for c in _SlowStageConnection.made for path, timeout in zip(c.paths, c.timeouts)]
    assert sent == [("/v2/repository/index", 600.0), (BASE + "/stage", 90)]  # no promote, no unload


def test_runtime_api_refuses_other_schemes() -> None:
    with pytest.raises(RuntimeApiError, match="expected http://host:port"):
        health_gate.RuntimeApi("https://127.0.0.1:8000")


# --- the device config's health_gate block ---------------------------------------------------------

DEVICE = {"name": "d", "device_class": "x86-cpu", "backend": "onnxruntime", "precisions": ["fp32"],
          "default_precision": "fp32", "batch": {"min": 1, "opt": 1, "max": 1},
          "quantization": {"scheme": "u8s8-qdq"}, "memory_budget_mb": 100, "workspace_mb": 1}


def test_health_gate_defaults_and_values() -> None:
    assert device_config_from_mapping(DEVICE, "d.yaml").health_gate == HealthGateSettings()
    config = device_config_from_mapping({**DEVICE, "health_gate": {"probe_requests": 50, "max_p99_ms": 20,
                                                                   "max_failures": 1, "accuracy_min": 0.95}}, "d")
    assert config.health_gate == HealthGateSettings(50, 20.0, 1, 0.95)
    assert HealthGateSettings().stage_timeout_s == 3600.0  # room for an engine build on a Jetson
    timed = device_config_from_mapping({**DEVICE, "health_gate": {"stage_timeout_s": 7200}}, "d")
    assert timed.health_gate.stage_timeout_s == 7200


@pytest.mark.parametrize("block, message", [
    ({"probe_requests": 0}, "health_gate.probe_requests"),
    ({"max_failures": -1}, "health_gate.max_failures"),
    ({"probe_requests": 3, "max_failures": 3}, "expected fewer than probe_requests"),
    ({"max_p99_ms": 0}, "health_gate.max_p99_ms"),
    ({"max_p99_ms": float("nan")}, "health_gate.max_p99_ms"),
    ({"accuracy_min": 1.5}, "health_gate.accuracy_min"),
    ({"stage_timeout_s": 0}, "health_gate.stage_timeout_s"),
    ({"stage_timeout_s": float("inf")}, "health_gate.stage_timeout_s"),
    ({"probe_count": 3}, "probe_count"),
])
def test_health_gate_validation(block: Dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        device_config_from_mapping({**DEVICE, "health_gate": block}, "d.yaml")
