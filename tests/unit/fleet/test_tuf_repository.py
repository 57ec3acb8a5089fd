"""The fleet's TUF repository (server side, tuf 6): layout, versions, signatures, the offline root key, the director."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List

import pytest

pytest.importorskip("tuf.api.metadata")
pytest.importorskip("fleet_server.tuf_repository")

from tuf.api.metadata import Metadata, Root

from fleet_server.tuf_director import bin_role
from fleet_server.tuf_repository import (
    BIN_HEX,
    DeviceTarget,
    Expiry,
    device_bin,
    device_target_path,
    device_targets_of,
    init_repository,
    publish_bundle,
    read_current,
    refresh_timestamp,
    set_device_targets,
)

CUSTOM = {"model": "tiny", "version": "2", "device_class": "xavier-nx", "fingerprint": {"trt": "8.5.2"}}


@pytest.fixture()
def dirs(tmp_path: Path) -> Dict[str, Path]:
    paths = {"repo": tmp_path / "repo", "keys": tmp_path / "keys", "root_keys": tmp_path / "offline"}
    init_repository(paths["repo"], paths["keys"], paths["root_keys"])
    return paths


def _verify(role: str, repo: Path) -> Any:
    """The role's current metadata, checked against the keys root delegates to it."""
    root = Metadata[Root].from_file(str(repo / "metadata" / "1.root.json"))
    current = read_current(repo, role)
    root.signed.verify_delegate(role, current.signed_bytes, current.signatures)
    return current


def test_init_keeps_the_root_key_apart(dirs: Dict[str, Path]) -> None:
    assert sorted(p.name for p in dirs["keys"].iterdir()) == ["director.pem", "snapshot.pem", "targets.pem",
                                                                     "timestamp.pem"]
    assert [p.name for p in dirs["root_keys"].iterdir()] == ["root.pem"]
    assert dirs["root_keys"].joinpath("root.pem").stat().st_mode & 0o077 == 0
    root = Metadata[Root].from_file(str(dirs["repo"] / "metadata" / "1.root.json"))
    root.signed.verify_delegate("root", root.signed_bytes, root.signatures)
    assert root.signed.consistent_snapshot
    for role in ("targets", "snapshot", "timestamp"):
        assert _verify(role, dirs["repo"]).signed.version == 1
    with pytest.raises(FileExistsError):
        init_repository(dirs["repo"], dirs["keys"], dirs["root_keys"])


def test_publish_adds_a_signed_target_and_bumps_versions(dirs: Dict[str, Path], tmp_path: Path) -> None:
    tar = tmp_path / "tiny-2.tar"
    tar.write_bytes(b"bundle bytes" * 100)
    publish_bundle(dirs["repo"], dirs["keys"], tar, CUSTOM)
    digest = hashlib.sha256(tar.read_bytes()).hexdigest()
    targets = _verify("targets", dirs["repo"])
    info = targets.signed.targets["tiny-2.tar"]
    assert (info.length, info.hashes, info.custom) == (tar.stat().st_size, {"sha256": digest}, CUSTOM)
    assert (dirs["repo"] / "targets" / f"{digest}.tiny-2.tar").read_bytes() == tar.read_bytes()
    snapshot = _verify("snapshot", dirs["repo"])
    timestamp = _verify("timestamp", dirs["repo"])
    assert (targets.signed.version, snapshot.signed.version, timestamp.signed.version) == (2, 2, 2)
    assert snapshot.signed.meta["targets.json"].version == 2
    assert timestamp.signed.snapshot_meta.version == 2
    assert (dirs["repo"] / "metadata" / "1.targets.json").exists()  # older versions stay for consistent snapshots


def test_publish_refuses_a_file_that_is_not_a_bundle_tar(dirs: Dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(ValueError):
        publish_bundle(dirs["repo"], dirs["keys"], other, CUSTOM)


def test_refresh_timestamp_bumps_only_the_timestamp(dirs: Dict[str, Path]) -> None:
    assert refresh_timestamp(dirs["repo"], dirs["keys"]) == 2
    timestamp = _verify("timestamp", dirs["repo"])
    assert timestamp.signed.version == 2 and timestamp.signed.snapshot_meta.version == 1
    assert timestamp.signed.expires - datetime.now(timezone.utc) <= Expiry().timestamp


def test_refresh_timestamp_renews_roles_about_to_expire(dirs: Dict[str, Path]) -> None:
    later = datetime.now(timezone.utc) + timedelta(days=29)  # targets (30 days) expires within the margin
    refresh_timestamp(dirs["repo"], dirs["keys"], now=later)
    targets = _verify("targets", dirs["repo"])
    assert targets.signed.version == 2 and targets.signed.expires > later + timedelta(days=20)
    assert _verify("snapshot", dirs["repo"]).signed.meta["targets.json"].version == 2


def _published(dirs: Dict[str, Path], tmp_path: Path, name: str = "tiny-2.tar") -> Path:
    tar = tmp_path / name
    tar.write_bytes(name.encode() * 50)
    publish_bundle(dirs["repo"], dirs["keys"], tar, CUSTOM)
    return tar


def _verify_bin(repo: Path, role: str) -> Any:
    """The bin's current metadata, checked against the delegation in the current top-level targets."""
    current = read_current(repo, role)
    read_current(repo, "targets").signed.verify_delegate(role, current.signed_bytes, current.signatures)
    return current


def _director_custom(rollout_id: int) -> Dict[str, Any]:
    return {"model": "tiny", "version": "2", "device_class": "xavier-nx", "fingerprint": None,
            "rollout_id": rollout_id}


def test_device_paths_and_bins() -> None:
    assert device_bin("dev-1") == hashlib.sha256(b"dev-1").hexdigest()[:BIN_HEX]
    assert bin_role("dev-1") == f"devices-{device_bin('dev-1')}"
    assert device_target_path("dev-1", "tiny-2.tar") == f"devices/{device_bin('dev-1')}/dev-1/tiny-2.tar"
    for bad_device in ("", "a/b", ".."):
        with pytest.raises(ValueError):
            device_bin(bad_device)
    with pytest.raises(ValueError):
        device_target_path("dev-1", "../tiny-2.tar")


def test_set_device_targets_signs_a_delegated_bin(dirs: Dict[str, Path], tmp_path: Path) -> None:
    tar = _published(dirs, tmp_path)
    assign = {"dev-1": [DeviceTarget("tiny-2.tar", _director_custom(7))]}
    version = set_device_targets(dirs["repo"], dirs["keys"], assign)
    assert version == read_current(dirs["repo"], "timestamp").signed.version == 3
    role = bin_role("dev-1")
    delegation = read_current(dirs["repo"], "targets").signed.delegations.roles[role]
    assert delegation.terminating and delegation.threshold == 1
    assert delegation.paths == [f"devices/{device_bin('dev-1')}/*/*"]
    info = _verify_bin(dirs["repo"], role).signed.targets[device_target_path("dev-1", "tiny-2.tar")]
    digest = hashlib.sha256(tar.read_bytes()).hexdigest()
    assert (info.length, info.hashes) == (tar.stat().st_size, {"sha256": digest})
    assert info.custom == {**_director_custom(7), "image": "tiny-2.tar"}
    assert set(device_targets_of(dirs["repo"], "dev-1")) == {"tiny-2.tar"}
    assert device_targets_of(dirs["repo"], "dev-2") == {}
    assert set(read_current(dirs["repo"], "snapshot").signed.meta) == {"targets.json", f"{role}.json"}


def test_set_device_targets_refuses_an_unpublished_image(dirs: Dict[str, Path], tmp_path: Path) -> None:
    _published(dirs, tmp_path)
    with pytest.raises(ValueError, match=r"tiny-3\.tar"):
        set_device_targets(dirs["repo"], dirs["keys"], {"dev-1": [DeviceTarget("tiny-2.tar", {}),
                                                                  DeviceTarget("tiny-3.tar", {})]})
    assert read_current(dirs["repo"], "timestamp").signed.version == 2  # nothing written
    assert device_targets_of(dirs["repo"], "dev-1") == {}


def _two_devices_in_two_bins() -> List[str]:
    first = "dev-0"
    other = next(f"dev-{i}" for i in range(1, 100) if device_bin(f"dev-{i}") != device_bin(first))
    return [first, other]


def test_only_the_touched_bins_are_re_signed(dirs: Dict[str, Path], tmp_path: Path) -> None:
    _published(dirs, tmp_path)
    first, other = _two_devices_in_two_bins()
    assign = [DeviceTarget("tiny-2.tar", _director_custom(1))]
    set_device_targets(dirs["repo"], dirs["keys"], {first: assign, other: assign})
    targets_version = read_current(dirs["repo"], "targets").signed.version
    set_device_targets(dirs["repo"], dirs["keys"], {first: []})  # replaces the whole list: none
    meta = read_current(dirs["repo"], "snapshot").signed.meta
    assert meta[f"{bin_role(first)}.json"].version == 2 and meta[f"{bin_role(other)}.json"].version == 1
    assert meta["targets.json"].version == targets_version  # no delegation added: targets not re-signed
    assert device_targets_of(dirs["repo"], first) == {}
    assert set(device_targets_of(dirs["repo"], other)) == {"tiny-2.tar"}
    unchanged = read_current(dirs["repo"], "timestamp").signed.version
    assert set_device_targets(dirs["repo"], dirs["keys"], {other: assign}) == unchanged  # same list: no new files


def test_a_device_keeps_its_own_list_beside_its_bin_neighbours(dirs: Dict[str, Path], tmp_path: Path) -> None:
    _published(dirs, tmp_path)
    _published(dirs, tmp_path, "tiny-3.tar")
    first = "dev-0"
    neighbour = next(f"dev-{i}" for i in range(1, 2000) if device_bin(f"dev-{i}") == device_bin(first))
    set_device_targets(dirs["repo"], dirs["keys"], {first: [DeviceTarget("tiny-2.tar", {})],
                                                     neighbour: [DeviceTarget("tiny-3.tar", {})]})
    set_device_targets(dirs["repo"], dirs["keys"], {first: [DeviceTarget("tiny-3.tar", {})]})
    assert set(device_targets_of(dirs["repo"], first)) == {"tiny-3.tar"}
    assert set(device_targets_of(dirs["repo"], neighbour)) == {"tiny-3.tar"}
    assert len(read_current(dirs["repo"], bin_role(first)).signed.targets) == 2


def test_300_devices_keep_the_snapshot_within_257_roles(dirs: Dict[str, Path], tmp_path: Path) -> None:
    _published(dirs, tmp_path)
    devices = {f"device-{i}": [DeviceTarget("tiny-2.tar", _director_custom(i))] for i in range(300)}
    set_device_targets(dirs["repo"], dirs["keys"], devices)
    meta = read_current(dirs["repo"], "snapshot").signed.meta
    bins = {bin_role(device) for device in devices}
    assert len(meta) == 1 + len(bins) <= 257
    assert set(read_current(dirs["repo"], "targets").signed.delegations.roles) == bins
    for device in ("device-0", "device-299"):
        assert device_targets_of(dirs["repo"], device)["tiny-2.tar"].custom["rollout_id"] == int(device[7:])


def test_refresh_timestamp_renews_bins_about_to_expire(dirs: Dict[str, Path], tmp_path: Path) -> None:
    _published(dirs, tmp_path)
    set_device_targets(dirs["repo"], dirs["keys"], {"dev-1": [DeviceTarget("tiny-2.tar", {})]})
    later = datetime.now(timezone.utc) + timedelta(days=29)
    refresh_timestamp(dirs["repo"], dirs["keys"], now=later)
    renewed = _verify_bin(dirs["repo"], bin_role("dev-1"))
    assert renewed.signed.version == 2 and renewed.signed.expires > later + timedelta(days=20)
    assert read_current(dirs["repo"], "snapshot").signed.meta[f"{bin_role('dev-1')}.json"].version == 2
