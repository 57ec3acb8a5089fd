"""Power per rail, in milliwatts, from the board's INA3221 monitors; both kernel layouts.

- hwmon (JetPack 5 and 6: Xavier, Orin): ``/sys/bus/i2c/drivers/ina3221/<bus-addr>/hwmon/hwmon*/``
  with ``in[123]_label`` (the rail), ``in[123]_input`` (bus mV) and ``curr[123]_input`` (mA), as the
  kernel's hwmon/ina3221 documentation lists them; power is mV * mA / 1000. Channels labelled
  ``NC`` (not connected, on Orin) are left out, and the ``in7`` "sum of shunt voltages" channel has
  no current of its own.
- iio (JetPack 4's downstream ``ina3221x`` driver):
  ``/sys/bus/i2c/drivers/ina3221x/<bus-addr>/iio:device*/`` with ``rail_name_<n>`` and
  ``in_power<n>_input`` (mW).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from edge_runtime.telemetry.jetson import read_number, read_text

_HWMON_LABEL = re.compile(r"in([1-3])_label")
_IIO_LABEL = re.compile(r"rail_name_(\d+)")


def read_power_rails(root: Path) -> Dict[str, float]:
    """mW per rail name (``VDD_IN``, ``GPU``, ``VDD_GPU_SOC``, ...); empty without INA3221 monitors."""
    rails: Dict[str, float] = {}
    drivers = root / "sys/bus/i2c/drivers"
    for name, milliwatts in itertools.chain(_hwmon_rails(drivers), _iio_rails(drivers)):
        key, copy = name, 1
        while key in rails:  # two monitors naming a rail alike: keep both
            copy += 1
            key = f"{name}.{copy}"
        rails[key] = round(milliwatts, 1)
    return rails


def _hwmon_rails(drivers: Path) -> Iterator[Tuple[str, float]]:
    for folder in sorted(drivers.glob("ina3221*/*/hwmon/hwmon*")):
        for label_file in sorted(folder.glob("in*_label")):
            channel = _HWMON_LABEL.fullmatch(label_file.name)
            label = read_text(label_file)
            if not channel or not label or label.upper() == "NC":
                continue
            millivolts = read_number(folder / f"in{channel.group(1)}_input")
            milliamps = read_number(folder / f"curr{channel.group(1)}_input")
            if millivolts is not None and milliamps is not None:
                yield label, millivolts * milliamps / 1000.0


def _iio_rails(drivers: Path) -> Iterator[Tuple[str, float]]:
    for folder in sorted(drivers.glob("ina3221x/*/iio:device*")):
        for label_file in sorted(folder.glob("rail_name_*")):
            channel = _IIO_LABEL.fullmatch(label_file.name)
            label = read_text(label_file)
            if not channel or not label:
                continue
            milliwatts = _iio_power(folder, channel.group(1))
            if milliwatts is not None:
                yield label, milliwatts


def _iio_power(folder: Path, channel: str) -> Optional[float]:
    power = read_number(folder / f"in_power{channel}_input")
    if power is not None:
        return power
    millivolts = read_number(folder / f"in_voltage{channel}_input")
    milliamps = read_number(folder / f"in_current{channel}_input")
    return millivolts * milliamps / 1000.0 if millivolts is not None and milliamps is not None else None
