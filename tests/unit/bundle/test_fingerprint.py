"""The engine fingerprint: matching rules (one table), Jetson families, and one type across manifest, config, host."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List

import pytest

from edge_runtime.bundle.fingerprint import (
    FAMILIES,
    BuildFingerprint,
    EngineFingerprint,
    HostFingerprint,
    check_match,
    device_family,
    match,
    normalize_capability,
)
from edge_runtime.bundle.manifest import FORMAT_VERSION, TargetInfo
from edge_runtime.config import load_device_config
from edge_runtime.errors import FingerprintMismatchError
from edge_runtime.host_info import host_fingerprint

NX_HOST = HostFingerprint(tensorrt_version="8.5.2.2", compute_capability="7.2", l4t="35.4.1", jetpack="5.1.2",
                          device_model="NVIDIA Jetson Xavier NX Developer Kit", dla_cores=2)
NX_ENGINE = EngineFingerprint(
    HostFingerprint(tensorrt_version="8.5.2", compute_capability="7.2", l4t="35.4.1", device_model="jetson-xavier-nx"),
    BuildFingerprint(precision="int8", format_version=FORMAT_VERSION, dla_core=None),
)


def _engine(dla_core: Any = None, **host: Any) -> EngineFingerprint:
    return EngineFingerprint(dataclasses.replace(NX_ENGINE.host, **host),
                             dataclasses.replace(NX_ENGINE.build, dla_core=dla_core))


def _host(**changes: Any) -> HostFingerprint:
    return dataclasses.replace(NX_HOST, **changes)


# (engine, host, the mismatch reasons expected: substrings, one per reason; [] = compatible)
RULES: Dict[str, Any] = {
    "same-device": (NX_ENGINE, NX_HOST, []),
    "trt-build-number-ignored": (_engine(tensorrt_version="8.5.2.1"), NX_HOST, []),
    "trt-patch-differs": (_engine(tensorrt_version="8.5.1"), NX_HOST,
                          ["TensorRT: built for 8.5.1, this host has 8.5.2.2"]),
    "trt-minor-differs": (_engine(tensorrt_version="8.6.2"), NX_HOST, ["TensorRT"]),
    "trt-missing-on-host": (NX_ENGINE, _host(tensorrt_version=None),
                            ["TensorRT: built for 8.5.2, this host has unknown"]),
    "trt-not-recorded": (_engine(tensorrt_version=None), NX_HOST, ["TensorRT: built for unknown"]),
    "trt-two-parts-is-not-exact": (_engine(tensorrt_version="8.5"), NX_HOST, ["TensorRT"]),
    "capability-differs": (_engine(compute_capability="8.7"), NX_HOST, ["compute capability: built for 8.7"]),
    "capability-spellings": (_engine(compute_capability="sm_72"), _host(compute_capability="72"), []),
    "capability-unknown-on-host": (NX_ENGINE, _host(compute_capability=None), ["compute capability"]),
    # compute capability 7.2 on both: only the model tells AGX Xavier from Xavier NX
    "agx-engine-on-nx": (_engine(device_model="jetson-agx-xavier"), NX_HOST,
                         ["device: built for jetson-agx-xavier, this host is jetson-xavier-nx"]),
    "family-unknown-on-host": (NX_ENGINE, _host(device_model=None), []),
    "family-unknown-in-engine": (_engine(device_model="custom-carrier"), NX_HOST, []),
    "l4t-minor-differs": (_engine(l4t="35.1.0"), NX_HOST, []),
    "l4t-major-differs": (_engine(l4t="36.3"), NX_HOST, ["L4T: built for R36, this host runs R35"]),
    "dla-core-exists": (_engine(dla_core=1), NX_HOST, []),
    "dla-core-missing": (_engine(dla_core=1), _host(dla_cores=1), ["DLA core 1: this host has 1 DLA core(s)"]),
    "dla-on-no-dla-host": (_engine(dla_core=0), _host(dla_cores=0), ["DLA core 0"]),
    "dla-count-unknown": (_engine(dla_core=0), _host(dla_cores=None),
                          ["DLA core 0: this host's DLA core count is unknown"]),
    "orin-engine-on-xavier": (
        _engine(tensorrt_version="8.6.2", compute_capability="8.7", l4t="36.3.0", device_model="jetson-orin-nano"),
        NX_HOST,
        ["TensorRT", "compute capability", "device", "L4T"],
    ),
}


@pytest.mark.parametrize("engine, host, expected", list(RULES.values()), ids=list(RULES))
def test_matching_rules(engine: EngineFingerprint, host: HostFingerprint, expected: List[str]) -> None:
    reasons = match(engine, host)
    assert len(reasons) == len(expected), reasons
    for reason, wanted in zip(reasons, expected):
        assert wanted in reason


def test_check_match_raises_every_reason_in_one_line() -> None:
    engine, host, _ = RULES["orin-engine-on-xavier"]
    with pytest.raises(FingerprintMismatchError) as info:
        check_match(engine, host, "engine engines/orin-nano.plan")
    message = str(info.value)
    assert "\n" not in message and info.value.http_status == 409
    assert message.startswith("engine engines/orin-nano.plan cannot run on this host: TensorRT")
    assert message.count("; ") == 3
    check_match(NX_ENGINE, NX_HOST, "engine")  # compatible: no error


@pytest.mark.parametrize("model, family", [
    ("NVIDIA Jetson AGX Xavier Developer Kit", "jetson-agx-xavier"),
    ("Jetson-AGX", "jetson-agx-xavier"),
    ("NVIDIA Jetson Xavier NX Developer Kit", "jetson-xavier-nx"),
    ("NVIDIA Jetson AGX Orin Developer Kit", "jetson-agx-orin"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "jetson-orin-nx"),
    ("NVIDIA Jetson Orin Nano Developer Kit", "jetson-orin-nano"),
    ("NVIDIA Jetson Nano Developer Kit", "jetson-nano"),
    ("jetson-xavier-nx", "jetson-xavier-nx"),
    ("jetson-orin-nano", "jetson-orin-nano"),
    ("x86-cpu", None),
    ("", None),
    (None, None),
])
def test_device_family_from_model_strings_and_device_classes(model: Any, family: Any) -> None:
    found = device_family(model)
    assert (found.name if found else None) == family


def test_every_family_finds_itself_by_name() -> None:
    assert [device_family(family.name) for family in FAMILIES] == list(FAMILIES)


@pytest.mark.parametrize("text, expected", [("7.2", "7.2"), ("72", "7.2"), ("sm_87", "8.7"), ("10.0", "10.0"),
                                            ("odd", "odd"), (None, None)])
def test_normalize_capability(text: Any, expected: Any) -> None:
    assert normalize_capability(text) == expected


def test_completed_by_fills_only_unknown_facts() -> None:
    read = HostFingerprint(compute_capability="7.2", device_model="NVIDIA Jetson Orin NX", dla_cores=None)
    config = HostFingerprint(tensorrt_version="8.6.2", compute_capability="8.7", dla_cores=1)
    assert read.completed_by(config) == HostFingerprint(
        tensorrt_version="8.6.2", compute_capability="7.2", device_model="NVIDIA Jetson Orin NX", dla_cores=1)


@pytest.mark.parametrize("config_name, model, release", [
    ("xavier-nx", "NVIDIA Jetson Xavier NX Developer Kit", "# R35 (release), REVISION: 4.1, GCID: 33958178\n"),
    ("agx-xavier", "NVIDIA Jetson AGX Xavier Developer Kit", "# R35 (release), REVISION: 4.1, GCID: 33958178\n"),
    ("orin-nano", "NVIDIA Jetson Orin Nano Developer Kit", "# R36 (release), REVISION: 3.0, GCID: 36191598\n"),
])
def test_manifest_target_device_config_and_host_are_comparable(
    tmp_path: Path, device_configs_dir: Path, config_name: str, model: str, release: str
) -> None:
    """An engine exported for a device config matches that device's host, and not another family's."""
    config = load_device_config(device_configs_dir / f"{config_name}.yaml")
    target = TargetInfo(name=config.name, device_class=config.device_class, backend=config.backend,
                        precision=config.default_precision, compute_capability=config.compute_capability,
                        tensorrt_version=config.tensorrt_version, jetpack=config.jetpack, l4t=config.l4t)
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text(model + "\x00")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(release)
    read = host_fingerprint(tmp_path, probe_gpu=False)
    # TensorRT is not installed here: the device config supplies what the host cannot tell
    host = dataclasses.replace(read, tensorrt_version=config.tensorrt_version)
    assert isinstance(target.fingerprint.host, HostFingerprint) and isinstance(config.fingerprint, HostFingerprint)
    assert target.fingerprint.build == BuildFingerprint(config.default_precision, FORMAT_VERSION, None)
    assert match(target.fingerprint, host) == []
    assert match(target.fingerprint, config.fingerprint) == []
    assert match(target.fingerprint, read.completed_by(config.fingerprint)) == []
    others = [other for other in ("xavier-nx", "agx-xavier", "orin-nano") if other != config_name]
    for other in others:
        other_config = load_device_config(device_configs_dir / f"{other}.yaml")
        assert match(target.fingerprint, other_config.fingerprint), other


def test_target_with_dla_core_needs_that_core_on_the_device(device_configs_dir: Path) -> None:
    target = TargetInfo("nx-dla1", "jetson-xavier-nx", "tensorrt", "int8", "7.2", "8.5.2", "5.1.2", "35.4.1",
                        dla_core=1)
    nx = load_device_config(device_configs_dir / "xavier-nx.yaml")
    assert target.fingerprint.build.dla_core == 1
    assert match(target.fingerprint, nx.fingerprint) == []
    assert match(target.fingerprint, dataclasses.replace(nx.fingerprint, dla_cores=1)) == [
        "DLA core 1: this host has 1 DLA core(s)"]
