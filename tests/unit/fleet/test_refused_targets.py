"""The record of refused targets: keyed by name and sha256, kept across passes, capped, never in the way."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge_runtime.fleet.refused_targets import RECORD_NAME, RefusedTarget, RefusedTargets

SHA_A, SHA_B = "a" * 64, "b" * 64


def entry(name: str, sha256: str = SHA_A, at: float = 1.0, outcome: str = "gate_failed") -> RefusedTarget:
    return RefusedTarget(name, sha256, outcome, f"{name}: p99 over budget", at)


def test_a_record_is_found_by_a_later_instance(tmp_path: Path) -> None:
    path = tmp_path / "staging" / RECORD_NAME  # the directory is made when needed
    RefusedTargets(path).add(entry("tiny-3.tar"))
    again = RefusedTargets(path)
    assert again.find("tiny-3.tar", SHA_A) == entry("tiny-3.tar")
    document = json.loads(path.read_bytes())
    assert document["refused"] == [{"name": "tiny-3.tar", "sha256": SHA_A, "outcome": "gate_failed",
                                    "reason": "tiny-3.tar: p99 over budget", "at": 1.0}]
    assert [p.name for p in path.parent.iterdir()] == [RECORD_NAME]  # no temporary file left behind


def test_another_sha256_under_the_same_name_is_not_refused(tmp_path: Path) -> None:
    record = RefusedTargets(tmp_path / RECORD_NAME)
    record.add(entry("tiny-3.tar", SHA_A))
    assert record.find("tiny-3.tar", SHA_B) is None
    assert record.find("tiny-4.tar", SHA_A) is None


def test_the_oldest_entries_are_dropped_past_the_cap(tmp_path: Path) -> None:
    path = tmp_path / RECORD_NAME
    record = RefusedTargets(path, max_entries=3)
    for version in range(1, 6):
        record.add(entry(f"tiny-{version}.tar", at=float(version)))
    kept = [e.name for e in RefusedTargets(path, max_entries=3).entries()]
    assert kept == ["tiny-3.tar", "tiny-4.tar", "tiny-5.tar"]


def test_recording_a_target_again_makes_it_the_newest(tmp_path: Path) -> None:
    record = RefusedTargets(tmp_path / RECORD_NAME, max_entries=2)
    record.add(entry("tiny-1.tar", at=1.0))
    record.add(entry("tiny-2.tar", at=2.0))
    record.add(entry("tiny-1.tar", at=3.0, outcome="refused"))
    record.add(entry("tiny-3.tar", at=4.0))
    assert [(e.name, e.outcome) for e in record.entries()] == [("tiny-1.tar", "refused"), ("tiny-3.tar", "gate_failed")]


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"refused": [{"name": "x"}]}'])
def test_an_unreadable_record_starts_afresh(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                            content: bytes) -> None:
    path = tmp_path / RECORD_NAME
    path.write_bytes(content)
    record = RefusedTargets(path)
    with caplog.at_level(logging.WARNING):
        assert record.find("tiny-3.tar", SHA_A) is None
    assert "unreadable record of refused targets" in caplog.text
    record.add(entry("tiny-3.tar"))
    assert RefusedTargets(path).find("tiny-3.tar", SHA_A) is not None


def test_a_record_that_cannot_be_written_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "staging"
    blocker.write_bytes(b"a file where the directory should be")  # refused even to root
    record = RefusedTargets(blocker / RECORD_NAME)
    with caplog.at_level(logging.WARNING):
        record.add(entry("tiny-3.tar"))
    assert "cannot record a refused target" in caplog.text
    assert record.find("tiny-3.tar", SHA_A) is not None  # still remembered for this pass
