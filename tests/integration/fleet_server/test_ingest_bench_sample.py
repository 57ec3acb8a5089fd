"""CI's bounded sample of scripts/bench/ingest_bench.py: 1000 devices, 5 s at 500 batches/s on PostgreSQL.

Not a timing test (timings go in docs/benchmarks.md): it checks that the bench runs end to end and that
every batch it sent was answered 200 and stored exactly once, so the bench keeps working between runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_the_quick_ingest_bench_stores_every_batch_exactly_once(postgres_server: str) -> None:
    # postgres_server: only so that a machine that cannot start PostgreSQL skips (or fails under CI) alike
    done = subprocess.run([sys.executable, str(REPO / "scripts/bench/ingest_bench.py"), "--quick", "--no-fsync"],
                          capture_output=True, text=True, timeout=300, check=False, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| new |")]
    phase, listing = rows[0].split("|"), rows[1]
    assert phase[3].strip() == phase[4].strip() and phase[11].strip() == "none"  # sent == 200s, no other answers
    assert "(exact)" in listing
