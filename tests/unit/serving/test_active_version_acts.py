"""What an explicit act writes to the pointer, and how an unreadable pointer is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.serving.active_version import (
    ActiveVersion,
    PointerError,
    next_pointer,
    read_pointer,
    record_active,
    write_pointer,
)


def test_recording_with_nothing_serving_keeps_the_old_active_version_as_last_good(tmp_path: Path) -> None:
    write_pointer(tmp_path, ActiveVersion("2", "1"))
    assert record_active(tmp_path, "3", None) == ActiveVersion("3", "2")
    assert read_pointer(tmp_path) == ActiveVersion("3", "2")


def test_recording_over_an_invalid_pointer_replaces_it(tmp_path: Path) -> None:
    (tmp_path / "active.json").write_text("{not json")
    assert record_active(tmp_path, "3", None) == ActiveVersion("3", None)
    assert read_pointer(tmp_path) == ActiveVersion("3", None)


def test_a_version_is_never_its_own_last_good(tmp_path: Path) -> None:
    assert next_pointer(ActiveVersion("1", "1"), "1") == ActiveVersion("1", None)


def test_a_pointer_that_is_a_symbolic_link_is_not_read(tmp_path: Path) -> None:
    write_pointer(tmp_path, ActiveVersion("1"))
    (tmp_path / "active.json").rename(tmp_path / "elsewhere.json")
    (tmp_path / "active.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(PointerError) as info:
        read_pointer(tmp_path)
    assert str(info.value) == "active.json: cannot read (Too many levels of symbolic links)"
