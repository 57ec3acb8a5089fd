"""KServe v2 datatype names <-> numpy dtypes.

The binary tensor extension and shared memory carry raw little-endian bytes, so every dtype this
module hands out is explicitly little-endian (the same as native on Jetson and x86, but a
big-endian host would otherwise read the bytes wrongly). BYTES (length-prefixed strings) has no
numpy dtype that a model backend here accepts, so it is refused with its own message.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from edge_runtime.errors import RequestError

# KServe name -> numpy dtype name (the names used in bundle manifests, see bundle.manifest.DTYPES).
_KSERVE_TO_NUMPY: Dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
_NUMPY_TO_KSERVE: Dict[str, str] = {numpy_name: kserve for kserve, numpy_name in _KSERVE_TO_NUMPY.items()}

KSERVE_DATATYPES = tuple(_KSERVE_TO_NUMPY)


def kserve_to_numpy(datatype: str) -> np.dtype:
    """The little-endian numpy dtype for a KServe datatype name; RequestError if unsupported."""
    if datatype == "BYTES":
        raise RequestError("BYTES tensors are not supported by this runtime")
    name = _KSERVE_TO_NUMPY.get(datatype) if isinstance(datatype, str) else None
    if name is None:
        raise RequestError(
            f"unknown datatype {datatype!r} (one of {', '.join(KSERVE_DATATYPES)})"
        )
    return np.dtype(name).newbyteorder("<")


def numpy_to_kserve(dtype: Any) -> str:
    """The KServe datatype name for a numpy dtype (or dtype name), whatever its byte order.

    A dtype with no KServe counterpart is a programming error here (model specs are validated
    when a bundle loads), so it raises ``ValueError``.
    """
    try:
        name = np.dtype(dtype).newbyteorder("=").name
    except TypeError as exc:
        raise ValueError(f"not a numpy dtype: {dtype!r}") from exc
    try:
        return _NUMPY_TO_KSERVE[name]
    except KeyError:
        raise ValueError(f"numpy dtype {name!r} has no KServe v2 datatype") from None
