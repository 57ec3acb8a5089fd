"""Backoff: 1 s doubling to 300 s, full jitter, Retry-After as a floor; a pinned random source and clock."""

from __future__ import annotations

from typing import List

from edge_runtime.fleet.backoff import Backoff, parse_retry_after


def test_ceiling_doubles_from_one_second_to_five_minutes() -> None:
    backoff = Backoff(1.0, 300.0, uniform=lambda: 1.0)
    delays = [backoff.next_delay() for _ in range(12)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]


def test_full_jitter_draws_between_zero_and_the_ceiling() -> None:
    draws: List[float] = [0.0, 0.5, 0.25, 0.999]
    backoff = Backoff(1.0, 300.0, uniform=lambda: draws.pop(0))
    assert [backoff.next_delay() for _ in range(4)] == [0.0, 1.0, 1.0, 0.999 * 8]


def test_reset_after_success_starts_again_at_one_second() -> None:
    backoff = Backoff(1.0, 300.0, uniform=lambda: 1.0)
    for _ in range(20):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_a_very_long_outage_does_not_overflow() -> None:
    backoff = Backoff(1.0, 300.0, uniform=lambda: 1.0)
    backoff.failures = 100_000
    assert backoff.next_delay() == 300.0


def test_retry_after_is_a_floor_capped_at_the_maximum() -> None:
    backoff = Backoff(1.0, 300.0, uniform=lambda: 0.0)
    assert backoff.next_delay(retry_after_s=30.0) == 30.0
    assert backoff.next_delay(retry_after_s=86400.0) == 300.0
    high = Backoff(1.0, 300.0, uniform=lambda: 1.0)
    high.failures = 6
    assert high.next_delay(retry_after_s=5.0) == 64.0  # the jittered delay is longer: keep it


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = 1764086400.0  # Tue, 25 Nov 2025 16:00:00 GMT
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Tue, 25 Nov 2025 16:01:30 GMT", now=lambda: now) == 90.0
    assert parse_retry_after("Tue, 25 Nov 2025 15:00:00 GMT", now=lambda: now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
