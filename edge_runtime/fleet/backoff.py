"""Retry delays for the uploader: exponential backoff with full jitter, honouring ``Retry-After``.

The ceiling starts at ``initial_s`` and doubles per failure up to ``max_s`` (1 s → 5 min); each
delay is drawn uniformly from [0, ceiling] ("full jitter", so a fleet that lost the server at the
same moment does not come back in lockstep). A server's ``Retry-After`` (seconds or an HTTP date)
is a floor on the delay, itself capped at ``max_s``. The random source and the clock are injected
so tests can pin the schedule.
"""

from __future__ import annotations

import email.utils
import random
import time
from typing import Callable, Optional


class Backoff:
    """The delay before the next try after consecutive failures; ``reset`` after a success."""

    def __init__(self, initial_s: float = 1.0, max_s: float = 300.0,
                 uniform: Callable[[], float] = random.random) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0
        self._uniform = uniform

    def ceiling(self) -> float:
        """The largest delay the next failure may draw (initial · 2^failures, at most max)."""
        # min() on the exponent first: 2.0 ** 10_000 would overflow after a very long outage.
        return min(self.max_s, self.initial_s * 2.0 ** min(self.failures, 64))

    def next_delay(self, retry_after_s: Optional[float] = None) -> float:
        """Record one more failure; the seconds to wait before the next try."""
        delay = self._uniform() * self.ceiling()
        self.failures += 1
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_s))
        return delay

    def reset(self) -> None:
        """A try succeeded: the next failure starts again from ``initial_s``."""
        self.failures = 0


def parse_retry_after(value: Optional[str], now: Callable[[], float] = time.time) -> Optional[float]:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now())
