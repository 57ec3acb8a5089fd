"""Crash-safe file and directory writes (DESIGN rule 5).

Everything the project stores is written the same way: into a temporary name in the same
directory, flushed to disk with ``fsync``, renamed over the final name, and then the directory
itself is flushed so that the rename survives a power cut (a Jetson on a vehicle or a pole gets
its power pulled, not a clean shutdown). A reader therefore sees either the old content or the
new one, never a torn file.

Directories (bundles) follow the same pattern: build them in :func:`staging_dir_for`, a hidden
sibling of the destination, then :func:`publish_dir` renames the whole tree into place.

Every failure raises :class:`~edge_runtime.errors.OutputError` naming the path. Linux only (the
Jetson and the workstation): ``O_DIRECTORY`` and ``O_NOFOLLOW`` are used as such.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Union

from edge_runtime.errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]

_log = logging.getLogger(__name__)

# mkdtemp creates 0700; a published bundle must be readable by the runtime's service user.
_STAGING_DIR_MODE = 0o755


def write_bytes_atomic(path: PathLike, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half."""
    target = Path(path)
    parent = target.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write: {_reason(exc)}") from exc
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, target)
    except OSError as exc:
        _unlink_quietly(tmp_name)
        raise OutputError(f"{target}: cannot write: {_reason(exc)}") from exc
    except BaseException:
        _unlink_quietly(tmp_name)
        raise
    fsync_dir(parent)


def remove_stale_temp_files(path: PathLike, older_than_s: float = 60.0) -> int:
    """Remove temporary files that :func:`write_bytes_atomic` left for ``path`` when its writer was killed.

    Only files named like its temporaries (``.<name>.*.tmp``) and untouched for ``older_than_s``
    (a live writer finishes in milliseconds) are removed. Returns how many; never raises.
    """
    target = Path(path)
    removed = 0
    cutoff = time.time() - older_than_s
    try:
        candidates = list(target.parent.glob(f".{glob.escape(target.name)}.*.tmp"))
    except OSError:
        return 0
    for candidate in candidates:
        try:
            info = candidate.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                candidate.unlink()
                removed += 1
        except OSError:
            continue  # gone already, or not ours to remove: the next write tries again
    return removed


def fsync_dir(path: PathLike) -> None:
    """Flush a directory's entries (renames, new files) to disk."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"{path}: cannot sync directory: {_reason(exc)}") from exc


def fsync_tree(path: PathLike) -> None:
    """Flush every regular file and directory below ``path`` (and ``path`` itself) to disk.

    Symbolic links are not followed. Children are flushed before their directory.
    """
    root = os.fspath(path)
    try:
        for dirpath, _dirnames, filenames in os.walk(root, topdown=False, onerror=_raise):
            for filename in filenames:
                file_path = os.path.join(dirpath, filename)
                if stat.S_ISREG(os.lstat(file_path).st_mode):
                    _fsync_file(file_path)
            fsync_dir(dirpath)
    except OSError as exc:
        where = exc.filename or root
        raise OutputError(f"{where}: cannot sync to disk: {_reason(exc)}") from exc


def staging_dir_for(dest: PathLike) -> Path:
    """Create a fresh hidden sibling directory (``.{name}.tmp-XXXX``) to build ``dest`` in.

    Being a sibling keeps it on the same file system, so :func:`publish_dir` is one rename.
    """
    target = Path(dest)
    parent = target.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise OutputError(f"cannot create {target}: parent directory {parent} {what}")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
        os.chmod(staging, _STAGING_DIR_MODE)
    except OSError as exc:
        raise OutputError(
            f"cannot create {target}: parent directory {parent} is not writable ({_reason(exc)})"
        ) from exc
    return staging


def publish_dir(staging: PathLike, dest: PathLike, overwrite: bool) -> None:
    """Move the fully written directory ``staging`` to ``dest`` with a rename.

    With ``overwrite``, an existing ``dest`` is renamed aside, the new tree renamed in, and only
    then the old one deleted: ``dest`` is absent only between those two renames, and the old
    tree is put back if the second fails. (A pointer that must never be absent, such as the
    active bundle, is a symlink flipped with :func:`os.replace` instead.)
    """
    source, target = Path(staging), Path(dest)
    parent = target.parent
    if not source.is_dir() or source.is_symlink():
        raise OutputError(f"{source}: not a staging directory")
    if os.path.realpath(source.parent) != os.path.realpath(parent):
        raise OutputError(f"{source}: staging directory must be a sibling of {target}")
    exists = os.path.lexists(target)
    if exists and not overwrite:
        raise OutputError(f"{target}: already exists (refusing to overwrite it)")
    fsync_tree(source)
    if not exists:
        _rename(source, target)
        fsync_dir(parent)
        return
    try:
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot replace {target}: {_reason(exc)}") from exc
    aside = old / target.name
    _rename(target, aside)
    try:
        _rename(source, target)
    except OutputError:
        _rename(aside, target)  # put the old tree back: dest must not stay missing
        with contextlib.suppress(OSError):
            os.rmdir(old)
        raise
    fsync_dir(parent)
    try:
        shutil.rmtree(old)
    except OSError as exc:
        # The new tree is in place; failing now would report a publish that happened as failed.
        _log.warning("%s: published, but the old copy %s was not removed: %s", target, old, exc)


def _rename(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError as exc:
        raise OutputError(f"cannot move {source} to {target}: {_reason(exc)}") from exc


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    # Best effort clean-up of our own temp file: another error is already on its way out.
    with contextlib.suppress(OSError):
        os.unlink(path)


def _raise(exc: OSError) -> None:
    raise exc


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
