"""POST /api/v1/ingest: bad inputs answer 401/403/413/400 JSON, replays 200 idempotently (SQLite)."""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Dict

import pytest
from sqlalchemy import func, select

from fleet_server import ingest
from fleet_server.models import ModelSample, Sample
from fleet_server.testing import FleetHarness, make_batch, make_record


def _post(fleet: FleetHarness, body: Any, token: str, **headers: str) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return fleet.client.post("/api/v1/ingest", data=data, content_type=headers.pop("content_type", "application/json"),
                             headers={**fleet.auth(token), **headers})


def _batch(fleet: FleetHarness, device: str = "dev-a", count: int = 3, first: int = 1) -> Dict[str, Any]:
    now = fleet.clock()
    return make_batch(device, [make_record(now - 100 + i) for i in range(count)], first_sequence=first)


def _stored(fleet: FleetHarness) -> int:
    with fleet.app.extensions["fleet"].engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Sample)).scalar_one())


def _assert_json_error(reply: Any, status: int) -> None:
    assert reply.status_code == status, reply.data
    assert reply.mimetype == "application/json"
    assert isinstance(reply.get_json()["error"], str)


def test_accepts_a_batch_and_answers_the_contract(fleet: FleetHarness) -> None:
    reply = _post(fleet, _batch(fleet), fleet.tokens["dev-a"])
    assert reply.status_code == 200
    assert reply.get_json() == {"accepted": 3, "duplicates": 0, "acked_through": 3}
    assert _stored(fleet) == 3


def test_a_replayed_batch_is_200_with_duplicates_and_stored_once(fleet: FleetHarness) -> None:
    batch = _batch(fleet)
    _post(fleet, batch, fleet.tokens["dev-a"])
    reply = _post(fleet, batch, fleet.tokens["dev-a"])
    assert reply.status_code == 200
    assert reply.get_json() == {"accepted": 0, "duplicates": 3, "acked_through": 3}
    overlapping = _batch(fleet, count=4, first=2)  # 2, 3 again; 4, 5 new
    assert _post(fleet, overlapping, fleet.tokens["dev-a"]).get_json() == {
        "accepted": 2, "duplicates": 2, "acked_through": 5}
    assert _stored(fleet) == 5
    with fleet.app.extensions["fleet"].engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(ModelSample)).scalar_one() == 5


def test_same_sequence_from_two_devices_is_two_records(fleet: FleetHarness) -> None:
    _post(fleet, _batch(fleet, "dev-a"), fleet.tokens["dev-a"])
    assert _post(fleet, _batch(fleet, "dev-b"), fleet.tokens["dev-b"]).get_json()["accepted"] == 3
    assert _stored(fleet) == 6


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-token", "Basic abc", "bearer "])
def test_no_or_unknown_token_is_401(fleet: FleetHarness, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    reply = fleet.client.post("/api/v1/ingest", json=_batch(fleet), headers=headers)
    _assert_json_error(reply, 401)
    assert _stored(fleet) == 0


def test_another_devices_token_is_403(fleet: FleetHarness) -> None:
    _assert_json_error(_post(fleet, _batch(fleet, "dev-a"), fleet.tokens["dev-b"]), 403)
    assert _stored(fleet) == 0


def test_an_operator_token_cannot_ingest(fleet: FleetHarness) -> None:
    _assert_json_error(_post(fleet, _batch(fleet), fleet.operator), 401)


def test_a_revoked_token_is_401(fleet: FleetHarness) -> None:
    reply = fleet.client.delete("/api/v1/devices/dev-a/token", headers=fleet.auth(fleet.operator))
    assert reply.status_code == 204
    _assert_json_error(_post(fleet, _batch(fleet), fleet.tokens["dev-a"]), 401)
    assert _stored(fleet) == 0


def test_a_rotated_away_token_is_401_and_the_new_one_works(fleet: FleetHarness) -> None:
    reply = fleet.client.post("/api/v1/devices/dev-a/token", headers=fleet.auth(fleet.operator))
    assert reply.status_code == 200
    new_token = reply.get_json()["token"]
    assert new_token != fleet.tokens["dev-a"] and len(new_token) >= 43
    _assert_json_error(_post(fleet, _batch(fleet), fleet.tokens["dev-a"]), 401)
    assert _post(fleet, _batch(fleet), new_token).status_code == 200


def test_oversize_is_413_before_parsing(fleet: FleetHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = []
    monkeypatch.setattr(ingest, "parse_batch", lambda *args: parsed.append(args))
    cap = fleet.app.extensions["fleet"].settings.max_ingest_bytes
    body = b"{" + b" " * cap + b"}"  # valid JSON, one byte over the cap... and more
    _assert_json_error(_post(fleet, body, fleet.tokens["dev-a"]), 413)
    _assert_json_error(_post(fleet, body, "no-such-token"), 413)  # the declared size is checked first
    assert parsed == []


Mutation = Callable[[Dict[str, Any]], Any]


def _set(path: str, value: Any) -> Mutation:
    def mutate(batch: Dict[str, Any]) -> None:
        target: Any = batch
        keys = [int(key) if key.isdigit() else key for key in path.split(".")]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return mutate


def _delete(path: str) -> Mutation:
    def mutate(batch: Dict[str, Any]) -> None:
        target: Any = batch
        keys = [int(key) if key.isdigit() else key for key in path.split(".")]
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return mutate


BAD_SHAPES = {
    "not an object": lambda batch: [batch],
    "records empty": _set("records", []),
    "records not a list": _set("records", {"sequence": 1}),
    "missing device_id": _delete("device_id"),
    "device_id with a slash": _set("device_id", "dev-a/../x"),
    "unknown top-level key": _set("extra", 1),
    "dropped negative": _set("dropped", -1),
    "dropped a bool": _set("dropped", True),
    "sequence a string": _set("records.0.sequence", "1"),
    "sequence a float": _set("records.0.sequence", 1.5),
    "sequence negative": _set("records.0.sequence", -5),
    "sequence too large": _set("records.0.sequence", 2**64),
    "sequence repeated": _set("records.1.sequence", 1),
    "sequence decreasing": _set("records.2.sequence", 0),
    "time a string": _set("records.0.record.time", "now"),
    "time missing": _delete("records.0.record.time"),
    "interval zero": _set("records.0.record.interval_s", 0),
    "rss negative": _set("records.0.record.process.rss_mb", -1.0),
    "rss a list": _set("records.0.record.process.rss_mb", [1]),
    "gpu_load above 1": _set("records.0.record.system.gpu_load", 420),
    "temperature a string": _set("records.0.record.system.temperatures_c.CPU-therm", "hot"),
    "clocks_locked a string": _set("records.0.record.system.clocks_locked", "yes"),
    "unknown record entry key": _set("records.0.bonus", 1),
    "too many record keys": lambda batch: batch["records"][0]["record"].update({f"k{i}": i for i in range(70)}),
    "models not a list": _set("records.0.record.models", {}),
    "model requests a float": _set("records.0.record.models.0.requests", 1.5),
    "histogram counts too short": _set("records.0.record.models.0.histogram.counts", [1]),
    "histogram bounds not increasing": _set("records.0.record.models.0.histogram.bounds_ms", [2, 1] + [3] * 6),
    "facts nested": _set("facts", {"board": {"x": 1}}),
}


@pytest.mark.parametrize("mutation", list(BAD_SHAPES.values()), ids=list(BAD_SHAPES))
def test_malformed_shapes_and_types_are_400(fleet: FleetHarness, mutation: Mutation) -> None:
    batch = copy.deepcopy(_batch(fleet))
    changed = mutation(batch)
    _assert_json_error(_post(fleet, changed if changed is not None else batch, fleet.tokens["dev-a"]), 400)
    assert _stored(fleet) == 0


def test_unknown_figures_inside_a_record_are_ignored_not_refused(fleet: FleetHarness) -> None:
    """A device on a newer runtime may report figures this server does not know: stored without them."""
    batch = copy.deepcopy(_batch(fleet))
    record = batch["records"][0]["record"]
    record["bonus"] = 1
    record["system"]["npu_load"] = 0.3
    record["models"][0]["queue_ms"] = 1.5
    reply = _post(fleet, batch, fleet.tokens["dev-a"])
    assert reply.status_code == 200, reply.get_json()
    assert _stored(fleet) == len(batch["records"])


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe", b"[" * 100000, b'{"device_id": NaN}',
                                  b'{"a": Infinity}'], ids=["empty", "truncated", "text", "binary", "deep", "nan",
                                                            "infinity"])
def test_malformed_json_is_400(fleet: FleetHarness, body: bytes) -> None:
    _assert_json_error(_post(fleet, body, fleet.tokens["dev-a"]), 400)


def test_wrong_content_type_is_400(fleet: FleetHarness) -> None:
    _assert_json_error(_post(fleet, _batch(fleet), fleet.tokens["dev-a"], content_type="text/plain"), 400)


def test_too_many_records_is_400(fleet: FleetHarness) -> None:
    now = fleet.clock()
    batch = make_batch("dev-a", [make_record(now - 1000 + i) for i in range(501)])
    _assert_json_error(_post(fleet, batch, fleet.tokens["dev-a"]), 400)


def test_a_record_more_than_5_min_in_the_future_refuses_the_batch(fleet: FleetHarness) -> None:
    now = fleet.clock()
    batch = make_batch("dev-a", [make_record(now - 10), make_record(now + 301)])
    reply = _post(fleet, batch, fleet.tokens["dev-a"])
    _assert_json_error(reply, 400)
    assert "future" in reply.get_json()["error"]
    assert _stored(fleet) == 0
    near_future = make_batch("dev-a", [make_record(now - 10), make_record(now + 299)])
    assert _post(fleet, near_future, fleet.tokens["dev-a"]).status_code == 200  # clock skew within 5 min


def test_unknown_routes_and_methods_are_json(fleet: FleetHarness) -> None:
    _assert_json_error(fleet.client.get("/api/v1/nope"), 404)
    _assert_json_error(fleet.client.get("/api/v1/ingest"), 405)


def test_an_unexpected_failure_is_500_json(fleet: FleetHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(ingest, "store_batch", boom)
    reply = _post(fleet, _batch(fleet), fleet.tokens["dev-a"])
    _assert_json_error(reply, 500)
    assert "boom" not in reply.get_json()["error"]
