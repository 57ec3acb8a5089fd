"""JSON objects in request bodies: a body parsed as one object, and an object's keys checked.

Shared by the telemetry batch (batch.py), the agents' sync reports (sync_reports.py) and the admin
API's bodies (routes.py), so that every fleet endpoint refuses a malformed body the same way: a
BadBatchError (400) whose one line names the path at fault.
"""

from __future__ import annotations

import json
from typing import Any, Collection, Dict, Mapping

from fleet_server.errors import BadBatchError

MAX_KEYS = 64  # keys per object where unknown keys are ignored, known ones included


def object_body(data: bytes) -> Dict[str, Any]:
    """``data`` parsed as a JSON object; BadBatchError when it is not JSON or not an object."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadBatchError("expected a JSON object body") from exc
    if not isinstance(document, dict):
        raise BadBatchError("expected a JSON object body")
    return document


def checked_object(value: Any, path: str, allowed: Collection[str], required: Collection[str],
                   lenient: bool = False) -> Mapping[str, Any]:
    """``value`` if it is an object holding every ``required`` key.

    A key outside ``allowed`` is refused, or, when ``lenient``, ignored (at most MAX_KEYS keys):
    a device running a newer runtime may send figures an older server does not know.
    """
    if not isinstance(value, dict):
        raise BadBatchError(f"{path}: expected an object with keys {', '.join(allowed)}")
    if lenient and len(value) > MAX_KEYS:
        raise BadBatchError(f"{path}: expected at most {MAX_KEYS} keys")
    for key in value if not lenient else ():
        if key not in allowed:
            raise BadBatchError(f"{path}: unknown key {str(key)[:40]!r} (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in value:
            raise BadBatchError(f"{path}: missing key {key!r}")
    return value
