"""System figures from procfs/sysfs under a root: memory, GPU load, temperatures, power mode, clocks.

NVML does not exist on Jetson (before JetPack 7), so these are the kernel's own files, as tegrastats
and jetson-stats read them:
- ``/proc/meminfo``: ``MemTotal``, ``MemAvailable`` and, on Jetson, ``NvMapMemUsed`` (what the GPU
  and the other engines hold of the shared DRAM), in kB.
- GPU load, 0-1000: ``/sys/devices/gpu.0/load`` on Xavier; Orin has only
  ``/sys/devices/platform/gpu.0/load`` (JetPack 6 on Orin Nano: ``platform/bus@0/17000000.gpu``);
  otherwise the devfreq device whose ``load`` file exists.
- ``/sys/class/thermal/thermal_zone*/{type,temp}`` in milli-°C; an offline sensor reads -256 °C or
  fails to read and is left out, and ``PMIC-Die`` (a fixed 100 °C on Xavier) too.
- Power mode: ``/var/lib/nvpmodel/status`` (``pmode:0002``, written by nvpmodel) named through
  ``/etc/nvpmodel.conf`` (``< POWER_MODEL ID=2 NAME=MODE_15W >``); ``nvpmodel -q`` (with a
  timeout) only when those files are missing and the root is the real one.
- Clocks locked (``jetson_clocks`` sets every online CPU's ``scaling_min_freq`` to its
  ``scaling_max_freq``): read from cpufreq, which needs no root, unlike ``jetson_clocks --show``.
Every reader returns None (or an empty dict) when its files are missing or unreadable: a plain
x86 host gives nulls, never an exception.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from edge_runtime.bundle.fingerprint import JETPACK_BY_L4T
from edge_runtime.host_info import jetson_model, l4t_release

log = logging.getLogger(__name__)

GPU_LOAD_PATHS = (
    "sys/devices/gpu.0/load",  # Xavier, Nano, TX2
    "sys/devices/platform/gpu.0/load",  # Orin (and Xavier, which has both)
    "sys/devices/platform/bus@0/17000000.gpu/load",  # Orin, JetPack 6 kernels
    "sys/devices/platform/17000000.gpu/load",
    "sys/devices/17000000.ga10b/load",
    "sys/devices/17000000.gv11b/load",
)
_OFFLINE_C = -256.0  # what an unpowered sensor reads on Orin (e.g. a CV cluster that is off)
_MEMINFO = re.compile(r"^(\w+):\s+(\d+)\s*kB", re.MULTILINE)
_PMODE = re.compile(r"pmode:\s*(\d+)")
_MODEL = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)")
_QUERY = re.compile(r"NV Power Mode:\s*(\S+)")

CommandRunner = Callable[[Sequence[str]], Optional[str]]


def read_text(path: Path) -> Optional[str]:
    """A sysfs/procfs file's text, stripped; None when it is missing or cannot be read."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def read_number(path: Path) -> Optional[float]:
    """A file holding one number (sysfs style); None when missing, unreadable or not a number."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        log.debug("not a number in %s: %r", path, text)
        return None


def read_memory(root: Path) -> Dict[str, Optional[float]]:
    """``mem_total_mb``, ``mem_available_mb`` and ``nvmap_mb`` (None off Jetson) from /proc/meminfo, in MiB."""
    fields = {key: int(kb) for key, kb in _MEMINFO.findall(read_text(root / "proc/meminfo") or "")}

    def mib(key: str) -> Optional[float]:
        return round(fields[key] / 1024.0, 1) if key in fields else None

    return {"mem_total_mb": mib("MemTotal"), "mem_available_mb": mib("MemAvailable"), "nvmap_mb": mib("NvMapMemUsed")}


def gpu_load_path(root: Path) -> Optional[Path]:
    """The integrated GPU's ``load`` file on this board, if it has one."""
    for relative in GPU_LOAD_PATHS:
        if (root / relative).is_file():
            return root / relative
    for candidate in sorted((root / "sys/class/devfreq").glob("*/device/load")):
        return candidate
    return None


def read_gpu_load(root: Path) -> Optional[float]:
    """The integrated GPU's load, 0..1 (the kernel reports per mille); None without one."""
    path = gpu_load_path(root)
    value = read_number(path) if path is not None else None
    return None if value is None else min(max(value / 1000.0, 0.0), 1.0)


def read_temperatures(root: Path) -> Dict[str, float]:
    """°C per thermal zone type (``CPU-therm``, ``gpu-thermal``, ...); offline sensors left out."""
    zones = sorted((root / "sys/class/thermal").glob("thermal_zone*"), key=_zone_number)
    temperatures: Dict[str, float] = {}
    for zone in zones:
        kind = read_text(zone / "type")
        milli = read_number(zone / "temp")
        if not kind or milli is None or kind.startswith("PMIC") or milli / 1000.0 <= _OFFLINE_C:
            continue
        name = kind if kind not in temperatures else f"{kind}.{_zone_number(zone)}"
        temperatures[name] = round(milli / 1000.0, 2)
    return temperatures


def _zone_number(zone: Path) -> int:
    digits = zone.name[len("thermal_zone"):]
    return int(digits) if digits.isdigit() else 0


def read_power_mode(root: Path, run: Optional[CommandRunner] = None) -> Optional[str]:
    """The nvpmodel power mode's name (``MAXN``, ``MODE_15W``, ...); None where there is no nvpmodel."""
    status = read_text(root / "var/lib/nvpmodel/status")
    found = _PMODE.search(status or "")
    if found:
        wanted = int(found.group(1))
        for mode_id, name in _MODEL.findall(read_text(root / "etc/nvpmodel.conf") or ""):
            if int(mode_id) == wanted:
                return name
    if root != Path("/") and run is None:
        return None  # a recorded tree: never ask this host's nvpmodel about it
    output = (run or run_command)(["nvpmodel", "-q"])
    query = _QUERY.search(output or "")
    return query.group(1) if query else None


def run_command(argv: Sequence[str], timeout_s: float = 2.0) -> Optional[str]:
    """A tool's standard output; None when it is not installed, fails or takes longer than ``timeout_s``."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("%s failed: %s", argv[0], exc)
        return None
    return done.stdout if done.returncode == 0 else None


def read_clocks_locked(root: Path) -> Optional[bool]:
    """True when every online CPU runs at a fixed frequency (min == max), as ``jetson_clocks`` sets it."""
    pairs: List[bool] = []
    for cpu in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*")):
        if read_text(cpu / "online") == "0":
            continue
        low, high = read_number(cpu / "cpufreq/scaling_min_freq"), read_number(cpu / "cpufreq/scaling_max_freq")
        if low is not None and high is not None:
            pairs.append(low == high)
    return all(pairs) if pairs else None


def board_facts(root: Path) -> Dict[str, Optional[str]]:
    """The board's name, its L4T release and the JetPack that ships it (None off Jetson)."""
    l4t = l4t_release(root)
    return {"board": jetson_model(root), "l4t": l4t, "jetpack": JETPACK_BY_L4T.get(l4t or "")}
