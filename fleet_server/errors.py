"""The central server's errors, on the project's one error tree (:mod:`edge_runtime.errors`).

Each carries the HTTP status the server answers with; the app turns any of them into
``{"error": str(error)}``, and ``edge-fleet`` prints it as one line.

    EdgeRuntimeError (500)
    └── FleetError (500)                  base of the central server's errors
        ├── BadBatchError (400)           an ingest batch or query is malformed, or a record lies in the future
        ├── PayloadTooLargeError (413)    a body over the configured cap (refused before parsing)
        ├── UnauthorizedError (401)       no token, an unknown one, or a revoked / rotated-away one
        ├── ForbiddenError (403)          a valid token used for another device
        ├── DeviceNotFoundError (404)     no such enrolled device
        ├── DeviceExistsError (409)       the device is already enrolled (rotate its token instead)
        ├── NotFoundError (404)           no such bundle or rollout
        ├── ConflictError (409)           the request contradicts the state (another bundle under that
        │                                 version, advancing a paused rollout, no TUF repository yet)
        ├── BundleRejectedError (422)     an uploaded bundle is unsafe, unsigned, or signed by an untrusted key
        ├── OverloadedError (503)         the database is busy or its pool is exhausted: retry later
        ├── DatabaseError (500)           the database cannot be reached or is not migrated
        └── SecretError (500)             the server's HMAC secret file is unreadable or too short
"""

from __future__ import annotations

from edge_runtime.errors import EdgeRuntimeError


class FleetError(EdgeRuntimeError):
    """Base of every error the central server raises on purpose."""

    http_status = 500


class BadBatchError(FleetError):
    """A request body or query is malformed, fails validation, or holds a record from the future."""

    http_status = 400


class PayloadTooLargeError(FleetError):
    """The body is over the configured cap; nothing of it was parsed."""

    http_status = 413


class UnauthorizedError(FleetError):
    """No bearer token, or one the server does not know or has revoked."""

    http_status = 401


class ForbiddenError(FleetError):
    """A valid token, but for another device (or not an operator's)."""

    http_status = 403


class DeviceNotFoundError(FleetError):
    """No device with this id is enrolled."""

    http_status = 404


class DeviceExistsError(FleetError):
    """The device is already enrolled; its token can be rotated instead."""

    http_status = 409


class OverloadedError(FleetError):
    """The database is busy or its connection pool is exhausted; the client should retry."""

    http_status = 503


class DatabaseError(FleetError):
    """The database cannot be reached, or its schema is not at the current revision."""

    http_status = 500


class SecretError(FleetError):
    """The server's secret (the HMAC key for token digests) cannot be read or created."""

    http_status = 500


class NotFoundError(FleetError):
    """No bundle or rollout with this name or id."""

    http_status = 404


class ConflictError(FleetError):
    """The request contradicts the stored state (e.g. advancing a paused rollout)."""

    http_status = 409


class BundleRejectedError(FleetError):
    """An uploaded bundle cannot be published: not a safe tar, or its signature does not verify."""

    http_status = 422
