"""KServe datatype names <-> numpy dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.bundle.manifest import DTYPES
from edge_runtime.errors import RequestError
from edge_runtime.server.datatypes import KSERVE_DATATYPES, kserve_to_numpy, numpy_to_kserve

PAIRS = [
    ("BOOL", "bool", 1),
    ("UINT8", "uint8", 1),
    ("UINT16", "uint16", 2),
    ("UINT32", "uint32", 4),
    ("UINT64", "uint64", 8),
    ("INT8", "int8", 1),
    ("INT16", "int16", 2),
    ("INT32", "int32", 4),
    ("INT64", "int64", 8),
    ("FP16", "float16", 2),
    ("FP32", "float32", 4),
    ("FP64", "float64", 8),
]


@pytest.mark.parametrize(("kserve", "numpy_name", "itemsize"), PAIRS)
def test_each_datatype_maps_both_ways(kserve: str, numpy_name: str, itemsize: int) -> None:
    dtype = kserve_to_numpy(kserve)
    assert dtype == np.dtype(numpy_name)
    assert dtype.itemsize == itemsize
    assert dtype.str[0] in "<|"  # little-endian, or a single byte
    assert numpy_to_kserve(dtype) == kserve
    assert numpy_to_kserve(numpy_name) == kserve


def test_the_table_covers_every_manifest_dtype() -> None:
    assert sorted(KSERVE_DATATYPES) == sorted(pair[0] for pair in PAIRS)
    assert sorted(numpy_to_kserve(name) for name in DTYPES) == sorted(KSERVE_DATATYPES)


def test_big_endian_dtypes_map_to_the_same_name() -> None:
    assert numpy_to_kserve(np.dtype(">f4")) == "FP32"
    assert numpy_to_kserve(np.dtype(">i8")) == "INT64"


def test_bytes_is_refused_with_its_own_message() -> None:
    with pytest.raises(RequestError, match=r"^BYTES tensors are not supported by this runtime$"):
        kserve_to_numpy("BYTES")


@pytest.mark.parametrize("name", ["FP8", "BF16", "fp32", "", "float32"])
def test_unknown_datatype_is_named(name: str) -> None:
    with pytest.raises(RequestError, match=f"unknown datatype {name!r}"):
        kserve_to_numpy(name)


@pytest.mark.parametrize("dtype", [object, "U4", "complex64", "datetime64[s]"])
def test_numpy_dtype_without_kserve_name_is_a_value_error(dtype: object) -> None:
    with pytest.raises(ValueError, match="has no KServe v2 datatype"):
        numpy_to_kserve(dtype)
