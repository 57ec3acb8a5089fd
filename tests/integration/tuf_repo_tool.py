"""Builds and forges a TUF repository for the device-side tests, run as a subprocess of a Python with tuf 6.

The device tests also run on Python 3.8 (tuf 5.1), where the server library cannot be imported:
they drive this script with the project's Python >= 3.10 venv instead.

    init REPO KEYS ROOT_KEYS                          a new repository
    publish REPO KEYS TAR CUSTOM_JSON [DEVICE_ID...]  add a bundle target (the image role) and assign it to
                                                      each DEVICE_ID (as `assign` with the image's custom)
    assign REPO KEYS DEVICE_ID IMAGE CUSTOM_JSON      add IMAGE (a published target) to the device's director
                                                      targets, with CUSTOM_JSON as the director's custom
    clear REPO KEYS DEVICE_ID                         the device gets no director targets
    forge-director REPO KEYS DEVICE_ID IMAGE SHA256 MODE
                                                      put a director target for IMAGE with another sha256 in
                                                      the device's bin, signed by the director key
                                                      (MODE=trusted) or a rogue key (MODE=rogue; SHA256 "-":
                                                      the image's own), with a valid snapshot and timestamp
    refresh-timestamp REPO KEYS HOURS_AGO             re-sign the timestamp as if signed HOURS_AGO hours ago
    forge-timestamp REPO KEYS SNAPSHOT_VERSION MODE   a newer timestamp naming SNAPSHOT_VERSION, signed by the
                                                      timestamp key (MODE=trusted) or a rogue key (MODE=rogue)
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Timestamp
from tuf.api.serialization.json import JSONSerializer

from fleet_server.tuf_director import bin_role
from fleet_server.tuf_repository import (
    DeviceTarget,
    Expiry,
    device_target_path,
    device_targets_of,
    init_repository,
    load_signer,
    publish_bundle,
    publish_roles,
    read_current,
    refresh_timestamp,
    repository_lock,
    set_device_targets,
)


def _forge_timestamp(repo: Path, keys: Path, snapshot_version: int, mode: str) -> None:
    current = read_current(repo, "timestamp")
    forged = Metadata(Timestamp(version=current.signed.version + 1,
                                expires=datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=6),
                                snapshot_meta=MetaFile(version=snapshot_version)))
    forged.sign(CryptoSigner.generate_ed25519() if mode == "rogue" else load_signer(keys, "timestamp"))
    (repo / "metadata" / "timestamp.json").write_bytes(forged.to_bytes(JSONSerializer()))


def _assign(repo: Path, keys: Path, device_id: str, image: str, custom: Dict[str, Any]) -> None:
    """Add (or replace) ``image`` in the device's director targets, keeping its others."""
    current = [DeviceTarget(name, dict(info.custom)) for name, info in device_targets_of(repo, device_id).items()
               if name != image]
    set_device_targets(repo, keys, {device_id: [*current, DeviceTarget(image, custom)]})


def _forge_director(repo: Path, keys: Path, device_id: str, image: str, sha256: str, mode: str) -> None:
    """A director target for ``image`` with ``sha256`` in the device's (existing) bin, signed per ``mode``."""
    role = bin_role(device_id)
    info = read_current(repo, "targets").signed.targets[image]
    path = device_target_path(device_id, image)
    with repository_lock(repo):
        metadata = read_current(repo, role)
        forged = metadata.signed.targets.get(path) or info
        forged.path = path
        forged.hashes = {"sha256": info.hashes["sha256"] if sha256 == "-" else sha256}
        metadata.signed.targets[path] = forged
        now = datetime.now(timezone.utc).replace(microsecond=0)
        publish_roles(repo, keys, [(role, metadata)], Expiry(), now)
        if mode == "rogue":
            metadata.signatures.clear()
            metadata.sign(CryptoSigner.generate_ed25519())
            (repo / "metadata" / f"{metadata.signed.version}.{role}.json").write_bytes(
                metadata.to_bytes(JSONSerializer()))


def main(argv: List[str]) -> None:
    """Run one command (see the module docstring)."""
    command, repo, keys = argv[0], Path(argv[1]), Path(argv[2])
    if command == "init":
        init_repository(repo, keys, Path(argv[3]))
    elif command == "publish":
        info = publish_bundle(repo, keys, Path(argv[3]), json.loads(argv[4]))
        for device_id in argv[5:]:
            _assign(repo, keys, device_id, info.path, {**json.loads(argv[4]), "rollout_id": None})
    elif command == "assign":
        _assign(repo, keys, argv[3], argv[4], json.loads(argv[5]))
    elif command == "clear":
        set_device_targets(repo, keys, {argv[3]: []})
    elif command == "forge-director":
        _forge_director(repo, keys, argv[3], argv[4], argv[5], argv[6])
    elif command == "refresh-timestamp":
        refresh_timestamp(repo, keys, now=datetime.now(timezone.utc) - timedelta(hours=float(argv[3])))
    elif command == "forge-timestamp":
        _forge_timestamp(repo, keys, int(argv[3]), argv[4])
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
