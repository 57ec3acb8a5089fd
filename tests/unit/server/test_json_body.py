"""object_body: which bodies count as empty, and which are refused as not JSON."""

from __future__ import annotations

import pytest

from edge_runtime.errors import RequestError
from edge_runtime.server.json_body import object_body
from edge_runtime.server.limits import RequestLimits

LIMITS = RequestLimits()


def test_a_body_of_zero_bytes_is_an_empty_object() -> None:
    assert object_body(LIMITS, b"", "index") == {}


@pytest.mark.parametrize("body", [b" ", b" \t\r\n", b"\n\n", b"\x0b", b"\x0c", b" \x0b\n", b"\x0c{}"])
def test_a_body_of_whitespace_alone_or_not_json_whitespace_is_malformed_json(body: bytes) -> None:
    # RFC 8259: a JSON text is a value with optional whitespace around it, so whitespace alone is
    # not one (schemathesis sends b" \t\n\r" and expects a 4xx); \x0b/\x0c are not JSON whitespace.
    with pytest.raises(RequestError, match="malformed JSON") as caught:
        object_body(LIMITS, body, "index")
    assert caught.value.http_status == 400


def test_a_json_object_surrounded_by_json_whitespace_is_parsed() -> None:
    assert object_body(LIMITS, b' \t\r\n{"ready": true}\n', "index") == {"ready": True}


def test_a_json_value_other_than_an_object_is_refused_naming_the_operation() -> None:
    with pytest.raises(RequestError, match="the index request body must be a JSON object"):
        object_body(LIMITS, b"[]", "index")
