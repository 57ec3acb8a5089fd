"""The telemetry spool: durable, bounded, never-reused sequences, two processes, corruption survived."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List

import pytest

from edge_runtime.telemetry.spool import MAX_RECORD_BYTES, Spool


def sample(index: int) -> Dict[str, Any]:
    return {"time": 1764086400.0 + 10 * index, "interval_s": 10.0, "process": {"rss_mb": 100.0 + index}}


def size_of(record: Dict[str, Any]) -> int:
    return len(json.dumps(record, separators=(",", ":")).encode())


def test_sequences_increase_and_pending_is_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", 1 << 20)
    sequences = [spool.append(sample(i)) for i in range(5)]
    assert sequences == [1, 2, 3, 4, 5]
    assert spool.pending(3) == [(1, sample(0)), (2, sample(1)), (3, sample(2))]
    assert [seq for seq, _ in spool.pending(10, after=3)] == [4, 5]
    assert spool.ack(2) == 2
    assert [seq for seq, _ in spool.pending(10)] == [3, 4, 5]
    spool.close()


def test_sequences_are_never_reused_after_ack_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, 1 << 20)
    for i in range(3):
        spool.append(sample(i))
    spool.ack(3)  # the table is empty now: a plain rowid would start again at 1
    spool.close()
    reopened = Spool(path, 1 << 20)
    assert reopened.append(sample(3)) == 4
    reopened.close()


def test_wal_and_full_sync(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", 1 << 20)
    spool.append(sample(0))
    assert spool._connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert spool._connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert spool._connection.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    spool.close()


def test_bound_drops_oldest_and_counts_persistently(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    one = size_of(sample(0))
    spool = Spool(path, 10 * one)
    for i in range(25):
        spool.append(sample(i))
    kept = [seq for seq, _ in spool.pending(100)]
    assert kept == list(range(16, 26))
    assert spool.dropped == 15
    assert spool.stored_bytes <= 10 * one
    spool.close()
    reopened = Spool(path, 10 * one)
    assert reopened.dropped == 15
    assert reopened.append(sample(25)) == 26
    assert reopened.dropped == 16
    reopened.close()


def test_acked_records_free_room_without_counting_as_dropped(tmp_path: Path) -> None:
    one = size_of(sample(0))
    spool = Spool(tmp_path / "spool.sqlite", 4 * one)
    for i in range(4):
        spool.append(sample(i))
    spool.ack(4)
    for i in range(4, 8):
        spool.append(sample(i))
    assert spool.dropped == 0
    assert spool.stored_bytes == 4 * one
    spool.close()


def test_oversized_record_is_counted_not_stored(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", 1 << 20)
    assert spool.append({"blob": "x" * (MAX_RECORD_BYTES + 1)}) is None
    assert spool.dropped == 1
    assert spool.pending(10) == []
    spool.close()


def test_non_finite_numbers_become_null(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", 1 << 20)
    spool.append({"p50_ms": float("nan"), "models": [{"p99_ms": float("inf")}]})
    assert spool.pending(1)[0][1] == {"p50_ms": None, "models": [{"p99_ms": None}]}
    spool.close()


def test_corrupt_file_is_set_aside_and_sequences_stay_above_the_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    path.write_bytes(b"this is not a sqlite database, just garbage" * 100)
    spool = Spool(path, 1 << 20, clock=lambda: 1764086400.0)
    assert spool.recreated == 1
    assert len(list(tmp_path.glob("spool.sqlite.corrupt-*"))) == 1
    sequence = spool.append(sample(0))
    assert sequence is not None and sequence > 1764086400000  # above the clock in ms: no reuse
    spool.close()


def test_corruption_found_while_running_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, 1 << 20, clock=lambda: 1764086400.0)
    first = spool.append(sample(0))
    spool._connection.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"\x00garbage" * 2048)
    spool._connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    spool._identity = None  # as if opened before the damage
    with caplog.at_level(logging.ERROR):
        later = spool.append(sample(1))
    assert first == 1 and later is not None and later > 1764086400000
    assert spool.recreated == 1
    assert "corrupt" in caplog.text
    spool.close()


def test_a_write_failure_is_logged_once_and_append_returns_none(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path / "spool.sqlite", 1 << 20)
    spool._connection.execute("PRAGMA query_only = ON")  # every write fails: "attempt to write a readonly database"
    with caplog.at_level(logging.ERROR):
        results = [spool.append(sample(i)) for i in range(3)]
    assert results == [None, None, None]
    assert len([r for r in caplog.records if "readonly" in r.getMessage()]) == 1
    spool.close()


def test_removed_file_is_recreated_with_higher_sequences(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, 1 << 20, clock=lambda: 1764086400.0)
    spool.append(sample(0))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    sequence = spool.append(sample(1))
    assert path.exists() and sequence is not None and sequence > 1764086400000
    spool.close()


WRITER = textwrap.dedent("""
    import sys
    from edge_runtime.telemetry.spool import Spool
    spool = Spool(sys.argv[1], 1 << 30)
    for index in range(int(sys.argv[2])):
        assert spool.append({"index": index}) is not None
    spool.close()
""")


def test_two_processes_one_appending_one_acknowledging(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    total = 1500
    reader = Spool(path, 1 << 30)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(total)])
    seen: List[int] = []
    indexes: List[int] = []
    while True:
        finished = writer.poll() is not None
        batch = reader.pending(50)
        if batch:
            seen.extend(seq for seq, _ in batch)
            indexes.extend(record["index"] for _, record in batch)
            reader.ack(batch[-1][0])
        elif finished:
            break
    assert writer.wait() == 0
    assert seen == list(range(1, total + 1))
    assert indexes == list(range(total))
    assert reader.pending(10) == [] and reader.dropped == 0 and reader.stored_bytes == 0
    reader.close()


def test_an_unusable_folder_is_a_spool_error_at_open_and_none_on_append(tmp_path: Path) -> None:
    from edge_runtime.telemetry.spool import SpoolError

    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SpoolError, match="a-file"):
        Spool(tmp_path / "a-file" / "spool.sqlite", 1 << 20)
    folder = tmp_path / "telemetry"
    spool = Spool(folder / "spool.sqlite", 1 << 20)
    assert spool.append(sample(0)) == 1
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    folder.write_text("now a file where the folder was")
    assert spool.append(sample(1)) is None  # logged, not raised: the runtime's sampler goes on
    spool.close()
