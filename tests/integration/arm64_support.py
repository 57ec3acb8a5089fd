"""The arm64 install test's support: an emulated arm64 Debian root, the runtime installed into it, served.

scripts/lib/arm64_root.sh makes the root (debootstrap --arch=arm64, run through qemu-user-static and
binfmt_misc) and runs commands in it (chroot; /proc and /dev, never /sys). Each test works in a scratch
folder under the root's /tmp, seen from the host at ``root / "tmp" / NAME`` and from inside as
``/tmp/NAME`` (``Scratch.inside``), and removed afterwards. The root is shared with the host's network
namespace: a server started inside on 127.0.0.1 is reached from the host.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
from ci_policy import unavailable
from runtime_support import B, W, affine_onnx

from edge_runtime.bundle.manifest import TargetInfo, TensorSpec
from edge_runtime.bundle.signing import generate_keypair, load_private_key
from edge_runtime.bundle.writer import ArtifactSpec, finalize_bundle

REPO = Path(__file__).resolve().parents[2]
ROOT_SCRIPT = REPO / "scripts" / "lib" / "arm64_root.sh"
# The install's layout (scripts/install.sh) and the user its units run as.
PREFIX = Path("/opt/edge-runtime")
STATE = Path("/var/lib/edge-runtime")
SERVICE_USER = "edge-runtime"
# Bounds, not expectations: here building the root took 2.5 min (longer on a loaded machine) and
# install.sh under emulation about 1 min.
BUILD_TIMEOUT_S = 1200.0
INSTALL_TIMEOUT_S = 1200.0
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0


@dataclass
class Scratch:
    """A folder inside the root: ``host`` is its path here, ``inside`` the same folder seen in the chroot."""

    root: Path
    name: str

    @property
    def host(self) -> Path:
        return self.root / "tmp" / self.name

    @property
    def inside(self) -> Path:
        return Path("/tmp") / self.name


def _run_bounded(args: List[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``args`` in its own process group; past ``timeout`` the whole group is killed (no debootstrap left)."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        err += f"\n(killed after {timeout:.0f} s)"
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def ensure_root() -> Path:
    """The arm64 root (built on first use, reused after), or skip (fail under CI) saying why not."""
    if os.geteuid() != 0:
        unavailable("the arm64 root needs root (debootstrap, chroot, mounts)")
    result = _run_bounded(["bash", str(ROOT_SCRIPT), "ensure"], BUILD_TIMEOUT_S)
    if result.returncode != 0:
        unavailable(f"cannot make the arm64 root: {result.stderr.strip()[-1500:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def run_in_root(root: Path, args: List[str], timeout: float = 300.0) -> str:
    """Run ``args`` inside the root; its standard output, or an AssertionError showing its output."""
    result = _run_bounded(["bash", str(ROOT_SCRIPT), "run", str(root), *args], timeout)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{output}"
    return result.stdout


@contextlib.contextmanager
def root_for_this_test() -> Iterator[Scratch]:
    """The arm64 root (built or reused), held alone (its lock file) with a fresh scratch folder in it.

    The test installs into the root's / (as on a device): two test runs on one machine take turns.
    The scratch folder is removed afterwards.
    """
    root = ensure_root()
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        scratch = Scratch(root, f"edge-arm64-test-{uuid.uuid4().hex[:12]}")
        scratch.host.mkdir(parents=True)
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch.host, ignore_errors=True)


def copy_checkout(scratch: Scratch) -> Path:
    """This checkout's files (tracked and untracked, not ignored: no venvs) into the scratch; the copy's path inside."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode()
    target = scratch.host / "src"
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a file deleted in the work tree is still listed by --cached
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return scratch.inside / "src"


def install_runtime(scratch: Scratch, source_inside: Path, trusted_key_inside: Path) -> Path:
    """Install the copied checkout with its scripts/install.sh, run inside the root as on a device.

    ``--root /`` inside the chroot: the root's own Python, the service user, /etc/edge-runtime, the state
    folders and the units, as on an aarch64 Jetson (no systemd there: the script prints the enable lines).
    A purge first, so that a run killed before its clean-up leaves nothing to this one. Returns the path
    (inside) of the installed `edge-runtime`, the one the unit runs.
    """
    uninstall_runtime(scratch, source_inside)
    run_in_root(scratch.root, ["bash", str(source_inside / "scripts" / "install.sh"),
                               "--trusted-key", str(trusted_key_inside), "--device-config", "aarch64-cpu"],
                INSTALL_TIMEOUT_S)
    return PREFIX / "current" / "venv" / "bin" / "edge-runtime"


def uninstall_runtime(scratch: Scratch, source_inside: Path) -> None:
    """Remove the install from the root, configuration and state included (install.sh --uninstall --purge)."""
    run_in_root(scratch.root, ["bash", str(source_inside / "scripts" / "install.sh"), "--uninstall", "--purge"])


def write_trusted_key(scratch: Scratch) -> Path:
    """A fresh signing key pair in the scratch; the public key's path inside (for install.sh --trusted-key)."""
    _, public_key = generate_keypair(scratch.host / "keys")
    return scratch.inside / "keys" / public_key.name


def write_arm64_bundle(directory: Path, key_path: Path) -> None:
    """The tiny affine model (runtime_support's W and B) as a signed FP32 ONNX bundle for aarch64-cpu."""
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(affine_onnx(B))
    finalize_bundle(
        directory, name="tiny", version="1",
        inputs=[TensorSpec(name="input", dtype="float32", shape=(-1, 4))],
        outputs=[TensorSpec(name="output", dtype="float32", shape=(-1, 3))],
        source_model_sha256="0" * 64,
        artifacts=[ArtifactSpec("model.onnx", "onnx", None, "fp32")],
        targets=[TargetInfo(name="aarch64-cpu", device_class="aarch64-cpu", backend="onnxruntime",
                            precision="fp32")],
        private_key=load_private_key(key_path),
    )


def publish_bundle(scratch: Scratch) -> None:
    """tiny/1, signed with the scratch's key, into the installed repository, owned by the service user."""
    bundle = scratch.root / STATE.relative_to("/") / "repository" / "tiny" / "1"
    write_arm64_bundle(bundle, scratch.host / "keys" / "signing.key")
    uid, gid = service_ids(scratch.root)
    for path in (bundle.parent, bundle, *bundle.iterdir()):
        os.chown(path, uid, gid)


def service_ids(root: Path) -> Tuple[int, int]:
    """The service user's uid and gid in the root's /etc/passwd (made there by install.sh)."""
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == SERVICE_USER:
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"install.sh made no {SERVICE_USER} user in {root}/etc/passwd")


@dataclass
class RootServer:
    """`edge-runtime serve` running inside the root, in its own process group."""

    process: subprocess.Popen
    port: int

    def stop(self) -> None:
        """SIGTERM the group (SIGKILL if it lingers): nothing started in the root survives."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                return
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(STOP_TIMEOUT_S)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue


def start_in_root(root: Path, edge_runtime: Path, log: Path) -> RootServer:
    """Start the installed runtime inside the root as its unit does (the service user, the installed settings
    and repository), on 127.0.0.1 and a free port; wait until it is ready."""
    command = ["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--init-groups", "--",
               str(edge_runtime), "serve", "--config", "/etc/edge-runtime/runtime.yaml",
               "--repository", str(STATE / "repository"), "--host", "127.0.0.1", "--port", "0"]
    handle = log.open("w")
    process = subprocess.Popen(["bash", str(ROOT_SCRIPT), "run", str(root), *command],
                               stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    handle.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        port = _ready_port(log)
        if port is not None:
            return RootServer(process, port)
        time.sleep(0.5)
    RootServer(process, 0).stop()
    raise AssertionError(f"the runtime in the arm64 root did not become ready:\n{log.read_text()[-4000:]}")


def _ready_port(log: Path) -> Optional[int]:
    """The port the log says the server serves on, once /v2/health/ready answers 200 there."""
    match = re.search(r"serving on http://127\.0\.0\.1:(\d+)", log.read_text())
    if not match:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/v2/health/ready", timeout=5) as reply:
            return int(match.group(1)) if reply.status == 200 else None
    except OSError:
        return None


def expected(x: np.ndarray) -> np.ndarray:
    """What the tiny model computes, in float64 (the emulated arm64 ORT sums in another order)."""
    return x.astype(np.float64) @ W.astype(np.float64) + B.astype(np.float64)
