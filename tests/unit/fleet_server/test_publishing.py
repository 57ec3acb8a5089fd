"""Publishing bundles: verified against the fleet's trusted keys, stored once, added to the TUF image role.

Also home of the OTA test fleet (:func:`ota_fleet`) that test_rollouts and test_sync_reports use.
"""

from __future__ import annotations

import contextlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import pytest
from tuf.api.metadata import Metadata

from edge_runtime.bundle import ArtifactSpec, TargetInfo, TensorSpec, finalize_bundle
from edge_runtime.bundle.signing import generate_keypair, load_private_key
from fleet_server.cli import main as fleet_main
from fleet_server.testing import FleetHarness, fleet_harness
from fleet_server.tuf_repository import init_repository, read_current

CPU = "x86-cpu"
NX = "jetson-xavier-nx"
NX_TARGET = TargetInfo(name="xavier-nx", device_class=NX, backend="tensorrt", precision="fp16",
                       compute_capability="7.2", tensorrt_version="8.5.2")


@dataclass
class Ota:
    """A migrated fleet app with an initialized TUF repository and a trusted signing key."""

    fleet: FleetHarness
    directory: Path
    key: Path

    @property
    def repo(self) -> Path:
        return self.directory / "tuf"

    def bundle_dir(self, version: str, *, classes: Sequence[str] = (CPU,), key: Optional[Path] = None,
                   name: str = "tiny", payload: bytes = b"onnx-bytes") -> Path:
        """A signed bundle directory with model.onnx for each class (an engine for the NX class)."""
        directory = self.directory / "bundles" / f"{name}-{version}-{len(list(self.directory.glob('bundles/*')))}"
        directory.mkdir(parents=True)
        (directory / "model.onnx").write_bytes(payload)
        targets = [NX_TARGET if c == NX else TargetInfo(name=c, device_class=c, backend="onnxruntime",
                                                        precision="fp32") for c in classes]
        finalize_bundle(directory, name=name, version=version,
                        inputs=[TensorSpec(name="input", dtype="float32", shape=(-1, 4))],
                        outputs=[TensorSpec(name="output", dtype="float32", shape=(-1, 3))],
                        source_model_sha256="0" * 64, artifacts=[ArtifactSpec("model.onnx", "onnx", None, "fp32")],
                        targets=targets, private_key=load_private_key(key or self.key))
        return directory

    def tar(self, directory: Path) -> bytes:
        """The bundle directory as an uncompressed POSIX tar."""
        path = directory.with_suffix(".tar")
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for item in sorted(directory.rglob("*")):
                tar.add(item, arcname=item.relative_to(directory).as_posix(), recursive=False)
        return path.read_bytes()

    def upload(self, data: bytes) -> Any:
        return self.fleet.client.post("/api/v1/bundles", data=data, content_type="application/x-tar",
                                      headers=self.fleet.auth(self.fleet.operator))

    def publish(self, version: str, **options: Any) -> Dict[str, Any]:
        reply = self.upload(self.tar(self.bundle_dir(version, **options)))
        assert reply.status_code == 201, reply.get_json()
        return dict(reply.get_json())

    def call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        """An operator request."""
        return self.fleet.client.open(path, method=method, json=body, headers=self.fleet.auth(self.fleet.operator))

    def enroll(self, device_id: str, device_class: Optional[str] = CPU) -> str:
        reply = self.call("POST", "/api/v1/devices", {"device_id": device_id, "device_class": device_class})
        assert reply.status_code == 201, reply.get_json()
        token = str(reply.get_json()["token"])
        self.fleet.tokens[device_id] = token
        return token


@contextlib.contextmanager
def ota_fleet(directory: Path, keypair: Tuple[Path, Path], database_url: str = "sqlite:///fleet.sqlite"
              ) -> Iterator[Ota]:
    """An Ota fleet in ``directory`` (settings file there, so tuf/ and tuf-keys/ are too), no devices."""
    settings = {"tuf": {"trusted_bundle_keys": [str(keypair[1])]}}
    init_repository(directory / "tuf", directory / "tuf-keys", directory / "root-keys")
    with fleet_harness(database_url, directory, devices=(), settings=settings) as fleet:
        yield Ota(fleet, directory, keypair[0])


@pytest.fixture()
def ota(tmp_path: Path, keypair: Tuple[Path, Path]) -> Iterator[Ota]:
    with ota_fleet(tmp_path, keypair) as fleet:
        yield fleet


def _image_targets(repo: Path) -> Dict[str, Any]:
    targets: Metadata[Any] = read_current(repo, "targets")
    return dict(targets.signed.targets)


def test_a_signed_bundle_is_stored_and_published_as_an_image_target(ota: Ota) -> None:
    row = ota.publish("2", classes=(CPU, NX))
    assert (row["model"], row["version"], row["target"]) == ("tiny", "2", "tiny-2.tar")
    assert row["device_classes"] == sorted([CPU, NX])
    assert row["fingerprints"][CPU] is None
    assert row["fingerprints"][NX]["compute_capability"] == "7.2"
    target = _image_targets(ota.repo)["tiny-2.tar"]
    assert target.hashes["sha256"] == row["sha256"] and target.length == row["length"]
    assert target.unrecognized_fields["custom"] == {"model": "tiny", "version": "2", "device_classes": row[
        "device_classes"]}
    assert (ota.repo / "targets" / f"{row['sha256']}.tiny-2.tar").stat().st_size == row["length"]
    listed = ota.call("GET", "/api/v1/bundles").get_json()
    assert [b["target"] for b in listed] == ["tiny-2.tar"]
    assert list((ota.directory / "tuf-staging").iterdir()) == []  # the staging area is cleaned up


def test_the_same_bundle_twice_is_idempotent_and_other_bytes_conflict(ota: Ota) -> None:
    data = ota.tar(ota.bundle_dir("3"))
    first = ota.upload(data)
    version = read_current(ota.repo, "timestamp").signed.version
    again = ota.upload(data)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json() == first.get_json()
    assert read_current(ota.repo, "timestamp").signed.version == version  # nothing re-signed
    other = ota.upload(ota.tar(ota.bundle_dir("3", payload=b"other-bytes")))
    assert other.status_code == 409 and "already published" in other.get_json()["error"]
    assert _image_targets(ota.repo)["tiny-3.tar"].hashes["sha256"] == first.get_json()["sha256"]


def _unsigned(ota: Ota) -> bytes:
    directory = ota.bundle_dir("4")
    (directory / "manifest.sig").unlink()
    return ota.tar(directory)


def _wrong_key(ota: Ota) -> bytes:
    other, _ = generate_keypair(ota.directory / "other-keys")
    return ota.tar(ota.bundle_dir("4", key=other))


def _tampered(ota: Ota) -> bytes:
    directory = ota.bundle_dir("4")
    (directory / "model.onnx").write_bytes(b"onnx-bytEs")
    return ota.tar(directory)


def _altered_manifest(ota: Ota) -> bytes:
    directory = ota.bundle_dir("4")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["version"] = "5"
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return ota.tar(directory)


def _symlink(ota: Ota) -> bytes:
    data = ota.tar(ota.bundle_dir("4"))
    path = ota.directory / "with-link.tar"
    path.write_bytes(data[:-1024])  # drop the end-of-archive blocks, then append a link
    with tarfile.open(path, "a", format=tarfile.PAX_FORMAT) as tar:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return path.read_bytes()


@pytest.mark.parametrize(("build", "words"), [
    (_unsigned, "manifest.sig"), (_wrong_key, "not trusted"), (_tampered, "model.onnx"),
    (_altered_manifest, "does not match"), (_symlink, "symbolic link"),
    (lambda ota: b"not a tar at all" * 100, "tar"),
])
def test_a_bad_bundle_is_refused_422_with_one_line_and_nothing_is_stored(ota: Ota, build: Any, words: str) -> None:
    before = read_current(ota.repo, "timestamp").signed.version
    reply = ota.upload(build(ota))
    error = reply.get_json()["error"]
    assert reply.status_code == 422 and words in error and "\n" not in error, error
    assert str(ota.directory / "tuf-staging") not in error  # the reason, not the staging path
    assert ota.call("GET", "/api/v1/bundles").get_json() == []
    assert read_current(ota.repo, "timestamp").signed.version == before
    assert list((ota.repo / "targets").iterdir()) == []


def test_uploads_need_an_operator_token_and_respect_the_cap(tmp_path: Path, keypair: Tuple[Path, Path]) -> None:
    init_repository(tmp_path / "tuf", tmp_path / "tuf-keys", tmp_path / "root-keys")
    settings = {"tuf": {"trusted_bundle_keys": [str(keypair[1])], "max_bundle_bytes": 4096}}
    with fleet_harness("sqlite:///fleet.sqlite", tmp_path, settings=settings) as fleet:
        ota = Ota(fleet, tmp_path, keypair[0])
        data = ota.tar(ota.bundle_dir("2", payload=b"x" * 8192))
        assert fleet.client.post("/api/v1/bundles", data=data).status_code == 401
        assert fleet.client.post("/api/v1/bundles", data=data,
                                 headers=fleet.auth(fleet.tokens["dev-a"])).status_code == 401
        reply = ota.upload(data)
        assert reply.status_code == 413 and "max_bundle_bytes" in reply.get_json()["error"]


def test_publishing_needs_a_repository_and_trusted_keys(tmp_path: Path, keypair: Tuple[Path, Path]) -> None:
    with fleet_harness("sqlite:///fleet.sqlite", tmp_path,
                       settings={"tuf": {"trusted_bundle_keys": [str(keypair[1])]}}) as fleet:
        ota = Ota(fleet, tmp_path, keypair[0])
        reply = ota.upload(ota.tar(ota.bundle_dir("2")))
        assert reply.status_code == 409 and "tuf-init" in reply.get_json()["error"]
    with fleet_harness("sqlite:///other.sqlite", tmp_path) as fleet:
        init_repository(tmp_path / "tuf", tmp_path / "tuf-keys", tmp_path / "root-keys")
        reply = Ota(fleet, tmp_path, keypair[0]).upload(ota.tar(ota.bundle_dir("2")))
        assert reply.status_code == 409 and "trusted_bundle_keys" in reply.get_json()["error"]


def test_edge_fleet_publish_takes_a_directory_or_a_tar(ota: Ota, capsys: pytest.CaptureFixture[str]) -> None:
    config = ota.directory / "fleet.yaml"
    public_key = ota.key.with_suffix(".pub")
    config.write_text(f"database_url: sqlite:///fleet.sqlite\ntuf: {{trusted_bundle_keys: ['{public_key}']}}\n")
    directory = ota.bundle_dir("7")
    assert fleet_main(["publish", str(directory), "--config", str(config)]) == 0
    assert "published: tiny version 7 as tiny-7.tar" in capsys.readouterr().out
    (ota.directory / "again.tar").write_bytes(ota.tar(directory))
    assert fleet_main(["publish", str(ota.directory / "again.tar"), "--config", str(config)]) == 0
    assert "already published" in capsys.readouterr().out
    assert fleet_main(["publish", str(ota.directory / "missing"), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edge-fleet: error: ") and err.count("\n") == 1


def test_tuf_settings_resolve_against_the_settings_file_and_are_checked(tmp_path: Path) -> None:
    from edge_runtime.errors import ConfigError
    from fleet_server.settings import fleet_settings_from_mapping

    settings = fleet_settings_from_mapping({"tuf": {"trusted_bundle_keys": ["keys/a.pub"], "timestamp_hours": 2,
                                                    "refresh_every_s": 1800}}, str(tmp_path / "fleet.yaml"))
    assert settings.resolve(settings.tuf.repository_dir) == tmp_path / "tuf"
    assert settings.resolve(settings.tuf.trusted_bundle_keys[0]) == tmp_path / "keys" / "a.pub"
    assert settings.tuf.max_bundle_bytes == 4 << 30 and settings.tuf.expiry().timestamp.total_seconds() == 7200
    for bad in ({"max_bundle_bytes": 0}, {"snapshot_days": 60}, {"colour": 1}, {"trusted_bundle_keys": "a.pub"},
                {"refresh_every_s": 3 * 3600}, {"refresh_every_s": -1}):
        with pytest.raises(ConfigError, match=r"fleet\.yaml: "):
            fleet_settings_from_mapping({"tuf": bad}, "fleet.yaml")
