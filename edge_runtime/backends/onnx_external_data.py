"""ONNX external data, only from files of the bundle: found in the model's bytes, fed from verified bytes.

An ONNX tensor may keep its values in another file (``data_location: EXTERNAL``, with a
``location`` key). ONNX Runtime 1.19 (the Python 3.8 stack) opens such a location even from a
model loaded from bytes: an absolute path, or one relative to the working directory, whose bytes
no signature covered. So the runtime reads the references itself before ONNX Runtime sees the
model: a graph initializer whose location is a file the manifest lists with the kind ``onnx_data``
gets its values from that file's verified bytes (:meth:`VerifiedBundle.read_verified`), handed to ONNX Runtime with
``SessionOptions.add_external_initializers`` (present in 1.19 and 1.32), so ONNX Runtime opens
no file. Any other external reference (an unlisted or escaping path, a file listed with another
kind, or one inside a subgraph, a node attribute or a sparse tensor) is refused, naming the tensor.

The protobuf wire format is walked by hand here because ``onnx`` is not a runtime dependency;
only the few fields on the way to a tensor are read (field numbers from onnx.proto).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Tuple, Union

import numpy as np

from edge_runtime.bundle.manifest import ONNX_DATA
from edge_runtime.bundle.verify import VerifiedBundle
from edge_runtime.errors import BundleError

_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
# TensorProto.DataType -> numpy dtype (the numeric types ONNX Runtime takes as initializers)
_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
           10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}
Value = Union[int, memoryview]


@dataclass
class ExternalTensor:
    """A graph initializer whose values live in another file."""

    name: str
    data_type: int
    dims: List[int]
    keys: Dict[str, str] = field(default_factory=dict)


def external_initializers(model: bytes, bundle: VerifiedBundle) -> Tuple[List[str], List[np.ndarray]]:
    """Names and values of the model's external initializers, read from listed files of the bundle."""
    tensors = list(_scan_model(memoryview(model)))
    if not tensors:
        return [], []
    listed = {artifact.path: artifact for artifact in bundle.manifest.artifacts}
    files: Dict[str, bytes] = {}
    names, values = [], []
    for tensor in tensors:
        location = tensor.keys.get("location", "")
        if location not in listed:
            raise BundleError(f"initializer '{tensor.name}' takes its values from '{location}', which is not a file "
                              "listed in the bundle's manifest")
        if listed[location].kind != ONNX_DATA:
            raise BundleError(f"initializer '{tensor.name}' takes its values from '{location}', which the manifest "
                              f"lists as kind '{listed[location].kind}', not '{ONNX_DATA}'")
        if location not in files:
            files[location] = bundle.read_verified(listed[location])
        names.append(tensor.name)
        values.append(_values(tensor, files[location]))
    return names, values


def _values(tensor: ExternalTensor, data: bytes) -> np.ndarray:
    dtype = _DTYPES.get(tensor.data_type)
    if dtype is None:
        raise BundleError(f"initializer '{tensor.name}': external data of ONNX type {tensor.data_type} is not served")
    try:
        offset = int(tensor.keys.get("offset", "0"))
        count = int(np.prod(tensor.dims, dtype=np.int64))
        length = int(tensor.keys.get("length", str(count * np.dtype(dtype).itemsize)))
    except ValueError as exc:
        raise BundleError(f"initializer '{tensor.name}': bad external data offset or length") from exc
    if offset < 0 or length != count * np.dtype(dtype).itemsize or offset + length > len(data):
        raise BundleError(f"initializer '{tensor.name}': external data at {offset}+{length} does not fit "
                          f"{tensor.dims} {dtype} in its {len(data)}-byte file")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(tensor.dims).copy()


def _scan_model(model: memoryview) -> Iterator[ExternalTensor]:
    for number, value in _fields(model):
        if number == 7 and isinstance(value, memoryview):  # ModelProto.graph
            yield from _scan_graph(value, top=True)
        elif number == 25 and isinstance(value, memoryview):  # ModelProto.functions
            for inner, node in _fields(value):
                if inner == 7 and isinstance(node, memoryview):  # FunctionProto.node
                    _check_node(node)


def _scan_graph(graph: memoryview, top: bool) -> Iterator[ExternalTensor]:
    for number, value in _fields(graph):
        if not isinstance(value, memoryview):
            continue
        if number == 5:  # GraphProto.initializer
            tensor = _tensor(value)
            if tensor is not None:
                if not top:
                    raise BundleError(f"initializer '{tensor.name}' of a subgraph uses external data: not served")
                yield tensor
        elif number == 15:  # GraphProto.sparse_initializer
            for inner, part in _fields(value):
                if inner in (1, 2) and isinstance(part, memoryview):
                    _refuse(_tensor(part), "sparse initializer")
        elif number == 1:  # GraphProto.node
            _check_node(value)


def _check_node(node: memoryview) -> None:
    """Refuse external data in node attributes (Constant values, subgraphs of If/Loop/Scan)."""
    for number, attribute in _fields(node):
        if number != 5 or not isinstance(attribute, memoryview):  # NodeProto.attribute
            continue
        for inner, value in _fields(attribute):
            if not isinstance(value, memoryview):
                continue
            if inner in (5, 10):  # AttributeProto.t / tensors
                _refuse(_tensor(value), "node attribute")
            elif inner in (6, 11):  # AttributeProto.g / graphs
                for tensor in _scan_graph(value, top=False):
                    _refuse(tensor, "subgraph initializer")


def _refuse(tensor: Union[ExternalTensor, None], where: str) -> None:
    if tensor is not None:
        raise BundleError(f"{where} '{tensor.name}' uses external data: not served")


def _tensor(message: memoryview) -> Union[ExternalTensor, None]:
    """The tensor if its values are external, else None."""
    tensor = ExternalTensor(name="", data_type=0, dims=[])
    external = False
    for number, value in _fields(message):
        if number == 1:  # dims: packed or not
            tensor.dims.extend(_packed(value) if isinstance(value, memoryview) else [value])
        elif number == 2 and isinstance(value, int):
            tensor.data_type = value
        elif number == 8 and isinstance(value, memoryview):
            tensor.name = bytes(value).decode("utf-8", "replace")
        elif number == 13 and isinstance(value, memoryview):  # external_data: StringStringEntryProto
            entry = {k: bytes(v).decode("utf-8", "replace") for k, v in _fields(value) if isinstance(v, memoryview)}
            tensor.keys[entry.get(1, "")] = entry.get(2, "")
        elif number == 14 and value == _EXTERNAL:
            external = True
    return tensor if external or tensor.keys else None


def _fields(buffer: memoryview) -> Iterator[Tuple[int, Value]]:
    """(field number, value) pairs of one message: ints for varint/fixed fields, views for the others."""
    position, end = 0, len(buffer)
    while position < end:
        key, position = _varint(buffer, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(buffer, position)
            yield number, value
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield number, int.from_bytes(buffer[position:position + size], "little")
            position += size
        elif wire == 2:
            size, position = _varint(buffer, position)
            if position + size > end:
                raise BundleError("the ONNX model is truncated or not an ONNX model")
            yield number, buffer[position:position + size]
            position += size
        else:
            raise BundleError(f"the ONNX model uses protobuf wire type {wire}: not an ONNX model")


def _varint(buffer: memoryview, position: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(buffer) or shift > 63:
            raise BundleError("the ONNX model is truncated or not an ONNX model")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _packed(buffer: memoryview) -> List[int]:
    values, position = [], 0
    while position < len(buffer):
        value, position = _varint(buffer, position)
        values.append(value)
    return values
