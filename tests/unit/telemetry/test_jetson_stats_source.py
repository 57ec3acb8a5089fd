"""jetson-stats (jtop) as an optional source: used only when it imports and its service answers,
and only for the system fields sysfs could not read."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from edge_runtime.telemetry.jetson_stats import open_jtop
from edge_runtime.telemetry.record import RecordBuilder

BOARDS = Path(__file__).resolve().parents[2] / "fixtures" / "jetson"


class FakeJtop:
    """The few attributes of ``jtop.jtop`` the source reads, as jetson-stats 4.x shapes them."""

    refuse = False
    closed = 0

    def start(self) -> None:
        if FakeJtop.refuse:
            raise RuntimeError("The jtop.service is not active")

    def close(self) -> None:
        FakeJtop.closed += 1

    gpu: Dict[str, Any] = {"ga10b": {"type": "integrated", "status": {"load": 37.5}}}
    temperature: Dict[str, Any] = {"cpu": {"temp": 51.2, "online": True}, "cv0": {"temp": -256.0, "online": False}}
    power: Dict[str, Any] = {"rail": {"VDD_GPU_SOC": {"volt": 4984, "curr": 800, "power": 3987}}, "tot": {}}


@pytest.fixture()
def fake_jtop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    module = types.ModuleType("jtop")
    module.jtop = FakeJtop  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jtop", module)
    FakeJtop.refuse, FakeJtop.closed = False, 0
    socket = tmp_path / "jtop.sock"
    socket.write_text("")
    yield socket


def test_no_service_socket_no_source(tmp_path: Path) -> None:
    assert open_jtop(tmp_path / "jtop.sock") is None


def test_a_service_that_does_not_answer_is_no_source(fake_jtop: Path) -> None:
    FakeJtop.refuse = True
    assert open_jtop(fake_jtop) is None


def test_jtop_figures_fill_only_what_sysfs_left_empty(fake_jtop: Path, tmp_path: Path) -> None:
    source = open_jtop(fake_jtop)
    assert source is not None
    assert source.read() == {"gpu_load": 0.375, "temperatures_c": {"cpu": 51.2},
                             "power_mw": {"VDD_GPU_SOC": 3987.0}}
    bare = RecordBuilder(tmp_path / "empty-root", list, extra_system=source.read).build(0.0, 10.0)["system"]
    assert (bare["gpu_load"], bare["temperatures_c"], bare["power_mw"]) == (
        0.375, {"cpu": 51.2}, {"VDD_GPU_SOC": 3987.0})
    board = RecordBuilder(BOARDS / "orin-agx", list, extra_system=source.read).build(0.0, 10.0)["system"]
    assert board["gpu_load"] == 0.058 and "tj-thermal" in board["temperatures_c"]  # sysfs wins where it reads
    source.close()
    assert FakeJtop.closed == 1
