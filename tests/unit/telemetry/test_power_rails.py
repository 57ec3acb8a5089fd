"""INA3221 rails in both kernel layouts (hwmon on JetPack 5/6, iio ``ina3221x`` on JetPack 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from edge_runtime.telemetry.power_rails import read_power_rails

HWMON = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
IIO = "sys/bus/i2c/drivers/ina3221x/7-0040/iio:device0"


def _write(root: Path, files: Dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_hwmon_power_is_bus_millivolts_times_milliamps(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        f"{HWMON}/in1_label": "VDD_IN\n", f"{HWMON}/in1_input": "5000\n", f"{HWMON}/curr1_input": "1000\n",
        f"{HWMON}/in2_label": "NC\n", f"{HWMON}/in2_input": "0\n", f"{HWMON}/curr2_input": "0\n",
        f"{HWMON}/in3_label": "VDD_SOC\n", f"{HWMON}/in3_input": "5000\n",  # no current file: not a reading
        f"{HWMON}/in7_label": "sum of shunt voltages\n", f"{HWMON}/in7_input": "120\n",
    })
    assert read_power_rails(root) == {"VDD_IN": 5000.0}


def test_iio_power_is_read_directly_or_from_voltage_and_current(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        f"{IIO}/rail_name_0": "VDD_IN\n", f"{IIO}/in_power0_input": "4893\n",
        f"{IIO}/rail_name_1": "VDD_SOC\n", f"{IIO}/in_voltage1_input": "5000\n", f"{IIO}/in_current1_input": "200\n",
        f"{IIO}/rail_name_2": "VDD_CV\n",  # nothing to read: left out
    })
    assert read_power_rails(root) == {"VDD_IN": 4893.0, "VDD_SOC": 1000.0}


def test_two_monitors_naming_a_rail_alike_keep_both(tmp_path: Path) -> None:
    other = HWMON.replace("1-0040", "1-0041").replace("hwmon3", "hwmon4")
    root = _write(tmp_path, {
        f"{HWMON}/in1_label": "VDD\n", f"{HWMON}/in1_input": "1000\n", f"{HWMON}/curr1_input": "1000\n",
        f"{other}/in1_label": "VDD\n", f"{other}/in1_input": "2000\n", f"{other}/curr1_input": "1000\n",
    })
    assert read_power_rails(root) == {"VDD": 1000.0, "VDD.2": 2000.0}


def test_no_monitors_no_rails(tmp_path: Path) -> None:
    assert read_power_rails(tmp_path) == {}
