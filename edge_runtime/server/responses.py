"""JSON responses: every answer of the HTTP API, errors included, is ``application/json``."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON response (orjson: fast, and it serializes numpy values)."""
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                    mimetype="application/json")


def error_response(message: str, status: int) -> Response:
    """``{"error": message}`` with ``status``: the one shape of every error the API answers."""
    return json_response({"error": message}, status)
