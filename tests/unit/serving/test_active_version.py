"""The active-version pointer: atomic writes, strict reads, what becomes last good."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import List, Optional

import pytest

from edge_runtime import errors
from edge_runtime.serving import memory_budget
from edge_runtime.serving.active_version import (
    POINTER_NAME,
    ActiveVersion,
    PointerError,
    next_pointer,
    read_pointer,
    record_active,
    startup_versions,
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


@pytest.mark.parametrize("pointer, on_disk, expected", [
    (None, ["1", "2", "10"], ["10", "2", "1"]),
    (ActiveVersion("2", "1"), ["1", "2", "3"], ["2", "1"]),
    (ActiveVersion("2"), ["1", "2", "3"], ["2"]),
])
def test_startup_versions(tmp_path: Path, pointer: Optional[ActiveVersion], on_disk: List[str],
                          expected: List[str]) -> None:
    if pointer is not None:
        write_pointer(tmp_path, pointer)
    assert startup_versions(tmp_path, on_disk) == (expected, "")


def test_an_invalid_pointer_at_startup_tries_every_version_and_says_why(tmp_path: Path) -> None:
    (tmp_path / POINTER_NAME).write_bytes(b"{")
    versions, note = startup_versions(tmp_path, ["1", "2"])
    assert versions == ["2", "1"] and "not valid JSON" in note and "ignored" in note


def test_record_active_replaces_an_invalid_pointer(tmp_path: Path) -> None:
    (tmp_path / POINTER_NAME).write_bytes(b"{")
    assert record_active(tmp_path, "3", "2") == ActiveVersion("3", "2") == read_pointer(tmp_path)


def test_pointer_and_budget_errors_are_in_the_one_tree_with_their_status() -> None:
    assert PointerError is errors.PointerError and PointerError.http_status == 500
    assert memory_budget.MemoryBudgetError is errors.MemoryBudgetError and errors.MemoryBudgetError.http_status == 409
    assert issubclass(PointerError, errors.EdgeRuntimeError)
    assert issubclass(errors.MemoryBudgetError, errors.EdgeRuntimeError)
