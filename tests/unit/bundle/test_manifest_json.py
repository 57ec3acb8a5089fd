"""manifest.json parsing and writing: strict JSON, whole one-line errors prefixed with the file name."""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Dict, List, NamedTuple

import pytest

from edge_runtime.bundle.manifest import Artifact, Manifest, TargetInfo, TensorSpec
from edge_runtime.errors import ManifestError

SHA = "ab" * 32
STAYS_INSIDE = "must stay inside the bundle (no '..', '.' or empty segments, no trailing '/')"


def valid_manifest(**changes: Any) -> Manifest:
    values: Dict[str, Any] = dict(
        name="digits",
        version="1.2.0",
        created="2024-05-01T12:00:00Z",
        inputs=(TensorSpec("input", "float32", (-1, 1, 28, 28)),),
        outputs=(TensorSpec("logits", "float32", (-1, 10)),),
        source_model_sha256=SHA,
        artifacts=(
            Artifact("model.onnx", SHA, 10, "onnx", precision="fp32"),
            Artifact("engines/orin.plan", "cd" * 32, 20, "engine", "orin", "int8"),
        ),
        targets=(TargetInfo("orin", "jetson-orin-nano", "tensorrt", "int8", "8.7", "8.6.2", "6.0", "36.3.0"),),
        metadata={"labels": ["zero", "one"]},
    )
    values.update(changes)
    return Manifest(**values)


def document() -> Dict[str, Any]:
    loaded: Dict[str, Any] = json.loads(valid_manifest().to_json())
    return loaded


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


class Case(NamedTuple):
    id: str
    raw: Callable[[], bytes]
    message: str


def edited(id: str, edit: Callable[[Dict[str, Any]], None], message: str) -> Case:
    def raw() -> bytes:
        doc = document()
        edit(doc)
        return encode(doc)

    return Case(id, raw, message)


def setting(path: str, value: Any) -> Callable[[Dict[str, Any]], None]:
    def edit(doc: Dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return edit


def dropping(*keys: str, within: str = "") -> Callable[[Dict[str, Any]], None]:
    def edit(doc: Dict[str, Any]) -> None:
        node: Any = doc
        for part in filter(None, within.split(".")):
            node = node[int(part)] if part.isdigit() else node[part]
        for key in keys:
            del node[key]

    return edit


REFUSED: List[Case] = [
    Case("not-utf8", lambda: b"\xff\xfe", "manifest.json: not UTF-8 text: invalid start byte"),
    Case("duplicate-key", lambda: b'{"name": "a", "name": "b"}', "manifest.json: duplicate key 'name'"),
    Case("nan", lambda: b'{"x": NaN}', "manifest.json: NaN is not valid JSON"),
    Case("infinity", lambda: b'{"x": -Infinity}', "manifest.json: -Infinity is not valid JSON"),
    Case("top-level-list", lambda: b"[1]", "manifest.json: top level: expected an object, got a list"),
    Case("top-level-number", lambda: b"5", "manifest.json: top level: expected an object, got a number"),
    Case("top-level-string", lambda: b'"format_version"',
         "manifest.json: top level: expected an object, got a string"),
    Case("top-level-null", lambda: b"null", "manifest.json: top level: expected an object, got null"),
    edited("newer-format-with-new-keys", lambda doc: doc.update(format_version=2, signer="ci"),
           "manifest.json: format_version: unsupported version 2 (this runtime reads 1)"),
    edited("format-version-string", setting("format_version", "1"),
           "manifest.json: format_version: unsupported version '1' (this runtime reads 1)"),
    edited("unknown-keys", lambda doc: doc.update(zeta=1, alpha=2),
           "manifest.json: top level: unknown key(s) alpha, zeta"),
    edited("missing-keys", dropping("inputs", "created"), "manifest.json: top level: missing key(s) created, inputs"),
    edited("inputs-object", setting("inputs", {}), "manifest.json: inputs: expected a list, got an object"),
    edited("outputs-item-number", setting("outputs.0", 5),
           "manifest.json: outputs[0]: expected an object, got a number"),
    edited("artifacts-object", setting("artifacts", {}), "manifest.json: artifacts: expected a list, got an object"),
    edited("targets-null", setting("targets", None), "manifest.json: targets: expected a list, got null"),
    edited("artifact-unknown-key", setting("artifacts.1.dla", 0), "manifest.json: artifacts[1]: unknown key(s) dla"),
    edited("artifact-missing-keys", dropping("kind", "size", within="artifacts.0"),
           "manifest.json: artifacts[0]: missing key(s) size, kind"),
    edited("target-missing-key", dropping("backend", within="targets.0"),
           "manifest.json: targets[0]: missing key(s) backend"),
    edited("tensor-shape-zero", setting("inputs.0.shape", [1, 0]),
           "manifest.json: inputs[0].shape[1]: expected an int >= 1 or -1, got 0"),
    edited("tensor-dtype", setting("outputs.0.dtype", "float"),
           "manifest.json: outputs[0].dtype: expected one of bool, int8, int16, int32, int64, uint8, uint16, "
           "uint32, uint64, float16, float32, float64, got 'float'"),
    edited("size-bool", setting("artifacts.0.size", True),
           "manifest.json: artifacts[0].size: expected an int >= 0, got True"),
    edited("path-escapes", setting("artifacts.0.path", "../x"),
           f"manifest.json: artifacts[0].path: '../x' {STAYS_INSIDE}"),
    edited("path-absolute", setting("artifacts.1.path", "/etc/passwd"),
           "manifest.json: artifacts[1].path: '/etc/passwd' is absolute; paths are relative to the bundle root"),
    edited("calib-without-target", setting("artifacts.1.target", None),
           "manifest.json: artifacts[1].target: required for an artifact of kind 'engine'"),
    edited("unknown-target", setting("artifacts.1.target", "nx"),
           "manifest.json: artifacts[1].target: 'nx' is not one of the targets (orin)"),
    edited("duplicate-path", lambda doc: doc["artifacts"].append(dict(doc["artifacts"][0])),
           "manifest.json: artifacts[2].path: 'model.onnx' is listed twice (also artifacts[0])"),
    edited("negative-dla", setting("targets.0.dla_core", -1),
           "manifest.json: targets[0].dla_core: expected an int >= 0 or null, got -1"),
    edited("device-class-number", setting("targets.0.device_class", 7),
           "manifest.json: targets[0].device_class: expected a non-empty string, got a number"),
    edited("metadata-list", setting("metadata", []), "manifest.json: metadata: expected an object, got a list"),
    edited("created-number", setting("created", 0),
           "manifest.json: created: expected an ISO-8601 UTC time like 2024-05-01T12:00:00Z, got 0"),
]


@pytest.mark.parametrize("raw, message", [(c.raw, c.message) for c in REFUSED], ids=[c.id for c in REFUSED])
def test_a_refused_manifest_json_gets_one_whole_line(raw: Callable[[], bytes], message: str) -> None:
    with pytest.raises(ManifestError) as info:
        Manifest.from_json(raw())
    assert str(info.value) == message


def test_invalid_json_is_named_as_such() -> None:
    with pytest.raises(ManifestError) as info:
        Manifest.from_json(b'{"name": ')
    assert re.fullmatch(r"manifest\.json: not valid JSON: .+", str(info.value))


def test_format_version_may_be_left_out() -> None:
    doc = document()
    del doc["format_version"]
    assert Manifest.from_json(encode(doc)) == valid_manifest()


def test_metadata_may_be_left_out() -> None:
    doc = document()
    del doc["metadata"]
    assert Manifest.from_json(encode(doc)).metadata == {}


def test_round_trip_is_byte_exact() -> None:
    manifest = valid_manifest()
    raw = manifest.to_json()
    assert Manifest.from_json(raw) == manifest
    assert Manifest.from_json(raw).to_json() == raw
    assert raw == (json.dumps(json.loads(raw), sort_keys=True, indent=2) + "\n").encode()


def test_non_ascii_metadata_is_written_as_utf8_not_escaped() -> None:
    manifest = valid_manifest(metadata={"labels": ["zéro", "一"]})
    raw = manifest.to_json()
    assert '"zéro"'.encode() in raw and '"一"'.encode() in raw
    assert b"\\u" not in raw
    assert Manifest.from_json(raw) == manifest


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"scale": float("nan")}, r"Out of range float values are not JSON compliant(: nan)?"),
        ({"scale": float("inf")}, r"Out of range float values are not JSON compliant(: inf)?"),
        ({"labels": {"zero"}}, r"Object of type set is not JSON serializable"),
    ],
    ids=["nan", "inf", "set"],
)
def test_metadata_that_is_not_json_is_refused_when_written(metadata: Dict[str, Any], message: str) -> None:
    manifest = valid_manifest(metadata=metadata)
    with pytest.raises(ManifestError) as info:
        manifest.to_json()
    assert re.fullmatch(r"manifest\.json: cannot be serialized: " + message, str(info.value))
