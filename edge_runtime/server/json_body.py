"""Request bodies as JSON: parsing under the caps of RequestLimits, and reading typed fields.

Why orjson: an inference request may carry millions of numbers in ``data`` lists; orjson parses
them several times faster than the standard library, serializes numpy arrays itself (in C) for
JSON responses, and refuses NaN/Infinity literals, which JSON does not have. Its price is
transient memory: while parsing, it holds a working buffer of about 14x the body (42 MB for a
3.1 MB body of 150k floats; the standard library needed 8 MB but 5.6x the time: see
scripts/bench/json_parse_bench.py). Parsing holds the GIL, so one such buffer exists at a time:
at the JSON cap (``limits.max_json_bytes``, 4 MiB by default: a body with no binary section, or
the JSON header of one that has it), about 60 MB once. Local apps that send large tensors use
the binary extension, whose bodies have the larger ``max_request_bytes`` cap.

The depth cap is checked by walking the containers of the parsed document. The scalar elements
of a list are not visited one by one in Python: ``set(map(type, items))`` runs in C and tells
whether a list holds any container at all. A caller may also name lists that are not walked
(an inference input's ``data``, whose nesting numpy's conversion checks against the shape).
orjson itself stops at 1024 levels, so nothing unbounded happens before the walk.
"""

from __future__ import annotations

from typing import Any, Collection, Dict, List, Optional, Tuple, Union

import orjson

from edge_runtime.errors import RequestError, RequestTooLargeError
from edge_runtime.server.limits import RequestLimits

_CONTAINERS = frozenset((list, dict))
_KINDS = {
    "str": ("a string", lambda value: isinstance(value, str)),
    "bool": ("a boolean", lambda value: isinstance(value, bool)),
    "int": ("an integer", lambda value: isinstance(value, int) and not isinstance(value, bool)),
    "object": ("an object", lambda value: isinstance(value, dict)),
    "list": ("a list", lambda value: isinstance(value, list)),
}


def parse_json_body(body: Union[bytes, memoryview], limits: RequestLimits) -> Any:
    """Parse a request body as JSON, refusing oversized bodies and over-deep nesting."""
    document = load_json(body, limits)
    check_json_depth(document, limits.max_json_depth)
    return document


def load_json(body: Union[bytes, memoryview], limits: RequestLimits) -> Any:
    """Parse JSON with the size cap but without the depth check (the caller does it)."""
    check_body_size(len(body), limits)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON: {exc}") from exc


def check_json_size(size: int, limits: RequestLimits, binary: bool = False) -> None:
    """RequestTooLargeError when ``size`` bytes of JSON (a whole body, or a binary request's header) pass the JSON cap.

    Parsing holds the GIL (every other thread waits), so JSON has its own, lower cap than the
    binary extension's bodies.
    """
    if size > limits.max_json_bytes:
        what = "the JSON header of the request" if binary else "a JSON request body"
        raise RequestTooLargeError(
            f"{what} of {size} bytes is over the limit of {limits.max_json_bytes} bytes for JSON "
            "(limits.max_json_bytes): send large tensors with the binary tensor extension "
            "(parameters.binary_data_size, Inference-Header-Content-Length)"
        )


def check_body_size(size: int, limits: RequestLimits) -> None:
    """RequestTooLargeError when a body of ``size`` bytes is over the configured cap."""
    if size > limits.max_request_bytes:
        raise RequestTooLargeError(
            f"request body of {size} bytes is over the limit of {limits.max_request_bytes} bytes"
        )


def check_json_depth(document: Any, max_depth: int, skip: Collection[int] = ()) -> None:
    """RequestError when containers nest deeper than ``max_depth``; ``skip`` holds ids of lists not walked."""
    if type(document) not in _CONTAINERS:
        return
    stack: List[Tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise RequestError(f"JSON nesting is deeper than {max_depth} levels")
        if isinstance(value, dict):
            children: Collection[Any] = value.values()
        elif _CONTAINERS.isdisjoint(set(map(type, value))):
            continue
        else:
            children = value
        stack.extend(
            (child, depth + 1) for child in children if type(child) in _CONTAINERS and id(child) not in skip
        )


def describe(value: Any) -> str:
    """A JSON value's type in words, for error messages ("a string", "null", ...)."""
    if value is None:
        return "null"
    for description, check in _KINDS.values():
        if check(value):
            return description
    return "a number" if isinstance(value, float) else type(value).__name__


def get_field(obj: Dict[str, Any], key: str, kind: str, where: str, required: bool = False) -> Any:
    """``obj[key]`` checked to be of ``kind`` (str, bool, int, object, list); None when absent."""
    if key not in obj:
        if required:
            raise RequestError(f"{where}: {key}: required")
        return None
    value = obj[key]
    description, check = _KINDS[kind]
    if not check(value):
        raise RequestError(f"{where}: {key}: expected {description}, got {describe(value)}")
    return value


def get_count(obj: Dict[str, Any], key: str, where: str) -> Optional[int]:
    """``obj[key]`` checked to be an integer >= 0 (a byte size or offset); None when absent."""
    value = get_field(obj, key, "int", where)
    if value is not None and value < 0:
        raise RequestError(f"{where}: {key}: expected an integer >= 0, got {value}")
    return value


def object_body(limits: RequestLimits, data: bytes, what: str) -> Dict[str, Any]:
    """Parse a JSON-object request body under the request limits; an empty body is ``{}``.

    Empty means zero bytes, as in Triton's server (which parses a body only when it has a
    length): a body of whitespace alone is not a JSON text (RFC 8259 needs a value), so it is
    malformed JSON like any other. Any other JSON value (``null``, a list, a number) is a bad request naming ``what``.
    """
    check_json_size(len(data), limits)
    if not data:
        return {}
    body = parse_json_body(data, limits)
    if not isinstance(body, dict):
        raise RequestError(f"the {what} request body must be a JSON object")
    return body
