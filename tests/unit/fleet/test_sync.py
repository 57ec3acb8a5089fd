"""One sync pass with a fake for each seam: what is taken, in which order, and how each failure ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from edge_runtime.bundle.manifest import Manifest, TensorSpec
from edge_runtime.config import DeviceConfig, load_device_config
from edge_runtime.errors import ConfigError
from edge_runtime.fleet.errors import (
    BundleRefusedError,
    DownloadIntegrityError,
    DownloadSpaceError,
    MetadataRefusedError,
    TransportError,
    VersionRefusedError,
)
from edge_runtime.fleet.install import InstalledVersion
from edge_runtime.fleet.refused_targets import RECORD_NAME, RefusedTargets
from edge_runtime.fleet.sync import FAILED, GATE_FAILED, METADATA, PROMOTED, REFUSED, SyncOutcome, sync_once
from edge_runtime.fleet.sync_config import SyncSettings, load_sync_settings, runtime_headers
from edge_runtime.fleet.tuf_client import TufTarget
from edge_runtime.serving.active_version import ActiveVersion, write_pointer

CLASS = "x86-cpu"
DEVICE = "dev-1"


@dataclass
class Verdict:
    passed: bool
    reason: str = ""
    retry: bool = False


class FakeTuf:
    """The director's targets for DEVICE (another device gets none); ``*_error`` fails refresh or the listing."""

    def __init__(self, targets: List[TufTarget], refresh_error: Optional[Exception] = None,
                 listing_error: Optional[Exception] = None) -> None:
        self.targets = list(targets)
        self.refresh_error, self.listing_error = refresh_error, listing_error
        self.refreshed = 0
        self.asked: List[str] = []

    def refresh(self) -> None:
        self.refreshed += 1
        if self.refresh_error is not None:
            raise self.refresh_error

    def device_targets(self, device_id: str) -> List[TufTarget]:
        self.asked.append(device_id)
        if self.listing_error is not None:
            raise self.listing_error
        return list(self.targets) if device_id == DEVICE else []


def target(model: str, version: str, device_class: str = CLASS, name: Optional[str] = None,
           sha256: str = "0" * 64, rollout_id: Optional[int] = None) -> TufTarget:
    name = name or f"{model}-{version}.tar"
    custom: Dict[str, Any] = {"image": name, "model": model, "version": version, "device_class": device_class,
                              "fingerprint": None, "rollout_id": rollout_id}
    return TufTarget(name, 100, sha256, custom, f"http://127.0.0.1:1/targets/{name}")


class Steps:
    """Fake download, install and gate, recording each call in one list; failures chosen per model."""

    def __init__(self, fail_download: Tuple[str, ...] = (), fail_install: Tuple[str, ...] = (),
                 fail_gate: Tuple[str, ...] = (), crash_gate: Tuple[str, ...] = (),
                 download_error: Optional[Exception] = None, runtime_down: Tuple[str, ...] = ()) -> None:
        self.calls: List[Tuple[str, str]] = []
        self.download_error = download_error
        self.fail_download, self.fail_install = fail_download, fail_install
        self.fail_gate, self.crash_gate, self.runtime_down = fail_gate, crash_gate, runtime_down

    def download(self, tuf_target: TufTarget, dest: Path) -> Path:
        self.calls.append(("download", tuf_target.name))
        assert dest.parent.is_dir() and dest.name == tuf_target.name
        if tuf_target.custom["model"] in self.fail_download:
            if self.download_error is not None:
                raise self.download_error
            raise DownloadIntegrityError(f"{tuf_target.url}: the file differs from its target: sha256 mismatch")
        dest.write_bytes(b"tar")
        return dest

    def install(self, tar: Path, model: str, expected_version: str) -> InstalledVersion:
        self.calls.append(("install", tar.name))
        assert tar.read_bytes() == b"tar"
        if model in self.fail_install:
            raise BundleRefusedError(f"{tar.name}: bad signature: manifest.sig does not verify")
        version = tar.name[len(model) + 1:-len(".tar")]
        if version != expected_version:  # as install_bundle does, before anything is published
            raise VersionRefusedError(f"{tar.name}: the bundle is version {version}, its TUF target says "
                                      f"{expected_version}")
        return InstalledVersion(model, version, tar.parent / version, _manifest(model, version), False, ())

    def gate(self, installed: InstalledVersion) -> Verdict:
        self.calls.append(("gate", f"{installed.model}-{installed.version}"))
        if installed.model in self.crash_gate:
            raise RuntimeError("gate crashed")
        if installed.model in self.fail_gate:
            return Verdict(False, f"{installed.model} version {installed.version}: p99 1500 ms\nover 1000 ms")
        if installed.model in self.runtime_down:
            return Verdict(False, "not staged: no answer from the runtime", retry=True)
        return Verdict(True)


def _manifest(model: str, version: str) -> Manifest:
    spec = (TensorSpec(name="input", dtype="float32", shape=(-1, 4)),)
    return Manifest(name=model, version=version, created="2026-01-01T00:00:00Z", inputs=spec, outputs=spec,
                    source_model_sha256="0" * 64, artifacts=(), targets=())


@pytest.fixture()
def device(device_configs_dir: Path) -> DeviceConfig:
    return load_device_config(device_configs_dir / "x86-cpu.yaml")


@pytest.fixture()
def settings(tmp_path: Path) -> SyncSettings:
    repo = tmp_path / "repo"
    for model, active in (("tiny", "1"), ("other", "3")):
        (repo / model / active).mkdir(parents=True)
        write_pointer(repo / model, ActiveVersion(active))
    return SyncSettings(metadata_url="http://127.0.0.1:1/metadata/", targets_url="http://127.0.0.1:1/targets/",
                        metadata_dir="tuf", trusted_root="root.json", staging_dir="staging", repository="repo",
                        trusted_keys=("signing.pub",), device_config="device.yaml", device_id=DEVICE,
                        source=str(tmp_path / "agent.yaml"))


def run(settings: SyncSettings, device: DeviceConfig, tuf: FakeTuf, steps: Steps) -> List[SyncOutcome]:
    return sync_once(settings, tuf, steps.download, steps.install, steps.gate, now=lambda: 42.0, device=device)


def test_newer_target_goes_through_every_step_in_order(settings: SyncSettings, device: DeviceConfig) -> None:
    steps = Steps()
    tuf = FakeTuf([target("tiny", "2")])
    outcomes = run(settings, device, tuf, steps)
    assert tuf.refreshed == 1 and tuf.asked == [DEVICE]
    assert steps.calls == [("download", "tiny-2.tar"), ("install", "tiny-2.tar"), ("gate", "tiny-2")]
    assert outcomes == [SyncOutcome("tiny-2.tar", "tiny", "2", PROMOTED, "", 42.0)]
    assert not (settings.resolve("staging") / "tiny-2.tar").exists()  # the tar is not kept once installed


def test_the_active_version_is_up_to_date_and_an_older_one_is_a_refused_rollback(
        settings: SyncSettings, device: DeviceConfig) -> None:
    steps = Steps()
    history = FakeTuf([target("tiny", "1"), target("other", "2"), target("other", "3")])
    assert run(settings, device, history, steps) == []  # 3 is active and listed: 2 beside it is history
    tuf = FakeTuf([target("tiny", "1"), target("other", "2", rollout_id=7)])
    outcomes = run(settings, device, tuf, steps)
    assert [(o.target, o.status, o.rollout_id) for o in outcomes] == [("other-2.tar", REFUSED, 7)]
    assert outcomes[0].reason == ("TUF target 'other-2.tar': version 2 is older than the active version 3 "
                                  "(rollback refused)")
    assert steps.calls == []
    assert run(settings, device, tuf, steps) == []  # reported once, remembered


def test_a_director_target_for_another_device_class_is_refused(settings: SyncSettings, device: DeviceConfig) -> None:
    steps = Steps()
    outcomes = run(settings, device, FakeTuf([target("tiny", "5", device_class="jetson-xavier-nx", rollout_id=4)]),
                   steps)
    assert [(o.status, o.rollout_id) for o in outcomes] == [(REFUSED, 4)]
    assert "'jetson-xavier-nx'" in outcomes[0].reason and steps.calls == []


def test_outcomes_carry_the_directors_rollout_id(settings: SyncSettings, device: DeviceConfig) -> None:
    tuf = FakeTuf([target("tiny", "2", rollout_id=7), target("other", "4", rollout_id=8)])
    outcomes = run(settings, device, tuf, Steps(fail_gate=("other",)))
    assert [(o.model, o.status, o.rollout_id) for o in outcomes] == [("other", GATE_FAILED, 8), ("tiny", PROMOTED, 7)]
    flagged = target("tiny", "2")
    flagged.custom["rollout_id"] = True  # not an integer: no rollout
    assert [o.rollout_id for o in run(settings, device, FakeTuf([flagged]), Steps())] == [None]


def test_a_pass_without_a_device_id_is_refused(settings: SyncSettings, device: DeviceConfig) -> None:
    tuf = FakeTuf([target("tiny", "2")])
    with pytest.raises(ConfigError, match="device_id"):
        run(replace(settings, device_id=""), device, tuf, Steps())
    assert tuf.refreshed == 0


def test_only_the_highest_newer_version_per_model(settings: SyncSettings, device: DeviceConfig) -> None:
    steps = Steps()
    outcomes = run(settings, device, FakeTuf([target("tiny", "2"), target("tiny", "10"), target("tiny", "9")]), steps)
    assert [(o.version, o.status) for o in outcomes] == [("10", PROMOTED)]
    assert steps.calls[0] == ("download", "tiny-10.tar")


def test_a_model_not_on_the_device_yet_is_installed(settings: SyncSettings, device: DeviceConfig) -> None:
    outcomes = run(settings, device, FakeTuf([target("fresh", "1")]), Steps())
    assert [(o.model, o.status) for o in outcomes] == [("fresh", PROMOTED)]


@pytest.mark.parametrize("failing, status, words", [
    ("download", REFUSED, "sha256 mismatch"),
    ("install", REFUSED, "bad signature"),
    ("gate", GATE_FAILED, "p99 1500 ms over 1000 ms"),
    ("crash", FAILED, "gate crashed"),
])
def test_one_failure_is_one_outcome_and_the_others_still_run(settings: SyncSettings, device: DeviceConfig,
                                                             failing: str, status: str, words: str) -> None:
    steps = Steps(fail_download=("other",) if failing == "download" else (),
                  fail_install=("other",) if failing == "install" else (),
                  fail_gate=("other",) if failing == "gate" else (),
                  crash_gate=("other",) if failing == "crash" else ())
    # "other" is taken first (models in name order): "tiny" must still go through after it failed
    outcomes = run(settings, device, FakeTuf([target("tiny", "2"), target("other", "4")]), steps)
    assert [(o.model, o.status) for o in outcomes] == [("other", status), ("tiny", PROMOTED)]
    assert words in outcomes[0].reason and "\n" not in outcomes[0].reason
    assert ("gate", "tiny-2") in steps.calls
    assert not list(settings.resolve("staging").glob("*.tar"))


def test_a_refused_director_listing_is_one_outcome(settings: SyncSettings, device: DeviceConfig) -> None:
    error = MetadataRefusedError("TUF target 'devices/ab/dev-1/tiny-2.tar': director and image roles disagree")
    steps = Steps()
    outcomes = run(settings, device, FakeTuf([target("tiny", "2")], listing_error=error), steps)
    assert [(o.target, o.status, o.reason) for o in outcomes] == [(METADATA, REFUSED, str(error))]
    assert steps.calls == []


def test_bad_custom_fields_are_refused(settings: SyncSettings, device: DeviceConfig) -> None:
    bad_version = target("tiny", "v2")
    bad_model = target("../etc", "2", name="etc-2.tar")
    steps = Steps()
    outcomes = run(settings, device, FakeTuf([bad_version, bad_model]), steps)
    assert sorted(o.status for o in outcomes) == [REFUSED, REFUSED]
    assert steps.calls == []


def test_version_other_than_the_target_says_is_refused(settings: SyncSettings, device: DeviceConfig) -> None:
    steps = Steps()
    outcomes = run(settings, device, FakeTuf([target("tiny", "3", name="tiny-2.tar")]), steps)
    assert [o.status for o in outcomes] == [REFUSED]
    assert "its TUF target says 3" in outcomes[0].reason
    assert ("gate", "tiny-2") not in steps.calls


@pytest.mark.parametrize("error, status", [
    (MetadataRefusedError("TUF metadata refused: expired (freeze attack or a stale mirror)"), REFUSED),
    (TransportError("TUF metadata could not be fetched: connection refused"), FAILED),
])
def test_refused_refresh_is_one_outcome_and_nothing_else_runs(settings: SyncSettings, device: DeviceConfig,
                                                              error: Exception, status: str) -> None:
    steps = Steps()
    outcomes = run(settings, device, FakeTuf([target("tiny", "2")], refresh_error=error), steps)
    assert [(o.target, o.status, o.reason) for o in outcomes] == [(METADATA, status, str(error))]
    assert steps.calls == []


# --- targets refused before are not taken again ----------------------------------------------------

def _record(settings: SyncSettings) -> List[Tuple[str, str, str]]:
    return [(e.name, e.sha256, e.outcome) for e in RefusedTargets(settings.resolve("staging") / RECORD_NAME).entries()]


@pytest.mark.parametrize("failing, status", [("gate", GATE_FAILED), ("install", REFUSED)])
def test_a_target_refused_once_is_skipped_by_later_passes(settings: SyncSettings, device: DeviceConfig,
                                                          caplog: pytest.LogCaptureFixture,
                                                          failing: str, status: str) -> None:
    tuf = FakeTuf([target("tiny", "3", sha256="3" * 64)])
    first = Steps(fail_gate=("tiny",) if failing == "gate" else (), fail_install=("tiny",) if failing == "install"
                  else ())
    assert [o.status for o in run(settings, device, tuf, first)] == [status]
    assert _record(settings) == [("tiny-3.tar", "3" * 64, status)]
    again = Steps()
    caplog.set_level(logging.INFO, logger="edge_runtime.fleet.sync")
    assert run(settings, device, tuf, again) == []
    assert again.calls == []  # neither downloaded nor gated again
    skipped = [r.getMessage() for r in caplog.records if "refused before" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].startswith("sync: tiny-3.tar: skipped: refused before: ")


@pytest.mark.parametrize("error", [
    TransportError("http://127.0.0.1:1/targets/tiny-3.tar: cut after 10 of 100 bytes (kept to resume)"),
    DownloadSpaceError("not enough space in staging: need 100 bytes"),
    DownloadIntegrityError("http://127.0.0.1:1/targets/tiny-3.tar: the file differs from its target"),
])
def test_a_failed_download_is_not_remembered(settings: SyncSettings, device: DeviceConfig, error: Exception) -> None:
    tuf = FakeTuf([target("tiny", "3")])
    run(settings, device, tuf, Steps(fail_download=("tiny",), download_error=error))
    assert _record(settings) == []
    steps = Steps()
    assert [o.status for o in run(settings, device, tuf, steps)] == [PROMOTED]  # tried again
    assert steps.calls[0] == ("download", "tiny-3.tar")


def test_a_crash_after_the_download_is_not_remembered(settings: SyncSettings, device: DeviceConfig) -> None:
    tuf = FakeTuf([target("tiny", "3")])
    assert [o.status for o in run(settings, device, tuf, Steps(crash_gate=("tiny",)))] == [FAILED]
    assert _record(settings) == []
    assert [o.status for o in run(settings, device, tuf, Steps())] == [PROMOTED]


def test_a_gate_the_runtime_never_answered_is_failed_and_retried(settings: SyncSettings,
                                                                   device: DeviceConfig) -> None:
    """A runtime that is down never judged the version: a later pass gates it again."""
    tuf = FakeTuf([target("tiny", "3")])
    assert [o.status for o in run(settings, device, tuf, Steps(runtime_down=("tiny",)))] == [FAILED]
    assert _record(settings) == []
    assert [o.status for o in run(settings, device, tuf, Steps())] == [PROMOTED]


def test_a_republished_target_with_another_sha256_is_tried(settings: SyncSettings, device: DeviceConfig) -> None:
    run(settings, device, FakeTuf([target("tiny", "3", sha256="a" * 64)]), Steps(fail_gate=("tiny",)))
    steps = Steps()
    outcomes = run(settings, device, FakeTuf([target("tiny", "3", sha256="b" * 64)]), steps)
    assert [o.status for o in outcomes] == [PROMOTED] and steps.calls[0] == ("download", "tiny-3.tar")


def test_the_newest_version_not_refused_before_is_taken(settings: SyncSettings, device: DeviceConfig) -> None:
    tuf = FakeTuf([target("tiny", "2"), target("tiny", "3")])
    run(settings, device, tuf, Steps(fail_gate=("tiny",)))
    steps = Steps()
    assert [(o.version, o.status) for o in run(settings, device, tuf, steps)] == [("2", PROMOTED)]


# --- settings ------------------------------------------------------------------------------------

SYNC_BLOCK = """
sync:
  metadata_url: https://fleet.example.com/tuf/metadata/
  targets_url: https://cdn.example.com/tuf/targets/
  metadata_dir: tuf
  trusted_root: root.json
  staging_dir: staging
  repository: models
  trusted_keys: [signing.pub]
  device_config: device.yaml
"""


def test_settings_load_from_the_sync_block(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("server_url: https://fleet.example.com\ndevice_id: dev-7\n" + SYNC_BLOCK)
    settings = load_sync_settings(path)
    assert settings.resolve(settings.repository) == tmp_path / "models"
    assert (settings.keep_versions, settings.trusted_keys, runtime_headers(settings)) == (3, ("signing.pub",), {})
    assert (settings.device_id, settings.grace_s) == ("dev-7", 300.0)


@pytest.mark.parametrize("head", ["", "device_id: ''\n", "device_id: 7\n", "device_id: a/b\n"])
def test_settings_need_the_files_device_id(tmp_path: Path, head: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(head + SYNC_BLOCK)
    with pytest.raises(ConfigError, match="device_id"):
        load_sync_settings(path)


@pytest.mark.parametrize("extra, words", [
    ("  targets_url: http://cdn.example.com/\n", "plain http"),
    ("  keep_versions: 1\n", "keep_versions"),
    ("  restricted_header: admin-key\n", "go together"),
    ("  colour: blue\n", "unknown key 'sync.colour'"),
    ("  poll_s: 0\n", "poll_s"),
    ("  grace_s: 0\n", "grace_s"),
])
def test_settings_refused_in_one_line(tmp_path: Path, extra: str, words: str) -> None:
    path = tmp_path / "agent.yaml"
    block = SYNC_BLOCK if "targets_url" not in extra else SYNC_BLOCK.replace(
        "  targets_url: https://cdn.example.com/tuf/targets/\n", "")
    path.write_text("device_id: dev-1\n" + block + extra)
    with pytest.raises(ConfigError) as caught:
        load_sync_settings(path)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_no_sync_block(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("server_url: https://fleet.example.com\n")
    with pytest.raises(ConfigError, match="no 'sync' block"):
        load_sync_settings(path)


def test_restricted_header_read_from_its_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    (tmp_path / "admin-key").write_text("s3cret\n")
    path.write_text("device_id: dev-1\n" + SYNC_BLOCK + "  restricted_header: admin-key\n"
                    "  restricted_value_file: admin-key\n")
    assert runtime_headers(load_sync_settings(path)) == {"admin-key": "s3cret"}
