"""Atomic writes and directory publishing (DESIGN rule 5)."""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Tuple

import pytest

from edge_runtime import atomic_io
from edge_runtime.atomic_io import (
    fsync_tree,
    publish_dir,
    staging_dir_for,
    write_bytes_atomic,
)
from edge_runtime.errors import OutputError


def _tree(root: Path) -> dict:
    """{relative path: content} of every file below ``root``."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Record the path of every file descriptor passed to os.fsync (Linux /proc)."""
    paths: List[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(atomic_io.os, "fsync", spy)
    return paths


# --- write_bytes_atomic ---------------------------------------------------------------------


def test_write_creates_replaces_and_sets_mode(tmp_path: Path, synced: List[str]) -> None:
    target = tmp_path / "state.json"
    write_bytes_atomic(target, b"old")
    write_bytes_atomic(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["state.json"]  # no temp file left behind
    assert str(tmp_path) in synced  # the directory entry was flushed too


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_io.os, "fsync", no_space)
    with pytest.raises(OutputError, match=r"state\.json: cannot write: No space left"):
        write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_write_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"missing/state\.json: cannot write"):
        write_bytes_atomic(tmp_path / "missing" / "state.json", b"x")


# --- fsync_tree -----------------------------------------------------------------------------


def test_fsync_tree_flushes_every_file_and_folder_but_not_links(
    tmp_path: Path, synced: List[str]
) -> None:
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "top.bin").write_bytes(b"1")
    (root / "a" / "b" / "deep.bin").write_bytes(b"2")
    (tmp_path / "outside.bin").write_bytes(b"3")
    (root / "link.bin").symlink_to(tmp_path / "outside.bin")
    fsync_tree(root)
    expected = {root, root / "a", root / "a" / "b", root / "top.bin", root / "a/b/deep.bin"}
    assert set(synced) == {str(path) for path in expected}
    # Children before their folder, so the folder's flush covers finished entries.
    assert synced.index(str(root / "a" / "b" / "deep.bin")) < synced.index(str(root / "a"))
    assert synced[-1] == str(root)


# --- staging_dir_for ------------------------------------------------------------------------


def test_staging_dir_is_a_fresh_hidden_sibling(tmp_path: Path) -> None:
    dest = tmp_path / "digits-1.0"
    first, second = staging_dir_for(dest), staging_dir_for(dest)
    assert first != second
    for staging in (first, second):
        assert staging.parent == tmp_path
        assert staging.name.startswith(".digits-1.0.tmp-")
        assert staging.is_dir() and not any(staging.iterdir())
        assert stat.S_IMODE(staging.stat().st_mode) == 0o755
    assert not dest.exists()


def test_staging_dir_missing_parent(tmp_path: Path) -> None:
    dest = tmp_path / "nope" / "bundle"
    with pytest.raises(OutputError, match=r"parent directory .*nope does not exist") as info:
        staging_dir_for(dest)
    assert str(dest) in str(info.value)


def test_staging_dir_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputError, match=r"parent directory .*file is not a directory"):
        staging_dir_for(tmp_path / "file" / "bundle")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_staging_dir_unwritable_parent(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o555)
    with pytest.raises(OutputError, match=r"parent directory .*ro is not writable"):
        staging_dir_for(parent / "bundle")


def test_staging_dir_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Same path as above, reachable when tests run as root (as in containers).
    def denied(**kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied", kwargs["dir"])

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(OutputError, match=r"bundle: parent directory .* is not writable") as info:
        staging_dir_for(tmp_path / "bundle")
    assert "Permission denied" in str(info.value)


# --- publish_dir ----------------------------------------------------------------------------


def _staged(dest: Path, files: dict) -> Path:
    staging = staging_dir_for(dest)
    for relative, content in files.items():
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        (staging / relative).write_bytes(content)
    return staging


def test_publish_into_empty_place(tmp_path: Path, synced: List[str]) -> None:
    dest = tmp_path / "bundle"
    staging = _staged(dest, {"model.onnx": b"m", "engines/x.plan": b"p"})
    publish_dir(staging, dest, overwrite=False)
    assert _tree(dest) == {"model.onnx": b"m", "engines/x.plan": b"p"}
    assert os.listdir(tmp_path) == ["bundle"]
    assert synced[-1] == str(tmp_path)  # the rename itself was flushed


@pytest.mark.parametrize("replacing", [False, True])
def test_publish_flushes_every_staged_file_and_folder_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replacing: bool
) -> None:
    """A power cut right after the rename must not leave a published tree whose files are not on disk."""
    dest = tmp_path / "bundle"
    if replacing:
        dest.mkdir()
        (dest / "model.onnx").write_bytes(b"old")
    staging = _staged(dest, {"model.onnx": b"m", "engines/x.plan": b"p", "engines/int8/c.cache": b"c"})
    staged = {str(staging), *(str(path) for path in staging.rglob("*"))}
    events: List[Tuple[str, str]] = []  # ("fsync", path) and ("rename", source) in call order
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(source: Any, target: Any) -> None:
        events.append(("rename", str(source)))
        real_rename(source, target)

    monkeypatch.setattr(atomic_io.os, "fsync", fsync)
    monkeypatch.setattr(atomic_io.os, "rename", rename)
    publish_dir(staging, dest, overwrite=replacing)
    published = events.index(("rename", str(staging)))
    flushed_before = {path for kind, path in events[:published] if kind == "fsync"}
    assert staged <= flushed_before, sorted(staged - flushed_before)
    assert ("fsync", str(tmp_path)) in events[published:]  # and the rename itself is flushed after it


@pytest.mark.parametrize("overwrite", [False, True])
def test_publish_over_existing(tmp_path: Path, overwrite: bool) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "model.onnx").write_bytes(b"old")
    staging = _staged(dest, {"model.onnx": b"new"})
    if overwrite:
        publish_dir(staging, dest, overwrite=True)
        assert _tree(dest) == {"model.onnx": b"new"}
        assert os.listdir(tmp_path) == ["bundle"]  # old copy and staging both gone
    else:
        with pytest.raises(OutputError, match=r"bundle: already exists"):
            publish_dir(staging, dest, overwrite=False)
        assert _tree(dest) == {"model.onnx": b"old"}
        assert _tree(staging) == {"model.onnx": b"new"}


def test_failed_swap_restores_the_old_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "model.onnx").write_bytes(b"old")
    staging = _staged(dest, {"model.onnx": b"new"})
    real_rename = os.rename

    def rename(source: Any, target: Any) -> None:
        if Path(source) == staging:
            raise OSError(5, "Input/output error")
        real_rename(source, target)

    monkeypatch.setattr(atomic_io.os, "rename", rename)
    with pytest.raises(OutputError, match="Input/output error"):
        publish_dir(staging, dest, overwrite=True)
    assert _tree(dest) == {"model.onnx": b"old"}
    assert sorted(os.listdir(tmp_path)) == sorted(["bundle", staging.name])


def test_publish_refuses_a_staging_dir_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    staging = _staged(tmp_path / "a" / "bundle", {"f": b"x"})
    with pytest.raises(OutputError, match="must be a sibling"):
        publish_dir(staging, tmp_path / "bundle", overwrite=False)
    assert not (tmp_path / "bundle").exists()


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path: Path) -> None:
    from edge_runtime.atomic_io import remove_stale_temp_files

    target = tmp_path / "active.json"
    stale = tmp_path / ".active.json.abc123.tmp"
    fresh = tmp_path / ".active.json.def456.tmp"  # a writer may still be busy with it
    other = tmp_path / ".other.json.abc123.tmp"
    for path in (stale, fresh, other):
        path.write_bytes(b"{")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    assert remove_stale_temp_files(target) == 1
    assert not stale.exists() and fresh.exists() and other.exists()


# --- what a caller and a reader can rely on, exactly --------------------------------------------
# atomic_io.os IS the os module: a patched os function must act only on this test's own paths
# (pytest itself calls os.lstat, os.unlink ... while a test runs and while it reports a failure).


def test_the_default_mode_is_0644_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    previous = os.umask(0o077)
    try:
        write_bytes_atomic(target, b"{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_the_temporary_is_a_hidden_tmp_sibling_that_stale_clean_up_finds(
    tmp_path: Path, synced: List[str]
) -> None:
    target = tmp_path / "state.json"
    write_bytes_atomic(target, b"{}")
    temporary = Path(synced[0])  # the data is flushed under its temporary name, before the rename
    assert temporary.parent == tmp_path
    assert re.fullmatch(r"\.state\.json\.[A-Za-z0-9_]+\.tmp", temporary.name), temporary.name
    temporary.write_bytes(b"{")  # as a writer killed before its rename leaves it
    old = time.time() - 3600
    os.utime(temporary, (old, old))
    assert atomic_io.remove_stale_temp_files(target) == 1
    assert os.listdir(tmp_path) == ["state.json"]


def test_short_writes_are_continued_until_every_byte_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    monkeypatch.setattr(atomic_io.os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    target = tmp_path / "state.json"
    write_bytes_atomic(target, b"0123456789abcdef")
    monkeypatch.undo()
    assert target.read_bytes() == b"0123456789abcdef"


class _Interrupted(BaseException):
    """Stands for a KeyboardInterrupt or SystemExit arriving mid-write."""


def _raising(error: BaseException, inside: Path) -> Any:
    """A stand-in for an os function that raises ``error`` for paths or descriptors of ``inside``."""

    def fail(target: Any, *args: Any, **kwargs: Any) -> None:
        where = os.readlink(f"/proc/self/fd/{target}") if isinstance(target, int) else os.fspath(target)
        if where.startswith(str(inside)):
            raise error
        raise AssertionError(f"unexpected call on {where}")

    return fail


def test_an_interrupted_write_removes_its_temporary_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    monkeypatch.setattr(atomic_io.os, "fsync", _raising(_Interrupted(), tmp_path))
    with pytest.raises(_Interrupted):
        write_bytes_atomic(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_failed_clean_up_does_not_hide_the_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    monkeypatch.setattr(atomic_io.os, "fsync", _raising(OSError(28, "No space left on device"), tmp_path))
    monkeypatch.setattr(atomic_io.os, "unlink", _raising(OSError(16, "Device or resource busy"), tmp_path))
    with pytest.raises(OutputError) as info:
        write_bytes_atomic(target, b"new")
    monkeypatch.undo()
    assert str(info.value) == f"{target}: cannot write: No space left on device"
    for leftover in tmp_path.iterdir():  # the temporary the busy unlink kept
        leftover.unlink()


def test_an_error_without_a_reason_text_is_described_by_the_error_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = OSError("refused by the file system driver")  # no errno, no strerror
    monkeypatch.setattr(atomic_io.os, "fsync", _raising(refused, tmp_path))
    target = tmp_path / "state.json"
    with pytest.raises(OutputError) as info:
        write_bytes_atomic(target, b"x")
    monkeypatch.undo()
    assert str(info.value) == f"{target}: cannot write: refused by the file system driver"


def test_fsync_dir_refuses_a_path_that_is_not_a_directory(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_bytes(b"")
    with pytest.raises(OutputError) as info:
        atomic_io.fsync_dir(regular)
    assert str(info.value) == f"{regular}: cannot sync directory: Not a directory"


def test_fsync_tree_of_a_missing_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(OutputError) as info:
        fsync_tree(missing)
    assert str(info.value) == f"{missing}: cannot sync to disk: No such file or directory"


def test_fsync_tree_names_the_file_that_vanished_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    vanished = root / "model.onnx"
    vanished.write_bytes(b"m")
    error = FileNotFoundError(2, "No such file or directory", str(vanished))
    monkeypatch.setattr(atomic_io.os, "lstat", _raising(error, vanished))
    with pytest.raises(OutputError) as info:
        fsync_tree(root)
    monkeypatch.undo()
    assert str(info.value) == f"{vanished}: cannot sync to disk: No such file or directory"


def test_fsync_tree_without_a_file_name_in_the_error_names_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "model.onnx").write_bytes(b"m")
    monkeypatch.setattr(atomic_io.os, "fsync", _raising(OSError(5, "Input/output error"), root))
    with pytest.raises(OutputError) as info:
        fsync_tree(root)
    monkeypatch.undo()
    assert str(info.value) == f"{root}: cannot sync to disk: Input/output error"


def test_fsync_tree_does_not_follow_a_file_swapped_for_a_link_while_it_walks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synced: List[str]
) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    swapped = root / "model.onnx"
    swapped.write_bytes(b"m")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"o")
    real_lstat = os.lstat
    done: List[str] = []

    def lstat_then_swap(path: Any) -> os.stat_result:
        info = real_lstat(path)
        if os.fspath(path) == str(swapped) and not done:
            done.append(str(swapped))
            os.unlink(swapped)  # a regular file when looked at, a link when opened
            os.symlink(outside, swapped)
        return info

    monkeypatch.setattr(atomic_io.os, "lstat", lstat_then_swap)
    with pytest.raises(OutputError) as info:
        fsync_tree(root)
    monkeypatch.undo()
    assert str(info.value) == f"{swapped}: cannot sync to disk: Too many levels of symbolic links"
    assert str(outside) not in synced


@pytest.mark.parametrize("kind", ["missing", "a file", "a link to a folder"])
def test_publish_refuses_a_staging_path_that_is_not_a_real_folder(tmp_path: Path, kind: str) -> None:
    dest = tmp_path / "bundle"
    staging = tmp_path / ".bundle.tmp-x"
    if kind == "a file":
        staging.write_bytes(b"")
    elif kind == "a link to a folder":
        (tmp_path / "real").mkdir()
        staging.symlink_to(tmp_path / "real")
    with pytest.raises(OutputError) as info:
        publish_dir(staging, dest, overwrite=True)
    assert str(info.value) == f"{staging}: not a staging directory"
    assert not dest.exists()


def test_publish_that_cannot_make_room_for_the_old_tree_leaves_it_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "model.onnx").write_bytes(b"old")
    staging = _staged(dest, {"model.onnx": b"new"})

    def full(**kwargs: Any) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    with pytest.raises(OutputError) as info:
        publish_dir(staging, dest, overwrite=True)
    monkeypatch.undo()
    assert str(info.value) == f"cannot replace {dest}: No space left on device"
    assert _tree(dest) == {"model.onnx": b"old"}


def test_an_old_tree_that_cannot_be_deleted_is_left_aside_hidden_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "model.onnx").write_bytes(b"old")
    staging = _staged(dest, {"model.onnx": b"new"})
    error = OSError(16, "Device or resource busy")
    monkeypatch.setattr(atomic_io.shutil, "rmtree", _raising(error, tmp_path))
    with caplog.at_level(logging.WARNING, logger="edge_runtime.atomic_io"):
        publish_dir(staging, dest, overwrite=True)  # published: the left-over is only worth a warning
    monkeypatch.undo()
    assert _tree(dest) == {"model.onnx": b"new"}
    (old,) = [path for path in tmp_path.iterdir() if path.name != "bundle"]
    assert re.fullmatch(r"\.bundle\.old-[A-Za-z0-9_]+", old.name), old.name
    assert _tree(old) == {"bundle/model.onnx": b"old"}
    assert [record.getMessage() for record in caplog.records] == [
        f"{dest}: published, but the old copy {old} was not removed: {error}"
    ]


def test_a_failed_swap_reports_the_rename_even_if_the_empty_old_folder_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "model.onnx").write_bytes(b"old")
    staging = _staged(dest, {"model.onnx": b"new"})
    real_rename = os.rename

    def rename(source: Any, target: Any) -> None:
        if Path(source) == staging:
            raise OSError(5, "Input/output error")
        real_rename(source, target)

    monkeypatch.setattr(atomic_io.os, "rename", rename)
    monkeypatch.setattr(atomic_io.os, "rmdir", _raising(OSError(16, "Device or resource busy"), tmp_path))
    with pytest.raises(OutputError) as info:
        publish_dir(staging, dest, overwrite=True)
    monkeypatch.undo()
    assert str(info.value) == f"cannot move {staging} to {dest}: Input/output error"
    assert _tree(dest) == {"model.onnx": b"old"}


# --- remove_stale_temp_files ------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> float:
    """Freeze atomic_io's clock (its own ``time`` name only) at a fixed time, so ages are exact."""
    now = 1_000_000.0
    monkeypatch.setattr(atomic_io, "time", SimpleNamespace(time=lambda: now))
    return now


def _temporaries(tmp_path: Path, ages: Dict[str, float], now: float) -> None:
    for name, age in ages.items():
        path = tmp_path / f".active.json.{name}.tmp"
        path.write_bytes(b"{")
        stamp = int((now - age) * 1e9)
        os.utime(path, ns=(stamp, stamp))


def test_a_temporary_is_stale_only_when_older_than_a_minute_by_default(
    tmp_path: Path, clock: float
) -> None:
    _temporaries(tmp_path, {"older": 60.5, "exactly": 60.0, "younger": 59.5}, clock)
    assert atomic_io.remove_stale_temp_files(tmp_path / "active.json") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        ".active.json.exactly.tmp",
        ".active.json.younger.tmp",
    ]


def test_every_stale_temporary_is_counted(tmp_path: Path, clock: float) -> None:
    _temporaries(tmp_path, {"a": 120, "b": 300, "c": 4000}, clock)
    assert atomic_io.remove_stale_temp_files(tmp_path / "active.json", older_than_s=100) == 3
    assert list(tmp_path.iterdir()) == []


def test_a_temporary_that_vanishes_does_not_stop_the_clean_up(
    tmp_path: Path, clock: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    _temporaries(tmp_path, {"a": 120, "b": 300, "c": 4000}, clock)
    real_unlink = Path.unlink
    raced: List[Path] = []

    def unlink(self: Path, missing_ok: bool = False) -> None:
        real_unlink(self, missing_ok)
        if self.parent == tmp_path and not raced:  # another cleaner removed the first one first
            raced.append(self)
            raise FileNotFoundError(2, "No such file or directory", str(self))

    monkeypatch.setattr(Path, "unlink", unlink)
    removed = atomic_io.remove_stale_temp_files(tmp_path / "active.json")
    monkeypatch.undo()
    assert removed == 2
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_folder_means_nothing_removed_never_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(self: Path, pattern: str) -> Any:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Path, "glob", unreadable)
    removed = atomic_io.remove_stale_temp_files(tmp_path / "active.json")
    monkeypatch.undo()
    assert removed == 0
