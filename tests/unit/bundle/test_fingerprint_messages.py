"""Fingerprint mismatch messages: the whole line an operator reads when an engine cannot run here."""

from __future__ import annotations

import pytest

from edge_runtime.bundle.fingerprint import BuildFingerprint, EngineFingerprint, HostFingerprint, check_match, match
from edge_runtime.errors import FingerprintMismatchError

XAVIER_NX = HostFingerprint(tensorrt_version="8.5.2.2", compute_capability="7.2", l4t="35.4.1",
                            device_model="NVIDIA Jetson Xavier NX Developer Kit", dla_cores=2)
ORIN_ENGINE = EngineFingerprint(
    HostFingerprint(tensorrt_version="8.6.2", compute_capability="8.7", l4t="36.3.0", device_model="jetson-orin-nano"),
    BuildFingerprint(precision="int8", format_version=1),
)


def test_each_reason_names_both_sides() -> None:
    assert match(ORIN_ENGINE, XAVIER_NX) == [
        "TensorRT: built for 8.6.2, this host has 8.5.2.2",
        "compute capability: built for 8.7, this host has 7.2",
        "device: built for jetson-orin-nano, this host is jetson-xavier-nx",
        "L4T: built for R36, this host runs R35",
    ]


def test_check_match_joins_every_reason_in_one_line() -> None:
    with pytest.raises(FingerprintMismatchError) as info:
        check_match(ORIN_ENGINE, XAVIER_NX, "engine orin.plan")
    assert str(info.value) == (
        "engine orin.plan cannot run on this host: TensorRT: built for 8.6.2, this host has 8.5.2.2; "
        "compute capability: built for 8.7, this host has 7.2; "
        "device: built for jetson-orin-nano, this host is jetson-xavier-nx; L4T: built for R36, this host runs R35"
    )
