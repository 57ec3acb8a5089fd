"""SIGKILL ``edge-runtime sync --once`` at random points of download, install, retention and switch.

After each kill, what a restarted runtime relies on must hold: the pointer (when there is one) is
valid and names versions that verify, every version directory on disk verifies (no torn install;
hidden staging and ``.deleting-`` folders are allowed and the next pass clears them), and the
version ``startup_versions`` tries first verifies. Each round of kills ends with a whole pass: 3
active and verified, 1 its fallback, no leftovers. Every 50 kills, and at the end, a real
``edge-runtime serve`` starts on the repository and infers once. See tests/integration/ota_support.py.

The count is ``OTA_KILLS`` (200 by default); scripts/bench/ota_kill_bench.py runs 1000 and more.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("tuf.ngclient")

from ota_support import OtaRig, run_kills

KILLS = int(os.environ.get("OTA_KILLS", "200"))


@pytest.mark.slow
def test_killed_sync_passes_never_leave_a_torn_install(tmp_path: Path) -> None:
    rig = OtaRig(tmp_path)
    try:
        report = run_kills(rig, KILLS, seed=int(os.environ.get("OTA_KILL_SEED", "0")), serve_every=50)
    finally:
        rig.close()
    assert report.kills == KILLS
    assert report.torn_installs == 0, report.violations[:5]
    assert report.violations == []
    assert report.serve_failures == []
    assert report.restarts_served >= KILLS // 50 + 1
    if KILLS >= 100:  # the kills did land inside downloads and between install and switch, not only around them
        assert report.phases.get("download", 0) > 0 and report.phases.get("installed, before the switch", 0) > 0, \
            report.phases


@pytest.mark.slow
def test_the_checks_catch_an_installer_that_copies_in_place(tmp_path: Path) -> None:
    """The same kills against a defective installer (files copied one by one into the version's folder)."""
    rig = OtaRig(tmp_path, tearing=True)
    try:
        report = run_kills(rig, 20, seed=0, serve_every=0)
    finally:
        rig.close()
    assert report.torn_installs > 0, report.phases
