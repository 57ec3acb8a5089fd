"""Support for the install script's tests: wheels of this checkout, temp roots, snapshots, a fake runtime.

scripts/install.sh runs into a temp root with --root (no systemd there). Speed: pip installs from this
machine's local package index (pip.conf), so a venv with the default extras takes ~10-15 s; the wheels are
built once per session (`pip wheel --no-deps`, ~3 s each) and handed over with --wheel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

CHECKOUT = Path(__file__).resolve().parents[2]
INSTALL_SH = CHECKOUT / "scripts" / "install.sh"
SERVICE = "edge-runtime"
INSTALL_TIMEOUT_S = 300

# The fake runtime for --upgrade (EDGE_INSTALL_READY_COMMAND): it appends the release it was started for to
# $FAKE_RUNTIME_LOG, then sends READY=1 on NOTIFY_SOCKET unless that release's name is in $FAKE_NEVER_READY
# (comma-separated), and waits to be stopped.
FAKE_RUNTIME = r'''
import os, socket, sys, time
release = os.path.basename(os.environ["EDGE_RUNTIME_RELEASE"])
with open(os.environ["FAKE_RUNTIME_LOG"], "a") as log:
    log.write(release + "\n")
if release not in os.environ.get("FAKE_NEVER_READY", "").split(","):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"STATUS=warm\nREADY=1\n", os.environ["NOTIFY_SOCKET"])
time.sleep(600)
'''


def build_wheel(out: Path, version: Optional[str] = None) -> Path:
    """A wheel of this checkout (its __version__ replaced by ``version`` when given) in ``out``."""
    src = out / f"src-{version or 'checkout'}"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("edge_runtime", "export", "fleet_server"):
        shutil.copytree(CHECKOUT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(CHECKOUT / name, src / name)
    if version is not None:
        init = src / "edge_runtime" / "__init__.py"
        text = init.read_text(encoding="utf-8")
        init.write_text(text.replace('__version__ = "', f'__version__ = "{version}"  # was "', 1), encoding="utf-8")
    dist = out / f"dist-{version or 'checkout'}"
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
               "-w", str(dist), str(src)]
    # without build isolation when this Python can build wheels itself (faster), else pip's isolated build
    # (.venv38's setuptools 56 has no bdist_wheel)
    if subprocess.run([*command, "--no-build-isolation"], capture_output=True, timeout=INSTALL_TIMEOUT_S).returncode:
        subprocess.run(command, check=True, capture_output=True, timeout=INSTALL_TIMEOUT_S)
    (wheel,) = dist.glob("edge_runtime-*.whl")
    return wheel


def prepare_root(root: Path) -> Optional[str]:
    """Make ``root``; as real root give it an /etc/passwd so the script creates the service user there.

    Returns the --owner value to pass (this user's uid:gid) when not running as root, else None.
    """
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return f"{os.getuid()}:{os.getgid()}"
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    for name, line in (("passwd", "root:x:0:0:root:/root:/bin/sh"), ("group", "root:x:0:"),
                       ("shadow", "root:*::0:99999:7:::"), ("gshadow", "root:*::")):
        (etc / name).write_text(line + "\n")
    (etc / "shadow").chmod(0o600)
    (etc / "gshadow").chmod(0o600)
    return None


def service_ids(root: Path) -> Tuple[int, int]:
    """uid and gid of the service user in ``root``'s /etc/passwd."""
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == SERVICE:
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"no {SERVICE} user in {root}/etc/passwd")


def run_install(root: Path, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """scripts/install.sh --root ROOT --python <this Python> ARGS; its output captured (not checked)."""
    command = ["bash", str(INSTALL_SH), "--root", str(root), "--python", sys.executable, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                          env=None if env is None else {**os.environ, **env})


def snapshot(root: Path) -> Dict[str, Tuple[object, ...]]:
    """Every path under ``root``: (mode, uid, gid, mtime_ns, sha256 or link target); __pycache__ left out."""
    result: Dict[str, Tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if name != "__pycache__"]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                content: object = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = None
            result[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, info.st_mtime_ns, content)
    return result


def changed_paths(before: Dict[str, Tuple[object, ...]], after: Dict[str, Tuple[object, ...]]) -> List[str]:
    """Paths added, removed or changed between two snapshots."""
    return sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))


def fake_runtime_env(tmp: Path, never_ready: str = "") -> Dict[str, str]:
    """Environment that makes install.sh --upgrade start the fake runtime instead of `edge-runtime serve`."""
    script = tmp / "fake_runtime.py"
    script.write_text(FAKE_RUNTIME)
    return {"EDGE_INSTALL_READY_COMMAND": f"exec {sys.executable} {script}",
            "FAKE_RUNTIME_LOG": str(tmp / "fake_runtime.log"), "FAKE_NEVER_READY": never_ready}
