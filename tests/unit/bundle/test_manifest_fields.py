"""Manifest dataclasses validate on construction: every refusal is one whole line naming the key.

These messages are what a user reads when a bundle is refused, so each is pinned whole.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, NamedTuple

import pytest

from edge_runtime.bundle.manifest import Artifact, Manifest, TargetInfo, TensorSpec
from edge_runtime.errors import ManifestError

SHA = "ab" * 32
SAFE_NAME_RULE = "must be 1-128 of A-Z a-z 0-9 . _ + - (not starting with a symbol)"
STAYS_INSIDE = "must stay inside the bundle (no '..', '.' or empty segments, no trailing '/')"
DTYPE_LIST = "bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float16, float32, float64"


def tensor(**changes: Any) -> TensorSpec:
    values = dict(name="x", dtype="float32", shape=(-1, 3))
    values.update(changes)
    return TensorSpec(**values)  # type: ignore[arg-type]


def artifact(**changes: Any) -> Artifact:
    values = dict(path="model.onnx", sha256=SHA, size=12, kind="onnx")
    values.update(changes)
    return Artifact(**values)  # type: ignore[arg-type]


def target(**changes: Any) -> TargetInfo:
    values = dict(name="orin", device_class="jetson-orin-nano", backend="tensorrt", precision="int8")
    values.update(changes)
    return TargetInfo(**values)  # type: ignore[arg-type]


def manifest(**changes: Any) -> Manifest:
    values = dict(
        name="digits",
        version="1.2.0",
        created="2024-05-01T12:00:00Z",
        inputs=(tensor(),),
        outputs=(tensor(name="y"),),
        source_model_sha256=SHA,
        artifacts=(artifact(),),
        targets=(target(),),
    )
    values.update(changes)
    return Manifest(**values)  # type: ignore[arg-type]


class Case(NamedTuple):
    id: str
    build: Callable[[], Any]
    message: str


def case(id: str, build: Callable[..., Any], message: str, **changes: Any) -> Case:
    return Case(id, lambda: build(**changes), message)


REFUSED: List[Case] = [
    # --- TensorSpec
    case("tensor-name-empty", tensor, "name: expected a non-empty string, got an empty string", name=""),
    case("tensor-name-number", tensor, "name: expected a non-empty string, got a number", name=5),
    case("tensor-dtype", tensor, f"dtype: expected one of {DTYPE_LIST}, got 'float'", dtype="float"),
    case("tensor-shape-number", tensor, "shape: expected a list, got a number", shape=5),
    case("tensor-shape-string", tensor, "shape: expected a list, got a string", shape="1,2"),
    case("tensor-shape-null", tensor, "shape: expected a list, got null", shape=None),
    case("tensor-shape-zero", tensor, "shape[1]: expected an int >= 1 or -1, got 0", shape=(1, 0)),
    case("tensor-shape-minus-two", tensor, "shape[0]: expected an int >= 1 or -1, got -2", shape=(-2,)),
    case("tensor-shape-bool", tensor, "shape[0]: expected an int >= 1 or -1, got True", shape=(True,)),
    case("tensor-shape-float", tensor, "shape[0]: expected an int >= 1 or -1, got 2.0", shape=(2.0,)),
    # --- Artifact
    case("path-number", artifact, "path: expected a non-empty string, got a number", path=5),
    case("path-null", artifact, "path: expected a non-empty string, got null", path=None),
    case("path-empty", artifact, "path: expected a non-empty string, got an empty string", path=""),
    case("path-absolute", artifact, "path: '/abs' is absolute; paths are relative to the bundle root",
         path="/abs"),
    case("path-backslash", artifact, r"path: 'a\\b' must be a POSIX path (no backslash or NUL)", path="a\\b"),
    case("path-nul", artifact, r"path: 'a\x00b' must be a POSIX path (no backslash or NUL)", path="a\x00b"),
    case("path-dot", artifact, f"path: 'a/./b' {STAYS_INSIDE}", path="a/./b"),
    case("path-leading-dot", artifact, f"path: './b' {STAYS_INSIDE}", path="./b"),
    case("path-dotdot", artifact, f"path: '../x' {STAYS_INSIDE}", path="../x"),
    case("path-empty-segment", artifact, f"path: 'a//b' {STAYS_INSIDE}", path="a//b"),
    case("path-trailing-slash", artifact, f"path: 'a/' {STAYS_INSIDE}", path="a/"),
    case("path-manifest", artifact, "path: 'manifest.json' is reserved for the bundle's own metadata",
         path="manifest.json"),
    case("path-signature", artifact, "path: 'manifest.sig' is reserved for the bundle's own metadata",
         path="manifest.sig"),
    case("sha-uppercase", artifact, f"sha256: expected 64 lowercase hex digits, got {'AB' * 32!r}",
         sha256="AB" * 32),
    case("sha-short", artifact, f"sha256: expected 64 lowercase hex digits, got {'ab' * 31!r}", sha256="ab" * 31),
    case("sha-null", artifact, "sha256: expected 64 lowercase hex digits, got None", sha256=None),
    case("size-negative", artifact, "size: expected an int >= 0, got -1", size=-1),
    case("size-bool", artifact, "size: expected an int >= 0, got True", size=True),
    case("size-string", artifact, "size: expected an int >= 0, got '12'", size="12"),
    case("kind", artifact, "kind: expected one of onnx, onnx_data, engine, calib, report, got 'weights'",
         kind="weights"),
    case("engine-without-target", artifact, "target: required for an artifact of kind 'engine'",
         path="a.plan", kind="engine"),
    case("calib-without-target", artifact, "target: required for an artifact of kind 'calib'",
         path="a.cache", kind="calib"),
    case("target-unsafe", artifact, f"target: '../x' {SAFE_NAME_RULE}", target="../x"),
    case("target-empty", artifact, "target: expected a non-empty string, got an empty string", target=""),
    case("artifact-precision", artifact, "precision: expected one of fp32, fp16, int8, got 'fp64'",
         precision="fp64"),
    # --- TargetInfo
    case("target-name-empty", target, "name: expected a non-empty string, got an empty string", name=""),
    case("target-name-symbol", target, f"name: '-orin' {SAFE_NAME_RULE}", name="-orin"),
    case("target-name-too-long", target, f"name: {'a' * 129!r} {SAFE_NAME_RULE}", name="a" * 129),
    case("device-class-empty", target, "device_class: expected a non-empty string, got an empty string",
         device_class=""),
    case("device-class-number", target, "device_class: expected a non-empty string, got a number",
         device_class=5),
    case("device-class-list", target, "device_class: expected a non-empty string, got a list",
         device_class=["jetson"]),
    case("backend", target, "backend: expected one of onnxruntime, tensorrt, got 'tflite'", backend="tflite"),
    case("target-precision", target, "precision: expected one of fp32, fp16, int8, got 'fp64'",
         precision="fp64"),
    case("compute-capability-empty", target,
         "compute_capability: expected a non-empty string, got an empty string", compute_capability=""),
    case("tensorrt-version-number", target, "tensorrt_version: expected a non-empty string, got a number",
         tensorrt_version=8.6),
    case("jetpack-bool", target, "jetpack: expected a non-empty string, got a boolean", jetpack=True),
    case("l4t-object", target, "l4t: expected a non-empty string, got an object", l4t={"major": 36}),
    case("dla-negative", target, "dla_core: expected an int >= 0 or null, got -1", dla_core=-1),
    case("dla-bool", target, "dla_core: expected an int >= 0 or null, got True", dla_core=True),
    case("dla-string", target, "dla_core: expected an int >= 0 or null, got '0'", dla_core="0"),
    # --- Manifest
    case("format-version", manifest, "format_version: unsupported version 2 (this runtime reads 1)",
         format_version=2),
    case("format-version-bool", manifest, "format_version: unsupported version True (this runtime reads 1)",
         format_version=True),
    case("name-unsafe", manifest, f"name: '../digits' {SAFE_NAME_RULE}", name="../digits"),
    case("version-empty", manifest, "version: expected a non-empty string, got an empty string", version=""),
    case("version-unsafe", manifest, f"version: '1 2' {SAFE_NAME_RULE}", version="1 2"),
    case("created-month", manifest,
         "created: expected an ISO-8601 UTC time like 2024-05-01T12:00:00Z, got '2024-13-01T00:00:00Z'",
         created="2024-13-01T00:00:00Z"),
    case("created-offset", manifest,
         "created: expected an ISO-8601 UTC time like 2024-05-01T12:00:00Z, got '2024-05-01T12:00:00+02:00'",
         created="2024-05-01T12:00:00+02:00"),
    case("created-number", manifest,
         "created: expected an ISO-8601 UTC time like 2024-05-01T12:00:00Z, got 1714564800",
         created=1714564800),
    case("inputs-empty", manifest, "inputs: expected at least one tensor", inputs=()),
    case("outputs-empty", manifest, "outputs: expected at least one tensor", outputs=[]),
    case("inputs-number", manifest, "inputs: expected a list, got a number", inputs=5),
    case("outputs-object", manifest, "outputs: expected a list, got an object", outputs={"y": 1}),
    case("inputs-item-object", manifest, "inputs[0]: expected TensorSpec, got an object",
         inputs=[{"name": "x"}]),
    case("outputs-item-other-class", manifest, "outputs[1]: expected TensorSpec, got TargetInfo",
         outputs=[tensor(), target()]),
    case("inputs-duplicate", manifest, "inputs[1].name: 'x' is listed twice (also inputs[0])",
         inputs=[tensor(), tensor(shape=(1,))]),
    case("outputs-duplicate", manifest, "outputs[2].name: 'y' is listed twice (also outputs[1])",
         outputs=[tensor(), tensor(name="y"), tensor(name="y")]),
    case("source-sha", manifest, "source_model_sha256: expected 64 lowercase hex digits, got 'x'",
         source_model_sha256="x"),
    case("targets-string", manifest, "targets: expected a list, got a string", targets="orin"),
    case("targets-item-null", manifest, "targets[0]: expected TargetInfo, got null", targets=[None]),
    case("targets-duplicate", manifest, "targets[2].name: 'orin' is listed twice (also targets[1])",
         targets=[target(name="x86"), target(), target(backend="onnxruntime")], artifacts=[]),
    case("artifacts-item-bytes", manifest, "artifacts[0]: expected Artifact, got bytes",
         artifacts=[b"model.onnx"]),
    case("artifacts-duplicate", manifest, "artifacts[1].path: 'model.onnx' is listed twice (also artifacts[0])",
         artifacts=[artifact(), artifact(kind="report")]),
    case("artifact-target-none-listed", manifest,
         "artifacts[0].target: 'orin' is not one of the targets (none listed)",
         artifacts=[artifact(path="a.plan", kind="engine", target="orin")], targets=[]),
    case("artifact-target-unknown", manifest,
         "artifacts[1].target: 'nx' is not one of the targets (orin, x86)",
         artifacts=[artifact(), artifact(path="a.plan", kind="engine", target="nx")],
         targets=[target(), target(name="x86")]),
    case("metadata-list", manifest, "metadata: expected an object, got a list", metadata=[]),
    case("metadata-string", manifest, "metadata: expected an object, got a string", metadata="labels"),
    case("metadata-empty-string", manifest, "metadata: expected an object, got an empty string", metadata=""),
    case("metadata-bool", manifest, "metadata: expected an object, got a boolean", metadata=False),
    case("metadata-number", manifest, "metadata: expected an object, got a number", metadata=0),
    case("metadata-float", manifest, "metadata: expected an object, got a number", metadata=1.5),
    case("metadata-null", manifest, "metadata: expected an object, got null", metadata=None),
    case("metadata-tuple", manifest, "metadata: expected an object, got tuple", metadata=()),
    case("metadata-key", manifest, "metadata: keys must be strings, got 1", metadata={"a": 0, 1: "one"}),
]


@pytest.mark.parametrize("build, message", [(c.build, c.message) for c in REFUSED], ids=[c.id for c in REFUSED])
def test_an_invalid_field_is_refused_with_one_line_naming_it(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(ManifestError) as info:
        build()
    assert str(info.value) == message


ACCEPTED: List[Case] = [
    case("scalar-tensor", tensor, "", shape=()),
    case("dynamic-dims", tensor, "", shape=[-1, 1]),
    case("empty-artifact", artifact, "", size=0),
    case("dla-core-zero", target, "", dla_core=0),
    case("dla-core-one", target, "", dla_core=1),
    case("target-name-max-length", target, "", name="a" * 128),
    case("fractional-seconds", manifest, "", created="2024-05-01T12:00:00.123456Z"),
    case("no-targets-no-artifacts", manifest, "", targets=[], artifacts=[]),
]


@pytest.mark.parametrize("build", [c.build for c in ACCEPTED], ids=[c.id for c in ACCEPTED])
def test_edge_values_are_accepted(build: Callable[[], Any]) -> None:
    build()


def test_lists_are_kept_as_tuples() -> None:
    built = manifest(inputs=[tensor(shape=[1, 2])], outputs=[tensor(name="y")], artifacts=[], targets=[])
    assert built.inputs == (tensor(shape=(1, 2)),) and built.inputs[0].shape == (1, 2)
    assert isinstance(built.outputs, tuple) and isinstance(built.artifacts, tuple)
    assert isinstance(built.targets, tuple)


def test_artifacts_of_filters_by_kind_and_target() -> None:
    built = manifest(
        artifacts=[
            artifact(),
            artifact(path="orin.plan", kind="engine", target="orin"),
            artifact(path="x86.plan", kind="engine", target="x86"),
            artifact(path="orin.cache", kind="calib", target="orin"),
        ],
        targets=[target(), target(name="x86")],
    )
    assert [a.path for a in built.artifacts_of("engine")] == ["orin.plan", "x86.plan"]
    assert [a.path for a in built.artifacts_of("engine", "x86")] == ["x86.plan"]
    assert [a.path for a in built.artifacts_of("calib", "orin")] == ["orin.cache"]
    assert built.artifacts_of("report") == []


def test_artifacts_of_an_unknown_kind_is_a_programming_error_listing_the_kinds() -> None:
    with pytest.raises(ValueError) as info:
        manifest().artifacts_of("engines")
    assert str(info.value) == "unknown artifact kind 'engines' (one of onnx, onnx_data, engine, calib, report)"


def test_a_target_fingerprint_carries_every_recorded_fact() -> None:
    info = target(compute_capability="8.7", tensorrt_version="8.6.2", jetpack="6.0", l4t="36.3.0", dla_core=1)
    fingerprint = info.fingerprint
    assert dataclasses.astuple(fingerprint.build) == ("int8", 1, 1)
    assert (fingerprint.host.tensorrt_version, fingerprint.host.compute_capability) == ("8.6.2", "8.7")
    assert (fingerprint.host.l4t, fingerprint.host.jetpack) == ("36.3.0", "6.0")
    assert fingerprint.host.device_model == "jetson-orin-nano"
