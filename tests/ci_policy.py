"""What a test does when a system component it needs (PostgreSQL, Chromium) is not there.

On a developer's machine it skips with the reason. Under CI (``EDGE_CI=1``, set by ``.ci/run``,
whose test script installs these components) it fails instead: a feature whose test silently
skipped in CI would count as tested when it was not.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it under CI."""
    if os.environ.get("EDGE_CI") == "1":
        pytest.fail(f"{reason} (required under CI: EDGE_CI=1)")
    pytest.skip(reason)
