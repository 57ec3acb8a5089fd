"""The bundle manifest: what a bundle holds, for which devices, and the sha256 of every file.

``manifest.json`` is the one file the signature covers (see :mod:`.signing`); it lists every
other file of the bundle with its size and sha256, so one ed25519 signature vouches for all.

The dataclasses validate themselves on construction, so a :class:`Manifest` in memory is always
one that :meth:`Manifest.from_json` would accept; every problem is a one-line
:class:`~edge_runtime.errors.ManifestError` naming the key, e.g.
``manifest.json: artifacts[1].path: '../x' must stay inside the bundle``.
Parsing is strict: unknown keys, missing keys, wrong JSON types (``true`` is not an int) and
duplicate keys are errors, never ignored.

Artifact kinds (:data:`ARTIFACT_KINDS`): ``onnx`` an ONNX model; ``onnx_data`` a file holding ONNX
external data (tensor values an ONNX model keeps outside itself; a model may use only files listed
with this kind, and such a file is never taken for a model); ``engine`` a TensorRT engine and
``calib`` its calibration cache (both name their ``target``); ``report`` the export's report.
The ``onnx_data`` kind is an addition within format 1: bundles without external data are unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edge_runtime.bundle.fingerprint import BuildFingerprint, EngineFingerprint, HostFingerprint
from edge_runtime.config import BACKENDS, PRECISIONS
from edge_runtime.errors import ManifestError

FORMAT_VERSION = 1
ONNX_DATA = "onnx_data"  # ONNX external data: weights, never a model
ARTIFACT_KINDS = ("onnx", ONNX_DATA, "engine", "calib", "report")
# numpy dtype names a tensor may have (the KServe v2 datatypes that numpy can represent).
DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
)
RESERVED_NAMES = ("manifest.json", "manifest.sig")
_TARGETED_KINDS = ("engine", "calib")  # built for one device: the artifact must name its target
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")  # also used as directory names
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CREATED = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,6})?Z")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, numpy dtype name, shape with -1 for dynamic sizes."""

    name: str
    dtype: str
    shape: Tuple[int, ...]

    def __post_init__(self) -> None:
        _check_str("name", self.name)
        _check_choice("dtype", self.dtype, DTYPES)
        _set_tuple(self, "shape")
        for index, dim in enumerate(self.shape):
            if not _is_int(dim) or not (dim == -1 or dim >= 1):
                raise ManifestError(f"shape[{index}]: expected an int >= 1 or -1, got {dim!r}")


@dataclass(frozen=True)
class Artifact:
    """One file of the bundle, relative to its root, with the hash the signature vouches for."""

    path: str
    sha256: str
    size: int
    kind: str
    target: Optional[str] = None
    precision: Optional[str] = None

    def __post_init__(self) -> None:
        check_artifact_path(self.path)
        _check_sha256("sha256", self.sha256)
        if not _is_int(self.size) or self.size < 0:
            raise ManifestError(f"size: expected an int >= 0, got {self.size!r}")
        _check_choice("kind", self.kind, ARTIFACT_KINDS)
        if self.target is not None:
            _check_safe_name("target", self.target)
        elif self.kind in _TARGETED_KINDS:
            raise ManifestError(f"target: required for an artifact of kind {self.kind!r}")
        if self.precision is not None:
            _check_choice("precision", self.precision, PRECISIONS)


@dataclass(frozen=True)
class TargetInfo:
    """A device the bundle was built for; its engine's fingerprint (DESIGN rule 4) is :attr:`fingerprint`.

    The JSON keys stay flat (format 1 bundles on disk keep reading); the matching rules live in
    :mod:`edge_runtime.bundle.fingerprint`.
    """

    name: str
    device_class: str
    backend: str
    precision: str
    compute_capability: Optional[str] = None
    tensorrt_version: Optional[str] = None
    jetpack: Optional[str] = None
    l4t: Optional[str] = None
    dla_core: Optional[int] = None

    def __post_init__(self) -> None:
        _check_safe_name("name", self.name)
        _check_str("device_class", self.device_class)
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("precision", self.precision, PRECISIONS)
        for key in ("compute_capability", "tensorrt_version", "jetpack", "l4t"):
            if getattr(self, key) is not None:
                _check_str(key, getattr(self, key))
        if self.dla_core is not None and (not _is_int(self.dla_core) or self.dla_core < 0):
            raise ManifestError(f"dla_core: expected an int >= 0 or null, got {self.dla_core!r}")

    @property
    def fingerprint(self) -> EngineFingerprint:
        """The host this target's engine needs and how it was built; compare with :func:`.fingerprint.match`."""
        host = HostFingerprint(
            tensorrt_version=self.tensorrt_version,
            compute_capability=self.compute_capability,
            l4t=self.l4t,
            jetpack=self.jetpack,
            device_model=self.device_class,
        )
        # A TargetInfo exists only inside a parsed or validated manifest, of the one format this reads.
        return EngineFingerprint(host, BuildFingerprint(self.precision, FORMAT_VERSION, self.dla_core))


@dataclass(frozen=True)
class Manifest:
    """The content of ``manifest.json``: identity, I/O specs, artifacts and targets."""

    name: str
    version: str
    created: str  # ISO-8601 UTC, e.g. 2024-05-01T12:00:00Z
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    source_model_sha256: str
    artifacts: Tuple[Artifact, ...]
    targets: Tuple[TargetInfo, ...]
    metadata: Dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_format_version(self.format_version)
        _check_safe_name("name", self.name)
        _check_safe_name("version", self.version)
        _check_created(self.created)
        for key in ("inputs", "outputs"):
            _set_tuple(self, key)
            specs = getattr(self, key)
            if not specs:
                raise ManifestError(f"{key}: expected at least one tensor")
            _check_items(key, specs, TensorSpec, "name")
        _check_sha256("source_model_sha256", self.source_model_sha256)
        _set_tuple(self, "targets")
        _check_items("targets", self.targets, TargetInfo, "name")
        _set_tuple(self, "artifacts")
        _check_items("artifacts", self.artifacts, Artifact, "path")
        target_names = [target.name for target in self.targets]
        for index, artifact in enumerate(self.artifacts):
            if artifact.target is not None and artifact.target not in target_names:
                raise ManifestError(
                    f"artifacts[{index}].target: {artifact.target!r} is not one of the "
                    f"targets ({', '.join(target_names) or 'none listed'})"
                )
        if not isinstance(self.metadata, dict):
            raise ManifestError(f"metadata: expected an object, got {_describe(self.metadata)}")
        for key in self.metadata:
            if not isinstance(key, str):
                raise ManifestError(f"metadata: keys must be strings, got {key!r}")

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys, 2-space indent, UTF-8, final newline): what is signed."""
        try:
            text = json.dumps(
                dataclasses.asdict(self),
                sort_keys=True,
                indent=2,
                ensure_ascii=False,
                allow_nan=False,
            )
            return (text + "\n").encode("utf-8")
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            raise ManifestError(f"manifest.json: cannot be serialized: {exc}") from exc

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and validate ``manifest.json``; call only after its signature was verified."""
        try:
            document = json.loads(
                data.decode("utf-8"),
                object_pairs_hook=_no_duplicate_keys,
                parse_constant=_no_constant,
            )
            return _parse_manifest(document)
        except UnicodeDecodeError as exc:
            raise ManifestError(f"manifest.json: not UTF-8 text: {exc.reason}") from exc
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest.json: not valid JSON: {exc}") from exc
        except ManifestError as exc:
            raise ManifestError(f"manifest.json: {exc}") from None

    def artifacts_of(self, kind: str, target: Optional[str] = None) -> List[Artifact]:
        """The artifacts of one kind, optionally only those built for ``target``.

        An unknown ``kind`` is a programming error (a typo would silently find nothing), so it
        raises ``ValueError``.
        """
        if kind not in ARTIFACT_KINDS:
            raise ValueError(f"unknown artifact kind {kind!r} (one of {', '.join(ARTIFACT_KINDS)})")
        return [
            artifact
            for artifact in self.artifacts
            if artifact.kind == kind and (target is None or artifact.target == target)
        ]


def check_artifact_path(path: str) -> None:
    """Refuse a path that could leave the bundle root or is not in canonical POSIX form."""
    if not isinstance(path, str) or not path:
        raise ManifestError(f"path: expected a non-empty string, got {_describe(path)}")
    if path.startswith("/"):
        raise ManifestError(f"path: {path!r} is absolute; paths are relative to the bundle root")
    if "\\" in path or "\x00" in path:
        raise ManifestError(f"path: {path!r} must be a POSIX path (no backslash or NUL)")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ManifestError(
            f"path: {path!r} must stay inside the bundle "
            "(no '..', '.' or empty segments, no trailing '/')"
        )
    if path in RESERVED_NAMES:
        raise ManifestError(f"path: {path!r} is reserved for the bundle's own metadata")


# --- parsing --------------------------------------------------------------------------------


def _parse_manifest(document: Any) -> Manifest:
    if isinstance(document, dict) and "format_version" in document:
        # Checked first: a newer format gets "unsupported version", not a list of unknown keys.
        _check_format_version(document["format_version"])
    values = _keys(Manifest, document, "top level")
    for key, item_cls in (("inputs", TensorSpec), ("outputs", TensorSpec)):
        values[key] = _parse_list(item_cls, values[key], key)
    values["artifacts"] = _parse_list(Artifact, values["artifacts"], "artifacts")
    values["targets"] = _parse_list(TargetInfo, values["targets"], "targets")
    return Manifest(**values)


def _parse_list(cls: Any, value: Any, where: str) -> Tuple[Any, ...]:
    if not isinstance(value, list):
        raise ManifestError(f"{where}: expected a list, got {_describe(value)}")
    items = []
    for index, item in enumerate(value):
        item_where = f"{where}[{index}]"
        values = _keys(cls, item, item_where)
        try:
            items.append(cls(**values))
        except ManifestError as exc:
            raise ManifestError(f"{item_where}.{exc}") from None
    return tuple(items)


def _keys(cls: Any, value: Any, where: str) -> Dict[str, Any]:
    """Check that ``value`` is a JSON object with exactly the keys of dataclass ``cls``."""
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: expected an object, got {_describe(value)}")
    fields = dataclasses.fields(cls)
    names = [item.name for item in fields]
    unknown = sorted(key for key in value if key not in names)
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {', '.join(unknown)}")
    missing = [
        item.name
        for item in fields
        if item.name not in value
        and item.default is dataclasses.MISSING
        and item.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ManifestError(f"{where}: missing key(s) {', '.join(missing)}")
    return dict(value)


def _no_duplicate_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result: Dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ManifestError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ManifestError(f"{name} is not valid JSON")


# --- field checks ---------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str) and not value:
        return "an empty string"  # "expected a non-empty string, got a string" would puzzle a reader
    names = {bool: "a boolean", dict: "an object", list: "a list", str: "a string"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, (int, float)) else type(value).__name__


def _check_str(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{key}: expected a non-empty string, got {_describe(value)}")


def _check_safe_name(key: str, value: Any) -> None:
    _check_str(key, value)
    if not _SAFE_NAME.fullmatch(value):
        raise ManifestError(
            f"{key}: {value!r} must be 1-128 of A-Z a-z 0-9 . _ + - (not starting with a symbol)"
        )


def _check_choice(key: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ManifestError(f"{key}: expected one of {', '.join(allowed)}, got {value!r}")


def _check_sha256(key: str, value: Any) -> None:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ManifestError(f"{key}: expected 64 lowercase hex digits, got {value!r}")


def _check_format_version(value: Any) -> None:
    if not _is_int(value) or value != FORMAT_VERSION:
        raise ManifestError(
            f"format_version: unsupported version {value!r} (this runtime reads {FORMAT_VERSION})"
        )


def _check_created(value: Any) -> None:
    # A fixed pattern, not datetime.fromisoformat: what it accepts changed in Python 3.11, and
    # a bundle must parse the same on the device's 3.8 as on the workstation.
    match = _CREATED.fullmatch(value) if isinstance(value, str) else None
    try:
        if match is None:
            raise ValueError
        datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise ManifestError(
            f"created: expected an ISO-8601 UTC time like 2024-05-01T12:00:00Z, got {value!r}"
        ) from None


def _check_items(key: str, items: Tuple[Any, ...], cls: Any, unique_by: str) -> None:
    seen: Dict[Any, int] = {}
    for index, item in enumerate(items):
        if not isinstance(item, cls):
            raise ManifestError(f"{key}[{index}]: expected {cls.__name__}, got {_describe(item)}")
        value = getattr(item, unique_by)
        if value in seen:
            raise ManifestError(
                f"{key}[{index}].{unique_by}: {value!r} is listed twice (also {key}[{seen[value]}])"
            )
        seen[value] = index


def _set_tuple(obj: Any, key: str) -> None:
    """Accept a list where a tuple is declared (frozen dataclass: set through object)."""
    value = getattr(obj, key)
    if isinstance(value, list):
        object.__setattr__(obj, key, tuple(value))
    elif not isinstance(value, tuple):
        raise ManifestError(f"{key}: expected a list, got {_describe(value)}")
