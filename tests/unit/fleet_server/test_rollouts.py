"""Rollouts: stable monotone membership, desired targets per device, signed into the director's bins."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from test_publishing import CPU, NX, Ota, ota_fleet

from fleet_server.cli import main as fleet_main
from fleet_server.director import CANCELLED, RolloutPlan, bucket, desired_targets, is_member
from fleet_server.tuf_repository import device_targets_of, read_current


@pytest.fixture()
def ota(tmp_path: Path, keypair: Tuple[Path, Path]) -> Iterator[Ota]:
    with ota_fleet(tmp_path, keypair) as fleet:
        yield fleet


def _plan(rollout_id: int, percent: int, version: str = "2", canary: Tuple[str, ...] = (), state: str = "active",
          model: str = "tiny") -> RolloutPlan:
    return RolloutPlan(rollout_id, CPU, canary, percent, state, model, version, f"{model}-{version}.tar", None)


def test_membership_is_stable_monotone_in_percent_and_drawn_per_rollout() -> None:
    devices = [f"dev-{i}" for i in range(2000)]
    members = {p: {d for d in devices if is_member(_plan(7, p), d, CPU)} for p in (0, 10, 50, 100)}
    assert members[0] == set() and members[100] == set(devices)
    assert members[10] <= members[50] <= members[100]
    assert 100 < len(members[10]) < 300 and 850 < len(members[50]) < 1150  # ~10% and ~50% of 2000
    assert {d for d in devices if is_member(_plan(7, 10), d, CPU)} == members[10]  # stable
    assert {d for d in devices if is_member(_plan(8, 10), d, CPU)} != members[10]  # another rollout, another draw
    assert all(bucket(7, d) == bucket(7, d) for d in devices[:10])
    assert is_member(_plan(7, 0, canary=("dev-1",)), "dev-1", CPU)
    assert not is_member(_plan(7, 100), "dev-1", NX)  # other class: never


def test_desired_targets_take_the_highest_version_per_model_and_skip_cancelled() -> None:
    plans = [_plan(1, 100, "2"), _plan(2, 100, "10"), _plan(3, 100, "11", state=CANCELLED),
             _plan(4, 100, "1", model="other"), _plan(5, 0, "12")]
    wanted = desired_targets("dev-1", CPU, plans)
    assert [(t.image, t.custom["rollout_id"]) for t in wanted] == [("other-1.tar", 4), ("tiny-10.tar", 2)]
    assert wanted[1].custom == {"image": "tiny-10.tar", "model": "tiny", "version": "10", "device_class": CPU,
                                "fingerprint": None, "rollout_id": 2}
    assert desired_targets("dev-1", NX, plans) == []


def test_a_version_below_the_one_a_device_runs_is_never_assigned() -> None:
    """After v11's rollout is cancelled, a device already on 11 is not asked to go back to 10 (a rollback)."""
    plans = [_plan(1, 100, "10"), _plan(2, 100, "11", state=CANCELLED), _plan(3, 100, "1", model="other")]
    on_11 = {"tiny": {"active": "11", "last_good": "10"}, "other": {"active": "1"}}
    assert [t.image for t in desired_targets("dev-1", CPU, plans, on_11)] == ["other-1.tar"]
    on_10 = {"tiny": {"active": "10", "last_good": None}}
    assert [t.image for t in desired_targets("dev-1", CPU, plans, on_10)] == ["other-1.tar", "tiny-10.tar"]
    assert [t.image for t in desired_targets("dev-1", CPU, plans, {"tiny": {"active": "x"}})] == [
        "other-1.tar", "tiny-10.tar"]  # an unreadable report changes nothing


def _assigned(ota: Ota, device_id: str) -> Dict[str, Any]:
    return {name: info.unrecognized_fields["custom"] for name, info in device_targets_of(ota.repo, device_id).items()}


def _create(ota: Ota, **body: Any) -> Any:
    return ota.call("POST", "/api/v1/rollouts", {"model": "tiny", "version": "2", "device_class": CPU, **body})


def test_canary_then_advance_to_100_assigns_both_devices(ota: Ota) -> None:
    ota.enroll("dev-a")
    ota.enroll("dev-b")
    ota.enroll("nx-1", NX)
    bundle = ota.publish("2", classes=(CPU, NX))
    reply = _create(ota, canary=["dev-a"], percent=0)
    assert reply.status_code == 201, reply.get_json()
    rollout = reply.get_json()
    assert (rollout["state"], rollout["percent"], rollout["canary"]) == ("active", 0, ["dev-a"])
    assert _assigned(ota, "dev-a") == {"tiny-2.tar": {"image": "tiny-2.tar", "model": "tiny", "version": "2",
                                                      "device_class": CPU, "fingerprint": None,
                                                      "rollout_id": rollout["id"]}}
    assert _assigned(ota, "dev-b") == {} and _assigned(ota, "nx-1") == {}
    info = device_targets_of(ota.repo, "dev-a")["tiny-2.tar"]
    assert info.hashes["sha256"] == bundle["sha256"] and info.length == bundle["length"]
    shown = {d["device_id"]: d for d in rollout["devices"]}
    assert shown["dev-a"]["member"] and not shown["dev-b"]["member"] and set(shown) == {"dev-a", "dev-b"}
    reply = ota.call("POST", f"/api/v1/rollouts/{rollout['id']}/advance", {"percent": 100})
    assert reply.status_code == 200 and reply.get_json()["percent"] == 100
    assert set(_assigned(ota, "dev-a")) == set(_assigned(ota, "dev-b")) == {"tiny-2.tar"}
    assert _assigned(ota, "nx-1") == {}
    lower = ota.call("POST", f"/api/v1/rollouts/{rollout['id']}/advance", {"percent": 50})
    assert lower.status_code == 409 and "never shrinks" in lower.get_json()["error"]


def test_a_device_enrolled_later_gets_what_the_rollout_draws_for_it(ota: Ota) -> None:
    ota.publish("2")
    assert _create(ota, percent=100).status_code == 201
    ota.enroll("late")
    assert set(_assigned(ota, "late")) == {"tiny-2.tar"}


def test_pause_refuses_advance_resume_allows_it_cancel_withdraws(ota: Ota) -> None:
    ota.enroll("dev-a")
    ota.publish("2")
    rollout_id = _create(ota, canary=["dev-a"]).get_json()["id"]
    paused = ota.call("POST", f"/api/v1/rollouts/{rollout_id}/pause", {"reason": "looking into it"}).get_json()
    assert (paused["state"], paused["pause_reason"]) == ("paused", "looking into it")
    assert set(_assigned(ota, "dev-a")) == {"tiny-2.tar"}  # paused keeps its members
    refused = ota.call("POST", f"/api/v1/rollouts/{rollout_id}/advance", {"percent": 50})
    assert refused.status_code == 409 and "looking into it" in refused.get_json()["error"]
    assert ota.call("POST", f"/api/v1/rollouts/{rollout_id}/resume").get_json()["state"] == "active"
    assert ota.call("POST", f"/api/v1/rollouts/{rollout_id}/advance", {"percent": 50}).status_code == 200
    cancelled = ota.call("POST", f"/api/v1/rollouts/{rollout_id}/cancel").get_json()
    assert cancelled["state"] == "cancelled" and _assigned(ota, "dev-a") == {}
    for action in ("advance", "resume", "pause"):
        assert ota.call("POST", f"/api/v1/rollouts/{rollout_id}/{action}", {"percent": 60} if action == "advance"
                        else None).status_code == 409


def test_a_newer_rollout_wins_and_cancelling_it_falls_back(ota: Ota) -> None:
    ota.enroll("dev-a")
    ota.publish("2")
    ota.publish("3")
    _create(ota, percent=100)
    newer = _create(ota, version="3", canary=["dev-a"]).get_json()
    assert set(_assigned(ota, "dev-a")) == {"tiny-3.tar"}
    ota.call("POST", f"/api/v1/rollouts/{newer['id']}/cancel")
    assert set(_assigned(ota, "dev-a")) == {"tiny-2.tar"}


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"percent": 101}, 400, "percent"), ({"percent": True}, 400, "percent"), ({"version": "9"}, 404, "no published"),
    ({"device_class": NX}, 409, "no target for device class"), ({"canary": ["ghost"]}, 404, "ghost"),
    ({"canary": ["nx-1"]}, 409, "of class"), ({"colour": 1}, 400, "colour"), ({"canary": "dev-a"}, 400, "canary"),
])
def test_bad_rollouts_are_4xx_json(ota: Ota, body: Dict[str, Any], status: int, words: str) -> None:
    ota.enroll("nx-1", NX)
    ota.publish("2")
    reply = _create(ota, **body)
    assert reply.status_code == status and words in reply.get_json()["error"], reply.get_json()


def test_rollout_routes_need_an_operator_and_unknown_ids_are_404(ota: Ota) -> None:
    assert ota.fleet.client.get("/api/v1/rollouts").status_code == 401
    assert ota.call("GET", "/api/v1/rollouts/99").status_code == 404
    assert ota.call("POST", "/api/v1/rollouts/99/advance", {"percent": 5}).status_code == 404
    assert ota.call("POST", "/api/v1/rollouts/1/advance", {"percent": 5, "x": 1}).status_code == 400
    ota.publish("2")
    _create(ota)
    listed: List[Dict[str, Any]] = ota.call("GET", "/api/v1/rollouts").get_json()
    assert [(r["model"], r["version"], r["state"]) for r in listed] == [("tiny", "2", "active")]
    duplicate = _create(ota)
    assert duplicate.status_code == 409 and "already rolls out" in duplicate.get_json()["error"]


def test_the_cli_drives_a_rollout(ota: Ota, capsys: pytest.CaptureFixture[str]) -> None:
    config = ota.directory / "fleet.yaml"
    config.write_text("database_url: sqlite:///fleet.sqlite\n")
    assert fleet_main(["enroll", "dev-a", "--device-class", CPU, "--config", str(config)]) == 0
    ota.publish("2")
    capsys.readouterr()
    assert fleet_main(["rollout", "create", "tiny", "2", "--device-class", CPU, "--canary", "dev-a",
                       "--config", str(config)]) == 0
    assert "tiny 2 -> x86-cpu 0% canary dev-a active" in capsys.readouterr().out
    assert set(_assigned(ota, "dev-a")) == {"tiny-2.tar"}
    assert fleet_main(["rollout", "pause", "1", "--reason", "hold on", "--config", str(config)]) == 0
    assert fleet_main(["rollout", "advance", "1", "50", "--config", str(config)]) == 1
    assert "is paused (hold on)" in capsys.readouterr().err
    assert fleet_main(["rollout", "resume", "1", "--config", str(config)]) == 0
    assert fleet_main(["rollout", "advance", "1", "100", "--config", str(config)]) == 0
    assert fleet_main(["rollout", "show", "1", "--config", str(config)]) == 0
    assert "dev-a: member, active -" in capsys.readouterr().out
    assert fleet_main(["rollout", "list", "--config", str(config)]) == 0
    assert fleet_main(["rollout", "cancel", "1", "--config", str(config)]) == 0
    assert _assigned(ota, "dev-a") == {}


def test_tuf_init_and_refresh_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text("tuf: {repository_dir: repo, keys_dir: online}\n")
    assert fleet_main(["tuf-refresh", "--config", str(config)]) == 1
    assert "tuf-init" in capsys.readouterr().err
    assert fleet_main(["tuf-init", "--root-keys-dir", str(tmp_path / "offline"), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "offline storage" in out and str(tmp_path / "offline" / "root.pem") in out
    assert (tmp_path / "online" / "director.pem").is_file() and not (tmp_path / "online" / "root.pem").exists()
    assert fleet_main(["tuf-init", "--root-keys-dir", str(tmp_path / "offline"), "--config", str(config)]) == 1
    version = read_current(tmp_path / "repo", "timestamp").signed.version
    assert fleet_main(["tuf-refresh", "--config", str(config)]) == 0
    assert read_current(tmp_path / "repo", "timestamp").signed.version == version + 1
