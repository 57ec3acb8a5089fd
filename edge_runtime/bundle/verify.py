"""Verify a bundle directory before anything inside it is used (DESIGN rule 6).

The order is the point: the raw bytes of ``manifest.json`` are checked against ``manifest.sig``
and a trusted key *before* the JSON is parsed, so a parser bug can only be reached by someone
holding a signing key. Then every listed file must be a regular file inside the bundle (no
symbolic links) whose size and sha256 match, and no other file may be present: a bundle holds
exactly what its signer listed.

No open may block: a FIFO named ``manifest.sig`` or ``model.onnx`` would hang a plain ``open``
until a writer came (and with it ``edge-runtime check``, startup, or a reload holding the load
lock). Every file is ``lstat``-ed and refused unless regular, then opened with ``O_NONBLOCK`` and
``O_NOFOLLOW`` and checked again with ``fstat`` (the entry may be swapped in between).
Backends load what was hashed: :meth:`VerifiedBundle.read_verified` reads a file into memory
while hashing it, so a file replaced after verification is refused, not served.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Collection, Iterator, List, Optional, Sequence, Type, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_runtime.bundle.manifest import Artifact, Manifest
from edge_runtime.bundle.signing import verify_manifest_signature
from edge_runtime.errors import BundleError, IntegrityError, SignatureError

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
CHUNK_SIZE = 1 << 20  # hash in 1 MiB pieces: engines are hundreds of MB on a board with 8 GB
# Read limits before the signature is checked: an attacker must not make us load a huge file.
MAX_MANIFEST_BYTES = 16 << 20
MAX_SIGNATURE_BYTES = 64 << 10
_REGULAR_ONLY = "a bundle holds regular files only"
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)

PathLike = Union[str, "os.PathLike[str]"]


# What a backend loads: hashed by the runtime once, while read into the buffer it loads from.
MODEL_KINDS = ("onnx", "onnx_data", "engine")


def verify_bundle(bundle_dir: PathLike, trusted_keys: Sequence[Ed25519PublicKey],
                  hash_on_read: Collection[str] = ()) -> Manifest:
    """Check the signature, then every file; return the manifest only if all of it holds.

    Artifacts of the kinds in ``hash_on_read`` are checked for presence, type and size only: their
    sha256 is checked by :meth:`VerifiedBundle.read_verified` as they are read for loading, before
    anything parses them (one pass over a model file instead of two; a TensorRT engine is hundreds
    of MB on a board that hashes ~200 MB/s). Every message starts with the bundle directory, then
    names the file at fault.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise BundleError(f"{root}: {what}; expected a bundle directory")
    try:
        return _verify(root, trusted_keys, hash_on_read)
    except BundleError as exc:
        raise type(exc)(f"{root}: {exc}") from exc


def _verify(root: Path, trusted_keys: Sequence[Ed25519PublicKey], hash_on_read: Collection[str]) -> Manifest:
    sig_bytes = _read_small(root, SIGNATURE_NAME, MAX_SIGNATURE_BYTES, SignatureError)
    manifest_bytes = _read_small(root, MANIFEST_NAME, MAX_MANIFEST_BYTES, IntegrityError)
    verify_manifest_signature(manifest_bytes, sig_bytes, trusted_keys)
    manifest = Manifest.from_json(manifest_bytes)
    _check_no_unlisted_files(root, manifest)
    for artifact in manifest.artifacts:
        if artifact.kind in hash_on_read:
            _open_artifact(root, artifact).close()
        else:
            _check_artifact(root, artifact)
    return manifest


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    with open(path, "rb") as handle:
        return _sha256_stream(handle)


def _sha256_stream(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _read_small(root: Path, name: str, limit: int, error: Type[BundleError]) -> bytes:
    """Read manifest.json or manifest.sig: a regular file (not a link), at most ``limit`` bytes."""
    path = root / name
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        what = "the bundle is not signed" if name == SIGNATURE_NAME else "not a bundle"
        raise error(f"no {name} ({what})") from None
    except NotARegularFile as exc:
        raise error(f"{name}: {exc}") from None
    except OSError as exc:
        raise error(f"{name}: cannot read ({_describe_open_error(path, exc)})") from exc
    data = read_limited(fd, limit)
    if data is None:
        raise error(f"{name}: larger than {limit} bytes; refusing to read it")
    return data


def read_limited(fd: int, limit: int) -> Optional[bytes]:
    """All of an open file (the descriptor is closed), or None when it holds more than ``limit`` bytes."""
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    return data if len(data) <= limit else None


class NotARegularFile(OSError):
    """The path is a FIFO, socket, device or directory: never opened (or opened, never read)."""


def open_regular(path: PathLike) -> int:
    """A read-only descriptor of ``path`` if it is a regular file (not a link); never blocks."""
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.fspath(path))
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"not a regular file ({_file_type(mode)})")
    fd = os.open(path, _OPEN_FLAGS)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # swapped between lstat and open
        os.close(fd)
        raise NotARegularFile(f"not a regular file ({_file_type(mode)})")
    return fd


def _file_type(mode: int) -> str:
    # No symbolic link here: lstat's link is refused before, and fstat never sees one.
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file"


def _open_artifact(root: Path, artifact: Artifact) -> BinaryIO:
    """The listed file, opened after every check that needs no read: path, type, size."""
    name = artifact.path
    _check_no_symlink_on_the_way(root, name)
    try:
        fd = open_regular(root / name)
    except FileNotFoundError:
        raise IntegrityError(f"{name}: listed in the manifest but missing") from None
    except NotARegularFile as exc:
        raise IntegrityError(f"{name}: {exc}; {_REGULAR_ONLY}") from None
    except OSError as exc:
        reason = _describe_open_error(root / name, exc)
        raise IntegrityError(f"{name}: cannot read ({reason})") from exc
    handle = os.fdopen(fd, "rb")
    size = os.fstat(fd).st_size
    if size != artifact.size:
        handle.close()
        raise IntegrityError(f"{name}: size is {size} bytes, the manifest says {artifact.size}")
    return handle


def _check_digest(artifact: Artifact, actual: str) -> None:
    if actual != artifact.sha256:
        raise IntegrityError(
            f"{artifact.path}: sha256 mismatch (file {actual}, manifest {artifact.sha256}): "
            "the file was altered or corrupted"
        )


def _check_artifact(root: Path, artifact: Artifact) -> None:
    with _open_artifact(root, artifact) as handle:
        actual = _sha256_stream(handle)
    _check_digest(artifact, actual)


def read_artifact(root: Path, artifact: Artifact) -> bytes:
    """The bytes of ``artifact``, read into memory while hashing them; IntegrityError unless they match."""
    with _open_artifact(root, artifact) as handle:
        data = handle.read(artifact.size + 1)  # one buffer: what is hashed is what is returned
    _check_digest(artifact, hashlib.sha256(data).hexdigest())
    return data


def _check_no_symlink_on_the_way(root: Path, relative: str) -> None:
    """Refuse a listed path if it or any folder on the way to it is a symbolic link."""
    current = root
    for part in relative.split("/"):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            raise IntegrityError(f"{relative}: listed in the manifest but missing") from None
        except OSError as exc:
            raise IntegrityError(f"{relative}: cannot read ({exc.strerror or exc})") from exc
        if stat.S_ISLNK(mode):
            link = current.relative_to(root).as_posix()
            raise IntegrityError(f"{link} is a symbolic link; {_REGULAR_ONLY}")


def _check_no_unlisted_files(root: Path, manifest: Manifest) -> None:
    listed = {artifact.path for artifact in manifest.artifacts}
    listed.update((MANIFEST_NAME, SIGNATURE_NAME))
    for relative in sorted(list_bundle_entries(root)):
        if os.path.islink(root / relative):
            raise IntegrityError(f"{relative} is a symbolic link; {_REGULAR_ONLY}")
        if relative not in listed:
            raise IntegrityError(f"{relative}: unlisted file (not in the manifest)")


def list_bundle_entries(root: PathLike) -> List[str]:
    """Every non-directory entry below ``root`` (links included, not followed), POSIX-relative."""
    return list(_walk_entries(os.fspath(root)))


def _walk_entries(top: str) -> Iterator[str]:
    def fail(exc: OSError) -> None:
        where = os.path.relpath(exc.filename, top) if exc.filename else top
        raise IntegrityError(f"{where}: cannot list ({exc.strerror or exc})") from exc

    for dirpath, dirnames, filenames in os.walk(top, onerror=fail):
        relative_dir = os.path.relpath(dirpath, top)
        # A link to a directory shows up in dirnames; os.walk does not descend into it.
        links = [name for name in dirnames if os.path.islink(os.path.join(dirpath, name))]
        for name in filenames + links:
            yield Path(relative_dir, name).as_posix()  # Path drops the leading "./"


def _describe_open_error(path: Path, exc: OSError) -> str:
    if os.path.islink(path):
        return f"it is a symbolic link; {_REGULAR_ONLY}"
    return exc.strerror or str(exc)



@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle directory whose signature and files were checked, and its manifest.

    Backends take this type rather than a bare path, so that loading an unverified bundle is
    a type error. A backend loads an artifact through :meth:`read_verified`, never by path: the
    bytes it gets are the bytes that were hashed, whatever happened to the file since.
    """

    path: Path
    manifest: Manifest

    def path_of(self, artifact: Artifact) -> Path:
        """Where ``artifact`` lies on disk (for messages and logs; load with :meth:`read_verified`)."""
        return self.path / artifact.path

    def read_verified(self, artifact: Artifact) -> bytes:
        """The artifact's bytes, hashed while read: IntegrityError if they are not what the manifest lists."""
        if artifact not in self.manifest.artifacts:
            raise IntegrityError(f"{artifact.path}: not an artifact of bundle '{self.manifest.name}'")
        try:
            return read_artifact(self.path, artifact)
        except BundleError as exc:
            raise type(exc)(f"{self.path}: {exc}") from exc


def open_bundle(bundle_dir: PathLike, trusted_keys: Sequence[Ed25519PublicKey]) -> VerifiedBundle:
    """Verify ``bundle_dir`` for loading and return it with its manifest.

    As :func:`verify_bundle`, except that model files (:data:`MODEL_KINDS`) are hashed when a
    backend reads them (:meth:`VerifiedBundle.read_verified`), not twice. ``edge-runtime check``
    and the fleet agent use :func:`verify_bundle`, which hashes every file up front.
    """
    return VerifiedBundle(Path(bundle_dir), verify_bundle(bundle_dir, trusted_keys, hash_on_read=MODEL_KINDS))
