"""Unpack a bundle tar into an empty directory, refusing anything a bundle cannot hold.

A bundle travels as an uncompressed POSIX tar of its directory (members relative to the bundle
root, regular files and directories only). The tar comes from the network: before a byte is
written, every header is read and checked (no absolute path, no ``..``, no link, device, FIFO or
sparse file, no member twice, at most ``max_members`` members and ``max_bytes`` bytes of file
data). Only then are the files written, one by one, with ``O_EXCL | O_NOFOLLOW`` and fixed modes
(0644 files, 0755 directories; owners and set-id bits from the tar are ignored). ``extractall``
is never used. What is unpacked is verified with :func:`edge_runtime.bundle.verify_bundle` next.
"""

from __future__ import annotations

import errno
import os
import shutil
import tarfile
from pathlib import Path
from typing import Dict, List, Set

from edge_runtime.fleet.errors import InstallSpaceError, RepositoryWriteError, SyncError, UnsafeArchiveError

DEFAULT_MAX_MEMBERS = 4096
DEFAULT_MAX_BYTES = 8 << 30  # an engine is hundreds of MB; a device's eMMC is 16 to 64 GB
_CHUNK = 1 << 20
_FILE_MODE = 0o644
_DIR_MODE = 0o755
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def extract_bundle_tar(tar_path: Path, dest: Path, max_members: int = DEFAULT_MAX_MEMBERS,
                       max_bytes: int = DEFAULT_MAX_BYTES, reserve_bytes: int = 0) -> int:
    """Unpack the bundle tar ``tar_path`` into the empty directory ``dest``; the bytes written.

    UnsafeArchiveError (not a tar, truncated, a member a bundle cannot hold, over a cap);
    InstallSpaceError when the files would leave less than ``reserve_bytes`` free (checked before
    a byte is written) or the disk fills; RepositoryWriteError for other write failures.
    The caller removes ``dest`` on failure.
    """
    try:
        handle = open(tar_path, "rb")  # noqa: SIM115 - closed below, after the tar that reads it
    except OSError as exc:
        raise SyncError(f"cannot read the bundle tar ({exc.strerror or exc})") from exc
    with handle:
        try:
            archive = tarfile.open(fileobj=handle, mode="r:")  # noqa: SIM115 - read while ``handle`` is open
            members = _checked_members(archive, max_members, max_bytes)
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise UnsafeArchiveError(f"not a readable tar archive ({_reason(exc)})") from exc
        check_space(dest, sum(member.size for member in members.values()), reserve_bytes)
        try:
            return sum(_write_member(archive, member, name, dest) for name, member in members.items())
        except (tarfile.TarError, EOFError) as exc:
            raise UnsafeArchiveError(f"not a readable tar archive ({_reason(exc)})") from exc
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise InstallSpaceError(f"no space left on the device while unpacking ({exc.strerror})") from exc
            raise RepositoryWriteError(f"cannot write {exc.filename or dest}: {exc.strerror or exc}") from exc


def check_space(directory: Path, needed: int, reserve_bytes: int) -> None:
    """InstallSpaceError unless ``needed`` bytes fit in ``directory``'s free space minus the reserve."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        raise RepositoryWriteError(f"cannot read the free space of {directory}: {exc.strerror or exc}") from exc
    if needed > free - reserve_bytes:
        raise InstallSpaceError(f"not enough space: the bundle needs {needed} bytes, {free} are free and "
                                f"{reserve_bytes} are kept in reserve")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def member_name(raw: str) -> str:
    """The member's path relative to the bundle root ('./a/b' → 'a/b', '.' → ''); UnsafeArchiveError if unsafe."""
    name = raw[2:] if raw.startswith("./") else raw
    if raw in (".", "./"):
        return ""
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"member {raw!r}: empty or invalid name")
    if name.startswith("/"):
        raise UnsafeArchiveError(f"member {raw!r}: absolute path (a bundle's members are relative to its root)")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        raise UnsafeArchiveError(f"member {raw!r}: '..' leads outside the bundle")
    if any(part in ("", ".") for part in parts):
        raise UnsafeArchiveError(f"member {raw!r}: not a canonical path (empty or '.' component)")
    return "/".join(parts)


def _checked_members(archive: tarfile.TarFile, max_members: int, max_bytes: int) -> Dict[str, tarfile.TarInfo]:
    """Every member by its name, after reading and checking all the headers (nothing written yet)."""
    members: Dict[str, tarfile.TarInfo] = {}
    directories: Set[str] = set()
    total = 0
    count = 0
    if archive.offset == 0:
        return members  # no member at all (and Python 3.8's next() would seek to -1 here)
    while True:
        member = archive.next()
        if member is None:
            break
        count += 1
        if count > max_members:
            raise UnsafeArchiveError(f"more than {max_members} members (the cap for one bundle)")
        name = member_name(member.name)
        _check_type(member)
        if not name:
            continue  # the bundle root itself
        if name in members or name in directories:
            raise UnsafeArchiveError(f"member {member.name!r}: appears twice")
        _check_parents(member.name, name, members)
        if member.isdir():
            directories.add(name)
            continue
        total += member.size
        if total > max_bytes:
            raise UnsafeArchiveError(f"more than {max_bytes} bytes of files (the cap for one bundle)")
        members[name] = member
    return members


def _check_type(member: tarfile.TarInfo) -> None:
    if member.isdir():
        return
    kind = _kind(member)
    if kind:
        raise UnsafeArchiveError(f"member {member.name!r}: {kind}; a bundle holds regular files and directories only")


def _kind(member: tarfile.TarInfo) -> str:
    """What a member other than a plain file or directory is; '' for a plain regular file."""
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if member.issparse():
        return "a sparse file"
    if not member.isreg() or member.size < 0:
        return f"an entry of tar type {member.type!r}"
    return ""


def _check_parents(raw: str, name: str, files: Dict[str, tarfile.TarInfo]) -> None:
    parts = name.split("/")
    for end in range(1, len(parts)):
        if "/".join(parts[:end]) in files:
            raise UnsafeArchiveError(f"member {raw!r}: lies under a member that is a file")


def _write_member(archive: tarfile.TarFile, member: tarfile.TarInfo, name: str, dest: Path) -> int:
    """Write one regular file (and the folders on its way); the bytes written."""
    path = dest.joinpath(*name.split("/"))
    _make_parents(dest, name.split("/")[:-1])
    source = archive.extractfile(member)
    if source is None:  # only for non-files, refused above
        raise UnsafeArchiveError(f"member {member.name!r}: not a regular file")
    fd = os.open(path, _CREATE, _FILE_MODE)
    written = 0
    try:
        with source:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                view = memoryview(chunk)
                while view:
                    done = os.write(fd, view)
                    view = view[done:]
                written += len(chunk)
    finally:
        os.close(fd)
    if written != member.size:
        raise UnsafeArchiveError(f"member {member.name!r}: truncated ({written} of {member.size} bytes)")
    return written


def _make_parents(dest: Path, parts: List[str]) -> None:
    current = dest
    for part in parts:
        current = current / part
        try:
            os.mkdir(current, _DIR_MODE)
        except FileExistsError:
            if current.is_symlink() or not current.is_dir():  # never: only this function creates entries
                raise UnsafeArchiveError(f"{part}: not a directory in the staged bundle") from None
