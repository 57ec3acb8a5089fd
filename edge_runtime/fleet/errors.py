"""The agent's errors, on the project's one error tree (:mod:`edge_runtime.errors`).

    EdgeRuntimeError
    └── TransportError (502)     the central server could not be reached, or its TLS identity did not verify
"""

from __future__ import annotations

from edge_runtime.errors import EdgeRuntimeError


class TransportError(EdgeRuntimeError):
    """No HTTP answer from the central server: refused, timed out, reset, or a certificate that did not verify."""

    http_status = 502
