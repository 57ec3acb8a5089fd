"""The uploader: sends the spool's records to the central server's ingest endpoint, oldest first.

One :meth:`Uploader.step` reads up to ``batch_max_records`` records in sequence order, packs them
into a body of at most 1 MiB (fewer records when they do not fit), POSTs it and, on 200, deletes
from the spool the records through the server's ``acked_through`` — never more than the batch
held, so a record is deleted only after the server said it has it. The server ingests by
``(device_id, sequence)``, so a batch sent again after a crash or a lost answer is stored once.

Failures keep the records and return a wait: 429/503 and network errors back off with jitter and
honour ``Retry-After``; another 4xx (401/403: the token is wrong or revoked; 413) is logged
once per distinct error and backs off the same way, and 413 also halves the batch. A 400 says a
record is invalid (malformed, or its time too far ahead of the server's clock): the batch is halved
until the one record the server refuses is alone, and that record — refused for what it holds, so
it would be refused forever — is deleted, counted in the spool's ``rejected`` counter and logged
with the server's reason, so it cannot block every record after it. The batch size grows back after
each success. The token is read through a callable on every request, so a rotated token file is
picked up without a restart.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from edge_runtime.errors import ConfigError
from edge_runtime.fleet.backoff import Backoff, parse_retry_after
from edge_runtime.fleet.errors import TransportError
from edge_runtime.fleet.transport import Reply, Transport
from edge_runtime.telemetry.spool import Spool, SpoolError

log = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/ingest"
MAX_BODY_BYTES = 1024 * 1024
_RETRY_STATUSES = (429, 503)


@dataclass(frozen=True)
class Outcome:
    """What one step did: records acknowledged, and how long to wait before the next step (0: at once)."""

    acked: int
    wait_s: float
    idle: bool = False  # the spool had nothing to send


class Uploader:
    """Moves records from the spool to the server, one batch per :meth:`step`."""

    def __init__(self, spool: Spool, transport: Transport, device_id: str, token: Callable[[], str],
                 facts: Mapping[str, Any], backoff: Backoff, batch_max_records: int = 500,
                 poll_s: float = 10.0) -> None:
        self.spool = spool
        self.backoff = backoff
        self.batch_limit = batch_max_records
        self._batch_max = batch_max_records
        self._transport = transport
        self._device_id = device_id
        self._token = token
        self._facts = dict(facts)
        self._poll_s = poll_s
        self._logged: Set[str] = set()

    def step(self) -> Outcome:
        """Send the oldest pending batch once; never raises for the server's or the spool's trouble."""
        try:
            records = self.spool.pending_raw(self.batch_limit)
            if not records:
                return Outcome(0, self._poll_s, idle=True)
            body, last = build_body(self._device_id, self.spool.dropped, self._facts, records)
            reply = self._transport(INGEST_PATH, body, self._headers())
        except (TransportError, SpoolError, ConfigError) as exc:  # ConfigError: the token file went missing
            return self._fail(str(exc), None)
        if reply.status == 200:
            return self._acknowledge(reply, records[0][0], last)
        if reply.status == 400:
            return self._invalid(reply, records[0][0], last)
        return self._refused(reply)

    def _headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self._token()}", "Content-Type": "application/json"}

    def _acknowledge(self, reply: Reply, first: int, last: int) -> Outcome:
        payload = reply.json()
        through = payload.get("acked_through") if isinstance(payload, dict) else None
        if not isinstance(through, int) or isinstance(through, bool) or through < first:
            return self._fail(f"ingest answered 200 without a usable acked_through: {reply.body[:200]!r}", None)
        try:
            acked = self.spool.ack(min(through, last))
        except SpoolError as exc:
            return self._fail(str(exc), None)
        if self.backoff.failures:
            log.info("telemetry upload works again after %d failed tries", self.backoff.failures)
        self.backoff.reset()
        self._logged.clear()
        self.batch_limit = min(self._batch_max, self.batch_limit * 2)
        return Outcome(acked, 0.0)

    def _invalid(self, reply: Reply, first: int, last: int) -> Outcome:
        """400: narrow the batch down to the refused record, then set that one record aside."""
        if first != last:
            self.batch_limit = max(1, min(self.batch_limit, last - first + 1) // 2)
            return Outcome(0, 0.0)
        payload = reply.json()
        error = payload.get("error") if isinstance(payload, dict) else None
        try:
            self.spool.reject(first)
        except SpoolError as exc:
            return self._fail(str(exc), None)
        log.error("telemetry record %d refused by the server and deleted: %s", first, error or reply.body[:200])
        return Outcome(0, 0.0)

    def _refused(self, reply: Reply) -> Outcome:
        payload = reply.json()
        error = payload.get("error") if isinstance(payload, dict) else None
        message = f"ingest answered {reply.status}: {error or reply.body[:200]!r}"
        if reply.status in (401, 403):
            message += " (check the device token in token_file; the records are kept)"
        if reply.status == 413 and self.batch_limit > 1:
            self.batch_limit = max(1, self.batch_limit // 2)
        retry_after = parse_retry_after(reply.headers.get("retry-after")) if reply.status in _RETRY_STATUSES else None
        return self._fail(message, retry_after)

    def _fail(self, message: str, retry_after_s: Optional[float]) -> Outcome:
        if message not in self._logged:
            self._logged.add(message)
            log.warning("telemetry upload failed (will retry with backoff): %s", message)
        return Outcome(0, self.backoff.next_delay(retry_after_s))


def build_body(device_id: str, dropped: int, facts: Mapping[str, Any],
               records: List[Tuple[int, bytes]], max_bytes: int = MAX_BODY_BYTES) -> Tuple[bytes, int]:
    """The ingest body for as many of ``records`` as fit in ``max_bytes`` (at least one); and its last sequence.

    Records are spliced in as the JSON bytes the spool stored, so the size is exact and nothing is re-encoded.
    """
    head = json.dumps({"device_id": device_id, "dropped": dropped, "facts": dict(facts)}, separators=(",", ":"))
    parts = [head[:-1].encode("utf-8") + b',"records":[']
    size = len(parts[0]) + len(b"]}")
    last = records[0][0]
    for index, (sequence, raw) in enumerate(records):
        item = b'%s{"sequence":%d,"record":%s}' % (b"," if index else b"", sequence, raw)
        if index and size + len(item) > max_bytes:
            break
        parts.append(item)
        size += len(item)
        last = sequence
    parts.append(b"]}")
    return b"".join(parts), last
