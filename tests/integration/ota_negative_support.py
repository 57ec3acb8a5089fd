"""The rig of the negative OTA suite: a serving runtime, a hostile static file server, a TUF repository per case.

One ``edge-runtime serve`` subprocess serves the model repository (tiny 1 active, signed by the
trusted bundle key) for the whole module; the device's sync pass installs into that repository and
its real health gate talks to that runtime. One http.server thread serves every case's TUF
repository under ``/<case>/`` (metadata and consistent-snapshot targets, Range requests answered
206); a case may make it hostile for its own paths (:data:`MODES`). Each case's repository is a
copy of one repository made once with ``fleet_server.tuf_repository`` (keys included), so a case
costs a directory copy, not a key generation; :class:`Case` publishes into it (image target, and
the director's per-device target when the server library has one) and forges metadata with the
``tuf`` library.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import tarfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from runtime_support import RunningServer, affine, affine_onnx, call_json

from edge_runtime.bundle import ArtifactSpec, TargetInfo, TensorSpec, finalize_bundle
from edge_runtime.bundle.signing import load_private_key, sign_manifest
from edge_runtime.fleet import sync_pass
from edge_runtime.fleet.sync import SyncOutcome
from edge_runtime.fleet.sync_config import SyncSettings
from fleet_server import tuf_repository as tuf_repo

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "device_configs"
DEVICE_ID = "ota-negative-device"
MODEL = "tiny"
CPU_TARGET = TargetInfo(name="x86-cpu", device_class="x86-cpu", backend="onnxruntime", precision="fp32")
# An engine built for another Jetson host: TensorRT 8.6 on Orin (sm_87); a Xavier NX has 8.5.2 and sm_72.
ORIN_ENGINE_TARGET = TargetInfo(name="xavier-nx", device_class="jetson-xavier-nx", backend="tensorrt",
                                precision="fp16", compute_capability="8.7", tensorrt_version="8.6.2")
NX_TARGET = TargetInfo(name="xavier-nx", device_class="jetson-xavier-nx", backend="tensorrt", precision="fp16",
                       compute_capability="7.2", tensorrt_version="8.5.2")

_RANGE = re.compile(r"bytes=(\d+)-$")
# What a case may make the file server do with its paths.
MODES = ("endless", "oversize", "truncated", "other-bytes", "endless-metadata")


# --- bundles and tars -----------------------------------------------------------------------------

def write_bundle(directory: Path, key: Path, version: str, *, name: str = MODEL, onnx: Optional[bytes] = b"",
                 targets: Sequence[TargetInfo] = (CPU_TARGET,), engine: Optional[str] = None) -> Path:
    """A signed bundle: model.onnx (``b""``: the affine model; None: none) and an engine for target ``engine``."""
    directory.mkdir(parents=True)
    artifacts: List[ArtifactSpec] = []
    if onnx is not None:
        (directory / "model.onnx").write_bytes(onnx or affine_onnx())
        artifacts.append(ArtifactSpec("model.onnx", "onnx", None, "fp32"))
    if engine is not None:
        (directory / "engines").mkdir()
        (directory / "engines" / f"{engine}.plan").write_bytes(b"a serialized engine for another host")
        artifacts.append(ArtifactSpec(f"engines/{engine}.plan", "engine", engine, "fp16"))
    finalize_bundle(directory, name=name, version=version,
                    inputs=[TensorSpec(name="input", dtype="float32", shape=(-1, 4))],
                    outputs=[TensorSpec(name="output", dtype="float32", shape=(-1, 3))],
                    source_model_sha256="0" * 64, artifacts=artifacts, targets=list(targets),
                    private_key=load_private_key(key))
    return directory


def resign_manifest(directory: Path, key: Path, edit: Callable[[Dict[str, Any]], None]) -> None:
    """Edit the bundle's manifest JSON and sign the result with ``key`` (a signer who lies)."""
    manifest = json.loads((directory / "manifest.json").read_bytes())
    edit(manifest)
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    (directory / "manifest.json").write_bytes(data)
    (directory / "manifest.sig").write_bytes(sign_manifest(data, load_private_key(key)))


Extra = Callable[[tarfile.TarFile], None]


def tar_dir(bundle: Path, tar_path: Path, extra: Optional[Extra] = None, skip: Sequence[str] = ()) -> Path:
    """The bundle directory as an uncompressed POSIX tar (members relative to its root), then ``extra``'s members."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(bundle.rglob("*")):
            arcname = path.relative_to(bundle).as_posix()
            if arcname not in skip:
                tar.add(path, arcname=arcname, recursive=False)
        if extra is not None:
            extra(tar)
    return tar_path


def giant_header(name: str, size: int) -> bytes:
    """A PAX tar header announcing a ``size``-byte file, and one block of its data (the rest never comes)."""
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + b"\0" * tarfile.BLOCKSIZE


# --- the hostile file server ------------------------------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with Range for tars; a case's mode (server.modes[case]) makes its answers hostile."""

    server: FileServer

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""

    def do_GET(self) -> None:
        """Log the path; answer as the case's mode says."""
        self.server.requests.append(self.path)
        mode = self.server.modes.get(self.path.lstrip("/").split("/", 1)[0], "")
        path = Path(self.translate_path(self.path))
        if mode == "endless-metadata" and path.name == "timestamp.json":
            self._endless(b"{")
        elif not path.name.endswith(".tar") or not path.is_file():
            super().do_GET()
        else:
            self._tar(path.read_bytes(), mode)

    def _tar(self, data: bytes, mode: str) -> None:
        if mode == "endless":
            self._endless(data)
            return
        match = _RANGE.match(self.headers.get("Range", "").strip())
        start = int(match.group(1)) if match else 0
        if start >= len(data):
            self.send_error(416)
            return
        body = data[::-1] if mode == "other-bytes" else data[start:]  # same length, other bytes
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body) + (4096 if mode == "oversize" else 0)))
        self.end_headers()
        if mode == "oversize":
            body += b"\0" * 4096
        self.wfile.write(body[:len(body) // 2] if mode == "truncated" else body)  # then the connection closes

    def _endless(self, start: bytes) -> None:
        """200 without a length, then bytes until the client hangs up (64 MiB at most)."""
        self.send_response(200)
        self.end_headers()
        try:
            self.wfile.write(start)
            for _ in range(1024):
                self.wfile.write(b"\0" * 65536)
        except OSError:
            pass  # the client stopped reading, as it must


class FileServer(http.server.ThreadingHTTPServer):
    """http.server on 127.0.0.1 in a thread: ``directory`` served, every GET path logged, per-case modes."""

    daemon_threads = True

    def __init__(self, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), functools.partial(_Handler, directory=str(directory)))
        self.requests: List[str] = []
        self.modes: Dict[str, str] = {}
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hang up on hostile answers on purpose."""

    def close(self) -> None:
        """Stop serving and join the thread."""
        self.shutdown()
        self.server_close()
        self.thread.join()


# --- the module's rig and one case ------------------------------------------------------------------

@dataclasses.dataclass
class Rig:
    """What the cases share: directories, keys, the template TUF repository, the file server, the runtime."""

    base: Path
    models: Path  # the runtime's model repository (tiny/1 active)
    key: Path  # the trusted bundle signing key (private) ...
    public: Path  # ... and its public key
    rogue_key: Path  # a bundle key the device does not trust
    template: Path  # a fresh TUF repository: <template>/repo, <template>/keys
    served: Path  # the file server's folder: each case's repository is <served>/<case>
    files: FileServer
    runtime: RunningServer

    def model_state(self) -> Dict[str, str]:
        """Every entry below the model's folder: a file's sha256, 'dir' for a folder, 'link' for a link."""
        return tree_state(self.models / MODEL)

    def infer_v1(self) -> None:
        """The runtime answers an inference on tiny, from version 1, with the affine model's numbers."""
        x = np.array([[1.0, -2.0, 0.5, 4.0]], dtype=np.float32)
        status, body = call_json(self.runtime, "POST", f"/v2/models/{MODEL}/infer", {
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x[0].tolist()}]})
        assert status == 200, body
        assert body["model_version"] == "1", body
        assert np.allclose(body["outputs"][0]["data"], affine(x)[0], atol=1e-5), body
        status, metadata = call_json(self.runtime, "GET", f"/v2/models/{MODEL}")
        assert status == 200 and metadata["versions"] == ["1"], metadata


def tree_state(root: Path) -> Dict[str, str]:
    """Every entry below ``root``: sha256 of a file, 'dir' for a folder, 'link -> target' for a link."""
    state: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                state[relative] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                state[relative] = "dir"
            else:
                state[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


class Case:
    """One negative case: its served TUF repository (a copy of the template) and its device's settings."""

    def __init__(self, rig: Rig, name: str, base: Path) -> None:
        self.rig, self.name = rig, name
        self.repo = rig.served / name
        self.keys = base / "keys"
        shutil.copytree(rig.template / "repo", self.repo)
        shutil.copytree(rig.template / "keys", self.keys)
        self.work, self.device = base / "work", base / "device"
        self.work.mkdir()
        self.device.mkdir()
        shutil.copyfile(self.repo / "metadata" / "1.root.json", self.device / "root.json")
        self.settings = self._settings(CONFIGS / "x86-cpu.yaml", reserve_bytes=0)
        sync_pass.seed_metadata(self.settings)  # the device's trusted metadata: the installed root.json

    def _settings(self, device_config: Path, reserve_bytes: int) -> SyncSettings:
        url = f"{self.rig.files.url}/{self.name}"
        return SyncSettings(
            metadata_url=f"{url}/metadata/", targets_url=f"{url}/targets/",
            metadata_dir=str(self.device / "tuf"), trusted_root=str(self.device / "root.json"),
            staging_dir=str(self.device / "staging"), repository=str(self.rig.models),
            trusted_keys=(str(self.rig.public),), device_config=str(device_config),
            runtime_url=f"http://{self.rig.runtime.url}", reserve_bytes=reserve_bytes, request_timeout_s=10.0,
            device_id=DEVICE_ID)

    def use(self, device_config: Optional[Path] = None, reserve_bytes: Optional[int] = None) -> None:
        """Run the pass with another device config or reserve."""
        if device_config is not None:
            self.settings = dataclasses.replace(self.settings, device_config=str(device_config))
        if reserve_bytes is not None:
            self.settings = dataclasses.replace(self.settings, reserve_bytes=reserve_bytes)

    def hostile(self, mode: str) -> None:
        """Make the file server answer this case's paths in ``mode`` (one of :data:`MODES`)."""
        assert mode in MODES
        self.rig.files.modes[self.name] = mode

    # --- publishing ---

    def bundle(self, version: str, **options: Any) -> Path:
        """A new signed bundle directory in the case's work folder (see :func:`write_bundle`)."""
        key = options.pop("key", self.rig.key)
        return write_bundle(self.work / f"bundle-{len(list(self.work.iterdir()))}", key, version, **options)

    def tar(self, bundle: Path, extra: Optional[Extra] = None, skip: Sequence[str] = (),
            name: str = "tiny-2.tar") -> Path:
        """``bundle`` as the target file ``name`` (in its own folder: the file name is the target's)."""
        folder = self.work / f"tar-{len(list(self.work.iterdir()))}"
        folder.mkdir()
        return tar_dir(bundle, folder / name, extra, skip)

    def raw_tar(self, data: bytes, name: str = "tiny-2.tar") -> Path:
        """Arbitrary bytes as the target file ``name``."""
        folder = self.work / f"tar-{len(list(self.work.iterdir()))}"
        folder.mkdir()
        (folder / name).write_bytes(data)
        return folder / name

    def publish(self, tar: Path, model: str = MODEL, version: str = "2", device_class: str = "x86-cpu",
                assign_to: Optional[str] = DEVICE_ID) -> None:
        """``tar`` as an image target, and as the director's target for device ``assign_to`` (None: nobody)."""
        custom = {"model": model, "version": version, "device_class": device_class, "device_classes": [device_class]}
        tuf_repo.publish_bundle(self.repo, self.keys, tar, custom)
        if assign_to is not None:
            custom_of_device = {"image": tar.name, "model": model, "version": version, "device_class": device_class,
                        "fingerprint": None, "rollout_id": None}
            targets = [tuf_repo.DeviceTarget(tar.name, custom_of_device)]
            tuf_repo.set_device_targets(self.repo, self.keys, {assign_to: targets})

    # --- forging metadata ---

    def metadata_path(self, role: str) -> Path:
        """The file of the newest published ``role`` (timestamp.json, or <version>.<role>.json)."""
        if role == "timestamp":
            return self.repo / "metadata" / "timestamp.json"
        snapshot = tuf_repo.read_current(self.repo, "snapshot")
        if role == "snapshot":
            return self.repo / "metadata" / f"{snapshot.signed.version}.snapshot.json"
        return self.repo / "metadata" / f"{snapshot.signed.meta[f'{role}.json'].version}.{role}.json"

    def forge(self, role: str, edit: Callable[[Any], None] = lambda signed: None, signer: Any = "own") -> None:
        """Rewrite the newest ``role`` in place after ``edit(signed)``; ``signer``: "own" (its key), "rogue", None."""
        from tuf.api.metadata import Metadata
        from tuf.api.serialization.json import JSONSerializer

        path = self.metadata_path(role)
        metadata = Metadata.from_file(str(path))
        edit(metadata.signed)
        metadata.signatures.clear()
        if signer == "own":
            signer = tuf_repo.load_signer(self.keys, "director" if role.startswith("devices-") else role)
        elif signer == "rogue":
            from securesystemslib.signer import CryptoSigner

            signer = CryptoSigner.generate_ed25519()
        if signer is not None:
            metadata.sign(signer)
        path.write_bytes(metadata.to_bytes(JSONSerializer(compact=True)))

    # --- the pass ---

    def run(self) -> List[SyncOutcome]:
        """One real sync pass, in-process: TUF refresh, download, install, and the real health gate."""
        return sync_pass.run_once(self.settings, gate_factory=sync_pass.health_gate)

    def staged_files(self) -> List[str]:
        """Download leftovers in the device's staging folder (tars and partial tars)."""
        staging = self.device / "staging"
        return sorted(p.name for p in staging.iterdir() if p.name.endswith((".tar", ".partial"))) \
            if staging.is_dir() else []

    def trusted_metadata(self) -> Dict[str, str]:
        """The device's trusted TUF metadata, file by file."""
        return {k: v for k, v in tree_state(self.device / "tuf").items() if not k.startswith(".staging")}

    def tar_requests(self) -> List[str]:
        """The GETs of this case's bundle files."""
        return [p for p in self.rig.files.requests if p.startswith(f"/{self.name}/targets/")]


def past(hours: float = 1.0) -> datetime:
    """A moment ``hours`` ago (an expiry already gone)."""
    return datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=hours)


def one_line_outcomes(outcomes: Sequence[SyncOutcome]) -> Tuple[str, ...]:
    """The outcomes as their log lines (for assertion messages)."""
    return tuple(o.line() for o in outcomes)
