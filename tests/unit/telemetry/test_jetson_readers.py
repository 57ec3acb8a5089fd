"""The Jetson system readers on recorded board trees (AGX Xavier, Xavier NX, AGX Orin) and on plain hosts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

from edge_runtime.telemetry import jetson
from edge_runtime.telemetry.record import Guard, read_system

BOARDS = Path(__file__).resolve().parents[2] / "fixtures" / "jetson"

EXPECTED: Dict[str, Dict[str, Any]] = {
    "agx-xavier": {
        "facts": {"board": "Jetson-AGX", "l4t": "35.4.1", "jetpack": "5.1.2"},
        "system": {
            "mem_total_mb": 31918.5, "mem_available_mb": 20011.0, "nvmap_mb": 812.0, "gpu_load": 0.42,
            "temperatures_c": {"CPU-therm": 45.5, "GPU-therm": 44.0, "AUX-therm": 43.5, "AO-therm": 44.5,
                               "Tboard_tegra": 40.0, "Tdiode_tegra": 42.25, "thermal-fan-est": 44.2},
            "power_mw": {"GPU": 3040.0, "CPU": 1520.0, "SOC": 2280.0, "CV": 0.0, "VDDRQ": 760.0, "SYS5V": 3000.0},
            "power_mode": "MAXN", "clocks_locked": True,
        },
    },
    "xavier-nx": {
        "facts": {"board": "NVIDIA Jetson Xavier NX Developer Kit", "l4t": "32.7.4", "jetpack": None},
        "system": {
            "mem_total_mb": 7806.9, "mem_available_mb": 5000.0, "nvmap_mb": 200.0, "gpu_load": 0.137,
            "temperatures_c": {"CPU-therm": 41.0, "GPU-therm": 40.5, "AUX-therm": 40.0, "AO-therm": 41.5,
                               "thermal-fan-est": 40.75},
            "power_mw": {"VDD_IN": 4893.0, "VDD_CPU_GPU_CV": 1102.0, "VDD_SOC": 1308.0},
            "power_mode": "MODE_15W_6CORE", "clocks_locked": False,
        },
    },
    "orin-agx": {
        "facts": {"board": "NVIDIA Jetson AGX Orin Developer Kit", "l4t": "36.3.0", "jetpack": "6.0"},
        "system": {
            "mem_total_mb": 31153.2, "mem_available_mb": 26624.0, "nvmap_mb": 1024.0, "gpu_load": 0.058,
            "temperatures_c": {"cpu-thermal": 48.5, "gpu-thermal": 47.0, "cv0-thermal": 46.5, "cv1-thermal": 46.4,
                               "cv2-thermal": 46.8, "soc0-thermal": 46.0, "soc1-thermal": 45.75,
                               "soc2-thermal": 45.9, "tj-thermal": 48.5},
            # NC channels and the in7 "sum of shunt voltages" channel are not rails
            "power_mw": {"VDD_GPU_SOC": 3987.2, "VDD_CPU_CV": 798.7, "VIN_SYS_5V0": 2388.5, "VDDQ_VDD2_1V8AO": 399.4},
            "power_mode": "MODE_30W", "clocks_locked": True,  # CPUs 8-11 are offline and left out
        },
    },
}


class NoCommands:
    """A command runner that records what it was asked and answers nothing (no nvpmodel here)."""

    def __init__(self, answer: Optional[str] = None) -> None:
        self.calls: List[Sequence[str]] = []
        self.answer = answer

    def __call__(self, argv: Sequence[str]) -> Optional[str]:
        self.calls.append(list(argv))
        return self.answer


def _write(root: Path, files: Dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("board", sorted(EXPECTED))
def test_each_board_tree_reads_into_its_figures(board: str) -> None:
    root = BOARDS / board
    guard = Guard()
    assert read_system(root, guard) == EXPECTED[board]["system"]
    assert jetson.board_facts(root) == EXPECTED[board]["facts"]


@pytest.mark.parametrize("board", sorted(EXPECTED))
def test_a_recorded_tree_never_asks_this_hosts_nvpmodel(board: str, tmp_path: Path) -> None:
    """With the nvpmodel files gone, a recorded tree's power mode is unknown, not this machine's."""
    root = _write(tmp_path, {"proc/meminfo": (BOARDS / board / "proc/meminfo").read_text()})
    assert jetson.read_power_mode(root) is None


def test_a_plain_x86_root_gives_nulls(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "proc/meminfo": "MemTotal:       16314512 kB\nMemFree:         8000000 kB\nMemAvailable:   12288000 kB\n",
        "sys/class/thermal/thermal_zone0/type": "x86_pkg_temp\n",
        "sys/class/thermal/thermal_zone0/temp": "52000\n",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq": "800000\n",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq": "4200000\n",
    })
    figures = read_system(root, Guard())
    assert figures == {"mem_total_mb": 15932.1, "mem_available_mb": 12000.0, "nvmap_mb": None, "gpu_load": None,
                       "temperatures_c": {"x86_pkg_temp": 52.0}, "power_mw": {}, "power_mode": None,
                       "clocks_locked": False}
    assert jetson.board_facts(root) == {"board": None, "l4t": None, "jetpack": None}


def test_an_empty_root_gives_nulls_and_never_raises(tmp_path: Path) -> None:
    figures = read_system(tmp_path, Guard())
    assert figures == {"mem_total_mb": None, "mem_available_mb": None, "nvmap_mb": None, "gpu_load": None,
                       "temperatures_c": {}, "power_mw": {}, "power_mode": None, "clocks_locked": None}


def test_this_machines_root_reads_without_raising() -> None:
    """On whatever host runs the tests: every field present, numbers or nulls, no exception."""
    guard = Guard()
    figures = read_system(Path("/"), guard)
    assert set(figures) == set(EXPECTED["agx-xavier"]["system"])
    assert guard._reported == set()


def test_unreadable_and_garbled_files_read_as_null(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "proc/meminfo": "MemTotal: lots\n",
        "sys/devices/gpu.0/load": "busy\n",
        "sys/class/thermal/thermal_zone0/type": "cv0-thermal\n",
        "sys/class/thermal/thermal_zone0/temp": "-256000\n",  # Orin: the sensor's cluster is powered off
        "sys/class/thermal/thermal_zone1/type": "CPU-therm\n",
        "sys/class/thermal/thermal_zone1/temp": "",  # a read that fails (EAGAIN) reads as empty here
        "var/lib/nvpmodel/status": "pmode:0009\n",
        "etc/nvpmodel.conf": "< POWER_MODEL ID=0 NAME=MAXN >\n",
    })
    (root / "sys/devices/system/cpu/cpu0/cpufreq").mkdir(parents=True)  # no frequency files at all
    assert read_system(root, Guard()) == {
        "mem_total_mb": None, "mem_available_mb": None, "nvmap_mb": None, "gpu_load": None,
        "temperatures_c": {}, "power_mw": {}, "power_mode": None, "clocks_locked": None}


def test_gpu_load_falls_back_to_the_devfreq_device_and_is_clamped(tmp_path: Path) -> None:
    root = _write(tmp_path, {"sys/class/devfreq/17000000.gpu/device/load": "1200\n"})
    assert jetson.gpu_load_path(root) == root / "sys/class/devfreq/17000000.gpu/device/load"
    assert jetson.read_gpu_load(root) == 1.0


def test_zones_of_the_same_type_are_both_kept(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "sys/class/thermal/thermal_zone0/type": "soc-thermal\n", "sys/class/thermal/thermal_zone0/temp": "40000\n",
        "sys/class/thermal/thermal_zone10/type": "soc-thermal\n", "sys/class/thermal/thermal_zone10/temp": "41000\n",
    })
    assert jetson.read_temperatures(root) == {"soc-thermal": 40.0, "soc-thermal.10": 41.0}


def test_power_mode_from_the_nvpmodel_query_when_its_files_are_missing() -> None:
    runner = NoCommands("NV Fan Mode:quiet\nNV Power Mode: MODE_15W\n2\n")
    assert jetson.read_power_mode(Path("/nonexistent-root"), runner) == "MODE_15W"
    assert runner.calls == [["nvpmodel", "-q"]]


def test_power_mode_files_take_precedence_over_the_query() -> None:
    runner = NoCommands("NV Power Mode: MODE_15W\n2\n")
    assert jetson.read_power_mode(BOARDS / "agx-xavier", runner) == "MAXN"
    assert runner.calls == []


def test_a_missing_or_failing_tool_reads_as_none() -> None:
    assert jetson.run_command(["edge-runtime-no-such-tool-xyz", "-q"]) is None
    assert jetson.run_command(["false"]) is None
    assert jetson.run_command(["echo", "NV Power Mode: MAXN"]) == "NV Power Mode: MAXN\n"
