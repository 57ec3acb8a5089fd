"""The active-version pointer: atomic writes, strict reads, what becomes last good."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from edge_runtime.serving.active_version import (
    POINTER_NAME,
    ActiveVersion,
    PointerError,
    next_pointer,
    read_pointer,
    write_pointer,
)


def test_round_trip(tmp_path: Path) -> None:
    assert read_pointer(tmp_path) is None
    write_pointer(tmp_path, ActiveVersion("3", "2"))
    assert read_pointer(tmp_path) == ActiveVersion("3", "2")
    assert [p.name for p in tmp_path.iterdir()] == [POINTER_NAME]  # no temp file left


@pytest.mark.parametrize("content, message", [
    (b"{", "not valid JSON"),
    (b'["3"]', "expected"),
    (b'{"active": 3}', "must be a version number"),
    (b'{"active": "\xc2\xb2"}', "must be a version number"),
    (b'{"active": "1", "extra": 1}', "expected"),
    (b'{"active": "1", "last_good": "../2"}', "must be a version number"),
    (b"x" * 5000, "larger than"),
])
def test_invalid_pointers_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / POINTER_NAME).write_bytes(content)
    with pytest.raises(PointerError, match=message):
        read_pointer(tmp_path)


def test_a_fifo_pointer_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / POINTER_NAME)
    errors = []

    def read() -> None:
        try:
            read_pointer(tmp_path)
        except PointerError as exc:
            errors.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive() and "a FIFO" in str(errors[0])


def test_next_pointer_keeps_the_version_that_served_as_last_good() -> None:
    assert next_pointer(None, "2") == ActiveVersion("2", None)
    assert next_pointer(ActiveVersion("1"), "2") == ActiveVersion("2", "1")
    assert next_pointer(ActiveVersion("3", "1"), "4", serving="1") == ActiveVersion("4", "1")  # 3 had failed
    assert next_pointer(ActiveVersion("2", "1"), "2") == ActiveVersion("2", "1")  # reload: unchanged
    assert next_pointer(ActiveVersion("2", "1"), "1") == ActiveVersion("1", "2")
