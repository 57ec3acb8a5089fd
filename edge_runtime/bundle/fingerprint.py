"""The engine fingerprint (DESIGN rule 4): what a TensorRT engine needs of the machine that runs it.

A TensorRT engine runs only on the GPU model and the TensorRT release it was built with (8.5 has
no version or hardware compatibility mode), so before an engine is deserialized its fingerprint is
compared with the host's. One set of types serves the manifest's targets, the device configs and
:mod:`edge_runtime.host_info`:

- :class:`HostFingerprint`: what a machine is (TensorRT version, compute capability, L4T and
  JetPack release, device model, DLA cores). ``host_info`` reads it from the running host; a
  device config and a manifest target declare it.
- :class:`BuildFingerprint`: what only an engine has (precision, DLA core, bundle format).
- :class:`EngineFingerprint`: both, for one engine.

:func:`match` holds every compatibility rule and returns all the reasons an engine cannot run on a
host (empty: compatible); :func:`check_match` raises them as one FingerprintMismatchError (409).
Pure Python with no imports beyond the standard library and the error tree, so the device's
Python 3.8 and the workstation load it alike.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from edge_runtime.errors import FingerprintMismatchError

_VERSION = re.compile(r"\d+(?:\.\d+)*")
_CAPABILITY = re.compile(r"(?:sm_?)?(\d+)\.?(\d)")


@dataclass(frozen=True)
class Family:
    """A Jetson module family: engines built for one do not run on another, even at equal compute capability."""

    name: str  # as device configs spell device_class, e.g. 'jetson-xavier-nx'
    aliases: Tuple[str, ...]  # lowercase phrases of /proc/device-tree/model or device_class
    compute_capability: str
    dla_cores: Optional[int]  # None where modules of the family differ (Orin NX 8 GB has 1, 16 GB 2)


# Order matters: a model string is matched against the first family whose alias it contains.
FAMILIES: Tuple[Family, ...] = (
    Family("jetson-agx-orin", ("agx orin",), "8.7", 2),
    Family("jetson-orin-nx", ("orin nx",), "8.7", None),
    Family("jetson-orin-nano", ("orin nano",), "8.7", 0),
    Family("jetson-agx-xavier", ("agx xavier",), "7.2", 2),
    Family("jetson-xavier-nx", ("xavier nx",), "7.2", 2),
    Family("jetson-tx2", ("tx2",), "6.2", 0),
    Family("jetson-nano", ("jetson nano",), "5.3", 0),
)
# Older L4T releases name the AGX Xavier developer kit just "Jetson-AGX".
_EXACT_NAMES = {"jetson agx": "jetson-agx-xavier"}

# JetPack releases by L4T release, for display: matching uses the L4T major version.
JETPACK_BY_L4T = {
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2",
}


def device_family(model: Optional[str]) -> Optional[Family]:
    """The Jetson family of a device-tree model string or a device_class; None when not a known Jetson."""
    if not model:
        return None
    text = " ".join(re.sub(r"[-_]", " ", model.lower()).split())
    exact = _EXACT_NAMES.get(text)
    for family in FAMILIES:
        if family.name == exact or any(alias in text for alias in family.aliases):
            return family
    return None


def normalize_capability(value: Optional[str]) -> Optional[str]:
    """'7.2', '72' and 'sm_72' all as '7.2'; None stays None, anything else is kept as given."""
    if value is None:
        return None
    found = _CAPABILITY.fullmatch(value.strip().lower())
    return f"{int(found.group(1))}.{found.group(2)}" if found else value


def version_parts(value: Optional[str], count: int) -> Optional[Tuple[int, ...]]:
    """The first ``count`` numbers of a dotted version ('8.5.2.2' → (8, 5, 2)); None if unreadable."""
    found = _VERSION.match(value.strip()) if value else None
    return tuple(int(part) for part in found.group(0).split(".")[:count]) if found else None


@dataclass(frozen=True)
class HostFingerprint:
    """What a machine is, as far as an engine cares; None where a fact is unknown."""

    tensorrt_version: Optional[str] = None
    compute_capability: Optional[str] = None
    l4t: Optional[str] = None
    jetpack: Optional[str] = None
    device_model: Optional[str] = None  # /proc/device-tree/model on a host, device_class elsewhere
    dla_cores: Optional[int] = None

    @property
    def family(self) -> Optional[Family]:
        """The Jetson family the device model names, if any."""
        return device_family(self.device_model)

    def completed_by(self, other: HostFingerprint) -> HostFingerprint:
        """This fingerprint with its unknown facts taken from ``other`` (e.g. the device config)."""
        unknown = {item.name: getattr(other, item.name) for item in dataclasses.fields(self)
                   if getattr(self, item.name) is None}
        return dataclasses.replace(self, **unknown)


@dataclass(frozen=True)
class BuildFingerprint:
    """What only a built engine has: its precision, the DLA core it runs on, its bundle's format."""

    precision: str
    format_version: int
    dla_core: Optional[int] = None  # None: the GPU


@dataclass(frozen=True)
class EngineFingerprint:
    """One engine: the host it was built for and how it was built."""

    host: HostFingerprint
    build: BuildFingerprint


def match(engine: EngineFingerprint, host: HostFingerprint) -> List[str]:
    """Every reason ``engine`` cannot run on ``host``; an empty list means compatible.

    TensorRT version (major.minor.patch: JetPack pins one build per patch release) and compute
    capability must be known on both sides and equal; the device family and the L4T major release
    must be equal where both are known; an engine's DLA core must exist on the host. Precision and
    bundle format are not host facts: they tell engines apart (e.g. in a device-local engine cache).
    """
    built, here = engine.host, host
    reasons: List[str] = []
    built_trt, host_trt = version_parts(built.tensorrt_version, 3), version_parts(here.tensorrt_version, 3)
    if built_trt is None or host_trt is None or built_trt != host_trt:
        reasons.append(_differs("TensorRT", built.tensorrt_version, here.tensorrt_version))
    built_cc, host_cc = normalize_capability(built.compute_capability), normalize_capability(here.compute_capability)
    if built_cc is None or host_cc is None or built_cc != host_cc:
        reasons.append(_differs("compute capability", built_cc, host_cc))
    built_family, host_family = built.family, here.family
    if built_family is not None and host_family is not None and built_family != host_family:
        reasons.append(f"device: built for {built_family.name}, this host is {host_family.name}")
    built_l4t, host_l4t = version_parts(built.l4t, 1), version_parts(here.l4t, 1)
    if built_l4t is not None and host_l4t is not None and built_l4t != host_l4t:
        reasons.append(f"L4T: built for R{built_l4t[0]}, this host runs R{host_l4t[0]}")
    reasons.extend(_dla_reasons(engine.build.dla_core, here.dla_cores))
    return reasons


def check_match(engine: EngineFingerprint, host: HostFingerprint, what: str) -> None:
    """Raise FingerprintMismatchError naming ``what`` and every reason, in one line, unless compatible."""
    reasons = match(engine, host)
    if reasons:
        raise FingerprintMismatchError(f"{what} cannot run on this host: {'; '.join(reasons)}")


def _dla_reasons(dla_core: Optional[int], dla_cores: Optional[int]) -> List[str]:
    if dla_core is None:
        return []
    if dla_cores is None:
        return [f"DLA core {dla_core}: this host's DLA core count is unknown"]
    if dla_core >= dla_cores:
        return [f"DLA core {dla_core}: this host has {dla_cores} DLA core(s)"]
    return []


def _differs(what: str, built: Optional[str], here: Optional[str]) -> str:
    return f"{what}: built for {built or 'unknown'}, this host has {here or 'unknown'}"

