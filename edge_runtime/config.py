"""Device configuration: YAML files under ``device_configs/`` → validated, frozen dataclasses.

A device config says what a target can run (backend, precisions, TensorRT/JetPack versions,
compute capability, DLA cores), which batch profile engines are built for, how INT8 models are
quantized for it, and how much memory the runtime may use there.

The validator below is written by hand on purpose, driven by the dataclasses' fields and type
hints. A schema library (pydantic, attrs+cattrs, jsonschema) would add a dependency to the device
runtime, which stays at numpy, pyyaml and cryptography so that it installs on JetPack 5's
Python 3.8; and we want every message on one line, naming the file, the dotted key path and the
expected type, e.g. ``device_configs/x.yaml: batch.max: expected int, got str ('eight')``.

Rules: an unknown key is an error (never ignored); a missing required key is an error; ``bool``
is not accepted as ``int``; an ``int`` is accepted where a ``float`` is expected; YAML lists
become tuples for ``Tuple[X, ...]`` fields. Every problem raises :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import (
    Any,
    Dict,
    List,
    Literal,
    Mapping,
    Optional,
    Tuple,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import yaml

from edge_runtime.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("onnxruntime", "tensorrt")
QUANT_SCHEMES = ("u8s8-qdq", "s8s8-qdq")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")

_SCALARS = (str, int, float, bool)

# Fields marked with this metadata are set by the loader and are not YAML keys.
_NOT_A_KEY = {"yaml_key": False}


@dataclass(frozen=True)
class BatchProfile:
    """Batch sizes an engine is built for: TensorRT optimization profile min/opt/max."""

    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class QuantizationSettings:
    """How the export pipeline quantizes a model to INT8 for this device."""

    # "u8s8-qdq": ONNX Runtime CPU (uint8 activations, int8 per-channel weights);
    # "s8s8-qdq": TensorRT explicit quantization (symmetric int8, zero point 0).
    scheme: str
    per_channel: bool = True
    calibration_method: str = "minmax"  # minmax | entropy | percentile
    calibration_samples: int = 256


@dataclass(frozen=True)
class DeviceConfig:
    """Everything the export pipeline and the runtime need to know about one target device."""

    name: str
    device_class: str
    backend: str
    precisions: Tuple[str, ...]
    default_precision: str
    batch: BatchProfile
    quantization: QuantizationSettings
    memory_budget_mb: int
    workspace_mb: int
    compute_capability: Optional[str] = None
    jetpack: Optional[str] = None
    l4t: Optional[str] = None
    cuda_version: Optional[str] = None
    tensorrt_version: Optional[str] = None
    dla_cores: int = 0
    source: str = field(default="", metadata=_NOT_A_KEY)

    @property
    def uses_tensorrt(self) -> bool:
        """True when engines for this device are built and run with TensorRT."""
        return self.backend == "tensorrt"


def load_device_config(path: Union[str, os.PathLike]) -> DeviceConfig:
    """Read and validate one device config YAML file; every problem is a one-line ConfigError."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read file: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {_yaml_problem(exc)}") from exc
    return device_config_from_mapping(data, source)


def device_config_from_mapping(data: Mapping[str, Any], source: str) -> DeviceConfig:
    """Validate an already parsed mapping; ``source`` names it in messages and in the result."""
    if not isinstance(data, Mapping):
        got = "an empty document" if data is None else _describe_value(data)
        raise ConfigError(f"{source}: expected a mapping at the top level, got {got}")
    config = _build(DeviceConfig, data, "", source)
    config = dataclasses.replace(config, source=source)
    _check_device_config(config)
    return config


# --- semantic checks -------------------------------------------------------------------------


def _check_device_config(cfg: DeviceConfig) -> None:
    src = cfg.source
    _check_one_of(src, "backend", cfg.backend, BACKENDS)
    _check_batch(src, cfg.batch)
    _check_precisions(src, cfg.precisions, cfg.default_precision)
    _check_quantization(src, cfg.quantization)
    if cfg.uses_tensorrt:
        for key in ("tensorrt_version", "compute_capability"):
            if getattr(cfg, key) is None:
                raise ConfigError(f"{src}: missing required key '{key}' (backend is tensorrt)")
        # TensorRT only takes symmetric int8 Q/DQ (zero point 0); u8 activations fail its parser.
        if cfg.quantization.scheme != "s8s8-qdq":
            raise ConfigError(
                f"{src}: quantization.scheme: expected 's8s8-qdq' for backend tensorrt, "
                f"got {cfg.quantization.scheme!r}"
            )
    _check_at_least(src, "dla_cores", cfg.dla_cores, 0)
    _check_at_least(src, "memory_budget_mb", cfg.memory_budget_mb, 1)
    _check_at_least(src, "workspace_mb", cfg.workspace_mb, 1)


def _check_batch(src: str, batch: BatchProfile) -> None:
    if not 1 <= batch.min <= batch.opt <= batch.max:
        raise ConfigError(
            f"{src}: batch: expected 1 <= min <= opt <= max, "
            f"got min={batch.min}, opt={batch.opt}, max={batch.max}"
        )


def _check_precisions(src: str, precisions: Tuple[str, ...], default: str) -> None:
    if not precisions:
        raise ConfigError(f"{src}: precisions: expected at least one of {', '.join(PRECISIONS)}")
    for index, precision in enumerate(precisions):
        _check_one_of(src, f"precisions[{index}]", precision, PRECISIONS)
        if precision in precisions[:index]:
            raise ConfigError(f"{src}: precisions[{index}]: {precision!r} is listed twice")
    if default not in precisions:
        raise ConfigError(
            f"{src}: default_precision: expected one of the precisions "
            f"({', '.join(precisions)}), got {default!r}"
        )


def _check_quantization(src: str, quant: QuantizationSettings) -> None:
    _check_one_of(src, "quantization.scheme", quant.scheme, QUANT_SCHEMES)
    _check_one_of(
        src, "quantization.calibration_method", quant.calibration_method, CALIBRATION_METHODS
    )
    _check_at_least(src, "quantization.calibration_samples", quant.calibration_samples, 1)


def _check_one_of(src: str, path: str, value: str, allowed: Tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{src}: {path}: expected one of {', '.join(allowed)}, got {value!r}")


def _check_at_least(src: str, path: str, value: int, lowest: int) -> None:
    if value < lowest:
        # "> 0" reads better than ">= 1" for sizes.
        bound = f"> {lowest - 1}" if lowest > 0 else f">= {lowest}"
        raise ConfigError(f"{src}: {path}: expected int {bound}, got {value}")


# --- generic validator driven by dataclass fields and type hints ----------------------------


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
