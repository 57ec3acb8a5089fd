"""The device's memory of targets it refused: a bad version is not downloaded and gated again every pass.

A target that failed its health gate, or whose verified bytes the installer refused, stays "newer
than the active version" in the signed metadata, so without a memory every sync pass would fetch and
gate it again. The record is a small JSON file on the device (written atomically), keyed by the
target's name *and* sha256: a re-published fixed bundle under the same name has another sha256 and
is tried. Transient failures (transport, no space) are never recorded: they are retried next pass.
The record keeps the newest :data:`MAX_ENTRIES` entries. A record that cannot be read or written
never stops a sync: it is logged and the pass goes on as if it were empty.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from edge_runtime.atomic_io import write_bytes_atomic

log = logging.getLogger(__name__)

RECORD_NAME = "refused-targets.json"
MAX_ENTRIES = 100


@dataclass(frozen=True)
class RefusedTarget:
    """One refused target: what it was (name, sha256), how it ended (outcome, one-line reason) and when."""

    name: str
    sha256: str
    outcome: str  # "refused" or "gate_failed" (edge_runtime.fleet.sync's statuses)
    reason: str
    at: float  # seconds since the epoch


class RefusedTargets:
    """The record at ``path``: looked up by (name, sha256), appended to, capped at ``max_entries`` (oldest out)."""

    def __init__(self, path: Path, max_entries: int = MAX_ENTRIES) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self._entries: Optional[Dict[Tuple[str, str], RefusedTarget]] = None

    def find(self, name: str, sha256: str) -> Optional[RefusedTarget]:
        """The record of this exact target (name and sha256), or None if it was never refused."""
        return self._load().get((name, sha256))

    def add(self, entry: RefusedTarget) -> None:
        """Record ``entry`` (replacing an older record of the same target) and write the file atomically."""
        entries = self._load()
        entries.pop((entry.name, entry.sha256), None)
        entries[(entry.name, entry.sha256)] = entry
        while len(entries) > self.max_entries:
            entries.pop(next(iter(entries)))  # dicts keep insertion order: the first is the oldest
        body = json.dumps({"refused": [asdict(e) for e in entries.values()]}, indent=1).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self.path, body + b"\n")
        except OSError as exc:
            log.warning("sync: %s: cannot record a refused target: %s", self.path, exc.strerror or exc)

    def entries(self) -> List[RefusedTarget]:
        """Every record, oldest first."""
        return list(self._load().values())

    def _load(self) -> Dict[Tuple[str, str], RefusedTarget]:
        if self._entries is None:
            self._entries = {(e.name, e.sha256): e for e in self._read()}  # the file lists oldest first
        return self._entries

    def _read(self) -> List[RefusedTarget]:
        """The file's entries; none when it is missing, and none (logged) when it cannot be read."""
        try:
            data = json.loads(self.path.read_bytes())
            return [RefusedTarget(str(e["name"]), str(e["sha256"]), str(e["outcome"]), str(e["reason"]),
                                  float(e["at"])) for e in data["refused"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("sync: %s: unreadable record of refused targets, starting afresh: %s", self.path, exc)
            return []
