"""Device config loading: the shipped files load, and every bad file is a one-line ConfigError
that names the file, the key path and what was expected."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import pytest
import yaml

from edge_runtime.config import (
    BatchProfile,
    DeviceConfig,
    QuantizationSettings,
    device_config_from_mapping,
    load_device_config,
)
from edge_runtime.errors import ConfigError

DEVICE_CONFIGS = Path(__file__).resolve().parents[2] / "device_configs"
SHIPPED = ["agx-xavier", "xavier-nx", "orin-nano", "x86-cpu", "aarch64-cpu"]

# A valid TensorRT device; each bad case below changes one thing in it.
VALID: Dict[str, Any] = {
    "name": "test-device",
    "device_class": "jetson-xavier-nx",
    "backend": "tensorrt",
    "precisions": ["fp32", "fp16", "int8"],
    "default_precision": "int8",
    "batch": {"min": 1, "opt": 4, "max": 8},
    "quantization": {"scheme": "s8s8-qdq"},
    "memory_budget_mb": 3072,
    "workspace_mb": 1024,
    "compute_capability": "7.2",
    "tensorrt_version": "8.5.2",
}


def _yaml(**changes: Any) -> str:
    """VALID with top-level keys replaced (a value of None deletes the key), as YAML text."""
    data = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return yaml.safe_dump(data, sort_keys=False)


BAD_CASES: List[Tuple[str, str, List[str]]] = [
    ("unknown-top-level-key", _yaml(foo=1), ["unknown key 'foo' (allowed: name, device_class,"]),
    (
        "unknown-nested-key",
        _yaml(batch={"min": 1, "opt": 4, "max": 8, "maximum": 9}),
        ["unknown key 'batch.maximum' (allowed: min, opt, max)"],
    ),
    (
        "loader-field-is-not-a-key",
        _yaml(source="elsewhere.yaml"),
        ["unknown key 'source'"],
    ),
    (
        "str-for-int",
        _yaml(batch={"min": 1, "opt": 4, "max": "eight"}),
        ["batch.max: expected int, got str ('eight')"],
    ),
    ("bool-for-int", _yaml(memory_budget_mb=True), ["memory_budget_mb: expected int, got bool"]),
    ("float-for-int", _yaml(workspace_mb=1.5), ["workspace_mb: expected int, got float (1.5)"]),
    (
        "unquoted-version",
        _yaml(compute_capability=7.2),
        ["compute_capability: expected str or null, got float (7.2)", "quote it"],
    ),
    (
        "scalar-for-list",
        _yaml(precisions="fp32"),
        ["precisions: expected list of str, got str ('fp32')"],
    ),
    (
        "scalar-for-mapping",
        _yaml(batch=8),
        ["batch: expected mapping (BatchProfile), got int (8)"],
    ),
    ("missing-required-key", _yaml(device_class=None), ["missing required key 'device_class'"]),
    (
        "missing-nested-key",
        _yaml(quantization={"per_channel": True}),
        ["missing required key 'quantization.scheme'"],
    ),
    ("yaml-syntax-error", "name: [unclosed\nbackend: tensorrt\n", ["invalid YAML", "line "]),
    ("top-level-list", "- name\n- backend\n", ["expected a mapping at the top level, got list"]),
    ("empty-file", "", ["expected a mapping at the top level, got an empty document"]),
    (
        "batch-min-above-max",
        _yaml(batch={"min": 8, "opt": 4, "max": 2}),
        ["batch: expected 1 <= min <= opt <= max, got min=8, opt=4, max=2"],
    ),
    (
        "batch-min-zero",
        _yaml(batch={"min": 0, "opt": 4, "max": 8}),
        ["batch: expected 1 <= min <= opt <= max, got min=0"],
    ),
    (
        "default-precision-not-supported",
        _yaml(precisions=["fp32", "fp16"]),
        ["default_precision: expected one of the precisions (fp32, fp16), got 'int8'"],
    ),
    (
        "unknown-precision",
        _yaml(precisions=["fp32", "fp64"], default_precision="fp32"),
        ["precisions[1]: expected one of fp32, fp16, int8, got 'fp64'"],
    ),
    ("no-precisions", _yaml(precisions=[]), ["precisions: expected at least one of fp32"]),
    (
        "repeated-precision",
        _yaml(precisions=["int8", "int8"]),
        ["precisions[1]: 'int8' is listed twice"],
    ),
    (
        "unknown-backend",
        _yaml(backend="tflite"),
        ["backend: expected one of onnxruntime, tensorrt, got 'tflite'"],
    ),
    (
        "tensorrt-without-version",
        _yaml(tensorrt_version=None),
        ["missing required key 'tensorrt_version' (backend is tensorrt)"],
    ),
    (
        "tensorrt-without-compute-capability",
        _yaml(compute_capability=None),
        ["missing required key 'compute_capability' (backend is tensorrt)"],
    ),
    (
        "bad-scheme",
        _yaml(quantization={"scheme": "u8u8-qdq"}),
        ["quantization.scheme: expected one of u8s8-qdq, s8s8-qdq, got 'u8u8-qdq'"],
    ),
    (
        "asymmetric-scheme-for-tensorrt",
        _yaml(quantization={"scheme": "u8s8-qdq"}),
        ["quantization.scheme: expected 's8s8-qdq' for backend tensorrt, got 'u8s8-qdq'"],
    ),
    (
        "bad-calibration-method",
        _yaml(quantization={"scheme": "s8s8-qdq", "calibration_method": "kl"}),
        ["quantization.calibration_method: expected one of minmax, entropy, percentile"],
    ),
    ("negative-dla-cores", _yaml(dla_cores=-1), ["dla_cores: expected int >= 0, got -1"]),
    ("zero-memory-budget", _yaml(memory_budget_mb=0), ["memory_budget_mb: expected int > 0"]),
    ("zero-workspace", _yaml(workspace_mb=0), ["workspace_mb: expected int > 0, got 0"]),
]


def _assert_one_line(error: ConfigError, file_name: str, fragments: List[str]) -> None:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message, message
    assert file_name in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_loads(name: str) -> None:
    path = DEVICE_CONFIGS / f"{name}.yaml"
    config = load_device_config(path)
    assert config.name == name
    assert config.source == str(path)
    assert config.default_precision in config.precisions
    assert isinstance(config.precisions, tuple)
    assert config.uses_tensorrt == (name not in ("x86-cpu", "aarch64-cpu"))


@pytest.mark.parametrize(
    ("name", "capability", "trt", "jetpack", "dla"),
    [
        ("agx-xavier", "7.2", "8.5.2", "5.1.2", 2),
        ("xavier-nx", "7.2", "8.5.2", "5.1.2", 2),
        ("orin-nano", "8.7", "8.6.2", "6.0", 0),
    ],
)
def test_jetson_configs_carry_the_engine_fingerprint(
    name: str, capability: str, trt: str, jetpack: str, dla: int
) -> None:
    config = load_device_config(str(DEVICE_CONFIGS / f"{name}.yaml"))
    assert (config.compute_capability, config.tensorrt_version) == (capability, trt)
    assert (config.jetpack, config.dla_cores) == (jetpack, dla)
    assert config.quantization.scheme == "s8s8-qdq"
    assert config.precisions == ("fp32", "fp16", "int8")


def test_x86_config_uses_onnxruntime_with_u8s8() -> None:
    config = load_device_config(DEVICE_CONFIGS / "x86-cpu.yaml")
    assert config.backend == "onnxruntime"
    assert config.quantization == QuantizationSettings(scheme="u8s8-qdq")
    assert config.batch == BatchProfile(min=1, opt=4, max=8)
    assert config.tensorrt_version is None and config.compute_capability is None


@pytest.mark.parametrize(
    ("text", "fragments"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_config_is_a_one_line_config_error(
    tmp_path: Path, text: str, fragments: List[str]
) -> None:
    path = tmp_path / "bad-device.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_device_config(path)
    _assert_one_line(caught.value, "bad-device.yaml", fragments)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_device_config(tmp_path / "absent.yaml")
    _assert_one_line(caught.value, "absent.yaml", ["cannot read file", "No such file"])


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_device_config(tmp_path)
    _assert_one_line(caught.value, str(tmp_path), ["cannot read file"])


def test_invalid_utf8_is_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"name: \xff\xfe\x00bad\n")
    with pytest.raises(ConfigError) as caught:
        load_device_config(path)
    _assert_one_line(caught.value, "binary.yaml", ["invalid YAML"])


def test_from_mapping_sets_source_and_freezes() -> None:
    config = device_config_from_mapping(copy.deepcopy(VALID), "inline")
    assert config.source == "inline"
    assert config.precisions == ("fp32", "fp16", "int8")
    assert config.quantization == QuantizationSettings(
        scheme="s8s8-qdq", per_channel=True, calibration_method="minmax", calibration_samples=256
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.backend = "onnxruntime"  # type: ignore[misc]


def test_from_mapping_rejects_a_non_mapping() -> None:
    with pytest.raises(
        ConfigError, match=r"^inline: expected a mapping at the top level, got list$"
    ):
        device_config_from_mapping(["name"], "inline")  # type: ignore[arg-type]


def test_error_is_raised_from_the_yaml_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("a: [1\n")
    with pytest.raises(ConfigError) as caught:
        load_device_config(path)
    assert isinstance(caught.value.__cause__, yaml.YAMLError)


# The generic validator also handles hints DeviceConfig does not use today (float, List,
# Literal, fixed-length Tuple, Optional dataclass): check them on a dataclass of their own.


@dataclasses.dataclass(frozen=True)
class _Sample:
    ratio: float
    mode: Literal["fast", "safe"]
    sizes: List[int]
    pair: Tuple[int, str]
    batch: Optional[BatchProfile] = None


def _sample(**data: Any) -> Any:
    from edge_runtime.config.schema import _build  # the generic part is private on purpose

    base: Dict[str, Any] = {"ratio": 1, "mode": "fast", "sizes": [1], "pair": [1, "a"]}
    base.update(data)
    return _build(_Sample, base, "", "sample.yaml")


def test_generic_validator_converts_values() -> None:
    sample = _sample(batch={"min": 1, "opt": 1, "max": 2})
    assert sample == _Sample(1.0, "fast", [1], (1, "a"), BatchProfile(1, 1, 2))
    assert isinstance(sample.ratio, float)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"ratio": True}, "ratio: expected float, got bool"),
        ({"mode": "slow"}, "mode: expected one of 'fast', 'safe', got str ('slow')"),
        ({"sizes": [1, "2"]}, "sizes[1]: expected int, got str ('2')"),
        ({"pair": [1]}, "pair: expected list of 2 (int, str), got list"),
        ({"batch": {"min": 1, "opt": 1}}, "missing required key 'batch.max'"),
    ],
    ids=["bool-for-float", "literal", "list-item", "tuple-length", "optional-dataclass"],
)
def test_generic_validator_messages(data: Dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _sample(**data)
    _assert_one_line(caught.value, "sample.yaml", [fragment])


def test_device_config_fields_are_the_agreed_api() -> None:
    names = [f.name for f in dataclasses.fields(DeviceConfig)]
    assert names[:9] == [
        "name",
        "device_class",
        "backend",
        "precisions",
        "default_precision",
        "batch",
        "quantization",
        "memory_budget_mb",
        "workspace_mb",
    ]
    assert names[-1] == "source"


def test_example_runtime_settings_load_with_defaults() -> None:
    from edge_runtime.config import RuntimeSettings, load_runtime_settings

    settings = load_runtime_settings(DEVICE_CONFIGS / "runtime" / "example.yaml")
    defaults = RuntimeSettings(device_config="../x86-cpu.yaml", trusted_keys=("../../keys/signing.pub",))
    assert dataclasses.replace(settings, source="") == defaults  # the file shows every default
    assert settings.resolve(settings.device_config) == (DEVICE_CONFIGS / "x86-cpu.yaml").resolve()


@pytest.mark.parametrize(
    "extra, message",
    [
        ("port: 70000\n", "port: expected 0..65535"),
        ("http: {threads: 4, max_in_flight: 4}\n", "http.max_in_flight: expected fewer than http.threads"),
        ("limits: {max_request_bytes: 10, max_json_bytes: 20}\n", "limits.max_json_bytes"),
        ("shared_memory: {key_prefixes: [app-]}\n", "shared_memory.key_prefixes[0]"),
        ("restricted_api: [{groups: [repo], header: k, value_env: K}]\n", "restricted_api[0].groups[0]"),
        ("restricted_api: [{groups: [statistics], header: k}]\n", "exactly one of value_file, value_env"),
        ("restricted_api: [{groups: [statistics], header: api_key, value_env: K}]\n",
         "restricted_api[0].header: expected a header name (letters, digits and -), got 'api_key'"),
        ("batching: {max_batch_size: 4, preferred_batch_sizes: [8]}\n", "preferred_batch_sizes[0]"),
        ("batching: {max_queue_size: 0}\n", "batching.max_queue_size"),
        ("limits: {max_json_depth: '64'}\n", "limits.max_json_depth: expected int"),
        ("turbo: true\n", "unknown key 'turbo'"),
    ],
    ids=["port", "in-flight-threads", "json-cap", "shm-prefix", "restricted-group", "restricted-secret",
         "restricted-underscore", "preferred-over-max", "queue-size", "depth-type", "unknown-key"],
)
def test_bad_runtime_settings(tmp_path: Path, extra: str, message: str) -> None:
    from edge_runtime.config import load_runtime_settings

    path = tmp_path / "runtime.yaml"
    path.write_text("device_config: d.yaml\ntrusted_keys: [k.pub]\n" + extra)
    with pytest.raises(ConfigError) as caught:
        load_runtime_settings(path)
    assert message in str(caught.value) and "runtime.yaml" in str(caught.value)
