"""scripts/install.sh into a temp root (--root, no systemd): files, modes, owners, idempotence, dry run,
uninstall/purge, and --upgrade that switches back by itself when the new release never reports READY.

As root (CI) each temp root gets an /etc/passwd, so the script creates the edge-runtime user there and the
service user's files are owned by it; otherwise the tests pass --owner with their own uid:gid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import pytest
from install_support import (
    build_wheel,
    changed_paths,
    fake_runtime_env,
    prepare_root,
    run_install,
    service_ids,
    snapshot,
)
from runtime_support import write_tiny_bundle

from edge_runtime.bundle.signing import generate_keypair
from edge_runtime.config import load_runtime_settings
from edge_runtime.fleet.agent_config import load_agent_settings

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="install.sh needs bash")

PREFIX = "opt/edge-runtime"
ETC = "etc/edge-runtime"
STATE = "var/lib/edge-runtime"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """Wheels of this checkout as 0.1.0 (its own version), 9.0.1 and 9.0.2, built once for the module."""
    out = tmp_path_factory.mktemp("wheels")
    return {"checkout": build_wheel(out), "9.0.1": build_wheel(out, "9.0.1"), "9.0.2": build_wheel(out, "9.0.2")}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    """The bundle signing key pair whose public half the install trusts."""
    return generate_keypair(tmp_path_factory.mktemp("signing"), "fleet")


class Installed:
    """A temp root the script installed into, and what the tests need to check it."""

    def __init__(self, root: Path, owner: Optional[str], args: Tuple[str, ...], first: subprocess.CompletedProcess):
        self.root = root
        self.owner = owner
        self.args = args
        self.first = first

    def install(self, *extra: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        """Run the script again with the first run's arguments plus ``extra``."""
        return run_install(self.root, *self.args, *extra, env=env)

    def service_ids(self) -> Tuple[int, int]:
        """uid, gid the service user's files must have."""
        if self.owner is not None:
            uid, gid = self.owner.split(":")
            return int(uid), int(gid)
        return service_ids(self.root)


def install_into(root: Path, wheel: Path, keys: Tuple[Path, Path], tmp: Path, *extra: str,
                 env: Optional[Dict[str, str]] = None) -> Installed:
    """A first install of ``wheel`` into ``root`` (asserted to succeed)."""
    owner = prepare_root(root)
    token = tmp / "token"
    token.write_text("device-secret-token\n")
    args = ("--wheel", str(wheel), "--trusted-key", str(keys[1]), "--token-file", str(token),
            "--device-id", "test-device", "--server-url", "http://127.0.0.1:9", "--device-config", "x86-cpu", *extra)
    if owner is not None:
        args += ("--owner", owner)
    first = run_install(root, *args, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    return Installed(root, owner, args, first)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheels: Dict[str, Path], keys: Tuple[Path, Path]) -> Installed:
    """The checkout's wheel installed with the default extras (what a plain x86 machine gets)."""
    tmp = tmp_path_factory.mktemp("install")
    return install_into(tmp / "root", wheels["checkout"], keys, tmp)


@pytest.fixture()
def light(tmp_path: Path, wheels: Dict[str, Path], keys: Tuple[Path, Path]) -> Iterator[Installed]:
    """A fresh root with 9.0.1 and no extras (faster: only numpy, PyYAML, cryptography) and the fake runtime."""
    env = fake_runtime_env(tmp_path, never_ready="9.0.2")
    yield install_into(tmp_path / "root", wheels["9.0.1"], keys, tmp_path, "--extras", "", env=env)


def mode(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


def test_files_modes_and_owners(installed: Installed) -> None:
    root = installed.root
    uid, gid = installed.service_ids()
    token = root / ETC / "device-token"
    assert token.read_text() == "device-secret-token\n"
    assert mode(token) == 0o600
    assert (token.stat().st_uid, token.stat().st_gid) == (uid, gid)
    for name in ("", "repository", "spool", "sync"):
        state = root / STATE / name
        assert state.is_dir() and mode(state) == 0o750, state
        assert (state.stat().st_uid, state.stat().st_gid) == (uid, gid), state
    for name in ("runtime.yaml", "agent.yaml", "device.yaml", "keys/fleet.pub"):
        assert mode(root / ETC / name) == 0o644, name
    assert os.readlink(root / PREFIX / "current") == "releases/0.1.0"
    for unit in ("edge-runtime", "edge-fleet-agent"):
        text = (root / "etc/systemd/system" / f"{unit}.service").read_text()
        assert "/opt/edge-runtime/current/venv/bin/edge-runtime" in text and "@" + "PREFIX@" not in text
    assert "MemoryMax=4096M" in (root / "etc/systemd/system/edge-runtime.service").read_text()  # x86-cpu's budget
    assert "systemctl enable --now edge-runtime" in installed.first.stdout
    if installed.owner is None:
        assert "edge-runtime:x:" in (root / "etc/passwd").read_text()


def test_configuration_loads(installed: Installed) -> None:
    """The written runtime.yaml and agent.yaml are valid, and their relative paths stay inside the root."""
    etc = installed.root / ETC
    runtime = load_runtime_settings(etc / "runtime.yaml")
    assert [runtime.resolve(key) for key in runtime.trusted_keys] == [etc / "keys" / "fleet.pub"]
    assert runtime.resolve(runtime.device_config) == etc / "device.yaml"
    assert runtime.resolve(runtime.telemetry.spool_path).parent.resolve() == (installed.root / STATE / "spool")
    agent = load_agent_settings(etc / "agent.yaml")
    assert agent.device_id == "test-device"


def test_venv_runs_help_and_check(installed: Installed, keys: Tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    command = installed.root / PREFIX / "current" / "venv" / "bin" / "edge-runtime"
    helped = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "serve" in helped.stdout, helped.stderr
    write_tiny_bundle(tmp_path / "bundle", keys[0], "1")
    checked = subprocess.run([str(command), "check", str(tmp_path / "bundle"), "--key",
                              str(installed.root / ETC / "keys" / "fleet.pub")], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stdout + checked.stderr
    info = subprocess.run([str(command), "info", "--config", str(installed.root / ETC / "runtime.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "onnxruntime" in info.stdout, info.stdout + info.stderr


def test_second_run_changes_nothing(installed: Installed) -> None:
    before = snapshot(installed.root)
    again = installed.install()
    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stdout
    assert changed_paths(before, snapshot(installed.root)) == []


def test_dry_run_changes_nothing(installed: Installed, tmp_path: Path, wheels: Dict[str, Path]) -> None:
    before = snapshot(installed.root)
    dry = installed.install("--dry-run", "--wheel", str(wheels["9.0.1"]))
    assert dry.returncode == 0, dry.stderr
    assert "would: install release 9.0.1" in dry.stdout
    assert changed_paths(before, snapshot(installed.root)) == []
    fresh = tmp_path / "fresh"
    prepare_root(fresh)
    empty = snapshot(fresh)
    first = run_install(fresh, "--dry-run", "--wheel", str(wheels["checkout"]), "--owner", "1:1")
    assert first.returncode == 1, first.stdout  # no trusted key given: refused before anything
    dry = run_install(fresh, "--dry-run", "--wheel", str(wheels["checkout"]), "--trusted-key", str(installed.root / ETC
                      / "keys" / "fleet.pub"), "--owner", "1:1")
    assert dry.returncode == 0, dry.stderr
    assert "would: install" in dry.stdout and "would: switch" in dry.stdout
    assert changed_paths(empty, snapshot(fresh)) == []


def test_uninstall_keeps_data_and_purge_removes_it(light: Installed) -> None:
    root = light.root
    (root / STATE / "repository" / "model-data").write_text("kept")
    gone = light.install("--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert not (root / PREFIX).exists()
    assert not (root / "etc/systemd/system/edge-runtime.service").exists()
    assert not (root / "etc/systemd/system/edge-fleet-agent.service").exists()
    assert (root / STATE / "repository" / "model-data").read_text() == "kept"
    assert (root / ETC / "device-token").is_file() and (root / ETC / "runtime.yaml").is_file()
    again = run_install(root, "--uninstall")
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout + again.stderr
    purged = run_install(root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (root / ETC).exists() and not (root / STATE).exists()
    if light.owner is None:
        assert "edge-runtime:" not in (root / "etc/passwd").read_text()


def test_upgrade_switches_keeps_config_and_switches_back_without_ready(light: Installed, wheels: Dict[str, Path],
                                                                         tmp_path: Path) -> None:
    """9.0.1 -> 0.1.0 (READY: switched, old release and config/data kept) -> 9.0.2 (never READY: back to 0.1.0).

    One root for both upgrades: a venv less to build keeps the file fast."""
    root = light.root
    (root / STATE / "repository" / "model-data").write_text("kept")
    kept = {path: entry for path, entry in snapshot(root).items() if path.startswith((ETC, STATE))}
    env = fake_runtime_env(tmp_path, never_ready="9.0.2")
    upgraded = light.install("--upgrade", "--wheel", str(wheels["checkout"]), env=env)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert "release 0.1.0 is ready" in upgraded.stdout
    assert os.readlink(root / PREFIX / "current") == "releases/0.1.0"
    assert (root / PREFIX / "releases" / "9.0.1" / "venv" / "bin" / "edge-runtime").exists()  # the old one stays
    assert {path: entry for path, entry in snapshot(root).items() if path.startswith((ETC, STATE))} == kept
    assert (tmp_path / "fake_runtime.log").read_text().split() == ["0.1.0"]

    failed = light.install("--upgrade", "--wheel", str(wheels["9.0.2"]), "--ready-timeout", "2", env=env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert "did not report READY" in failed.stderr and "switched back to 0.1.0" in failed.stderr
    assert os.readlink(root / PREFIX / "current") == "releases/0.1.0"
    assert (tmp_path / "fake_runtime.log").read_text().split() == ["0.1.0", "9.0.2"]  # started, never ready
    assert not (root / PREFIX / "current.new").exists()


def test_upgrade_with_the_real_runtime(installed: Installed, wheels: Dict[str, Path], keys: Tuple[Path, Path]) -> None:
    """No hook: the new release's own `edge-runtime serve` (serving a bundle) must send READY=1. Runs last: it moves
    the module's root to 9.0.1."""
    pytest.importorskip("onnx")
    write_tiny_bundle(installed.root / STATE / "repository" / "tiny" / "1", keys[0], "1")
    upgraded = installed.install("--upgrade", "--wheel", str(wheels["9.0.1"]), "--ready-timeout", "60")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert "release 9.0.1 is ready" in upgraded.stdout
    assert os.readlink(installed.root / PREFIX / "current") == "releases/9.0.1"
    assert (installed.root / PREFIX / "releases" / "0.1.0" / "venv").is_dir()


@pytest.mark.parametrize("detected_by", ["nv_tegra_release", "dpkg"])
def test_jetson_needs_tensorrt_and_cuda_headers(tmp_path: Path, wheels: Dict[str, Path], keys: Tuple[Path, Path],
                                                detected_by: str) -> None:
    """On a Jetson root: refused, in one line and before anything is installed, while TensorRT's Python bindings
    do not import; then while pycuda is missing and there are no CUDA headers to build it."""
    root = tmp_path / "root"
    if detected_by == "dpkg":
        if shutil.which("dpkg-query") is None:
            pytest.skip("no dpkg-query here")
        (root / "var/lib/dpkg").mkdir(parents=True)
        (root / "var/lib/dpkg/status").write_text(
            "Package: nvidia-l4t-core\nStatus: install ok installed\nArchitecture: arm64\nVersion: 35.4.1\n\n")
    else:
        (root / "etc").mkdir(parents=True)
        (root / "etc/nv_tegra_release").write_text("# R35 (release), REVISION: 4.1, GCID: 1, BOARD: t186ref\n")
    args = ("--wheel", str(wheels["checkout"]), "--trusted-key", str(keys[1]), "--device-config", "agx-xavier",
            "--owner", "1:1")
    # what this Python can import is decided here (a dev venv may hold TensorRT's wheels): modules on PYTHONPATH
    missing, present = tmp_path / "without-tensorrt", tmp_path / "with-tensorrt"
    for site, tensorrt in ((missing, "raise ImportError('no TensorRT')\n"), (present, "__version__ = '8.5.2'\n")):
        site.mkdir()
        (site / "tensorrt.py").write_text(tensorrt)
        (site / "pycuda.py").write_text("raise ImportError('no pycuda')\n")
    refused = run_install(root, *args, env={"PYTHONPATH": str(missing)})
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "platform: Jetson" in refused.stdout
    assert "TensorRT" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    no_headers = run_install(root, *args, env={"PYTHONPATH": str(present)})
    assert no_headers.returncode == 1, no_headers.stdout + no_headers.stderr
    assert "no CUDA headers" in no_headers.stderr and len(no_headers.stderr.strip().splitlines()) == 1
    assert not (root / PREFIX / "releases").exists()
