"""Atomic writes and directory publishing (DESIGN rule 5)."""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, List, Tuple

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
