"""The telemetry spool: a bounded SQLite file of records waiting for the agent to upload them.

Two processes share one file: the runtime appends (``append``), the agent reads and acknowledges
(``pending``, ``ack``). SQLite in WAL mode with ``synchronous=FULL`` makes each append durable when
it returns and lets the reader work while the writer writes; ``busy_timeout`` covers the short
moments when both want the write lock.

Sequences come from ``AUTOINCREMENT``, so a sequence is never reused, not after ``ack`` or drops
and not after a restart: ``(device_id, sequence)`` identifies a record for good, which is what lets
the server ingest idempotently. The bound (``max_bytes``) is on the records' stored size, the sum
of their UTF-8 JSON bytes (kept in a counter row, so no append scans the table); the file itself is
larger by SQLite's per-row and per-page overhead, and reuses the pages that ``ack`` frees. Past the
bound the oldest records are deleted and added to the persistent ``dropped`` counter; a record
larger than :data:`MAX_RECORD_BYTES` is never stored and is counted as dropped too.

A spool SQLite reports as corrupt ("file is not a database", "malformed") is renamed aside
(``<name>.corrupt-<unix time>``) and recreated, and ``recreated`` counts it; its records are lost,
and the new file's sequences start above both the last sequence this process saw and the clock in
milliseconds, so that no sequence the server may already hold comes back (the same when the file
is removed under a running process; each process follows the path, so both move to the new file).
``append`` never raises (the runtime's sampler must not die of its spool): a problem is logged once
and the sample is skipped. The agent's calls raise :class:`SpoolError` for what is not corruption.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, TypeVar, Union

from edge_runtime.errors import EdgeRuntimeError

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 256 * 1024  # one sample is a few KiB; a batch body is capped at 1 MiB
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS records (sequence INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0), ('stored_bytes', 0), ('recreated', 0), "
    "('rejected', 0)",
)
_CORRUPT_MARKERS = ("not a database", "malformed", "corrupt")
T = TypeVar("T")


class SpoolError(EdgeRuntimeError):
    """The spool file cannot be read or written (not corruption, which is recovered from): e.g. locked, no space."""

    http_status = 503


class Spool:
    """A bounded, durable FIFO of telemetry records with never-reused sequence numbers."""

    def __init__(self, path: Union[str, os.PathLike[str]], max_bytes: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._last_sequence = 0
        self._recreated_here = 0
        self._logged: Set[str] = set()
        self._identity: Optional[Tuple[int, int]] = None
        self._connection = self._open_or_recreate()

    # --- the runtime's side ----------------------------------------------------------------

    def append(self, record: Dict[str, Any]) -> Optional[int]:
        """Store one record durably; its sequence, or None when the spool could not take it (logged, counted)."""
        body = _encode(record)
        if len(body) > MAX_RECORD_BYTES:
            self._log_once(f"telemetry spool: dropped a record of {len(body)} bytes (limit {MAX_RECORD_BYTES})")
            with contextlib.suppress(SpoolError):  # logged
                self._guarded(lambda: self._count_dropped(1))
            return None
        try:
            return self._guarded(lambda: self._append(body))
        except SpoolError:
            return None  # logged; the runtime goes on without this sample

    def _append(self, body: bytes) -> int:
        connection = self._connection
        with _immediate(connection):
            cursor = connection.execute("INSERT INTO records (body) VALUES (?)", (body,))
            sequence = int(cursor.lastrowid or 0)
            stored = self._scalar("SELECT value FROM counters WHERE name = 'stored_bytes'") + len(body)
            if stored > self.max_bytes:
                stored -= self._drop_oldest(stored - self.max_bytes)
            connection.execute("UPDATE counters SET value = ? WHERE name = 'stored_bytes'", (stored,))
        self._last_sequence = sequence
        return sequence

    def _drop_oldest(self, excess: int) -> int:
        """Delete the oldest records until ``excess`` bytes are freed; count them; return the bytes freed."""
        freed, count, through = 0, 0, 0
        rows = self._connection.execute("SELECT sequence, length(body) FROM records ORDER BY sequence")
        for sequence, size in rows:
            freed, count, through = freed + int(size), count + 1, int(sequence)
            if freed >= excess:
                break
        rows.close()
        self._connection.execute("DELETE FROM records WHERE sequence <= ?", (through,))
        self._connection.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (count,))
        return freed

    def _count_dropped(self, count: int) -> None:
        with _immediate(self._connection):
            self._connection.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (count,))

    # --- the agent's side ------------------------------------------------------------------

    def pending(self, limit: int, after: int = 0) -> List[Tuple[int, Dict[str, Any]]]:
        """Up to ``limit`` records waiting for upload, oldest first, as (sequence, record)."""
        return [(sequence, json.loads(body)) for sequence, body in self.pending_raw(limit, after)]

    def pending_raw(self, limit: int, after: int = 0) -> List[Tuple[int, bytes]]:
        """As :meth:`pending`, each record as the JSON bytes stored (what the uploader sends)."""
        rows = self._guarded(lambda: self._connection.execute(
            "SELECT sequence, body FROM records WHERE sequence > ? ORDER BY sequence LIMIT ?", (after, limit)
        ).fetchall())
        records = [(int(sequence), bytes(body)) for sequence, body in rows]
        if records:
            self._last_sequence = max(self._last_sequence, records[-1][0])
        return records

    def ack(self, through: int) -> int:
        """Delete the records up to and including sequence ``through`` (the server holds them); how many."""
        return self._guarded(lambda: self._ack(through))

    def _ack(self, through: int) -> int:
        with _immediate(self._connection):
            count, size = self._connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM records WHERE sequence <= ?", (through,)
            ).fetchone()
            if count:
                self._connection.execute("DELETE FROM records WHERE sequence <= ?", (through,))
                self._connection.execute(
                    "UPDATE counters SET value = value - ? WHERE name = 'stored_bytes'", (int(size),)
                )
        return int(count)

    def reject(self, sequence: int) -> int:
        """Delete one record the server refused for what it holds (400), counted in ``rejected``; how many."""
        return self._guarded(lambda: self._reject(sequence))

    def _reject(self, sequence: int) -> int:
        with _immediate(self._connection):
            row = self._connection.execute("SELECT length(body) FROM records WHERE sequence = ?",
                                           (sequence,)).fetchone()
            if row is None:
                return 0
            self._connection.execute("DELETE FROM records WHERE sequence = ?", (sequence,))
            self._connection.execute("UPDATE counters SET value = value - ? WHERE name = 'stored_bytes'",
                                     (int(row[0]),))
            self._connection.execute("INSERT OR IGNORE INTO counters (name, value) VALUES ('rejected', 0)")
            self._connection.execute("UPDATE counters SET value = value + 1 WHERE name = 'rejected'")
        return 1

    # --- counters --------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Records the bound (or the record size limit) forced out before upload, since the spool was created."""
        return self._guarded(lambda: self._scalar("SELECT value FROM counters WHERE name = 'dropped'"))

    @property
    def rejected(self) -> int:
        """Records the server refused as invalid (400) one by one, deleted so they cannot block the queue."""
        return self._guarded(lambda: self._scalar(
            "SELECT COALESCE((SELECT value FROM counters WHERE name = 'rejected'), 0)"))

    @property
    def stored_bytes(self) -> int:
        """The records' stored size now (what ``max_bytes`` bounds)."""
        return self._guarded(lambda: self._scalar("SELECT value FROM counters WHERE name = 'stored_bytes'"))

    @property
    def recreated(self) -> int:
        """How often a corrupt spool file was set aside and recreated (persisted, plus this process's)."""
        persisted = self._guarded(lambda: self._scalar("SELECT value FROM counters WHERE name = 'recreated'"))
        return max(persisted, self._recreated_here)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._connection.close()

    # --- opening and recovery --------------------------------------------------------------

    def _guarded(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` under the lock on the current file; a corrupt file is set aside and retried once."""
        with self._lock:
            try:
                self._reopen_if_replaced()
                return operation()
            except (sqlite3.Error, OSError) as exc:  # OSError: the folder went missing or unwritable
                if not isinstance(exc, sqlite3.Error) or not _is_corrupt(exc):
                    raise self._failure(exc, "") from exc
                corrupt = exc
            try:
                self._recover(corrupt)
                return operation()
            except (sqlite3.Error, OSError) as exc:
                raise self._failure(exc, "still failing after recreating it: ") from exc

    def _failure(self, exc: Exception, context: str) -> SpoolError:
        message = f"telemetry spool {self.path}: {context}{exc}"
        self._log_once(message)
        return SpoolError(message)

    def _reopen_if_replaced(self) -> None:
        """The other process may have set a corrupt file aside: follow the path, not the old inode."""
        try:
            identity: Optional[Tuple[int, int]] = _identity(self.path)
        except OSError:
            identity = None
        if identity == self._identity:
            return
        self._connection.close()
        if identity is None:
            log.error("telemetry spool %s was removed: starting a new one", self.path)
            self._connection = self._fresh()
        else:
            self._connection = _open(self.path)
        self._identity = _identity(self.path)

    def _open_or_recreate(self) -> sqlite3.Connection:
        try:
            connection = _open(self.path)
        except (sqlite3.Error, OSError) as exc:
            if not isinstance(exc, sqlite3.Error) or not _is_corrupt(exc):
                raise SpoolError(f"telemetry spool {self.path}: cannot open: {exc}") from exc
            self._set_aside(exc)
            connection = self._fresh()
        self._identity = _identity(self.path)
        return connection

    def _recover(self, exc: sqlite3.Error) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._connection.close()
        self._set_aside(exc)
        self._connection = self._fresh()
        self._identity = _identity(self.path)

    def _set_aside(self, exc: sqlite3.Error) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self._clock())}")
        log.error("telemetry spool %s is corrupt (%s): moved to %s, starting a new one", self.path, exc, aside)
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, f"{aside}{suffix}")
        self._recreated_here += 1

    def _fresh(self) -> sqlite3.Connection:
        connection = _open(self.path)
        floor = max(self._last_sequence, int(self._clock() * 1000))
        with _immediate(connection):
            connection.execute("DELETE FROM sqlite_sequence WHERE name = 'records'")
            connection.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('records', ?)", (floor,))
            connection.execute("UPDATE counters SET value = ? WHERE name = 'recreated'", (self._recreated_here,))
        return connection

    def _scalar(self, sql: str) -> int:
        row = self._connection.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def _log_once(self, message: str) -> None:
        if message not in self._logged:
            self._logged.add(message)
            log.error("%s", message)


def _identity(path: Path) -> Tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def _open(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the spool database in WAL mode with full sync and the schema in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                 check_same_thread=False)
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        if not mode or str(mode[0]).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode!r})")
        connection.execute("PRAGMA synchronous = FULL")
        with _immediate(connection):
            for statement in _SCHEMA:
                connection.execute(statement)
        # Make sure AUTOINCREMENT's counter row exists before anyone reads or bumps it.
        with _immediate(connection):
            connection.execute(
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'records', 0 "
                "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'records')"
            )
    except BaseException:
        connection.close()
        raise
    return connection


class _immediate:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error): take the write lock up front, no upgrade deadlock."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self._connection.execute("BEGIN IMMEDIATE")
        return self._connection

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        if kind is None:
            self._connection.execute("COMMIT")
            return
        with contextlib.suppress(sqlite3.Error):  # the failed statement may have ended the transaction already
            self._connection.execute("ROLLBACK")


def _is_corrupt(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _CORRUPT_MARKERS)


def _encode(record: Dict[str, Any]) -> bytes:
    """Compact JSON bytes; a NaN or infinity (not JSON) becomes null rather than poisoning the upload."""
    try:
        text = json.dumps(record, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(record), separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
