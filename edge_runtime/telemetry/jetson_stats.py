"""jetson-stats (``jtop``) as an optional source, used when its Python package imports and its service runs.

Jetson users know jtop; where its service is running (it runs as root), it can read what this
process may not (e.g. power monitors readable only by root on some boards). Its figures only
fill the system fields the sysfs readers left null or empty. Nothing here is needed: without
jtop, or with its service stopped, ``open_jtop`` returns None.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

log = logging.getLogger(__name__)

SOCKET = Path("/run/jtop.sock")  # where the jtop service listens


class JtopSource:
    """A connected jtop client, read into Record system fields."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def read(self) -> Dict[str, Any]:
        """``gpu_load`` (0..1), ``temperatures_c`` and ``power_mw`` as jtop reports them now."""
        client = self._client
        loads = [gpu.get("status", {}).get("load") for gpu in (client.gpu or {}).values()]
        loads = [load for load in loads if load is not None]
        temperatures = {name: float(sensor["temp"]) for name, sensor in (client.temperature or {}).items()
                        if sensor.get("online", True) and "temp" in sensor}
        rails = (client.power or {}).get("rail", {})
        power = {name: float(rail["power"]) for name, rail in rails.items() if "power" in rail}
        return {"gpu_load": float(loads[0]) / 100.0 if loads else None,
                "temperatures_c": temperatures, "power_mw": power}

    def close(self) -> None:
        """Disconnect from the jtop service."""
        self._client.close()


def open_jtop(socket: Path = SOCKET) -> Optional[JtopSource]:
    """A source reading the jtop service, or None when jtop is not installed or its service is not running."""
    if not socket.exists():
        return None
    try:
        from jtop import jtop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    client = jtop()
    try:
        client.start()
    except Exception as exc:  # jtop raises its own JtopException (service down, version mismatch)
        log.info("jetson-stats is installed but its service does not answer (%s); reading sysfs only", exc)
        return None
    return JtopSource(client)
