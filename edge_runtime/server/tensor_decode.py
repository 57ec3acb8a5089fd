"""Decoding one input tensor of a KServe v2 inference request: name, datatype, shape, data.

A tensor's values come from exactly one of three places: a JSON ``data`` list, a slice of the
binary section after the JSON header (``parameters.binary_data_size``), or a registered system
shared-memory region (``parameters.shared_memory_region``). Binary tensors are read-only
``np.frombuffer`` views of the body; shared-memory tensors are one fresh copy read with ``pread``
(a client may shrink its object at any time: see :mod:`edge_runtime.server.shm`).

A JSON ``data`` list is checked before anything is allocated for it: its nesting and count
against the shape, and the set of its elements' Python types (``set(map(type, values))``, in C)
against the datatype: booleans for BOOL, integers for integer types, integers or floats for
floating-point types. Only then does ``np.asarray`` convert it, with the explicit dtype. Letting
numpy guess first cost memory out of all proportion: one 10 000-character string among 30 000
short ones (a 130 KB body) made it build a 1.2 GB ``<U10000`` array. Booleans are refused in
numeric lists (``true`` is not 1 in KServe), which the type set finds at no extra cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any, Collection, Dict, FrozenSet, List, Optional, Set, Tuple, Union

import numpy as np

from edge_runtime.bundle.manifest import TensorSpec
from edge_runtime.errors import RequestError
from edge_runtime.server.datatypes import kserve_to_numpy, numpy_to_kserve
from edge_runtime.server.json_body import describe, get_count, get_field
from edge_runtime.server.limits import RequestLimits
from edge_runtime.server.shm import SystemSharedMemoryRegistry

_SOURCES = ("data", "parameters.binary_data_size", "parameters.shared_memory_region")


@dataclass(frozen=True)
class ShmRef:
    """Where a tensor lies in a registered system shared-memory region."""

    region: str
    byte_size: int
    offset: int = 0


class BinarySection:
    """The bytes after the JSON header, handed out to the binary inputs in request order."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._used = 0

    def take(self, size: int, where: str) -> memoryview:
        """The next ``size`` bytes; RequestError when fewer are left."""
        left = len(self._data) - self._used
        if size > left:
            raise RequestError(
                f"{where}: binary_data_size {size} goes past the end of the binary data ({left} bytes left)"
            )
        chunk = self._data[self._used : self._used + size]
        self._used += size
        return chunk

    def check_consumed(self) -> None:
        """RequestError unless the binary inputs used up exactly the whole section."""
        if self._used != len(self._data):
            raise RequestError(
                f"the binary data after the JSON header is {len(self._data)} bytes but the inputs' "
                f"binary_data_size add up to {self._used}"
            )


def read_shm_ref(parameters: Dict[str, Any], where: str) -> Optional[ShmRef]:
    """The shared-memory parameters of a tensor, or None when it names no region."""
    region = get_field(parameters, "shared_memory_region", "str", where)
    byte_size = get_count(parameters, "shared_memory_byte_size", where)
    offset = get_count(parameters, "shared_memory_offset", where)
    if region is None:
        if byte_size is not None or offset is not None:
            raise RequestError(f"{where}: shared_memory_byte_size/offset given without shared_memory_region")
        return None
    if byte_size is None:
        raise RequestError(f"{where}: shared_memory_byte_size: required with shared_memory_region")
    return ShmRef(region=region, byte_size=byte_size, offset=offset or 0)


def tensor_name(item: Any, where: str, kind: str, names: Collection[str]) -> str:
    """The ``name`` of request item ``where`` (an object), which must be one of the model's ``kind``s."""
    if not isinstance(item, dict):
        raise RequestError(f"{where}: expected an object, got {describe(item)}")
    name: str = get_field(item, "name", "str", where, required=True)
    if name not in names:
        raise RequestError(f"{where}: {name!r} is not an {kind} of the model ({kind}s: {', '.join(names)})")
    return name


def input_spec(item: Any, index: int, specs: Dict[str, TensorSpec]) -> TensorSpec:
    """The model input that ``inputs[index]`` names."""
    return specs[tensor_name(item, f"inputs[{index}]", "input", specs)]


def decode_input(
    item: Dict[str, Any],
    spec: TensorSpec,
    binary: BinarySection,
    shm: SystemSharedMemoryRegistry,
    limits: RequestLimits,
) -> np.ndarray:
    """The array of one request input, checked against the model's ``spec``."""
    where = f"input {spec.name!r}"
    datatype = get_field(item, "datatype", "str", where, required=True)
    try:
        dtype = kserve_to_numpy(datatype)
    except RequestError as exc:
        raise RequestError(f"{where}: {exc}") from None
    expected = numpy_to_kserve(spec.dtype)
    if datatype != expected:
        raise RequestError(f"{where}: datatype {datatype} does not match the model's {expected}")
    shape = decode_shape(item, spec, where, limits)
    count = _product(shape)
    parameters = get_field(item, "parameters", "object", where) or {}
    parameters_where = f"{where} parameters"
    binary_size = get_count(parameters, "binary_data_size", parameters_where)
    shm_ref = read_shm_ref(parameters, parameters_where)
    present = ("data" in item, binary_size is not None, shm_ref is not None)
    given = [source for source, here in zip(_SOURCES, present) if here]
    if len(given) != 1:
        raise RequestError(
            f"{where}: expected exactly one of {', '.join(_SOURCES)}, got {' and '.join(given) or 'none'}"
        )
    if shm_ref is not None:
        return _decode_raw(_shm_bytes(shm, shm_ref, dtype, count, where), dtype, shape, where)
    if binary_size is not None:
        _check_byte_size(binary_size, dtype, count, where, "binary_data_size")
        return _decode_raw(binary.take(binary_size, where), dtype, shape, where)
    return decode_json_data(item["data"], dtype, shape, where)


def decode_shape(item: Dict[str, Any], spec: TensorSpec, where: str, limits: RequestLimits) -> List[int]:
    """The request's shape, checked against the limits and the model's shape (-1: any size)."""
    shape = get_field(item, "shape", "list", where, required=True)
    if len(shape) > limits.max_dims:
        raise RequestError(f"{where}: shape: {len(shape)} dims, more than the limit of {limits.max_dims}")
    for index, dim in enumerate(shape):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            shown = dim if type(dim) in (int, float) else describe(dim)
            raise RequestError(f"{where}: shape[{index}]: expected an integer >= 0, got {shown}")
    if _product(shape) > limits.max_tensor_elements:
        raise RequestError(
            f"{where}: shape {shape} has more than the limit of {limits.max_tensor_elements} elements"
        )
    model_shape = list(spec.shape)
    fits = len(shape) == len(model_shape) and all(want in (-1, got) for got, want in zip(shape, model_shape))
    if not fits:
        raise RequestError(f"{where}: shape {shape} does not fit the model's {model_shape} (-1: any size)")
    return shape


def decode_json_data(data: Any, dtype: np.dtype, shape: List[int], where: str) -> np.ndarray:
    """A JSON ``data`` list (flat, or nested like ``shape``) as an array of ``dtype``.

    Counts, nesting and element types are checked before anything is allocated (see the module
    docstring): numpy never sees a list it would have to guess a dtype for.
    """
    if not isinstance(data, list):
        raise RequestError(f"{where}: data: expected a list, got {describe(data)}")
    flat, nesting = _flatten(data, max(1, len(shape)), where)
    count = _product(shape)
    if len(nesting) == 1 and len(flat) != count:
        raise RequestError(f"{where}: data holds {len(flat)} values but shape {shape} needs {count}")
    if len(nesting) > 1 and nesting != shape:
        raise RequestError(
            f"{where}: data is nested as {nesting}, which is not the shape {shape}: "
            "send it flat or nested like the shape"
        )
    types = set(map(type, flat))
    allowed = _JSON_TYPES[dtype.kind]
    if not types <= allowed:
        raise RequestError(
            f"{where}: data: {numpy_to_kserve(dtype)} takes JSON {_ALLOWED_WORDS[dtype.kind]}, got {_values(types)}"
        )
    if not flat:
        return np.empty(shape, dtype=dtype)
    if dtype.kind in "iu":
        _check_integer_range(flat, dtype, where)
    return _convert(flat, dtype, where).reshape(shape)


_JSON_TYPES: Dict[str, FrozenSet[type]] = {
    "b": frozenset((bool,)),
    "i": frozenset((int,)),
    "u": frozenset((int,)),
    "f": frozenset((int, float)),
}
_ALLOWED_WORDS = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers"}
_TYPE_WORDS = {bool: "booleans", int: "integers", float: "floating-point numbers", str: "strings"}


def _flatten(data: List[Any], rank: int, where: str) -> Tuple[List[Any], List[int]]:
    # One level at a time, in C (set/map/chain): the lists walked are bounded by the body size,
    # and so is the flat list of values (one pointer per value, each at least 2 bytes of JSON).
    level = data
    nesting = [len(data)]
    while level and type(level[0]) is list:
        if set(map(type, level)) != {list}:
            raise RequestError(f"{where}: data: not a regular array of numbers: lists mixed with values")
        if len(nesting) >= rank:
            raise RequestError(f"{where}: data: nested deeper than the shape's {rank} dims")
        lengths = set(map(len, level))
        if len(lengths) != 1:
            raise RequestError(f"{where}: data: not a regular array of numbers: lists of different lengths")
        nesting.append(lengths.pop())
        level = list(chain.from_iterable(level))
    return level, nesting


def _check_integer_range(flat: List[int], dtype: np.dtype, where: str) -> None:
    info = np.iinfo(dtype)
    for value in (min(flat), max(flat)):
        if not info.min <= value <= info.max:
            raise RequestError(f"{where}: data: {value} is out of range for {numpy_to_kserve(dtype)}")


def _convert(flat: List[Any], dtype: np.dtype, where: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            array = np.asarray(flat, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as exc:  # an integer too large for a float
        raise RequestError(f"{where}: data: a value is out of range for {numpy_to_kserve(dtype)}") from exc
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise RequestError(f"{where}: data: a value is out of range for {numpy_to_kserve(dtype)}")
    return array


def _values(types: Set[type]) -> str:
    if len(types) == 1 and next(iter(types)) in _TYPE_WORDS:
        return _TYPE_WORDS[next(iter(types))]
    if types == {int, float}:
        return _TYPE_WORDS[float]
    if list in types:
        return "lists mixed with values (not a regular array)"
    return "values of mixed JSON types"


def _decode_raw(data: Union[memoryview, np.ndarray], dtype: np.dtype, shape: List[int], where: str) -> np.ndarray:
    array = np.frombuffer(data, dtype=dtype) if len(data) else np.empty(0, dtype=dtype)
    if dtype.kind == "b" and array.size and array.view(np.uint8).max() > 1:
        raise RequestError(f"{where}: BOOL bytes must be 0 or 1")
    return array.reshape(shape)


def _shm_bytes(
    shm: SystemSharedMemoryRegistry, ref: ShmRef, dtype: np.dtype, count: int, where: str
) -> np.ndarray:
    _check_byte_size(ref.byte_size, dtype, count, where, "shared_memory_byte_size")
    return shm.read(ref.region, ref.offset, ref.byte_size)


def _check_byte_size(size: int, dtype: np.dtype, count: int, where: str, key: str) -> None:
    expected = count * dtype.itemsize
    if size != expected:
        raise RequestError(
            f"{where}: {key} is {size} but the shape and datatype need {expected} bytes"
        )


def _product(shape: List[int]) -> int:
    count = 1
    for dim in shape:  # Python ints: no overflow, whatever the dims
        count *= dim
    return count
