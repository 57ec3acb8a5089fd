"""The agent's errors, on the project's one error tree (:mod:`edge_runtime.errors`).

    EdgeRuntimeError
    ├── TransportError (502)            the central server could not be reached, or its TLS identity did not verify
    ├── RuntimeApiError (502)           the health gate's call to the runtime's API failed (an error answer)
    │   └── RuntimeUnreachableError (503)  no answer at all: the version was never judged (retried)
    ├── UpdatesNotPromotedError (409)   `sync --once` ended with a target not promoted (each printed above)
    └── SyncError (422)                 the sync agent refused a bundle or its metadata; nothing was changed
        ├── UnsafeArchiveError (422)    unreadable, truncated or over-cap tar; a member a bundle cannot hold
        ├── BundleRefusedError (422)    signature, trusted key, a file's hash, an unlisted file
        ├── WrongTargetError (422)      another model, device class, or an engine for other hardware
        ├── VersionRefusedError (422)   not newer than the active version, or exists with other content
        ├── InstallSpaceError (507)     the device ran out of space while installing
        ├── RepositoryWriteError (500)  the model repository could not be written
        ├── DownloadIntegrityError (422)  a download differs from its TUF target (length, sha256): deleted
        ├── DownloadSpaceError (507)    a download would not fit the free space minus the reserve
        ├── DownloadError (502)         the file server answered wrongly: retry later
        ├── MetadataRefusedError (422)  TUF: bad signature, expired (freeze), rollback, mix-and-match, oversize
        └── UnknownTargetError (404)    the verified targets metadata lists no such target
"""

from __future__ import annotations

from edge_runtime.errors import EdgeRuntimeError


class TransportError(EdgeRuntimeError):
    """No HTTP answer from the central server: refused, timed out, reset, or a certificate that did not verify."""

    http_status = 502


class RuntimeApiError(EdgeRuntimeError):
    """A gate step failed at the runtime's API: no answer, an error answer, or a request it cannot carry."""

    http_status = 502


class RuntimeUnreachableError(RuntimeApiError):
    """The runtime did not answer at all (down, restarting): says nothing about the version under test."""

    http_status = 503


class UpdatesNotPromotedError(EdgeRuntimeError):
    """``sync --once`` ended with at least one target not promoted (each outcome is printed above)."""

    http_status = 409


class SyncError(EdgeRuntimeError):
    """The sync agent refused a bundle (bad archive, signature, hashes, target or version); nothing was changed."""

    http_status = 422


class UnsafeArchiveError(SyncError):
    """The bundle tar is unreadable, truncated, over a cap, or holds a member a bundle cannot hold."""


class BundleRefusedError(SyncError):
    """The unpacked bundle failed verification: signature, trusted key, a file's hash, an unlisted file."""


class WrongTargetError(SyncError):
    """The bundle is not for this device: another model, device class, or an engine for other hardware."""


class VersionRefusedError(SyncError):
    """The bundle's version is not newer than the active one (rollback), or exists with other content."""


class InstallSpaceError(SyncError):
    """The device ran out of space while the bundle was installed."""

    http_status = 507


class RepositoryWriteError(SyncError):
    """The model repository could not be written (permissions, I/O): the device's fault, not the bundle's."""

    http_status = 500


class DownloadIntegrityError(SyncError):
    """A downloaded bundle file differs from its TUF target (length, sha256, a body past the length): deleted."""


class DownloadSpaceError(SyncError):
    """A download would not fit the free space minus the reserve: refused before its first byte."""

    http_status = 507


class DownloadError(SyncError):
    """The file server answered wrongly (an unexpected status, a range other than the one asked): retry later."""

    http_status = 502


class MetadataRefusedError(SyncError):
    """TUF metadata refused: bad signature or untrusted key, expired (freeze), rollback, mix-and-match, oversize."""


class UnknownTargetError(SyncError):
    """The verified TUF targets metadata lists no such target for this device."""

    http_status = 404
