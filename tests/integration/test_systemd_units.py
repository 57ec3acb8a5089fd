"""The hardened systemd units (systemd/*.service), rendered as scripts/install.sh renders them.

They pass ``systemd-analyze verify``, score within the issue's exposure goals under
``systemd-analyze security --offline=yes`` (runtime <= 2.0, agent <= 2.5), keep the contract both sides
rely on (Type=notify, the watchdog, the service user), and the runtime keeps what a Jetson GPU needs, so
nobody lowers the score by taking the GPU away from it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Union

import pytest
from ci_policy import unavailable

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "scripts" / "lib" / "render_unit.py"
RUNTIME = "edge-runtime.service"
AGENT = "edge-fleet-agent.service"
EXPOSURE_GOAL = {RUNTIME: 2.0, AGENT: 2.5}
_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def _systemd_analyze() -> str:
    """The systemd-analyze binary, or skip (fail under CI) when this machine has none."""
    found = shutil.which("systemd-analyze")
    if found is None:
        unavailable("systemd-analyze is not installed (Debian package: systemd)")
    return found


def _render(template: Path, out: Path, prefix: Union[str, Path], memory_max: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RENDER), str(template), str(out), "--prefix", str(prefix),
                           "--memory-max", memory_max], capture_output=True, text=True, check=False)


@pytest.fixture()
def rendered(tmp_path: Path) -> Dict[str, Path]:
    """Both units rendered into tmp_path, their ExecStart binary a stub (verify needs it to exist)."""
    prefix = tmp_path / "opt" / "edge-runtime"
    stub = prefix / "current" / "venv" / "bin" / "edge-runtime"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = {}
    for name in (RUNTIME, AGENT):
        out = tmp_path / name
        done = _render(REPO / "systemd" / name, out, prefix, "2048M")
        assert done.returncode == 0, done.stderr
        units[name] = out
    return units


def _settings(unit: Path) -> Dict[str, List[str]]:
    """Every ``Key=value`` of the unit, in order, keyed by name (comments and sections dropped)."""
    found: Dict[str, List[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("name", [RUNTIME, AGENT])
def test_unit_passes_systemd_analyze_verify(rendered: Dict[str, Path], name: str) -> None:
    """Exit status 0 and not one complaint about the unit (an unknown or misparsed key only warns)."""
    done = subprocess.run([_systemd_analyze(), "verify", str(rendered[name])], capture_output=True, text=True,
                          cwd=str(rendered[name].parent), check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert [line for line in output.splitlines() if name in line] == []


@pytest.mark.parametrize("name", [RUNTIME, AGENT])
def test_unit_exposure_is_within_the_goal(rendered: Dict[str, Path], name: str) -> None:
    """`systemd-analyze security --offline=yes` scores the unit at or under the issue's goal."""
    goal = EXPOSURE_GOAL[name]
    done = subprocess.run([_systemd_analyze(), "security", "--offline=yes", "--no-pager",
                           f"--threshold={round(goal * 10)}", str(rendered[name])],
                          capture_output=True, text=True, cwd=str(rendered[name].parent), check=False)
    output = done.stdout + done.stderr
    found = _EXPOSURE.search(output)
    assert found is not None, output
    assert float(found.group(1)) <= goal, output
    assert done.returncode == 0, output  # the threshold check agrees


def test_runtime_unit_keeps_what_a_jetson_gpu_needs(rendered: Dict[str, Path]) -> None:
    """Device ACL for the Tegra GPU nodes instead of PrivateDevices, W+X memory allowed (CUDA/TensorRT JIT),
    the video group, and the host's user ids (the shared-memory owner policy reads them)."""
    unit = _settings(rendered[RUNTIME])
    assert unit.get("PrivateDevices", ["no"]) == ["no"]
    assert unit["DevicePolicy"] == ["closed"]
    allowed = set(unit["DeviceAllow"])
    for needed in ("/dev/nvmap rw", "char-nvhost rw", "char-*.gv11b rw", "char-*.ga10b rw", "char-*.gpu rw"):
        assert needed in allowed
    assert unit.get("MemoryDenyWriteExecute", ["no"]) == ["no"]
    assert "video" in " ".join(unit.get("SupplementaryGroups", [])).split()
    assert unit.get("PrivateUsers", ["no"]) == ["no"]
    assert unit.get("ProcSubset", ["all"]) == ["all"]  # telemetry reads /proc/meminfo
    assert unit.get("RemoveIPC", ["no"]) == ["no"]  # would delete the apps' shared-memory regions


def test_agent_unit_keeps_the_network_and_the_shared_memory(rendered: Dict[str, Path]) -> None:
    """The agent uploads and downloads: no IP deny list and no private network; it must not remove the
    edge-runtime group's /dev/shm objects when it stops."""
    unit = _settings(rendered[AGENT])
    assert "IPAddressDeny" not in unit and unit.get("PrivateNetwork", ["no"]) == ["no"]
    assert unit.get("RemoveIPC", ["no"]) == ["no"]


def test_runtime_unit_is_loopback_only(rendered: Dict[str, Path]) -> None:
    unit = _settings(rendered[RUNTIME])
    assert unit["IPAddressDeny"] == ["any"]
    assert unit["IPAddressAllow"] == ["localhost"]


@pytest.mark.parametrize("name", [RUNTIME, AGENT])
def test_unit_keeps_the_install_contract(rendered: Dict[str, Path], name: str) -> None:
    """What install.sh, sd_notify and docs/security.md rely on."""
    unit = _settings(rendered[name])
    prefix = rendered[name].parent / "opt" / "edge-runtime"
    expected_exec = {
        RUNTIME: f"{prefix}/current/venv/bin/edge-runtime serve --config /etc/edge-runtime/runtime.yaml "
                 "--repository /var/lib/edge-runtime/repository",
        AGENT: f"{prefix}/current/venv/bin/edge-runtime agent --config /etc/edge-runtime/agent.yaml",
    }
    assert unit["ExecStart"] == [expected_exec[name]]
    for key, value in (("Type", "notify"), ("NotifyAccess", "main"), ("WatchdogSec", "30"),
                       ("Restart", "on-failure"), ("MemoryMax", "2048M"), ("User", "edge-runtime"),
                       ("Group", "edge-runtime"), ("NoNewPrivileges", "yes"), ("CapabilityBoundingSet", ""),
                       ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"), ("UMask", "0077"),
                       ("StateDirectory", "edge-runtime")):
        assert unit.get(key) == [value], key
    assert "@system-service" in unit["SystemCallFilter"]
    assert "ReadWritePaths" not in unit  # the state directory is the one writable tree


def test_render_leaves_an_identical_unit_untouched(tmp_path: Path) -> None:
    """A second identical install changes nothing, mtime included."""
    out = tmp_path / RUNTIME
    assert _render(REPO / "systemd" / RUNTIME, out, Path("/opt/edge-runtime"), "infinity").returncode == 0
    text = out.read_text()
    assert "@" + "PREFIX@" not in text and "MemoryMax=infinity" in text
    assert (out.stat().st_mode & 0o777) == 0o644
    before = out.stat().st_mtime_ns
    assert _render(REPO / "systemd" / RUNTIME, out, Path("/opt/edge-runtime"), "infinity").returncode == 0
    assert out.stat().st_mtime_ns == before
    assert _render(REPO / "systemd" / RUNTIME, out, Path("/opt/edge-runtime"), "512M").returncode == 0
    assert "MemoryMax=512M" in out.read_text()


@pytest.mark.parametrize(("prefix", "memory_max"), [
    ("opt/edge-runtime", "1G"),  # relative
    ("/opt/edge runtime", "1G"),  # a space splits ExecStart
    ("/opt/%h", "1G"),  # a systemd specifier
    ("/opt/../etc", "1G"),
    ("/opt/edge-runtime", "lots"),
    ("/opt/edge-runtime", "1G\nExecStartPre=/bin/sh"),  # a second line smuggled into the unit
])
def test_render_refuses_values_that_break_the_unit(tmp_path: Path, prefix: str, memory_max: str) -> None:
    out = tmp_path / RUNTIME
    done = _render(REPO / "systemd" / RUNTIME, out, prefix, memory_max)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()


def test_render_refuses_a_placeholder_it_does_not_fill(tmp_path: Path) -> None:
    template = tmp_path / "t.service"
    template.write_text("[Service]\nExecStart=@PREFIX@/bin/x --port @PORT@\n")
    done = _render(template, tmp_path / "out.service", Path("/opt/x"), "infinity")
    assert done.returncode == 1 and "@PORT@" in done.stderr
