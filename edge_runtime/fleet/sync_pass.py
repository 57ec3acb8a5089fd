"""The real steps of a sync pass, built from :class:`SyncSettings` (``edge-runtime sync --once``, the agent).

The TUF client over the device's trusted metadata (seeded from the root.json installed with the
device), the HTTPS/loopback downloader with the agent's CA bundle, the installer with the trusted
bundle keys and this host's fingerprint, and the health gate (``edge_runtime.fleet.health_gate``)
bound to the runtime's URL and restricted-API header.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from edge_runtime.atomic_io import write_bytes_atomic
from edge_runtime.bundle.signing import load_public_key
from edge_runtime.config import DeviceConfig, load_device_config
from edge_runtime.errors import ConfigError
from edge_runtime.fleet.download import HttpOpener, download
from edge_runtime.fleet.install import InstalledVersion, install_bundle
from edge_runtime.fleet.sync import DownloadFn, GateFn, InstallFn, SyncOutcome, sync_once
from edge_runtime.fleet.sync_config import SyncSettings, runtime_headers
from edge_runtime.fleet.transport import tls_context
from edge_runtime.fleet.tuf_client import TufClient, TufTarget
from edge_runtime.fleet.tuf_fetcher import TlsFetcher

# (settings, device) -> the gate; replaced by tests that run the real CLI with a fake gate.
GateFactory = Callable[[SyncSettings, DeviceConfig], GateFn]


def seed_metadata(settings: SyncSettings) -> Path:
    """The device's trusted metadata directory, holding the installed root.json if it had no root yet."""
    metadata_dir = settings.resolve(settings.metadata_dir)
    metadata_dir.mkdir(parents=True, exist_ok=True)
    if not (metadata_dir / "root.json").exists():
        root = settings.resolve(settings.trusted_root)
        try:
            write_bytes_atomic(metadata_dir / "root.json", root.read_bytes())
        except OSError as exc:
            raise ConfigError(f"trusted_root: cannot read {root}: {exc.strerror or exc}") from exc
    return metadata_dir


def _ca_bundle(settings: SyncSettings) -> Optional[str]:
    """The CA bundle's path, resolved against the settings file; None: the system's CAs."""
    return str(settings.resolve(settings.ca_bundle)) if settings.ca_bundle else None


def build_tuf_client(settings: SyncSettings) -> TufClient:
    """The TUF client over the device's trusted metadata, fetching over the CA bundle's TLS (or loopback http)."""
    fetcher = TlsFetcher(tls_context(_ca_bundle(settings)), settings.request_timeout_s)
    return TufClient(seed_metadata(settings), settings.metadata_url, settings.targets_url, fetcher=fetcher)


def build_download(settings: SyncSettings) -> DownloadFn:
    """Resumable download over HTTPS (the CA bundle's CAs) or loopback HTTP, keeping the reserve free."""
    opener = HttpOpener(tls_context(_ca_bundle(settings)), settings.request_timeout_s)

    def fetch(target: TufTarget, dest: Path) -> Path:
        # Unpacking needs about the tar's size again, on the same disk when staging and repository share it.
        same_disk = _same_filesystem(dest.parent, settings.resolve(settings.repository))
        return download(target.url, dest, target.length, target.sha256, opener=opener,
                        reserve_bytes=settings.reserve_bytes, then_bytes=target.length if same_disk else 0)

    return fetch


def _same_filesystem(first: Path, second: Path) -> bool:
    """Whether two existing directories are on one filesystem (True when either cannot be looked at)."""
    try:
        return os.stat(first).st_dev == os.stat(second).st_dev
    except OSError:
        return True


def build_install(settings: SyncSettings, device: DeviceConfig) -> InstallFn:
    """Install into the repository with the trusted bundle keys, for this device and host."""
    keys = [load_public_key(settings.resolve(path)) for path in settings.trusted_keys]
    host = _host(device)
    repository = settings.resolve(settings.repository)

    def install(tar: Path, model: str, version: str) -> InstalledVersion:
        return install_bundle(tar, repository, model, keys, device, host, settings.keep_versions,
                              reserve_bytes=settings.reserve_bytes, expected_version=version)

    return install


def _host(device: DeviceConfig) -> Any:
    """This host's fingerprint for TensorRT devices (engines must match it); the config's otherwise."""
    if not device.uses_tensorrt:
        return device.fingerprint
    from edge_runtime.host_info import host_fingerprint

    return host_fingerprint()


def health_gate(settings: SyncSettings, device: DeviceConfig) -> GateFn:
    """The runtime's health gate (``edge_runtime.fleet.health_gate.run_gate``) bound to these settings."""
    from edge_runtime.fleet import health_gate as gate_module  # written beside this module; imported late

    headers: Dict[str, str] = runtime_headers(settings)

    def gate(installed: InstalledVersion) -> Any:
        return gate_module.run_gate(settings.runtime_url, installed.model, installed.version, device.health_gate,
                                    None, headers)

    return gate


def run_once(settings: SyncSettings, gate_factory: Optional[GateFactory] = None,
             now: Callable[[], float] = time.time) -> List[SyncOutcome]:
    """One sync pass with the real TUF client, downloader and installer; the gate from ``gate_factory``."""
    device = load_device_config(settings.resolve(settings.device_config))
    client = build_tuf_client(settings)
    gate = (gate_factory or health_gate)(settings, device)
    try:
        return sync_once(settings, client, build_download(settings), build_install(settings, device), gate,
                         now, device=device)
    finally:
        client.close()
