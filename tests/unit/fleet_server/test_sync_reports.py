"""`POST /api/v1/sync-reports`: strict bodies, idempotent by report id, failures pause their rollout."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest
from sqlalchemy import func, select
from test_publishing import CPU, Ota, ota_fleet

from fleet_server.models import Device, SyncReport


@pytest.fixture()
def ota(tmp_path: Path, keypair: Tuple[Path, Path]) -> Iterator[Ota]:
    with ota_fleet(tmp_path, keypair) as fleet:
        fleet.enroll("dev-a")
        fleet.enroll("dev-b")
        yield fleet


def _report(status: str = "promoted", rollout_id: Optional[int] = 1, reason: str = "", **extra: Any
            ) -> Dict[str, Any]:
    return {"id": uuid.uuid4().hex, "at": 1764100000.0, "model": "tiny", "version": "2", "target": "tiny-2.tar",
            "status": status, "reason": reason, "rollout_id": rollout_id, **extra}


def _send(ota: Ota, device: str, reports: Any, installed: Any = None, token: Optional[str] = None) -> Any:
    body = {"device_id": device, "reports": reports,
            "installed": installed if installed is not None else {"tiny": {"active": "1", "last_good": None}}}
    return ota.fleet.client.post("/api/v1/sync-reports", json=body,
                                 headers=ota.fleet.auth(token or ota.fleet.tokens[device]))


def _rollout(ota: Ota, **body: Any) -> Dict[str, Any]:
    ota.publish("2")
    reply = ota.call("POST", "/api/v1/rollouts", {"model": "tiny", "version": "2", "device_class": CPU, **body})
    assert reply.status_code == 201, reply.get_json()
    return dict(reply.get_json())


def _count(ota: Ota) -> int:
    with ota.fleet.app.extensions["fleet"].engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(SyncReport)).scalar_one())


def test_a_gate_failed_report_pauses_its_rollout_and_the_server_shows_it(ota: Ota) -> None:
    rollout = _rollout(ota, canary=["dev-a"])
    installed = {"tiny": {"active": "1", "last_good": None}}
    reply = _send(ota, "dev-a", [_report("gate_failed", rollout["id"], "p99 12.5 ms\nover the 10 ms budget")],
                  installed)
    assert reply.status_code == 200 and reply.get_json() == {"accepted": 1}
    shown = ota.call("GET", f"/api/v1/rollouts/{rollout['id']}").get_json()
    assert shown["state"] == "paused"
    assert shown["pause_reason"] == "dev-a: gate_failed: p99 12.5 ms over the 10 ms budget"
    device = {d["device_id"]: d for d in shown["devices"]}["dev-a"]
    assert device["active"] == "1" and device["report"]["status"] == "gate_failed"
    assert ota.call("POST", f"/api/v1/rollouts/{rollout['id']}/advance", {"percent": 100}).status_code == 409


def test_a_promoted_report_or_one_from_outside_the_rollout_does_not_pause(ota: Ota) -> None:
    rollout = _rollout(ota, canary=["dev-a"])
    assert _send(ota, "dev-a", [_report("promoted", rollout["id"])]).status_code == 200
    assert _send(ota, "dev-b", [_report("rolled_back", rollout["id"], "crashed")]).status_code == 200  # not a member
    assert _send(ota, "dev-a", [_report("failed", rollout["id"], "network")]).status_code == 200  # transient
    assert _send(ota, "dev-a", [_report("refused", 999, "bad")]).status_code == 200  # no such rollout
    assert ota.call("GET", f"/api/v1/rollouts/{rollout['id']}").get_json()["state"] == "active"


def test_reports_are_idempotent_by_id_and_a_resend_does_not_act_again(ota: Ota) -> None:
    rollout = _rollout(ota, canary=["dev-a"])
    failed = _report("rolled_back", rollout["id"], "crashed within the grace period")
    batch = [_report(), failed, _report("promoted", None)]
    assert _send(ota, "dev-a", batch).get_json() == {"accepted": 3}
    ota.call("POST", f"/api/v1/rollouts/{rollout['id']}/resume")
    assert _send(ota, "dev-a", [*batch, batch[0]]).get_json() == {"accepted": 0}
    assert _count(ota) == 3
    assert ota.call("GET", f"/api/v1/rollouts/{rollout['id']}").get_json()["state"] == "active"
    same_id_other_device = dict(batch[0])
    assert _send(ota, "dev-b", [same_id_other_device]).get_json() == {"accepted": 1}


def test_installed_becomes_the_device_sync_state(ota: Ota) -> None:
    installed = {"tiny": {"active": "3", "last_good": "2"}, "other": {"active": "1", "last_good": None}}
    assert _send(ota, "dev-a", [], installed).get_json() == {"accepted": 0}
    with ota.fleet.app.extensions["fleet"].engine.connect() as connection:
        state = connection.execute(select(Device.sync_state).where(Device.device_id == "dev-a")).scalar_one()
    assert state == installed


@pytest.mark.parametrize(("change", "field"), [
    (lambda b: b.pop("reports"), "body: missing key 'reports'"),
    (lambda b: b.update(extra=1), "body: unknown key 'extra'"),
    (lambda b: b.update(reports=[_report() for _ in range(101)]), "reports"),
    (lambda b: b["reports"].append("x"), "reports[1]"),
    (lambda b: b["reports"][0].update(id="not-hex"), "reports[0].id"),
    (lambda b: b["reports"][0].update(at=True), "reports[0].at"),
    (lambda b: b["reports"][0].update(at=float("nan")), "reports[0].at"),
    (lambda b: b["reports"][0].update(status="exploded"), "reports[0].status"),
    (lambda b: b["reports"][0].update(reason="x" * 501), "reports[0].reason"),
    (lambda b: b["reports"][0].update(rollout_id="7"), "reports[0].rollout_id"),
    (lambda b: b["reports"][0].update(colour="red"), "reports[0]: unknown key 'colour'"),
    (lambda b: b["reports"][0].pop("target"), "reports[0]: missing key 'target'"),
    (lambda b: b.update(installed={"tiny": {"active": 3}}), "installed.tiny.active"),
    (lambda b: b.update(installed={"tiny": {"active": "3", "pending": "4"}}), "installed.tiny: unknown key 'pending'"),
    (lambda b: b.update(installed=[]), "installed"),
])
def test_bad_bodies_are_400_naming_the_field_and_store_nothing(ota: Ota, change: Any, field: str) -> None:
    body: Dict[str, Any] = {"device_id": "dev-a", "reports": [_report()],
                            "installed": {"tiny": {"active": "1", "last_good": None}}}
    change(body)
    reply = ota.fleet.client.post("/api/v1/sync-reports", json=body,
                                  headers=ota.fleet.auth(ota.fleet.tokens["dev-a"]))
    assert reply.status_code == 400 and reply.get_json()["error"].startswith(field), reply.get_json()
    assert _count(ota) == 0


def test_tokens_are_checked_as_for_ingest(ota: Ota) -> None:
    assert _send(ota, "dev-a", [_report()], token="wrong").status_code == 401
    assert _send(ota, "dev-a", [_report()], token=ota.fleet.tokens["dev-b"]).status_code == 403
    assert ota.fleet.client.post("/api/v1/sync-reports", data=b"{", content_type="application/json",
                                 headers=ota.fleet.auth(ota.fleet.tokens["dev-a"])).status_code == 400
    huge = ota.fleet.client.post("/api/v1/sync-reports", data=b"x" * (1024 * 1024 + 1),
                                 content_type="application/json", headers=ota.fleet.auth(ota.fleet.tokens["dev-a"]))
    assert huge.status_code == 413 and "error" in huge.get_json()
    assert _count(ota) == 0
