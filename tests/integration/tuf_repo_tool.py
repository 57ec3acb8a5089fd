"""Builds and forges a TUF repository for the device-side tests, run as a subprocess of a Python with tuf 6.

The device tests also run on Python 3.8 (tuf 5.1), where the server library cannot be imported:
they drive this script with the project's Python >= 3.10 venv instead.

    init REPO KEYS ROOT_KEYS                          a new repository
    publish REPO KEYS TAR CUSTOM_JSON                 add a bundle target
    refresh-timestamp REPO KEYS HOURS_AGO             re-sign the timestamp as if signed HOURS_AGO hours ago
    forge-timestamp REPO KEYS SNAPSHOT_VERSION MODE   a newer timestamp naming SNAPSHOT_VERSION, signed by the
                                                      timestamp key (MODE=trusted) or a rogue key (MODE=rogue)
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Timestamp
from tuf.api.serialization.json import JSONSerializer

from fleet_server.tuf_repository import init_repository, load_signer, publish_bundle, read_current, refresh_timestamp


def _forge_timestamp(repo: Path, keys: Path, snapshot_version: int, mode: str) -> None:
    current = read_current(repo, "timestamp")
    forged = Metadata(Timestamp(version=current.signed.version + 1,
                                expires=datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=6),
                                snapshot_meta=MetaFile(version=snapshot_version)))
    forged.sign(CryptoSigner.generate_ed25519() if mode == "rogue" else load_signer(keys, "timestamp"))
    (repo / "metadata" / "timestamp.json").write_bytes(forged.to_bytes(JSONSerializer()))


def main(argv: List[str]) -> None:
    """Run one command (see the module docstring)."""
    command, repo, keys = argv[0], Path(argv[1]), Path(argv[2])
    if command == "init":
        init_repository(repo, keys, Path(argv[3]))
    elif command == "publish":
        publish_bundle(repo, keys, Path(argv[3]), json.loads(argv[4]))
    elif command == "refresh-timestamp":
        refresh_timestamp(repo, keys, now=datetime.now(timezone.utc) - timedelta(hours=float(argv[3])))
    elif command == "forge-timestamp":
        _forge_timestamp(repo, keys, int(argv[3]), argv[4])
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
