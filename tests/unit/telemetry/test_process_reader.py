"""Process figures: RSS and CPU through psutil, the peak from VmHWM (psutil has none)."""

from __future__ import annotations

from pathlib import Path

from edge_runtime.telemetry.process import ProcessReader, peak_rss_mb


def test_the_running_process_reads_into_rss_peak_and_cpu() -> None:
    reader = ProcessReader()
    buffer = bytearray(32 * 1024 * 1024)  # touch memory so the peak is at least this much
    for index in range(0, len(buffer), 4096):
        buffer[index] = 1
    figures = reader.read()
    assert set(figures) == {"rss_mb", "rss_peak_mb", "cpu_percent"}
    rss, peak, cpu = figures["rss_mb"], figures["rss_peak_mb"], figures["cpu_percent"]
    assert rss is not None and peak is not None and cpu is not None
    assert rss > 32 and peak >= rss and cpu >= 0.0
    del buffer


def test_the_peak_is_vmhwm_from_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t 900000 kB\nVmHWM:\t  163942 kB\nVmRSS:\t  148684 kB\n")
    assert peak_rss_mb(status) == 163942 / 1024.0


def test_without_procfs_the_peak_comes_from_getrusage(tmp_path: Path) -> None:
    peak = peak_rss_mb(tmp_path / "missing")
    assert peak is not None and peak > 0
    reader = ProcessReader(status_path=tmp_path / "missing")
    figures = reader.read()
    assert figures["rss_peak_mb"] is not None and figures["rss_peak_mb"] >= (figures["rss_mb"] or 0)
