"""Installing a bundle tar into the model repository: every refusal leaves the repository byte-identical."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from tar_members import add_member

from edge_runtime.bundle import ArtifactSpec, TargetInfo, TensorSpec, finalize_bundle, open_bundle
from edge_runtime.bundle.signing import generate_keypair, load_private_key, load_public_key
from edge_runtime.config import DeviceConfig, load_device_config, runtime_settings_from_mapping
from edge_runtime.fleet.errors import (
    BundleRefusedError,
    UnsafeArchiveError,
    VersionRefusedError,
    WrongTargetError,
)
from edge_runtime.fleet.install import InstalledVersion, install_bundle
from edge_runtime.serving.active_version import ActiveVersion, read_pointer, write_pointer
from edge_runtime.serving.repository import ModelRepository

MODEL = "tiny"
CPU_TARGET = TargetInfo(name="x86-cpu", device_class="x86-cpu", backend="onnxruntime", precision="fp32")
NX_TARGET = TargetInfo(name="xavier-nx", device_class="jetson-xavier-nx", backend="tensorrt", precision="fp16",
                       compute_capability="7.2", tensorrt_version="8.5.2")
Snapshot = Dict[str, Optional[bytes]]


# --- building bundles and tars ------------------------------------------------------------------

def make_bundle(directory: Path, key: Path, version: str, *, name: str = MODEL, payload: bytes = b"onnx-bytes",
                targets: Sequence[TargetInfo] = (CPU_TARGET,), engine: Optional[str] = None,
                onnx: bool = True) -> Path:
    """A signed bundle directory: model.onnx (unless ``onnx`` is false) and an engine for target ``engine``."""
    directory.mkdir(parents=True)
    artifacts: List[ArtifactSpec] = []
    if onnx:
        (directory / "model.onnx").write_bytes(payload)
        artifacts.append(ArtifactSpec("model.onnx", "onnx", None, "fp32"))
    if engine is not None:
        (directory / "engines").mkdir()
        (directory / "engines" / f"{engine}.plan").write_bytes(b"plan-" + payload)
        artifacts.append(ArtifactSpec(f"engines/{engine}.plan", "engine", engine, "fp16"))
    finalize_bundle(directory, name=name, version=version,
                    inputs=[TensorSpec(name="input", dtype="float32", shape=(-1, 4))],
                    outputs=[TensorSpec(name="output", dtype="float32", shape=(-1, 3))],
                    source_model_sha256="0" * 64, artifacts=artifacts, targets=list(targets),
                    private_key=load_private_key(key))
    return directory


def tar_dir(bundle: Path, tar_path: Path, extra: Callable[[tarfile.TarFile], None] = lambda tar: None) -> Path:
    """The bundle directory as an uncompressed POSIX tar (members relative to its root), then ``extra``'s members."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(bundle.rglob("*")):
            tar.add(path, arcname=path.relative_to(bundle).as_posix(), recursive=False)
        extra(tar)
    return tar_path


def snapshot(root: Path) -> Snapshot:
    """Every entry below ``root``: a file's bytes, None for a directory (links would show as their target)."""
    found: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture()
def cpu_device(device_configs_dir: Path) -> DeviceConfig:
    return load_device_config(device_configs_dir / "x86-cpu.yaml")


@pytest.fixture()
def nx_device(device_configs_dir: Path) -> DeviceConfig:
    return load_device_config(device_configs_dir / "xavier-nx.yaml")


@dataclasses.dataclass
class Setup:
    """A repository holding tiny 1 (last good), 2 (active) and 3 (installed, not yet active)."""

    repo: Path
    work: Path
    key: Path
    public: list
    device: DeviceConfig

    def tar(self, version: str, extra: Callable[[tarfile.TarFile], None] = lambda tar: None,
            key: Optional[Path] = None, **bundle: object) -> Path:
        directory = self.work / f"bundle-{len(list(self.work.iterdir()))}"
        make_bundle(directory, key or self.key, version, **bundle)  # type: ignore[arg-type]
        return tar_dir(directory, directory.with_suffix(".tar"), extra)

    def install(self, tar: Path, device: Optional[DeviceConfig] = None, keep_versions: int = 5,
                **caps: int) -> InstalledVersion:
        used = device or self.device
        return install_bundle(tar, self.repo, MODEL, self.public, used, used.fingerprint, keep_versions, **caps)


@pytest.fixture()
def setup(tmp_path: Path, keypair: Tuple[Path, Path], cpu_device: DeviceConfig) -> Setup:
    (tmp_path / "repo").mkdir()
    (tmp_path / "work").mkdir()
    s = Setup(tmp_path / "repo", tmp_path / "work", keypair[0], [load_public_key(keypair[1])], cpu_device)
    for version in ("1", "2", "3"):
        s.install(s.tar(version, payload=f"model v{version}".encode()))
    write_pointer(s.repo / MODEL, ActiveVersion("2", "1"))
    return s


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_keypair(tmp_path_factory.mktemp("other-keys"))[0]


# --- refusals -------------------------------------------------------------------------------------

def _tampered(s: Setup) -> Path:
    directory = make_bundle(s.work / "tampered", s.key, "4")
    (directory / "model.onnx").write_bytes(b"onnx-bytez")
    return tar_dir(directory, s.work / "tampered.tar")


def _bad_signature(s: Setup) -> Path:
    directory = make_bundle(s.work / "badsig", s.key, "4")
    sig = json.loads((directory / "manifest.sig").read_text())
    sig["signature"] = sig["signature"][:8] + ("A" if sig["signature"][8] != "A" else "B") + sig["signature"][9:]
    (directory / "manifest.sig").write_text(json.dumps(sig))
    return tar_dir(directory, s.work / "badsig.tar")


def _unsigned(s: Setup) -> Path:
    directory = make_bundle(s.work / "unsigned", s.key, "4")
    (directory / "manifest.sig").unlink()
    return tar_dir(directory, s.work / "unsigned.tar")


def _unlisted(s: Setup) -> Path:
    return s.tar("4", extra=lambda tar: add_member(tar, "extra.bin", data=b"not listed"))


def _raw(s: Setup, data: bytes) -> Path:
    path = s.work / "raw.tar"
    path.write_bytes(data)
    return path


def _truncated(s: Setup) -> Path:
    good = s.tar("4", payload=b"p" * 20000).read_bytes()
    return _raw(s, good[: len(good) // 2])


def _gzip(s: Setup) -> Path:
    directory = make_bundle(s.work / "gz", s.key, "4")
    with tarfile.open(s.work / "gz.tar", "w:gz") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    return s.work / "gz.tar"


Case = Tuple[Callable[[Setup], Path], type, str, Dict[str, int]]
CASES: Dict[str, Case] = {
    "traversal": (lambda s: s.tar("4", extra=lambda t: add_member(t, "../x")), UnsafeArchiveError, "'..'", {}),
    "deep traversal": (lambda s: s.tar("4", extra=lambda t: add_member(t, "engines/../../x")), UnsafeArchiveError,
                       "'..'", {}),
    "absolute path": (lambda s: s.tar("4", extra=lambda t: add_member(t, "/tmp/x")), UnsafeArchiveError,
                      "absolute path", {}),
    "symlink": (lambda s: s.tar("4", extra=lambda t: add_member(t, "link", tarfile.SYMTYPE, link="/etc/passwd")),
                UnsafeArchiveError, "symbolic link", {}),
    "hardlink": (lambda s: s.tar("4", extra=lambda t: add_member(t, "hard", tarfile.LNKTYPE, link="model.onnx")),
                 UnsafeArchiveError, "hard link", {}),
    "char device": (lambda s: s.tar("4", extra=lambda t: add_member(t, "dev", tarfile.CHRTYPE)),
                    UnsafeArchiveError, "device file", {}),
    "block device": (lambda s: s.tar("4", extra=lambda t: add_member(t, "blk", tarfile.BLKTYPE)),
                     UnsafeArchiveError, "device file", {}),
    "fifo": (lambda s: s.tar("4", extra=lambda t: add_member(t, "fifo", tarfile.FIFOTYPE)), UnsafeArchiveError,
             "FIFO", {}),
    "duplicate member": (lambda s: s.tar("4", extra=lambda t: add_member(t, "model.onnx", data=b"evil")),
                         UnsafeArchiveError, "appears twice", {}),
    "member under a file": (lambda s: s.tar("4", extra=lambda t: add_member(t, "model.onnx/x")),
                            UnsafeArchiveError, "under a member that is a file", {}),
    "too many bytes": (lambda s: s.tar("4", payload=b"p" * 5000), UnsafeArchiveError, "more than 4096 bytes",
                       {"max_bytes": 4096}),
    "too many members": (lambda s: s.tar("4"), UnsafeArchiveError, "more than 2 members", {"max_members": 2}),
    "not a tar": (lambda s: _raw(s, b"this is not a tar archive at all" * 40), UnsafeArchiveError,
                  "not a readable tar", {}),
    "empty file": (lambda s: _raw(s, b""), UnsafeArchiveError, "not a readable tar", {}),
    "truncated tar": (_truncated, UnsafeArchiveError, "", {}),
    "compressed tar": (_gzip, UnsafeArchiveError, "not a readable tar", {}),
    "bad signature": (_bad_signature, BundleRefusedError, "signature", {}),
    "missing signature": (_unsigned, BundleRefusedError, "not signed", {}),
    "tampered file": (_tampered, BundleRefusedError, "sha256 mismatch", {}),
    "unlisted file": (_unlisted, BundleRefusedError, "extra.bin: unlisted file", {}),
    "empty tar": (lambda s: _raw(s, _empty_tar()), BundleRefusedError, "no manifest.sig", {}),
    "other model": (lambda s: s.tar("4", name="other"), WrongTargetError, "model 'other', not 'tiny'", {}),
    "wrong device class": (lambda s: s.tar("4", targets=[NX_TARGET], engine="xavier-nx"), WrongTargetError,
                           "wrong device class", {}),
    "rollback to an older version": (lambda s: s.tar("1"), VersionRefusedError, "rollback refused", {}),
    "same version as the active one": (lambda s: s.tar("2"), VersionRefusedError, "not newer than the active", {}),
    "existing version, other content": (lambda s: s.tar("3", payload=b"other"), VersionRefusedError,
                                        "already exists with other content", {}),
    "version not a number": (lambda s: s.tar("v4"), VersionRefusedError, "not a version number", {}),
}


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT):
        pass
    return buffer.getvalue()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_refused_bundle_leaves_the_repository_byte_identical(setup: Setup, case: str) -> None:
    build, error, fragment, caps = CASES[case]
    tar = build(setup)
    before = snapshot(setup.repo)
    with pytest.raises(error) as caught:
        setup.install(tar, **caps)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{tar.name}: ") and fragment in message
    assert snapshot(setup.repo) == before


def test_a_bundle_signed_by_an_untrusted_key_is_refused(setup: Setup, other_key: Path) -> None:
    tar = setup.tar("4", key=other_key)
    before = snapshot(setup.repo)
    with pytest.raises(BundleRefusedError, match="key"):
        setup.install(tar)
    assert snapshot(setup.repo) == before


def test_a_failed_first_install_removes_the_model_directory_it_made(setup: Setup) -> None:
    tar = setup.tar("1", name="fresh", extra=lambda t: add_member(t, "../x"))
    before = snapshot(setup.repo)
    with pytest.raises(UnsafeArchiveError):
        install_bundle(tar, setup.repo, "fresh", setup.public, setup.device, setup.device.fingerprint, 3)
    assert snapshot(setup.repo) == before


# --- TensorRT fingerprints ------------------------------------------------------------------------

def _no_rebuild(device: DeviceConfig) -> DeviceConfig:
    return dataclasses.replace(device, tensorrt=dataclasses.replace(device.tensorrt, rebuild_on_mismatch=False))


OTHER_TRT = dataclasses.replace(NX_TARGET, tensorrt_version="8.6.1")


@pytest.mark.parametrize("onnx, rebuild", [(True, False), (False, True), (False, False)])
def test_an_engine_for_other_hardware_is_refused_unless_it_can_be_rebuilt(
        setup: Setup, nx_device: DeviceConfig, onnx: bool, rebuild: bool) -> None:
    device = nx_device if rebuild else _no_rebuild(nx_device)
    tar = setup.tar("4", targets=[OTHER_TRT], engine="xavier-nx", onnx=onnx)
    before = snapshot(setup.repo)
    with pytest.raises(WrongTargetError, match=r"wrong TensorRT fingerprint: .*xavier-nx: .*TensorRT") as caught:
        setup.install(tar, device=device)
    assert "\n" not in str(caught.value)
    assert ("rebuild_on_mismatch is off" if onnx else "no ONNX model to rebuild it from") in str(caught.value)
    assert snapshot(setup.repo) == before


@pytest.mark.parametrize("target, engine, onnx", [
    (NX_TARGET, "xavier-nx", False),  # the engine was built for this host
    (OTHER_TRT, "xavier-nx", True),  # another host's engine, rebuilt here from the ONNX (rebuild_on_mismatch)
    (NX_TARGET, None, True),  # no engine: built on the device at load
])
def test_a_tensorrt_device_takes_an_engine_it_can_run(setup: Setup, nx_device: DeviceConfig, target: TargetInfo,
                                                      engine: Optional[str], onnx: bool) -> None:
    installed = setup.install(setup.tar("4", targets=[target], engine=engine, onnx=onnx), device=nx_device)
    assert installed.version == "4" and (setup.repo / MODEL / "4" / "manifest.json").is_file()


def test_the_host_fingerprint_is_what_is_checked(setup: Setup, nx_device: DeviceConfig) -> None:
    device = _no_rebuild(nx_device)
    tar = setup.tar("4", targets=[NX_TARGET], engine="xavier-nx", onnx=False)
    other_host = dataclasses.replace(device.fingerprint, tensorrt_version="8.6.1")
    with pytest.raises(WrongTargetError, match="fingerprint"):
        install_bundle(tar, setup.repo, MODEL, setup.public, device, other_host, 5)


# --- installs -------------------------------------------------------------------------------------

def test_a_good_bundle_is_published_as_a_new_version_and_verifies(setup: Setup) -> None:
    tar = setup.tar("4", payload=b"model v4")
    installed = setup.install(tar)
    assert (installed.version, installed.already_installed, installed.removed) == ("4", False, ())
    assert installed.path == setup.repo / MODEL / "4"
    assert open_bundle(installed.path, setup.public).manifest == installed.manifest
    assert (installed.path / "model.onnx").read_bytes() == b"model v4"
    assert sorted(os.listdir(setup.repo / MODEL)) == ["1", "2", "3", "4", "active.json"]  # no staging left
    assert read_pointer(setup.repo / MODEL) == ActiveVersion("2", "1")  # the health gate flips it, not install
    assert oct(os.stat(installed.path).st_mode & 0o777) == oct(0o755)


def test_the_same_bundle_again_is_already_installed(setup: Setup) -> None:
    tar = setup.tar("3", payload=b"model v3")
    before = snapshot(setup.repo)
    installed = setup.install(tar)
    assert installed.already_installed and installed.version == "3"
    assert snapshot(setup.repo) == before


def test_members_may_start_with_dot_slash(setup: Setup) -> None:
    directory = make_bundle(setup.work / "dotted", setup.key, "4")
    with tarfile.open(setup.work / "dotted.tar", "w") as tar:
        tar.add(directory, arcname=".")
    assert setup.install(setup.work / "dotted.tar").version == "4"


def test_leftovers_of_killed_installs_are_cleared(setup: Setup) -> None:
    model_dir = setup.repo / MODEL
    (model_dir / ".incoming.tmp-dead").mkdir()
    (model_dir / ".incoming.tmp-dead" / "model.onnx").write_bytes(b"half")
    (model_dir / ".deleting-0").mkdir()
    setup.install(setup.tar("4"))
    assert sorted(os.listdir(model_dir)) == ["1", "2", "3", "4", "active.json"]


# --- retention ------------------------------------------------------------------------------------

def test_retention_removes_the_oldest_but_never_active_last_good_or_new(setup: Setup) -> None:
    installed = setup.install(setup.tar("4"), keep_versions=2)
    assert installed.removed == ("3",)  # 1 is last good, 2 active, 4 new: all kept although over 2
    assert sorted(os.listdir(setup.repo / MODEL)) == ["1", "2", "4", "active.json"]
    write_pointer(setup.repo / MODEL, ActiveVersion("4", "2"))
    assert setup.install(setup.tar("5"), keep_versions=3).removed == ("1",)
    assert sorted(os.listdir(setup.repo / MODEL)) == ["2", "4", "5", "active.json"]


def test_a_version_other_than_the_targets_is_refused_before_it_is_published(setup: Setup) -> None:
    before = snapshot(setup.repo)
    with pytest.raises(VersionRefusedError, match="the bundle is version 4, its TUF target says 2"):
        install_bundle(setup.tar("4"), setup.repo, MODEL, setup.public, setup.device, setup.device.fingerprint, 5,
                       expected_version="2")
    assert snapshot(setup.repo) == before  # no version 4 left behind to block the real one later


def test_retention_runs_when_the_version_was_already_installed(setup: Setup) -> None:
    """An install killed after its rename but before retention: the next pass finds it there and still trims."""
    tar = setup.tar("4")
    assert setup.install(tar, keep_versions=5).removed == ()  # 1, 2, 3, 4 on disk: as if killed before retention
    again = setup.install(tar, keep_versions=2)
    assert again.already_installed and again.removed == ("3",)  # 1 (last good), 2 (active), 4 (new) protected
    assert sorted(os.listdir(setup.repo / MODEL)) == ["1", "2", "4", "active.json"]


def test_retention_keeps_the_highest_version_when_there_is_no_pointer(setup: Setup) -> None:
    (setup.repo / MODEL / "active.json").unlink()
    assert setup.install(setup.tar("4"), keep_versions=1).removed == ("1", "2", "3")
    assert sorted(os.listdir(setup.repo / MODEL)) == ["4"]


# --- a running repository loads what was installed --------------------------------------------------

@pytest.fixture()
def onnx_bytes() -> bytes:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])], "affine",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime 1.19 on Python 3.8 reads it
    return bytes(model.SerializeToString())


@pytest.fixture()
def running(tmp_path: Path, keypair: Tuple[Path, Path], cpu_device: DeviceConfig) -> Iterator[ModelRepository]:
    settings = runtime_settings_from_mapping({"device_config": "unused.yaml", "trusted_keys": ["unused.pub"],
                                              "warmup_runs": 1, "drain_timeout_s": 5.0}, "test-settings")
    (tmp_path / "repo").mkdir()
    repository = ModelRepository(tmp_path / "repo", settings, cpu_device, [load_public_key(keypair[1])])
    yield repository
    repository.close()


def test_a_running_repository_loads_the_installed_version_beside_the_active_one(
        tmp_path: Path, keypair: Tuple[Path, Path], cpu_device: DeviceConfig, onnx_bytes: bytes,
        running: ModelRepository) -> None:
    import numpy as np

    repository = running
    keys = [load_public_key(keypair[1])]
    for version in ("1", "2"):
        bundle = make_bundle(tmp_path / f"b{version}", keypair[0], version, payload=onnx_bytes)
        install_bundle(tar_dir(bundle, tmp_path / f"b{version}.tar"), tmp_path / "repo", MODEL, keys, cpu_device,
                       cpu_device.fingerprint, 3)
        if version == "1":
            repository.load(MODEL, "1")
    staged = repository.stage(MODEL, "2")
    result = staged.infer({"input": np.ones((1, 4), np.float32)})
    assert result["output"].shape == (1, 3)
    assert repository.active_version(MODEL) == "1"
    assert read_pointer(tmp_path / "repo" / MODEL) == ActiveVersion("1", None)


def test_a_full_disk_while_unpacking_is_a_507_and_changes_nothing(setup: Setup,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from edge_runtime.fleet import bundle_archive
    from edge_runtime.fleet.errors import InstallSpaceError

    tar = setup.tar("4")
    before = snapshot(setup.repo)

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(bundle_archive.os, "write", full)
    with pytest.raises(InstallSpaceError, match="no space left") as caught:
        setup.install(tar)
    assert caught.value.http_status == 507 and "\n" not in str(caught.value)
    monkeypatch.undo()
    assert snapshot(setup.repo) == before


def test_a_bundle_that_would_eat_the_reserve_is_refused_before_unpacking(setup: Setup) -> None:
    from edge_runtime.fleet.errors import InstallSpaceError

    tar = setup.tar("4")
    before = snapshot(setup.repo)
    with pytest.raises(InstallSpaceError, match=r"not enough space: the bundle needs \d+ bytes") as caught:
        setup.install(tar, reserve_bytes=1 << 62)
    assert caught.value.http_status == 507
    assert snapshot(setup.repo) == before
