"""The fleet's TUF repository (server side, tuf 6): layout, versions, signatures, the offline root key."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict

import pytest

pytest.importorskip("tuf.api.metadata")
pytest.importorskip("fleet_server.tuf_repository")

from tuf.api.metadata import Metadata, Root

from fleet_server.tuf_repository import Expiry, init_repository, publish_bundle, read_current, refresh_timestamp

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
    assert sorted(p.name for p in dirs["keys"].iterdir()) == ["snapshot.pem", "targets.pem", "timestamp.pem"]
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
