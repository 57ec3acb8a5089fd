"""A small validator that builds frozen dataclasses from parsed YAML, driven by type hints.

Written by hand on purpose: a schema library (pydantic, attrs+cattrs, jsonschema) would add a
dependency to the device runtime, which stays at numpy, pyyaml and cryptography so that it
installs on JetPack 5's Python 3.8; and we want every message on one line, naming the file, the
dotted key path and the expected type, e.g. ``device_configs/x.yaml: batch.max: expected int,
got str ('eight')``.

Rules: an unknown key is an error (never ignored); a missing required key is an error; ``bool``
is not accepted as ``int``; an ``int`` is accepted where a ``float`` is expected; YAML lists
become tuples for ``Tuple[X, ...]`` fields. Every problem raises :class:`ConfigError`.
Fields whose metadata is :data:`NOT_A_KEY` are set by loaders, never read from YAML.
"""

from __future__ import annotations

import dataclasses
import os
from typing import (
    Any,
    Dict,
    List,
    Literal,
    Mapping,
    Tuple,
    Type,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import yaml

from edge_runtime.errors import ConfigError

T = TypeVar("T")
_SCALARS = (str, int, float, bool)
NOT_A_KEY = {"yaml_key": False}


def read_yaml_mapping(path: Union[str, os.PathLike[str]]) -> Tuple[Mapping[str, Any], str]:
    """Read a YAML file whose top level must be a mapping; return it and the path as text."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read file: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {_yaml_problem(exc)}") from exc
    return require_mapping(data, source), source


def require_mapping(data: Any, source: str) -> Mapping[str, Any]:
    """``data`` itself if it is a mapping, else a ConfigError naming ``source``."""
    if not isinstance(data, Mapping):
        got = "an empty document" if data is None else _describe_value(data)
        raise ConfigError(f"{source}: expected a mapping at the top level, got {got}")
    return data


def build_dataclass(cls: Type[T], data: Any, source: str, path: str = "") -> T:
    """Build dataclass ``cls`` from a parsed mapping, checking keys and value types."""
    return _build(cls, data, path, source)


def check_one_of(src: str, path: str, value: str, allowed: Tuple[str, ...]) -> None:
    """ConfigError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{src}: {path}: expected one of {', '.join(allowed)}, got {value!r}")


def check_at_least(src: str, path: str, value: int, lowest: int) -> None:
    """ConfigError unless ``value >= lowest``."""
    if value < lowest:
        # "> 0" reads better than ">= 1" for sizes.
        bound = f"> {lowest - 1}" if lowest > 0 else f">= {lowest}"
        raise ConfigError(f"{src}: {path}: expected int {bound}, got {value}")



def _build(cls: Any, data: Any, path: str, source: str) -> Any:
    """Build dataclass ``cls`` from a YAML mapping, checking keys and value types."""
    if not isinstance(data, Mapping):
        raise _mismatch(source, path, cls, data)
    fields = [f for f in dataclasses.fields(cls) if f.metadata.get("yaml_key", True)]
    names = [f.name for f in fields]
    for key in data:
        if key not in names:
            raise ConfigError(
                f"{source}: unknown key {_join(path, key)!r} (allowed: {', '.join(names)})"
            )
    hints = get_type_hints(cls)
    values: Dict[str, Any] = {}
    for item in fields:
        key_path = _join(path, item.name)
        if item.name in data:
            values[item.name] = _convert(hints[item.name], data[item.name], key_path, source)
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key {key_path!r}")
    return cls(**values)


def _convert(hint: Any, value: Any, path: str, source: str) -> Any:
    """Check ``value`` against type hint ``hint``; return it converted (lists → tuples etc.)."""
    origin, args = get_origin(hint), get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, path, source)
    if origin is Union:
        return _convert_union(hint, args, value, path, source)
    if origin is Literal:
        if any(type(value) is type(arg) and value == arg for arg in args):
            return value
        raise _mismatch(source, path, hint, value)
    if origin in (list, tuple):
        return _convert_sequence(hint, origin, args, value, path, source)
    if hint is Any or _scalar_ok(hint, value):
        return float(value) if hint is float else value
    if hint in _SCALARS:
        raise _mismatch(source, path, hint, value)
    raise TypeError(f"config validator: unsupported type hint {hint!r} at {path!r}")


def _convert_union(hint: Any, args: Tuple[Any, ...], value: Any, path: str, source: str) -> Any:
    if value is None and type(None) in args:
        return None
    options = [arg for arg in args if arg is not type(None)]
    if len(options) == 1 and options[0] not in _SCALARS:
        # Optional[list/dataclass]: its own message names the exact item or key at fault.
        return _convert(options[0], value, path, source)
    for option in options:
        try:
            return _convert(option, value, path, source)
        except ConfigError:
            continue
    raise _mismatch(source, path, hint, value)


def _convert_sequence(
    hint: Any, origin: Any, args: Tuple[Any, ...], value: Any, path: str, source: str
) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _mismatch(source, path, hint, value)
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise _mismatch(source, path, hint, value)
        item_hints: List[Any] = list(args)
    else:
        item_hints = [args[0] if args else Any] * len(value)
    items = [
        _convert(item_hint, item, f"{path}[{index}]", source)
        for index, (item_hint, item) in enumerate(zip(item_hints, value))
    ]
    return tuple(items) if origin is tuple else items


def _scalar_ok(hint: Any, value: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return hint is str and isinstance(value, str)


def _mismatch(source: str, path: str, hint: Any, value: Any) -> ConfigError:
    where = path or "top level"
    message = f"{source}: {where}: expected {_describe_hint(hint)}, got {_describe_value(value)}"
    wants_str = hint is str or (get_origin(hint) is Union and str in get_args(hint))
    if wants_str and isinstance(value, (int, float)) and not isinstance(value, bool):
        message += " (quote it: YAML reads 7.2 or 11.4 as a number)"
    return ConfigError(message)


def _describe_hint(hint: Any) -> str:
    """Name a type hint the way a YAML author thinks of it."""
    origin, args = get_origin(hint), get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return f"mapping ({hint.__name__})"
    if origin is Union:
        names = [_describe_hint(arg) for arg in args if arg is not type(None)]
        return " or ".join(names + (["null"] if type(None) in args else []))
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin in (list, tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return f"list of {len(args)} ({', '.join(_describe_hint(arg) for arg in args)})"
        return f"list of {_describe_hint(args[0])}" if args else "list"
    return getattr(hint, "__name__", repr(hint))


def _describe_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} ({text})"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line from a YAML error: the problem and where (PyYAML's own text spans lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())
