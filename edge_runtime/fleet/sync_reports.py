"""Sync reports, device side: what became of each target (and each rollback), queued on disk until the server has it.

A report is one dict of the contract (``POST /api/v1/sync-reports``): ``id`` (uuid4 hex, the
server's idempotency key), ``at``, ``model``, ``version``, ``target``, ``status``, a one-line
``reason`` of at most 500 characters and ``rollout_id``. Reports are appended to a JSON-lines file
in the sync staging directory (written, flushed and fsynced before anything else happens), and a
report leaves the file only after the server answered 200 for the request that carried it: a
SIGKILL at any moment loses none, and one sent twice is stored once. A torn last line (a kill
mid-append) is skipped when read, and the next append starts on a fresh line. Writers (the agent's
sync thread, ``edge-runtime sync --once``) hold an exclusive ``flock`` on the staging directory
while they change the file.

Each request also carries ``installed``: every model's active-version pointer in the repository,
so the server sees what the device serves now. The queue is capped at :data:`MAX_QUEUED` reports
(the oldest go first, logged): a device offline for months must not fill its disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set

from edge_runtime.atomic_io import fsync_dir, write_bytes_atomic
from edge_runtime.errors import ConfigError, EdgeRuntimeError, PointerError
from edge_runtime.fleet.errors import TransportError
from edge_runtime.fleet.sync import FAILED, SyncOutcome
from edge_runtime.fleet.transport import Transport
from edge_runtime.serving.active_version import read_pointer

log = logging.getLogger(__name__)

REPORTS_PATH = "/api/v1/sync-reports"
QUEUE_NAME = "sync-reports.jsonl"
MAX_REASON = 500
MAX_PER_REQUEST = 100
MAX_QUEUED = 2000
MAX_MODELS = 64  # the server's cap on the installed map
_REPORTED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")  # model names the server's map accepts

Report = Dict[str, Any]


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """``text`` on one line (whitespace runs as one space), cut to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def make_report(model: str, version: str, target: str, status: str, reason: str,
                rollout_id: Optional[int], at: float) -> Report:
    """One report of the contract, with a fresh id."""
    return {"id": uuid.uuid4().hex, "at": float(at), "model": model, "version": version, "target": target,
            "status": status, "reason": one_line(reason), "rollout_id": rollout_id}


def outcome_report(outcome: SyncOutcome) -> Report:
    """The report of one pass outcome."""
    return make_report(outcome.model, outcome.version, outcome.target, outcome.status, outcome.reason,
                       outcome.rollout_id, outcome.at)


def worth_reporting(outcome: SyncOutcome) -> bool:
    """False for a failed refresh with no target (the server unreachable): offline, it would repeat every pass."""
    return not (outcome.status == FAILED and not outcome.model)


def installed_map(repository: Path) -> Dict[str, Dict[str, Optional[str]]]:
    """Each model's pointer in the repository: ``{model: {"active": .., "last_good": ..}}`` (readable ones).

    At most :data:`MAX_MODELS`, named as the server accepts: one odd folder must not make every request a 400.
    """
    installed: Dict[str, Dict[str, Optional[str]]] = {}
    try:
        folders = sorted(p for p in repository.iterdir() if _REPORTED_NAME.match(p.name) and p.is_dir())
    except OSError:
        return installed
    for folder in folders[:MAX_MODELS]:
        try:
            pointer = read_pointer(folder)
        except PointerError:
            continue
        if pointer is not None:
            installed[folder.name] = {"active": pointer.active, "last_good": pointer.last_good}
    return installed


class ReportQueue:
    """The JSON-lines file of reports not yet acknowledged, at ``<staging>/sync-reports.jsonl``."""

    def __init__(self, staging: Path, max_queued: int = MAX_QUEUED) -> None:
        self.staging = Path(staging)
        self.path = self.staging / QUEUE_NAME
        self.max_queued = max_queued

    def append(self, reports: Sequence[Report]) -> None:
        """Add ``reports`` durably (fsynced); OutputError-free: a failure is logged (the pass result stands)."""
        if not reports:
            return
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in reports)
        try:
            with self._locked():
                self._append_locked(data)
                if len(self._read()) > self.max_queued:
                    self._trim_locked()
        except (OSError, EdgeRuntimeError) as exc:
            log.error("sync reports: cannot queue %d report(s) in %s: %s", len(reports), self.path, exc)

    def pending(self) -> List[Report]:
        """The queued reports, oldest first; a torn or unreadable line is skipped."""
        return self._read()

    def drop(self, ids: Set[str]) -> None:
        """Remove the reports whose ids the server acknowledged (the file goes when it is empty)."""
        if not ids:
            return
        with self._locked():
            self._rewrite([r for r in self._read() if r.get("id") not in ids])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.staging.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.staging, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _append_locked(self, data: bytes) -> None:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and not _ends_with_newline(self.path, size):
                data = b"\n" + data  # a kill tore the last line: never glue a new report onto it
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.staging)

    def _trim_locked(self) -> None:
        reports = self._read()
        extra = len(reports) - self.max_queued
        log.warning("sync reports: %d queued, more than %d: the oldest %d dropped unsent", len(reports),
                    self.max_queued, extra)
        self._rewrite(reports[extra:])

    def _rewrite(self, reports: List[Report]) -> None:
        if not reports:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            fsync_dir(self.staging)
            return
        write_bytes_atomic(self.path, b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n"
                                               for r in reports))

    def _read(self) -> List[Report]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.error("sync reports: cannot read %s: %s", self.path, exc.strerror or exc)
            return []
        reports: List[Report] = []
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                report = json.loads(line)
            except ValueError:
                log.warning("sync reports: %s: a torn or unreadable line skipped", self.path)
                continue
            if isinstance(report, dict) and isinstance(report.get("id"), str):
                reports.append(report)
        return reports


def _ends_with_newline(path: Path, size: int) -> bool:
    with path.open("rb") as handle:
        handle.seek(size - 1)
        return handle.read(1) == b"\n"


@dataclass(frozen=True)
class FlushResult:
    """What one flush did: reports acknowledged, reports still queued, and why it stopped ('' when all went)."""

    sent: int
    kept: int
    error: str = ""


class ReportSender:
    """Posts the queue to the server in requests of at most 100 reports; drops only what a 200 acknowledged."""

    def __init__(self, queue: ReportQueue, transport: Transport, device_id: str, token: Callable[[], str],
                 installed: Callable[[], Dict[str, Dict[str, Optional[str]]]]) -> None:
        self.queue = queue
        self._transport = transport
        self._device_id = device_id
        self._token = token
        self._installed = installed

    def flush(self) -> FlushResult:
        """Send every queued report; never raises for the server's or the network's trouble."""
        sent = 0
        batch_limit = MAX_PER_REQUEST
        while True:
            pending = self.queue.pending()
            if not pending:
                return FlushResult(sent, 0)
            batch = pending[:batch_limit]
            try:
                body = json.dumps({"device_id": self._device_id, "reports": batch,
                                   "installed": self._installed()}).encode()
                reply = self._transport(REPORTS_PATH, body, {"Authorization": f"Bearer {self._token()}",
                                                             "Content-Type": "application/json"})
            except (TransportError, ConfigError) as exc:  # ConfigError: the token file is missing
                return self._kept(sent, len(pending), str(exc))
            if reply.status == 200:
                try:
                    self.queue.drop({str(r["id"]) for r in batch})
                except (OSError, EdgeRuntimeError) as exc:  # sent again later: the server stores it once
                    return self._kept(sent, len(pending), f"acknowledged, but not removed from the queue: {exc}")
                sent += len(batch)
                batch_limit = min(MAX_PER_REQUEST, batch_limit * 2)
                continue
            payload = reply.json()
            error = payload.get("error") if isinstance(payload, dict) else None
            message = f"{REPORTS_PATH} answered {reply.status}: {error or reply.body[:200]!r}"
            if reply.status != 400:
                return self._kept(sent, len(pending), message)
            if len(batch) > 1:
                batch_limit = max(1, len(batch) // 2)  # narrow down to the report the server refuses
                continue
            log.error("sync report %s refused by the server and dropped: %s", batch[0]["id"], message)
            try:
                self.queue.drop({str(batch[0]["id"])})
            except (OSError, EdgeRuntimeError) as exc:
                return self._kept(sent, len(pending), f"cannot remove a refused report: {exc}")

    def _kept(self, sent: int, kept: int, message: str) -> FlushResult:
        log.warning("sync reports: %d kept for a later try: %s", kept, message)
        return FlushResult(sent, kept, message)


def report_sender(queue: ReportQueue, transport: Transport, device_id: str, token: Callable[[], str],
                  repository: Path) -> ReportSender:
    """A sender whose ``installed`` map is read from ``repository`` at each request."""
    return ReportSender(queue, transport, device_id, token, lambda: installed_map(repository))
