"""The director's model: which bin holds a device, its target paths, and editing a bin's targets (no file I/O).

Top-level ``targets`` (the image role, :func:`fleet_server.tuf_repository.publish_bundle`) lists
every published bundle. The director says which of them each device should run: a device's targets
live in the bin role ``devices-<xx>`` (``<xx>`` = :func:`device_bin`), delegated by top-level
targets (terminating, threshold 1, the online ``director`` key) for the paths ``devices/<xx>/*/*``.
A device target ``devices/<xx>/<device id>/<image>`` repeats the image target's length and hashes
and carries the rollout's custom fields (image, model, version, device_class, fingerprint,
rollout_id); the device trusts it only when both roles agree (``TufClient.device_targets``).

Bins are created lazily (the first time one of their devices gets targets), so the snapshot lists
targets.json plus at most 256 bins whatever the fleet size, and a device loads only its own bin.
Reading, signing and writing the files (``set_device_targets``, ``device_targets_of``) is
:mod:`fleet_server.tuf_repository`'s job, which re-exports the names here as the fleet's one TUF API.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Sequence

from securesystemslib.signer import Key
from tuf.api.metadata import DelegatedRole, Delegations, TargetFile, Targets

BIN_HEX = 2  # hex digits of sha256(device id) naming its bin: 16**2 = 256 bins
BIN_ROLE_PREFIX = "devices-"
DEVICE_PREFIX = "devices"


def device_bin(device_id: str) -> str:
    """The device's bin, ``<xx>``: the first BIN_HEX hex digits of sha256(device id, UTF-8)."""
    _check_device_id(device_id)
    return hashlib.sha256(device_id.encode("utf-8")).hexdigest()[:BIN_HEX]


def bin_role(device_id: str) -> str:
    """The name of the bin role holding the device's targets, ``devices-<xx>``."""
    return BIN_ROLE_PREFIX + device_bin(device_id)


def device_target_path(device_id: str, image: str) -> str:
    """The director's target path for ``image`` on this device: ``devices/<xx>/<device id>/<image>``."""
    if not image or "/" in image or image.startswith("."):
        raise ValueError(f"{image!r}: an image target is a '<model>-<version>.tar' name")
    return f"{DEVICE_PREFIX}/{device_bin(device_id)}/{device_id}/{image}"


def _check_device_id(device_id: str) -> None:
    if not device_id or "/" in device_id or device_id in (".", "..") or not device_id.isprintable():
        raise ValueError(f"{device_id!r}: a device id is printable, not empty, without '/'")


@dataclass(frozen=True)
class DeviceTarget:
    """One bundle a device should run: a published image target's name and the director's custom fields."""

    image: str
    custom: Dict[str, Any]


def wanted_by_bin(images: Mapping[str, TargetFile], assignments: Mapping[str, Sequence[DeviceTarget]],
                   ) -> Dict[str, Dict[str, Dict[str, TargetFile]]]:
    """bin role → device id → the device's new targets by path; ValueError for an unpublished image."""
    by_bin: Dict[str, Dict[str, Dict[str, TargetFile]]] = {}
    for device_id, wanted in assignments.items():
        files: Dict[str, TargetFile] = {}
        for item in wanted:
            image = images.get(item.image)
            if image is None:
                raise ValueError(f"{item.image!r}: not a published image target (publish the bundle first)")
            path = device_target_path(device_id, item.image)
            custom = {**item.custom, "image": item.image}
            files[path] = TargetFile(image.length, dict(image.hashes), path, {"custom": custom})
        by_bin.setdefault(bin_role(device_id), {})[device_id] = files
    return by_bin


def delegate(targets: Targets, role: str, key: Key) -> None:
    """Add the terminating delegation of ``devices/<xx>/*/*`` to the bin ``role``, signed by ``key`` (director)."""
    if targets.delegations is None:
        targets.delegations = Delegations(keys={}, roles={})
    assert targets.delegations.roles is not None  # path delegations only (no succinct roles)
    xx = role[len(BIN_ROLE_PREFIX):]
    targets.delegations.roles[role] = DelegatedRole(role, [], 1, True, [f"{DEVICE_PREFIX}/{xx}/*/*"])
    targets.add_key(key, role)


def replace_devices(bin_targets: Targets, role: str, devices: Mapping[str, Dict[str, TargetFile]]) -> bool:
    """Put each device's new targets in the bin in place of its old ones; whether anything changed."""
    xx = role[len(BIN_ROLE_PREFIX):]
    changed = False
    for device_id, files in devices.items():
        prefix = f"{DEVICE_PREFIX}/{xx}/{device_id}/"
        old = {path: info for path, info in bin_targets.targets.items() if path.startswith(prefix)}
        if old == files:
            continue
        for path in old:
            del bin_targets.targets[path]
        bin_targets.targets.update(files)
        changed = True
    return changed


def device_files(bin_targets: Targets, device_id: str) -> Dict[str, TargetFile]:
    """The device's targets in its bin, by image name."""
    prefix = device_target_path(device_id, "x")[:-1]
    return {path[len(prefix):]: info for path, info in bin_targets.targets.items() if path.startswith(prefix)}
