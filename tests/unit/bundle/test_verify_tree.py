"""Bundle verification: what may lie in the tree, read limits, races with the files, every refusal's message.

Each refusal's whole message is pinned: a user reads it as one line naming the bundle, then the file at fault.
Errors a test cannot cause as root (an unreadable file) or on every machine (a full disk) are injected at the os
call, so that the test runs everywhere, CI's root included.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import shutil
import stat
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.bundle import (
    Artifact,
    ArtifactSpec,
    NotARegularFile,
    TargetInfo,
    TensorSpec,
    VerifiedBundle,
    finalize_bundle,
    open_bundle,
    open_regular,
    read_limited,
    sha256_file,
    sign_manifest,
    verify_bundle,
)
from edge_runtime.bundle.verify import list_bundle_entries
from edge_runtime.errors import BundleError, IntegrityError, SignatureError

SIGNER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
TRUSTED = [SIGNER.public_key()]
FILES = {"model.onnx": b"onnx " * 40, "engines/orin-nano.plan": b"plan" * 30, "report.json": b"{}\n"}
REGULAR_ONLY = "a bundle holds regular files only"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    for relative, content in FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    finalize_bundle(
        root, name="digits", version="1.0.0",
        inputs=[TensorSpec("input", "float32", (-1, 4))], outputs=[TensorSpec("logits", "float32", (-1, 2))],
        source_model_sha256="ab" * 32,
        artifacts=[ArtifactSpec("model.onnx", "onnx", precision="fp32"),
                   ArtifactSpec("engines/orin-nano.plan", "engine", "orin-nano", "fp16"),
                   ArtifactSpec("report.json", "report")],
        targets=[TargetInfo("orin-nano", "jetson-orin-nano", "tensorrt", "fp16", "8.7", "8.6.2", "6.0", "36.3.0")],
        private_key=SIGNER, created="2024-05-01T12:00:00Z",
    )
    return root


@pytest.fixture
def verified(bundle: Path) -> VerifiedBundle:
    return open_bundle(bundle, TRUSTED)


def _artifact(verified: VerifiedBundle, path: str) -> Artifact:
    return next(artifact for artifact in verified.manifest.artifacts if artifact.path == path)


def _refusal(bundle: Path, error: type = BundleError) -> str:
    with pytest.raises(error) as info:
        verify_bundle(bundle, TRUSTED)
    return str(info.value)


def _open_fds() -> List[str]:
    return sorted(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    before = _open_fds()
    yield
    assert _open_fds() == before


# --- the bundle directory and its two metadata files -------------------------------------------


def test_a_missing_bundle_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(BundleError) as info:
        verify_bundle(tmp_path / "nowhere", TRUSTED)
    assert str(info.value) == f"{tmp_path / 'nowhere'}: does not exist; expected a bundle directory"


@pytest.mark.parametrize(
    "name, error, message",
    [("manifest.sig", SignatureError, "no manifest.sig (the bundle is not signed)"),
     ("manifest.json", IntegrityError, "no manifest.json (not a bundle)")],
)
def test_a_missing_metadata_file_is_named_with_what_it_means(
    bundle: Path, name: str, error: type, message: str
) -> None:
    (bundle / name).unlink()
    assert _refusal(bundle, error) == f"{bundle}: {message}"


@pytest.mark.parametrize("name, error", [("manifest.sig", SignatureError), ("manifest.json", IntegrityError)])
def test_a_directory_in_place_of_a_metadata_file_is_refused(bundle: Path, name: str, error: type) -> None:
    (bundle / name).unlink()
    (bundle / name).mkdir()
    assert _refusal(bundle, error) == f"{bundle}: {name}: not a regular file (a directory)"


def test_a_linked_signature_is_refused_as_a_link(bundle: Path, tmp_path: Path) -> None:
    shutil.move(str(bundle / "manifest.sig"), str(tmp_path / "manifest.sig"))
    (bundle / "manifest.sig").symlink_to(tmp_path / "manifest.sig")
    assert _refusal(bundle, SignatureError) == (
        f"{bundle}: manifest.sig: cannot read (it is a symbolic link; {REGULAR_ONLY})"
    )


@pytest.mark.parametrize("name, error", [("manifest.sig", SignatureError), ("manifest.json", IntegrityError)])
def test_an_unreadable_metadata_file_is_refused_with_the_reason(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, name: str, error: type
) -> None:
    _deny_open(monkeypatch, bundle / name)
    assert _refusal(bundle, error) == f"{bundle}: {name}: cannot read (Permission denied)"


def test_a_signature_file_over_64_kib_is_never_read(bundle: Path) -> None:
    signature = (bundle / "manifest.sig").read_bytes()
    (bundle / "manifest.sig").write_bytes(b" " * (65537 - len(signature)) + signature)
    assert _refusal(bundle, SignatureError) == f"{bundle}: manifest.sig: larger than 65536 bytes; refusing to read it"


def test_a_signature_file_of_exactly_64_kib_is_read_whole(bundle: Path) -> None:
    signature = (bundle / "manifest.sig").read_bytes().rstrip()  # ends with "}": a byte less is not JSON
    (bundle / "manifest.sig").write_bytes(b" " * (65536 - len(signature)) + signature)
    assert verify_bundle(bundle, TRUSTED).name == "digits"


def test_a_manifest_over_16_mib_is_refused_before_its_signature_is_checked(bundle: Path) -> None:
    _sparse(bundle / "manifest.json", (16 << 20) + 1)
    assert _refusal(bundle, IntegrityError) == (
        f"{bundle}: manifest.json: larger than 16777216 bytes; refusing to read it"
    )


# --- what the tree may hold ----------------------------------------------------------------------


def test_a_directory_in_place_of_an_artifact_is_refused(bundle: Path) -> None:
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").mkdir()  # empty: nothing in it is unlisted
    assert _refusal(bundle, IntegrityError) == f"{bundle}: model.onnx: not a regular file (a directory); {REGULAR_ONLY}"


@pytest.mark.parametrize("where", ["extra", "engines/extra"])
def test_an_unlisted_link_to_a_directory_is_refused(bundle: Path, tmp_path: Path, where: str) -> None:
    (tmp_path / "outside").mkdir()
    (bundle / where).symlink_to(tmp_path / "outside", target_is_directory=True)
    assert where in list_bundle_entries(bundle)
    assert _refusal(bundle, IntegrityError) == f"{bundle}: {where} is a symbolic link; {REGULAR_ONLY}"


def test_entries_are_listed_relative_and_in_posix_form(bundle: Path) -> None:
    assert sorted(list_bundle_entries(bundle)) == sorted(["manifest.json", "manifest.sig", *FILES])


def test_an_altered_artifact_is_refused_with_both_digests(bundle: Path) -> None:
    (bundle / "report.json").write_bytes(b"[]\n")
    expected = hashlib.sha256(FILES["report.json"]).hexdigest()
    actual = hashlib.sha256(b"[]\n").hexdigest()
    assert _refusal(bundle, IntegrityError) == (
        f"{bundle}: report.json: sha256 mismatch (file {actual}, manifest {expected}): "
        "the file was altered or corrupted"
    )


def test_an_unreadable_artifact_is_refused_with_the_reason(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _deny_open(monkeypatch, bundle / "report.json")
    assert _refusal(bundle, IntegrityError) == f"{bundle}: report.json: cannot read (Permission denied)"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads a file of mode 000")
def test_a_file_of_mode_000_is_refused_with_the_reason(bundle: Path) -> None:
    os.chmod(bundle / "report.json", 0)
    assert _refusal(bundle, IntegrityError) == f"{bundle}: report.json: cannot read (Permission denied)"


@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
def test_a_folder_that_cannot_be_listed_is_refused(bundle: Path, monkeypatch: pytest.MonkeyPatch, named: bool) -> None:
    """A folder os.walk cannot read must not be skipped: an unlisted file could hide in it."""
    real_scandir = os.scandir
    exc = (PermissionError(errno.EACCES, "Permission denied", os.fspath(bundle / "engines")) if named
           else OSError(errno.EIO, "Input/output error"))
    where = "engines" if named else os.fspath(bundle)

    def scandir(path: Any) -> Any:
        if os.fspath(path) == os.fspath(bundle / "engines"):
            raise exc
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    message = _refusal(bundle, IntegrityError)
    monkeypatch.undo()
    assert message == f"{bundle}: {where}: cannot list ({exc.strerror})"


# --- open_regular, read_limited, sha256_file (also used by the active-version pointer and the engine cache) --


@pytest.mark.parametrize("path, kind", [("/dev/null", "a character device")])
def test_open_regular_refuses_a_device_without_opening_it(path: str, kind: str) -> None:
    with pytest.raises(NotARegularFile) as info:
        open_regular(path)
    assert str(info.value) == f"not a regular file ({kind})"


def test_open_regular_refuses_a_block_device() -> None:
    devices = [os.path.join("/dev", name) for name in sorted(os.listdir("/dev"))]
    blocks = [path for path in devices if stat.S_ISBLK(os.lstat(path).st_mode)]
    if not blocks:
        pytest.skip("no block device in /dev")
    with pytest.raises(NotARegularFile) as info:
        open_regular(blocks[0])
    assert str(info.value) == "not a regular file (a block device)"


def test_open_regular_refuses_a_file_type_it_does_not_know(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Solaris door or a BSD whiteout (no such thing on Linux) is refused, not opened."""
    path = tmp_path / "door"
    path.write_bytes(b"")
    real_lstat = os.lstat
    door = os.stat_result((0o150644, 0, 0, 1, 0, 0, 0, 0, 0, 0))
    monkeypatch.setattr(os, "lstat", lambda p: door if os.fspath(p) == os.fspath(path) else real_lstat(p))
    with pytest.raises(NotARegularFile) as info:
        open_regular(path)
    assert str(info.value) == "not a regular file (not a file)"


def test_open_regular_refuses_a_link_as_open_with_o_nofollow_would(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(OSError) as info:
        open_regular(tmp_path / "link")
    assert (info.value.errno, info.value.strerror, info.value.filename) == (
        errno.ELOOP, os.strerror(errno.ELOOP), str(tmp_path / "link"))


def test_a_file_swapped_for_a_fifo_after_its_check_is_refused_and_closed(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, no_fd_leak: None
) -> None:
    """lstat saw a regular file; by the open it is a FIFO: fstat tells, the descriptor is closed."""
    target = os.fspath(bundle / "report.json")
    real_open = os.open

    def swap_then_open(path: Any, flags: int, *args: Any) -> int:
        if os.fspath(path) == target and not stat.S_ISFIFO(os.lstat(target).st_mode):
            os.unlink(target)
            os.mkfifo(target)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", swap_then_open)
    message = _refusal(bundle, IntegrityError)
    monkeypatch.undo()
    assert message == f"{bundle}: report.json: not a regular file (a FIFO); {REGULAR_ONLY}"


@pytest.mark.parametrize("size", [0, 9, 10])
def test_read_limited_returns_a_file_of_up_to_limit_bytes_whole(tmp_path: Path, size: int) -> None:
    (tmp_path / "f").write_bytes(b"x" * size)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    assert read_limited(fd, 10) == b"x" * size
    with pytest.raises(OSError):
        os.fstat(fd)  # closed


def test_read_limited_refuses_a_file_one_byte_over_the_limit(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 11)
    assert read_limited(os.open(tmp_path / "f", os.O_RDONLY), 10) is None


def _sparse(path: Path, size: int) -> None:
    path.write_bytes(b"")
    os.truncate(path, size)  # no disk written


def _peak_bytes(call: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_read_limited_never_reads_more_than_the_limit_into_memory(tmp_path: Path) -> None:
    _sparse(tmp_path / "big", 32 << 20)
    fd = os.open(tmp_path / "big", os.O_RDONLY)
    assert _peak_bytes(lambda: read_limited(fd, 1024)) < (1 << 20)


def test_sha256_file_hashes_a_large_file_in_pieces(tmp_path: Path) -> None:
    _sparse(tmp_path / "big", 32 << 20)  # zeros
    digests: List[str] = []
    assert _peak_bytes(lambda: digests.append(sha256_file(tmp_path / "big"))) < (8 << 20)
    assert digests == [hashlib.sha256(bytes(32 << 20)).hexdigest()]


# --- after verification: read_verified ------------------------------------------------------------


def test_path_of_names_the_file_on_disk(verified: VerifiedBundle, bundle: Path) -> None:
    assert verified.path_of(_artifact(verified, "engines/orin-nano.plan")) == bundle / "engines" / "orin-nano.plan"


def test_read_verified_refuses_an_artifact_of_another_bundle(verified: VerifiedBundle) -> None:
    foreign = dataclasses.replace(_artifact(verified, "model.onnx"), size=1)
    with pytest.raises(IntegrityError) as info:
        verified.read_verified(foreign)
    assert str(info.value) == "model.onnx: not an artifact of bundle 'digits'"


def test_read_verified_refuses_a_folder_swapped_for_a_link(verified: VerifiedBundle, bundle: Path,
                                                          tmp_path: Path) -> None:
    """Same bytes behind the link: only the link is the reason to refuse (O_NOFOLLOW guards the last part only)."""
    shutil.move(str(bundle / "engines"), str(tmp_path / "engines"))
    (bundle / "engines").symlink_to(tmp_path / "engines", target_is_directory=True)
    with pytest.raises(IntegrityError) as info:
        verified.read_verified(_artifact(verified, "engines/orin-nano.plan"))
    assert str(info.value) == f"{bundle}: engines is a symbolic link; {REGULAR_ONLY}"


def test_read_verified_refuses_a_folder_swapped_for_a_file(verified: VerifiedBundle, bundle: Path) -> None:
    shutil.rmtree(bundle / "engines")
    (bundle / "engines").write_bytes(b"")
    with pytest.raises(IntegrityError) as info:
        verified.read_verified(_artifact(verified, "engines/orin-nano.plan"))
    assert str(info.value) == f"{bundle}: engines/orin-nano.plan: cannot read (Not a directory)"


def test_read_verified_reads_at_most_one_byte_more_of_a_file_growing_while_it_is_read(
    verified: VerifiedBundle, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size was checked at open; a writer appending since must not make the runtime read it all into memory."""
    path = bundle / "model.onnx"

    class Appended(io.BufferedReader):
        def read(self, size: Optional[int] = -1) -> bytes:
            os.truncate(path, len(FILES["model.onnx"]) + (16 << 20))  # 16 MiB of zeros appended
            return super().read(size)

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Appended(io.FileIO(fd, "rb")))
    with pytest.raises(IntegrityError) as info:
        tracemalloc.start()
        try:
            verified.read_verified(_artifact(verified, "model.onnx"))
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert peak < (8 << 20)
    grown = FILES["model.onnx"] + b"\0"
    assert str(info.value) == (
        f"{bundle}: model.onnx: sha256 mismatch (file {hashlib.sha256(grown).hexdigest()}, "
        f"manifest {hashlib.sha256(FILES['model.onnx']).hexdigest()}): the file was altered or corrupted"
    )


def _swap_after_first_lstat(monkeypatch: pytest.MonkeyPatch, path: Path, swap: Callable[[], None]) -> None:
    real_lstat = os.lstat
    seen: List[str] = []

    def lstat(candidate: Any) -> Any:
        result = real_lstat(candidate)
        if os.fspath(candidate) == os.fspath(path) and not seen:
            seen.append("checked")
            swap()
        return result

    monkeypatch.setattr(os, "lstat", lstat)


def test_read_verified_reports_a_file_removed_while_it_is_read(
    verified: VerifiedBundle, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _swap_after_first_lstat(monkeypatch, bundle / "model.onnx", (bundle / "model.onnx").unlink)
    with pytest.raises(IntegrityError) as info:
        verified.read_verified(_artifact(verified, "model.onnx"))
    assert str(info.value) == f"{bundle}: model.onnx: listed in the manifest but missing"


def test_read_verified_refuses_a_file_swapped_for_a_link_while_it_is_read(
    verified: VerifiedBundle, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def to_link() -> None:
        shutil.move(str(bundle / "model.onnx"), str(tmp_path / "model.onnx"))
        (bundle / "model.onnx").symlink_to(tmp_path / "model.onnx")

    _swap_after_first_lstat(monkeypatch, bundle / "model.onnx", to_link)
    with pytest.raises(IntegrityError) as info:
        verified.read_verified(_artifact(verified, "model.onnx"))
    assert str(info.value) == f"{bundle}: model.onnx: cannot read (it is a symbolic link; {REGULAR_ONLY})"


def _deny_open(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    real_open = os.open

    def open_(path: Any, flags: int, *args: Any) -> int:
        if os.fspath(path) == os.fspath(denied):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_)


def test_a_bundle_signed_over_a_manifest_of_other_bytes_is_refused(bundle: Path) -> None:
    (bundle / "manifest.sig").write_bytes(sign_manifest(b"{}", SIGNER))
    assert _refusal(bundle, SignatureError).startswith(f"{bundle}: manifest.sig: the signature does not match")
