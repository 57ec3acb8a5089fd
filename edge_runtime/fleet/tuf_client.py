"""The device's TUF client: refreshes the fleet's signed metadata and says which bundle to fetch.

python-tuf's ``ngclient.Updater`` does the checks (signatures and thresholds, expiry = anti-freeze,
versions = anti-rollback, snapshot = anti-mix-and-match, length caps = anti-endless-data). Only the
API shared by tuf 5.1 (Python 3.8, JetPack 5) and tuf 6 is used.

ngclient persists each role as soon as it verifies, so a refresh that fails half-way (a good
timestamp, then a bad targets) would leave newer files behind. Here the Updater works on a copy
(``<metadata_dir>/.staging``) and the verified files are copied back only when the whole operation
succeeded: a refused refresh leaves the device's trusted metadata byte-identical.

What this device should run comes from the director (Uptane's pattern, one repository): top-level
``targets`` is the image role (every published bundle), and it delegates the paths
``devices/<xx>/*/*`` to hashed bins ``devices-<xx>`` (``<xx>``: the first ``BIN_HEX`` hex digits of
sha256(device id); see ``fleet_server/tuf_director.py``). :meth:`TufClient.device_targets` makes
ngclient load and verify this device's bin only, lists the bin's targets under
``devices/<xx>/<device id>/``, and accepts each only when the image role lists the same bytes
(length and sha256): a compromised director key alone cannot make a device run an unpublished file.

The bundle download is not done here (``download.py`` resumes it with HTTP Range); this client
returns what to fetch: the target's URL, length and sha256.

The metadata travels through :class:`edge_runtime.fleet.tuf_fetcher.TlsFetcher` (the agent's TLS,
per-read time-outs, ngclient's length caps), not ngclient's own HTTP stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar
from urllib.parse import quote

from edge_runtime.atomic_io import fsync_dir, write_bytes_atomic
from edge_runtime.errors import BackendUnavailableError, ConfigError
from edge_runtime.fleet.errors import MetadataRefusedError, TransportError, UnknownTargetError
from edge_runtime.fleet.tuf_fetcher import TlsFetcher

try:
    from tuf.api import exceptions as tuf_errors
    from tuf.ngclient import Updater, UpdaterConfig
except ImportError:  # the `sync` extra is not installed
    tuf_errors = None  # type: ignore[assignment]

T = TypeVar("T")
STAGING = ".staging"
BIN_HEX = 2  # as fleet_server.tuf_director.BIN_HEX: hex digits of sha256(device id) naming the device's bin
_PROBE = ".probe"  # a target name under the device's prefix: looking it up makes ngclient load the bin

# Most specific first: each ngclient failure → the one-line reason a device reports.
_REASONS = (
    ("UnsignedMetadataError", "bad or missing signature, or a key the trusted root does not list"),
    ("ExpiredMetadataError", "expired (freeze attack or a stale mirror)"),
    ("EqualVersionNumberError", "same version number with different content"),
    ("BadVersionNumberError", "version older than trusted or not the one snapshot lists (rollback / mix-and-match)"),
    ("LengthOrHashMismatchError", "does not match the length or hash its parent role lists (mix-and-match)"),
    ("DownloadLengthMismatchError", "larger than the allowed maximum (endless data)"),
)


@dataclass(frozen=True)
class TufTarget:
    """A verified target: what to download (``url``), and the length and sha256 it must have."""

    name: str
    length: int
    sha256: str
    custom: Dict[str, Any]
    url: str


class TufClient:
    """Refreshes trusted metadata in ``metadata_dir`` (which starts from the root.json installed with the device)."""

    def __init__(self, metadata_dir: Path, metadata_url: str, targets_url: str,
                 config: Optional[Any] = None, fetcher: Optional[Any] = None) -> None:
        if tuf_errors is None:
            raise BackendUnavailableError.missing_module("tuf", "sync")
        self.metadata_dir = Path(metadata_dir)
        self.metadata_url = metadata_url if metadata_url.endswith("/") else metadata_url + "/"
        self.targets_url = targets_url if targets_url.endswith("/") else targets_url + "/"
        self._config = config if config is not None else UpdaterConfig()
        self._fetcher = fetcher if fetcher is not None else TlsFetcher()
        self._updater: Optional[Updater] = None

    def refresh(self) -> None:
        """Fetch and verify root (rotations), timestamp, snapshot and targets; keep them only if all hold."""
        self._updater = None
        updater = self._staged(lambda u: (u.refresh(), u)[1], fresh=True)
        self._updater = updater

    def target(self, name: str) -> TufTarget:
        """The verified target ``name`` (refreshing first if this client has not yet)."""
        if self._updater is None:
            self.refresh()
        info = self._staged(lambda u: u.get_targetinfo(name), fresh=False)
        if info is None:
            raise UnknownTargetError(f"TUF target '{name}': not listed in the verified targets metadata")
        sha256 = info.hashes.get("sha256")
        if not sha256 or info.length <= 0:
            raise MetadataRefusedError(f"TUF target '{name}': no sha256 hash or no length in its metadata")
        custom = info.unrecognized_fields.get("custom") or {}
        return TufTarget(name=name, length=int(info.length), sha256=str(sha256),
                         custom=dict(custom) if isinstance(custom, dict) else {}, url=self._target_url(name, sha256))

    def device_targets(self, device_id: str) -> List[TufTarget]:
        """The director's verified targets for this device, each agreeing with its image target; [] when none.

        Each TufTarget is named for the image (``<model>-<version>.tar``, fetched from the image's
        URL) and carries the director's custom fields (model, version, device_class, rollout_id, ...).
        MetadataRefusedError when the director and image roles disagree on a target.
        """
        if not device_id or "/" in device_id or device_id in (".", ".."):
            raise ConfigError(f"device_id: {device_id!r} cannot name this device's TUF targets")
        if self._updater is None:
            self.refresh()
        prefix = device_prefix(device_id)
        pairs = self._staged(lambda u: self._director_pairs(u, device_id, prefix), fresh=False)
        found = []
        for director, image in pairs:
            custom = director.unrecognized_fields.get("custom")
            found.append(TufTarget(name=image.path, length=int(image.length), sha256=str(image.hashes["sha256"]),
                                   custom=dict(custom), url=self._target_url(image.path, image.hashes["sha256"])))
        return found

    def _director_pairs(self, updater: Any, device_id: str, prefix: str) -> List[Tuple[Any, Any]]:
        """(director target, image target) for each of the device's targets in its verified bin."""
        updater.get_targetinfo(prefix + _PROBE)  # loads and verifies the device's bin (if delegated)
        pairs = []
        for name in self._bin_names(prefix):
            director = updater.get_targetinfo(name)  # the verified target, or None (not in the verified bin)
            if director is not None:
                pairs.append((director, _agreeing_image(updater, name, director)))
        return pairs

    def _bin_names(self, prefix: str) -> List[str]:
        """Target names under ``prefix`` in the bin file ngclient persisted (each is looked up verified)."""
        role = "devices-" + prefix.split("/")[1]
        path = self.metadata_dir / STAGING / f"{quote(role, '')}.json"
        try:
            names = json.loads(path.read_bytes())["signed"]["targets"]
        except FileNotFoundError:
            return []  # no bin for this device: the director gave it nothing yet
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MetadataRefusedError(f"{path}: the director's bin cannot be read: {exc}") from exc
        return sorted(str(name) for name in names if str(name).startswith(prefix))

    def close(self) -> None:
        """Forget the Updater and remove the staging copy."""
        self._updater = None
        shutil.rmtree(self.metadata_dir / STAGING, ignore_errors=True)

    def _target_url(self, name: str, sha256: str) -> str:
        """``<targets_url>/<dir>/<sha256>.<basename>``: ngclient's consistent-snapshot target path."""
        directory, _, basename = name.rpartition("/")
        prefixed = f"{sha256}.{basename}" if self._config.prefix_targets_with_hash else basename
        return self.targets_url + (f"{directory}/{prefixed}" if directory else prefixed)

    def _staged(self, operation: Callable[[Any], T], fresh: bool) -> T:
        """Run ``operation`` on an Updater over the staging copy; copy verified files back only on success."""
        staging = self.metadata_dir / STAGING
        if fresh:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(self.metadata_dir, staging, symlinks=True, ignore=shutil.ignore_patterns(STAGING))
        updater = self._updater if self._updater is not None else Updater(
            metadata_dir=str(staging), metadata_base_url=self.metadata_url,
            target_base_url=self.targets_url, fetcher=self._fetcher, config=self._config)
        try:
            result = operation(updater)
        except Exception as exc:  # ngclient raises many types: translated below, others re-raised as they are
            self._updater = None
            shutil.rmtree(staging, ignore_errors=True)
            translated = _translate(exc)
            if translated is exc:
                raise
            raise translated from exc
        _commit(staging, self.metadata_dir)
        return result


def device_prefix(device_id: str) -> str:
    """``devices/<xx>/<device id>/``: where the director lists this device's targets."""
    return f"devices/{hashlib.sha256(device_id.encode('utf-8')).hexdigest()[:BIN_HEX]}/{device_id}/"


def _agreeing_image(updater: Any, name: str, director: Any) -> Any:
    """The image target the director target ``name`` names; MetadataRefusedError unless they agree."""
    custom = director.unrecognized_fields.get("custom")
    image_name = custom.get("image") if isinstance(custom, dict) else None
    if not isinstance(image_name, str) or name.rpartition("/")[2] != image_name:
        raise MetadataRefusedError(f"TUF target '{name}': the director's custom 'image' does not name its "
                                   f"bundle: {image_name!r}")
    image = updater.get_targetinfo(image_name)
    if image is None:
        raise MetadataRefusedError(f"TUF target '{name}': director and image roles disagree: the image role "
                                   f"does not list '{image_name}'")
    ours, theirs = (director.length, director.hashes.get("sha256")), (image.length, image.hashes.get("sha256"))
    if not theirs[1] or ours != theirs:
        raise MetadataRefusedError(f"TUF target '{name}': director and image roles disagree on its bytes "
                                   f"(length, sha256): director {ours}, image {theirs}")
    return image


def _translate(exc: BaseException) -> BaseException:
    """ngclient's exception → MetadataRefusedError / TransportError with one line; anything else unchanged."""
    line = " ".join(str(exc).split()) or type(exc).__name__
    for cls in type(exc).__mro__:
        for name, reason in _REASONS:
            if cls.__name__ == name and cls.__module__.startswith("tuf."):
                return MetadataRefusedError(f"TUF metadata refused: {reason}: {line}")
    if isinstance(exc, tuf_errors.RepositoryError):
        return MetadataRefusedError(f"TUF metadata refused: {line}")
    if isinstance(exc, (tuf_errors.DownloadError, OSError)):
        return TransportError(f"TUF metadata could not be fetched: {line}")
    return exc


def _commit(staging: Path, trusted: Path) -> None:
    """Copy what changed in ``staging`` into ``trusted``: root history first, then root, timestamp, the rest."""
    def order(path: Path) -> tuple:
        rank = {"root_history": 0, "root.json": 1, "timestamp.json": 2, "snapshot.json": 3}
        return (rank.get(path.relative_to(staging).parts[0], 4), str(path))

    for path in sorted((p for p in staging.rglob("*") if not p.is_dir() or p.is_symlink()), key=order):
        dest = trusted / path.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            link = os.readlink(path)
            if not dest.is_symlink() or os.readlink(dest) != link:
                tmp = dest.with_name(f".{dest.name}.link")
                if tmp.is_symlink() or tmp.exists():
                    tmp.unlink()
                os.symlink(link, tmp)
                os.replace(tmp, dest)
        elif path.name.startswith(".") or path.suffix != ".json":
            continue  # ngclient's temporary files
        elif dest.is_symlink() or not dest.exists() or dest.read_bytes() != path.read_bytes():
            write_bytes_atomic(dest, path.read_bytes())
    fsync_dir(trusted)
