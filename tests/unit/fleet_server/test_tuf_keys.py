"""Key rotation (fleet_server.tuf_keys): a device holding the old root follows it; the old keys stop working."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterator

import pytest

pytest.importorskip("tuf.ngclient")

from securesystemslib.signer import CryptoSigner
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, MetaFile, Root, Timestamp
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import FetcherInterface, Updater

from fleet_server.tuf_keys import rotate_keys
from fleet_server.tuf_repository import (
    DeviceTarget,
    init_repository,
    load_signer,
    publish_bundle,
    read_current,
    set_device_targets,
)

BASE = "http://fleet.invalid/"
DEVICE = "jetson-1"


class RepoFetcher(FetcherInterface):
    """Serves the repository's files from disk by URL, as any static server would."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = self.repo / url[len(BASE):]
        if not path.is_file():
            raise tuf_errors.DownloadHTTPError(f"{url}: 404", 404)
        return iter([path.read_bytes()])


@pytest.fixture()
def dirs(tmp_path: Path) -> Dict[str, Path]:
    paths = {"repo": tmp_path / "repo", "keys": tmp_path / "keys", "root_keys": tmp_path / "offline",
             "new_root_keys": tmp_path / "offline-2", "device": tmp_path / "device"}
    init_repository(paths["repo"], paths["keys"], paths["root_keys"])
    tar = tmp_path / "tiny-2.tar"
    tar.write_bytes(b"bundle" * 50)
    publish_bundle(paths["repo"], paths["keys"], tar, {"model": "tiny", "version": "2"})
    set_device_targets(paths["repo"], paths["keys"], {DEVICE: [DeviceTarget("tiny-2.tar", {"rollout_id": 1})]})
    paths["device"].mkdir()
    shutil.copyfile(paths["repo"] / "metadata" / "1.root.json", paths["device"] / "root.json")
    return paths


def refresh(dirs: Dict[str, Path]) -> Updater:
    updater = Updater(str(dirs["device"]), BASE + "metadata/", BASE + "targets/", fetcher=RepoFetcher(dirs["repo"]))
    updater.refresh()
    return updater


def trusted_root_version(dirs: Dict[str, Path]) -> int:
    return int(Metadata[Root].from_file(str(dirs["device"] / "root.json")).signed.version)


def forge_timestamp(dirs: Dict[str, Path], signer: CryptoSigner) -> None:
    """A newer timestamp (naming the current snapshot) signed by ``signer``, in place of the real one."""
    current = read_current(dirs["repo"], "timestamp")
    forged = Metadata(Timestamp(version=current.signed.version + 1,
                                expires=datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=6),
                                snapshot_meta=MetaFile(version=current.signed.snapshot_meta.version)))
    forged.sign(signer)
    (dirs["repo"] / "metadata" / "timestamp.json").write_bytes(forged.to_bytes(JSONSerializer()))


def test_a_device_follows_a_root_and_timestamp_key_rotation(dirs: Dict[str, Path]) -> None:
    refresh(dirs)
    old_timestamp = load_signer(dirs["keys"], "timestamp")
    version = rotate_keys(dirs["repo"], dirs["keys"], dirs["root_keys"], ["root", "timestamp"],
                          new_root_keys_dir=dirs["new_root_keys"])
    assert version == 2
    updater = refresh(dirs)
    assert trusted_root_version(dirs) == 2
    assert updater.get_targetinfo(f"devices/{_bin(DEVICE)}/{DEVICE}/tiny-2.tar") is not None
    assert (dirs["keys"] / "timestamp.pem.retired-1").exists()

    forge_timestamp(dirs, old_timestamp)  # the retired key is no longer trusted
    with pytest.raises(tuf_errors.UnsignedMetadataError):
        refresh(dirs)


def test_a_director_key_rotation_re_signs_every_bin(dirs: Dict[str, Path]) -> None:
    refresh(dirs)
    rotate_keys(dirs["repo"], dirs["keys"], dirs["root_keys"], ["director"])
    updater = refresh(dirs)
    info = updater.get_targetinfo(f"devices/{_bin(DEVICE)}/{DEVICE}/tiny-2.tar")
    assert info is not None and info.custom["rollout_id"] == 1
    new_director = load_signer(dirs["keys"], "director").public_key.keyid
    delegations = read_current(dirs["repo"], "targets").signed.delegations
    assert all(role.keyids == [new_director] for role in delegations.roles.values())


def test_rotation_needs_the_current_root_key(dirs: Dict[str, Path], tmp_path: Path) -> None:
    rogue = tmp_path / "rogue"
    rogue.mkdir()
    (rogue / "root.pem").write_bytes(CryptoSigner.generate_ed25519().private_bytes)
    before = sorted(p.name for p in (dirs["repo"] / "metadata").iterdir())
    with pytest.raises(ValueError, match="not one the current root lists"):
        rotate_keys(dirs["repo"], dirs["keys"], rogue, ["timestamp"])
    assert sorted(p.name for p in (dirs["repo"] / "metadata").iterdir()) == before
    with pytest.raises(ValueError, match="expected some of"):
        rotate_keys(dirs["repo"], dirs["keys"], dirs["root_keys"], ["bogus"])


def _bin(device_id: str) -> str:
    from fleet_server.tuf_repository import device_bin

    return device_bin(device_id)


def test_rotation_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fleet_server.cli import main as fleet_main

    config = tmp_path / "fleet.yaml"
    config.write_text("tuf: {repository_dir: repo, keys_dir: online}\n")
    offline, offline2 = tmp_path / "offline", tmp_path / "offline-2"
    assert fleet_main(["tuf-init", "--root-keys-dir", str(offline), "--config", str(config)]) == 0
    capsys.readouterr()
    assert fleet_main(["tuf-rotate", "root", "--root-keys-dir", str(offline), "--config", str(config)]) == 1
    assert capsys.readouterr().err.strip().startswith("edge-fleet: error: rotating root needs --new-root-keys-dir")
    assert fleet_main(["tuf-rotate", "root", "snapshot", "--root-keys-dir", str(offline), "--new-root-keys-dir",
                       str(offline2), "--config", str(config)]) == 0
    assert "root version 2 published" in capsys.readouterr().out
    assert read_current(tmp_path / "repo", "root").signed.version == 2 and (offline2 / "root.pem").is_file()
    assert fleet_main(["tuf-rotate", "timestamp", "--root-keys-dir", str(offline), "--config", str(config)]) == 1
    assert "not one the current root lists" in capsys.readouterr().err  # the old root key is retired


def test_the_servers_refresher_re_signs_the_timestamp_once_there_is_a_repository(tmp_path: Path) -> None:
    from fleet_server.settings import fleet_settings_from_mapping
    from fleet_server.tuf_refresher import refresh_once

    settings = fleet_settings_from_mapping({"tuf": {"repository_dir": "repo", "keys_dir": "online"}},
                                           str(tmp_path / "fleet.yaml"))
    assert refresh_once(settings) == 0  # before tuf-init: nothing to do, no error
    init_repository(tmp_path / "repo", tmp_path / "online", tmp_path / "offline")
    assert refresh_once(settings) == 2 and read_current(tmp_path / "repo", "timestamp").signed.version == 2
