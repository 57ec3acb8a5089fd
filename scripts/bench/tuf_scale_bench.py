"""How the fleet's TUF metadata scales with the number of devices (docs/fleet.md, "Why this holds for 10 000 devices").

    .venv/bin/python scripts/bench/tuf_scale_bench.py [--devices 10000] [--models 2]

Builds a real repository with ``fleet_server.tuf_repository`` in a temporary directory, publishes
``--models`` bundles (tiny stand-in tar files: metadata sizes do not depend on a bundle's size),
assigns every bundle to every one of ``--devices`` devices through the director's bins, then:

- prints the size of each file a device fetches on a refresh (timestamp, snapshot, top-level
  targets, its one bin) and the largest bin, against the naive layout where one targets file
  lists every device's targets (computed by serializing that file, not estimated);
- times ``set_device_targets`` for the whole fleet, for a canary of one device (one bin
  re-signed) and for a 10 % step, and counts the bins each re-signed.

Nothing here is asserted: it prints what it measured.
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from tuf.api.metadata import Metadata, TargetFile, Targets

from fleet_server.tuf_repository import (
    DeviceTarget,
    device_target_path,
    init_repository,
    publish_bundle,
    read_current,
    set_device_targets,
)


def _tar(path: Path, payload: bytes) -> Path:
    source = path.with_suffix(".bin")
    source.write_bytes(payload)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(source, arcname="model.onnx")
    return path


def _size(repo: Path, role: str) -> int:
    metadata = repo / "metadata"
    if role == "timestamp":
        return (metadata / "timestamp.json").stat().st_size
    version = read_current(repo, role).signed.version
    return (metadata / f"{version}.{role}.json").stat().st_size


def _assign(repo: Path, keys: Path, devices: List[str], images: List[str], rollout_id: int) -> Dict[str, float]:
    start = time.perf_counter()
    before = read_current(repo, "snapshot").signed.meta
    set_device_targets(repo, keys, {
        device: [DeviceTarget(image, {"rollout_id": rollout_id, "device_class": "xavier-nx"}) for image in images]
        for device in devices})
    elapsed = time.perf_counter() - start
    after = read_current(repo, "snapshot").signed.meta
    resigned = sum(1 for name, meta in after.items()
                   if name.startswith("devices-") and (name not in before or before[name].version != meta.version))
    return {"seconds": elapsed, "bins_resigned": resigned}


def _naive_size(repo: Path, devices: List[str], images: List[str]) -> int:
    """Bytes of ONE targets file listing every device's targets (the layout the bins avoid)."""
    published = read_current(repo, "targets").signed.targets
    naive = Targets()
    for device in devices:
        for image in images:
            source = published[image]
            naive.targets[device_target_path(device, image)] = TargetFile(
                source.length, source.hashes, device_target_path(device, image),
                {"custom": {"image": image, "rollout_id": 1, "device_class": "xavier-nx"}})
    return len(Metadata(naive).to_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        base = Path(temp)
        repo, keys = base / "repo", base / "keys"
        init_repository(repo, keys, base / "root-keys")
        images = []
        for index in range(args.models):
            name = f"model{index}-2.tar"
            publish_bundle(repo, keys, _tar(base / name, b"x" * 1000 + bytes([index])),
                           {"model": f"model{index}", "version": "2", "device_classes": ["xavier-nx"]})
            images.append(name)
        devices = [f"jetson-{index:05d}" for index in range(args.devices)]
        fleet = _assign(repo, keys, devices, images, 1)
        canary = _assign(repo, keys, devices[:1], images[:1], 2)
        step = _assign(repo, keys, devices[: args.devices // 10], images[:1], 3)
        bins = sorted(_size(repo, name[:-5]) for name in read_current(repo, "snapshot").signed.meta
                      if name.startswith("devices-"))
        one_device = sum(_size(repo, role) for role in ("timestamp", "snapshot", "targets")) + bins[len(bins) // 2]
        report = {
            "devices": args.devices, "models_per_device": args.models, "bins": len(bins),
            "bytes": {"timestamp": _size(repo, "timestamp"), "snapshot": _size(repo, "snapshot"),
                      "targets": _size(repo, "targets"), "bin_median": bins[len(bins) // 2], "bin_max": bins[-1],
                      "one_device_refresh": one_device,
                      "naive_single_targets_file": _naive_size(repo, devices, images)},
            "set_device_targets": {"whole_fleet": fleet, "canary_1_device": canary, "ten_percent_step": step},
        }
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
