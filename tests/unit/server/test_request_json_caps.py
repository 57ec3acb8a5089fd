"""Exact caps and exact messages of the JSON body helpers and the datatype names (server/json_body, datatypes)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_runtime.errors import RequestError, RequestTooLargeError
from edge_runtime.server.datatypes import kserve_to_numpy, numpy_to_kserve
from edge_runtime.server.json_body import check_body_size, check_json_size, describe, get_field
from edge_runtime.server.limits import RequestLimits

_LIMITS = RequestLimits(max_request_bytes=1000, max_json_bytes=100)
_ADVICE = (
    "(limits.max_json_bytes): send large tensors with the binary tensor extension "
    "(parameters.binary_data_size, Inference-Header-Content-Length)"
)


def test_a_body_of_exactly_the_request_cap_is_accepted_one_byte_more_is_413() -> None:
    check_body_size(1000, _LIMITS)
    with pytest.raises(RequestTooLargeError) as info:
        check_body_size(1001, _LIMITS)
    assert str(info.value) == "request body of 1001 bytes is over the limit of 1000 bytes"


@pytest.mark.parametrize(
    "binary, what", [(False, "a JSON request body"), (True, "the JSON header of the request")]
)
def test_json_of_exactly_the_json_cap_is_accepted_one_byte_more_is_413_with_the_advice(
    binary: bool, what: str
) -> None:
    check_json_size(100, _LIMITS, binary=binary)
    with pytest.raises(RequestTooLargeError) as info:
        if binary:
            check_json_size(101, _LIMITS, binary=True)
        else:
            check_json_size(101, _LIMITS)  # a whole body is the default
    assert str(info.value) == f"{what} of 101 bytes is over the limit of 100 bytes for JSON {_ADVICE}"


@pytest.mark.parametrize(
    "value, words",
    [(None, "null"), (1.5, "a number"), ("s", "a string"), (True, "a boolean"), (3, "an integer"),
     ({}, "an object"), ([], "a list"), (b"raw", "bytes")],
)
def test_describe_names_a_value_s_type_in_words(value: Any, words: str) -> None:
    assert describe(value) == words


def test_a_null_field_is_refused_naming_null() -> None:
    with pytest.raises(RequestError) as info:
        get_field({"name": None}, "name", "str", "input 0")
    assert str(info.value) == "input 0: name: expected a string, got null"


_ALL = "BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64"


@pytest.mark.parametrize("datatype, shown", [("FP8", "'FP8'"), (["FP32"], "['FP32']"), (32, "32")])
def test_an_unknown_datatype_is_refused_listing_the_known_ones(datatype: Any, shown: str) -> None:
    with pytest.raises(RequestError) as info:
        kserve_to_numpy(datatype)
    assert str(info.value) == f"unknown datatype {shown} (one of {_ALL})"


def test_something_that_is_not_a_dtype_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError) as info:
        numpy_to_kserve("xyz")
    assert str(info.value) == "not a numpy dtype: 'xyz'"
    assert numpy_to_kserve(np.dtype(">f4")) == "FP32"
