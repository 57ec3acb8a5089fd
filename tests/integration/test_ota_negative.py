"""Negative OTA cases against a serving runtime: each is refused with a one-line reason and v1 keeps serving.

Every case builds its own TUF repository (a copy of one made with ``fleet_server.tuf_repository``),
publishes or forges what it attacks with, and runs the device's real sync pass in-process
(``sync_pass.run_once``: TUF refresh, resumable download, install, and the real health gate against
the module's ``edge-runtime serve``). Then, whatever the case: the outcome is ``refused`` (``failed``
for transport and disk cases, ``gate_failed`` for a bundle that fails its gate) with a one-line
reason naming the problem (the reason the device reports); nothing was promoted; every file of the
model's folder is byte-identical (the active version, the pointer, no staging leftovers; a gated
version stays installed but inactive); no tar or partial tar is left in the device's staging folder
(a cut download keeps its partial to resume); a refused refresh leaves the trusted metadata
byte-identical; and the runtime still answers an inference from version 1 with the right numbers.

Needs Python >= 3.10 (the server library, tuf 6): skipped on the device's Python 3.8.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest

if sys.version_info < (3, 10):
    pytest.skip("the negative OTA suite builds TUF repositories with the server library (Python >= 3.10, tuf 6)",
                allow_module_level=True)
pytest.importorskip("tuf.ngclient", reason="the negative OTA suite needs tuf (the `sync` extra)")
pytest.importorskip("onnx", reason="the negative OTA suite writes ONNX models")

from ota_negative_support import (
    CONFIGS,
    DEVICE_ID,
    MODEL,
    NX_TARGET,
    ORIN_ENGINE_TARGET,
    Case,
    FileServer,
    Rig,
    affine_onnx,
    giant_header,
    one_line_outcomes,
    past,
    resign_manifest,
    write_bundle,
)
from runtime_support import start_server, write_runtime_config
from tar_members import add_member
from tuf.api.metadata import TargetFile

from edge_runtime.bundle.signing import generate_keypair
from edge_runtime.fleet.sync import FAILED, GATE_FAILED, METADATA, PROMOTED, REFUSED
from edge_runtime.serving.active_version import ActiveVersion, read_pointer, write_pointer
from fleet_server import tuf_repository as tuf_repo

TARGET = "tiny-2.tar"
IGNORED = "ignored"  # the expected status of a target that is not offered to this device at all


@dataclasses.dataclass(frozen=True)
class Spec:
    """A case: how it attacks, and what the device must report (status, phrase, for which target)."""

    arrange: Callable[[Case], None]
    status: str
    phrase: str
    target: str = TARGET
    leaves: Tuple[str, ...] = ()  # model entries the case may leave (a gated version stays, inactive)
    partial: bool = False  # a cut download keeps its partial file to resume
    refresh_refused: bool = True  # for a METADATA outcome: the refresh itself was refused (nothing newly trusted)
    fetches: bool = True  # False: refused before any bundle byte was asked for


# --- bundle cases ---------------------------------------------------------------------------------

def _publish_bundle(version: str = "2", *, tar_extra: Optional[Callable[[tarfile.TarFile], None]] = None,
                    skip: Tuple[str, ...] = (), edit: Optional[Callable[[Case, Path], None]] = None,
                    target_version: str = "2", target_model: str = MODEL, device_class: str = "x86-cpu",
                    **bundle: object) -> Callable[[Case], None]:
    """A case that publishes one bundle (made with ``bundle`` options, then ``edit``-ed) as tiny-2.tar."""
    def arrange(case: Case) -> None:
        directory = case.bundle(version, **bundle)
        if edit is not None:
            edit(case, directory)
        case.publish(case.tar(directory, tar_extra, skip), model=target_model, version=target_version,
                     device_class=device_class)
    return arrange


def _flip_signature(case: Case, directory: Path) -> None:
    sig = json.loads((directory / "manifest.sig").read_text())
    sig["signature"] = ("B" if sig["signature"][0] == "A" else "A") + sig["signature"][1:]
    (directory / "manifest.sig").write_text(json.dumps(sig))


def _tamper(case: Case, directory: Path) -> None:
    data = bytearray((directory / "model.onnx").read_bytes())
    data[-1] ^= 0x01  # same size, one bit off
    (directory / "model.onnx").write_bytes(bytes(data))


def _lying_manifest(case: Case, directory: Path) -> None:
    """Re-sign the manifest with the trusted key after making it list another sha256 for model.onnx."""
    def other_hash(manifest: dict) -> None:
        for artifact in manifest["artifacts"]:
            if artifact["path"] == "model.onnx":
                artifact["sha256"] = "ab" * 32
    resign_manifest(directory, case.rig.key, other_hash)


def _untrusted(case: Case) -> None:
    case.publish(case.tar(case.bundle("2", key=case.rig.rogue_key)))


def _existing_version_other_content(case: Case) -> None:
    """tiny/3 is installed (not active); a target brings another bundle numbered 3."""
    write_bundle(case.rig.models / MODEL / "3", case.rig.key, "3")
    case.publish(case.tar(case.bundle("3", onnx=affine_onnx(np.array([9.0, 9.0, 9.0]))), name="tiny-3.tar"),
                 version="3")


def _wrong_fingerprint(case: Case) -> None:
    """A TensorRT device (Xavier NX) offered an engine built for another host, and no ONNX to rebuild from."""
    case.use(device_config=CONFIGS / "xavier-nx.yaml")
    case.publish(case.tar(case.bundle("2", onnx=None, targets=[ORIN_ENGINE_TARGET], engine="xavier-nx")),
                 device_class="jetson-xavier-nx")


def _raw(data_of: Callable[[Case], bytes]) -> Callable[[Case], None]:
    def arrange(case: Case) -> None:
        case.publish(case.raw_tar(data_of(case)))
    return arrange


def _good_tar_bytes(case: Case) -> bytes:
    return case.tar(case.bundle("2"), name="good.tar").read_bytes()


def _gzipped(case: Case) -> bytes:
    directory = case.bundle("2")
    path = case.work / "gz.tar"
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(directory.rglob("*")):
            tar.add(item, arcname=item.relative_to(directory).as_posix(), recursive=False)
    return path.read_bytes()


def _many_members(tar: tarfile.TarFile) -> None:
    for index in range(4100):  # the installer's cap is 4096 members
        add_member(tar, f"d{index}", tarfile.DIRTYPE)


# --- download cases -------------------------------------------------------------------------------

def _hostile(mode: str) -> Callable[[Case], None]:
    def arrange(case: Case) -> None:
        case.publish(case.tar(case.bundle("2")))
        case.hostile(mode)
    return arrange


def _disk_full(case: Case) -> None:
    case.publish(case.tar(case.bundle("2")))
    case.use(reserve_bytes=shutil.disk_usage(case.device).free + (1 << 30))


# --- TUF metadata cases ---------------------------------------------------------------------------

def _forged(role: str, edit: Callable[[object], None] = lambda signed: None, signer: object = "own",
            publish: bool = True) -> Callable[[Case], None]:
    def arrange(case: Case) -> None:
        if publish:
            case.publish(case.tar(case.bundle("2")))
        case.forge(role, edit, signer)
    return arrange


def _expire(signed: object) -> None:
    signed.expires = past()  # type: ignore[attr-defined]


def _prime(case: Case) -> None:
    """A first pass with nothing for this device: the device now trusts the repository's newest metadata."""
    assert case.run() == [], "the priming pass should find nothing to do"


def _timestamp_rollback(case: Case) -> None:
    old = case.metadata_path("timestamp").read_bytes()
    tuf_repo.refresh_timestamp(case.repo, case.keys)
    _prime(case)
    case.publish(case.tar(case.bundle("2")))
    case.metadata_path("timestamp").write_bytes(old)  # version 1 again, still unexpired and well signed


def _snapshot_rollback(case: Case) -> None:
    case.publish(case.tar(case.bundle("2"), name="other-2.tar"), model="other", device_class="another-class",
                 assign_to=None)
    _prime(case)  # trusts snapshot 2
    def older_snapshot(signed: Any) -> None:
        signed.version += 1
        signed.snapshot_meta.version = 1  # the device trusts snapshot 2

    case.forge("timestamp", older_snapshot)


def _mix_and_match(case: Case) -> None:
    """The snapshot names targets version N; the server gives the bytes of targets N-1 for it."""
    case.publish(case.tar(case.bundle("2")))
    current = case.metadata_path("targets")
    version = int(current.name.split(".")[0])
    current.write_bytes((current.parent / f"{version - 1}.targets.json").read_bytes())


def _rogue_root(case: Case) -> None:
    """A root version 2 (a key rotation) signed by a key the trusted root does not list."""
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata
    from tuf.api.serialization.json import JSONSerializer

    case.publish(case.tar(case.bundle("2")))
    root = Metadata.from_file(str(case.repo / "metadata" / "1.root.json"))
    root.signed.version = 2
    root.signatures.clear()
    root.sign(CryptoSigner.generate_ed25519())
    (case.repo / "metadata" / "2.root.json").write_bytes(root.to_bytes(JSONSerializer(compact=True)))


def _rogue_bin(case: Case) -> None:
    """This device's bin re-signed by a key top-level targets does not delegate to."""
    case.publish(case.tar(case.bundle("2")))
    case.forge("devices-" + tuf_repo.device_bin(DEVICE_ID), signer="rogue")


def _endless_timestamp(case: Case) -> None:
    case.publish(case.tar(case.bundle("2")))
    case.hostile("endless-metadata")


# --- director cases -------------------------------------------------------------------------------

def _director_disagrees(case: Case) -> None:
    """The director's target for this device names the bytes of another bundle than the image target."""
    case.publish(case.tar(case.bundle("2")))
    evil = case.tar(case.bundle("2", onnx=affine_onnx(np.array([7.0, 7.0, 7.0]))), name=TARGET)
    info = TargetFile.from_file(TARGET, str(evil), ["sha256"])
    shutil.copyfile(evil, case.repo / "targets" / f"{info.hashes['sha256']}.{TARGET}")
    path = tuf_repo.device_target_path(DEVICE_ID, TARGET)

    def point_elsewhere(signed: object) -> None:
        target = signed.targets[path]  # type: ignore[attr-defined]
        target.length, target.hashes = info.length, dict(info.hashes)

    case.forge("devices-" + tuf_repo.device_bin(DEVICE_ID), point_elsewhere)


def _same_bin_other_device() -> str:
    """Another device id whose targets live in this device's bin (so the device reads them and must skip them)."""
    wanted = tuf_repo.device_bin(DEVICE_ID)
    return next(f"other-device-{i}" for i in range(100000) if tuf_repo.device_bin(f"other-device-{i}") == wanted)


def _other_device_only(case: Case) -> None:
    case.publish(case.tar(case.bundle("2")), assign_to=_same_bin_other_device())


# --- the cases ------------------------------------------------------------------------------------

CASES = {
    # the bundle's own signature and hashes
    "bundle-bad-signature": Spec(_publish_bundle(edit=_flip_signature), REFUSED, "signature does not match"),
    "bundle-missing-signature": Spec(_publish_bundle(skip=("manifest.sig",)), REFUSED, "not signed"),
    "bundle-signed-by-untrusted-key": Spec(_untrusted, REFUSED, "not trusted"),
    "bundle-tampered-file": Spec(_publish_bundle(edit=_tamper), REFUSED, "sha256 mismatch"),
    "bundle-manifest-lists-another-hash": Spec(_publish_bundle(edit=_lying_manifest),
                                               REFUSED, "sha256 mismatch"),
    "bundle-unlisted-extra-file": Spec(_publish_bundle(tar_extra=lambda t: add_member(t, "extra.bin", data=b"!")),
                                       REFUSED, "extra.bin: unlisted file"),
    "bundle-missing-file": Spec(_publish_bundle(skip=("model.onnx",)), REFUSED, "listed in the manifest but missing"),
    # versions
    "bundle-older-than-active-rollback": Spec(_publish_bundle("0", target_version="0"), REFUSED,
                                              "version 0 is older than the active version 1 (rollback refused)",
                                              fetches=False),
    "bundle-labelled-older-than-it-is": Spec(_publish_bundle("0"), REFUSED, "the bundle is version 0, its TUF "
                                             "target says 2"),
    "bundle-same-version-as-active-other-content": Spec(
        _publish_bundle("1", onnx=affine_onnx(np.array([5.0, 5.0, 5.0])), target_version="1"), IGNORED, ""),
    "bundle-existing-version-other-content": Spec(_existing_version_other_content, REFUSED,
                                                  "already exists with other content", target="tiny-3.tar",
                                                  leaves=("3",)),
    "bundle-version-differs-from-target": Spec(_publish_bundle("4"), REFUSED, "the bundle is version 4"),
    # is it for this device?
    "bundle-model-differs-from-target": Spec(_publish_bundle(name="other"), REFUSED, "model 'other', not 'tiny'"),
    "bundle-wrong-device-class": Spec(_publish_bundle(onnx=None, targets=[NX_TARGET], engine="xavier-nx"),
                                      REFUSED, "wrong device class"),
    "bundle-wrong-tensorrt-fingerprint": Spec(_wrong_fingerprint, REFUSED, "wrong TensorRT fingerprint"),
    # the tar
    "tar-path-traversal-member": Spec(_publish_bundle(tar_extra=lambda t: add_member(t, "../x")), REFUSED, "'..'"),
    "tar-absolute-path-member": Spec(_publish_bundle(tar_extra=lambda t: add_member(t, "/tmp/ota-x")), REFUSED,
                                     "absolute path"),
    "tar-symlink-member": Spec(_publish_bundle(tar_extra=lambda t: add_member(t, "link", tarfile.SYMTYPE,
                                                                              link="/etc/passwd")),
                               REFUSED, "symbolic link"),
    "tar-hardlink-member": Spec(_publish_bundle(tar_extra=lambda t: add_member(t, "hard", tarfile.LNKTYPE,
                                                                               link="model.onnx")),
                                REFUSED, "hard link"),
    "tar-device-file-member": Spec(_publish_bundle(tar_extra=lambda t: add_member(t, "dev", tarfile.CHRTYPE)),
                                   REFUSED, "device file"),
    "tar-fifo-member": Spec(_publish_bundle(tar_extra=lambda t: add_member(t, "fifo", tarfile.FIFOTYPE)),
                            REFUSED, "FIFO"),
    "tar-bomb-too-many-members": Spec(_publish_bundle(tar_extra=_many_members), REFUSED, "more than 4096 members"),
    "tar-bomb-too-large": Spec(_raw(lambda c: giant_header("engine.plan", 9 << 30) + _good_tar_bytes(c)),
                               REFUSED, "bytes of files (the cap"),
    "tar-not-a-tar": Spec(_raw(lambda c: b"MZ this is not a tar archive " * 64), REFUSED, "not a readable tar"),
    "tar-gzip-compressed": Spec(_raw(_gzipped), REFUSED, "not a readable tar"),
    "tar-truncated": Spec(_raw(lambda c: _good_tar_bytes(c)[:1536]), REFUSED, "not a readable tar archive"),
    # the download
    "download-endless-body": Spec(_hostile("endless"), REFUSED, "runs past the target's"),
    "download-oversize-content-length": Spec(_hostile("oversize"), REFUSED, "the server announces"),
    "download-truncated-by-server": Spec(_hostile("truncated"), FAILED, "connection closed after", partial=True),
    "download-other-bytes-than-tuf-hash": Spec(_hostile("other-bytes"), REFUSED, "differs from its target"),
    "disk-full-reserve-over-free-space": Spec(_disk_full, FAILED, "not enough space"),
    # TUF metadata
    "tuf-timestamp-expired-freeze": Spec(_forged("timestamp", _expire), REFUSED, "expired", target=METADATA),
    "tuf-snapshot-expired": Spec(_forged("snapshot", _expire), REFUSED, "expired", target=METADATA),
    "tuf-targets-expired": Spec(_forged("targets", _expire), REFUSED, "expired", target=METADATA),
    "tuf-timestamp-signed-by-rogue-key": Spec(_forged("timestamp", signer="rogue"), REFUSED,
                                              "bad or missing signature", target=METADATA),
    "tuf-timestamp-unsigned": Spec(_forged("timestamp", signer=None), REFUSED, "bad or missing signature",
                                   target=METADATA),
    "tuf-targets-signed-by-rogue-key": Spec(_forged("targets", signer="rogue"), REFUSED,
                                            "bad or missing signature", target=METADATA),
    "tuf-timestamp-version-rollback": Spec(_timestamp_rollback, REFUSED, "version older than trusted",
                                           target=METADATA),
    "tuf-snapshot-version-rollback": Spec(_snapshot_rollback, REFUSED, "version older than trusted",
                                          target=METADATA),
    "tuf-snapshot-mix-and-match-targets": Spec(_mix_and_match, REFUSED, "mix-and-match", target=METADATA),
    "tuf-endless-timestamp": Spec(_endless_timestamp, REFUSED, "endless data", target=METADATA),
    "tuf-root-rotation-signed-by-rogue-key": Spec(_rogue_root, REFUSED, "bad or missing signature", target=METADATA),
    # Uptane's director
    "director-hash-differs-from-image": Spec(_director_disagrees, REFUSED, "director and image roles disagree",
                                             target=METADATA, refresh_refused=False),
    "director-target-for-another-device-only": Spec(_other_device_only, IGNORED, ""),
    "director-target-for-another-device-class": Spec(_publish_bundle(device_class="jetson-xavier-nx"), REFUSED,
                                                     "for device class 'jetson-xavier-nx'", fetches=False),
    "director-bin-signed-by-rogue-key": Spec(_rogue_bin, REFUSED, "bad or missing signature", target=METADATA,
                                             refresh_refused=False),
    # the health gate
    "gate-model-outputs-nan": Spec(_publish_bundle(onnx=affine_onnx(np.full(3, np.nan))), GATE_FAILED,
                                   "NaN", leaves=("2",)),
    "gate-model-fails-to-load": Spec(_publish_bundle(onnx=b"\x08\x07 not an onnx graph"), GATE_FAILED,
                                     "not staged", leaves=("2",)),
}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The runtime serving tiny 1 (active), the file server, the template TUF repository, the keys."""
    base = tmp_path_factory.mktemp("ota-negative")
    key, public = generate_keypair(base / "bundle-key")
    rogue_key, _ = generate_keypair(base / "rogue-key")
    models = base / "models"
    write_bundle(models / MODEL / "1", key, "1")
    write_pointer(models / MODEL, ActiveVersion("1"))
    template = base / "template"
    tuf_repo.init_repository(template / "repo", template / "keys", template / "root-keys")
    (base / "served").mkdir()
    files = FileServer(base / "served")
    try:
        runtime = start_server(["--repository", str(models), "--config",
                                str(write_runtime_config(base / "runtime.yaml", CONFIGS, public))],
                               base / "serve.log")
    except BaseException:
        files.close()
        raise
    try:
        yield Rig(base, models, key, public, rogue_key, template, base / "served", files, runtime)
    finally:
        runtime.stop()
        files.close()


@pytest.fixture()
def case(rig: Rig, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    """This case's repository and device; afterwards the model's folder is put back as it was (tiny/1 only)."""
    baseline = set(rig.model_state())
    made = Case(rig, request.node.callspec.id, tmp_path)
    yield made
    rig.files.modes.pop(made.name, None)
    for entry in sorted((rig.models / MODEL).iterdir()):
        if entry.name not in baseline:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _without(state: Dict[str, str], leaves: Tuple[str, ...]) -> Dict[str, str]:
    return {k: v for k, v in state.items() if k.split("/")[0] not in leaves}


def _params() -> List[object]:
    return [pytest.param(name, id=name) for name in CASES]


@pytest.mark.parametrize("name", _params())
def test_negative_ota_case_is_refused_and_v1_keeps_serving(rig: Rig, case: Case, name: str) -> None:
    spec = CASES[name]
    spec.arrange(case)
    before, trusted_before = rig.model_state(), case.trusted_metadata()

    outcomes = case.run()

    lines = one_line_outcomes(outcomes)
    print("\n".join(lines))  # what the device reports, in the test's output
    assert not [o for o in outcomes if o.status == PROMOTED], lines
    if spec.status == IGNORED:
        assert outcomes == [] and case.tar_requests() == [], (lines, case.tar_requests())
    else:
        mine = [o for o in outcomes if o.target == spec.target]
        assert len(mine) == 1 and len(outcomes) == 1, lines
        reason = mine[0].reason
        assert mine[0].status == spec.status, lines
        assert spec.phrase in reason and reason and "\n" not in reason, lines
    # every file of the active version, the pointer, and no staging leftovers (a gated version may stay)
    assert _without(rig.model_state(), spec.leaves) == _without(before, spec.leaves)
    assert read_pointer(rig.models / MODEL) == ActiveVersion("1")
    assert case.staged_files() == ([f"{TARGET}.partial"] if spec.partial else [])
    if not spec.fetches or spec.target == METADATA:
        assert case.tar_requests() == []  # refused on the metadata alone: no bundle byte was fetched
    if spec.target == METADATA and spec.refresh_refused:
        assert case.trusted_metadata() == trusted_before  # a refused refresh keeps what was trusted
    rig.infer_v1()


def test_the_suite_names_at_least_thirty_negative_cases() -> None:
    assert len(CASES) >= 30 and len(set(CASES)) == len(CASES)
