"""A bounded sample of scripts/bench/pointer_kill_bench.py: the pointer's writer SIGKILLed 25 times.

The full run (2000 kills) is a benchmark with its result in docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_killed_writer_never_leaves_a_torn_pointer() -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts/bench/pointer_kill_bench.py"), "--kills", "25",
                           "--check"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Torn, unreadable or inconsistent pointers: 0" in done.stdout
