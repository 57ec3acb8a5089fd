"""The one error tree of the project.

Every error raised on purpose by ``edge_runtime`` derives from :class:`EdgeRuntimeError` and
carries the HTTP status a server answers with when it escapes a request handler
(``http_status``). Command-line tools print ``str(error)`` as one line and exit non-zero;
servers answer ``{"error": str(error)}``.

Boundaries re-raise foreign exceptions as one of these with ``raise ... from exc``
so that the cause is kept for logs but never shown to a client as a traceback.

    EdgeRuntimeError (500)
    ├── ConfigError (400)                 a YAML/config file is unreadable or invalid
    ├── BundleError (422)                 a bundle cannot be trusted or used
    │   ├── SignatureError (422)          missing/invalid signature, untrusted key
    │   ├── IntegrityError (422)          a file's hash/size differs, a file missing or extra
    │   └── ManifestError (422)           manifest.json is malformed (after the signature held)
    ├── KeyFileError (400)                a signing/public key file is unreadable or wrong
    ├── BackendUnavailableError (503)     an optional dependency (pip extra) is missing
    ├── FingerprintMismatchError (409)    an engine was built for another GPU / TensorRT / JetPack
    ├── MemoryBudgetError (409)           a model would take the loaded models past memory_budget_mb
    ├── PointerError (500)                a model's active-version pointer is unreadable, invalid or unwritable
    ├── InferenceError (500)              a backend failed while running a valid request
    ├── RequestError (400)                a client's request is malformed or does not fit the model
    │   ├── RequestTooLargeError (413)    body over the configured cap
    │   ├── UnsupportedMediaTypeError (415)
    │   ├── SharedMemoryError (400)       unknown region, out-of-range offset, bad key, policy, caps
    │   │   └── SharedMemoryNotFoundError (404)  status of an unknown CUDA region (as Triton)
    │   └── UnrepresentableOutputError (422)  a JSON output holding an infinity: ask for binary
    ├── ModelNotFoundError (404)          unknown model or version
    ├── ModelNotReadyError (503)          known but not (yet / any more) serving
    ├── NotStagedError (409)              a promote of a version that is not staged and ready
    ├── QueueFullError (503)              the model's bounded queue is full: retry later
    ├── RequestTimeoutError (504)         the request waited longer than its deadline
    └── OutputError (400)                 a file or directory cannot be written (atomic_io)

The workstation's packages subclass the same base in their own ``errors.py`` (as MLServer's
subpackages do), and ``edge_runtime`` never imports them: ``export/errors.py`` holds
ExportError and its children (the central server's ``fleet_server/errors.py`` will do the same).
"""

from __future__ import annotations


class EdgeRuntimeError(Exception):
    """Base of every error this project raises on purpose."""

    http_status = 500


class ConfigError(EdgeRuntimeError):
    """A configuration file is missing, unparsable or fails validation."""

    http_status = 400


class BundleError(EdgeRuntimeError):
    """A bundle cannot be trusted or used."""

    http_status = 422


class SignatureError(BundleError):
    """The manifest signature is missing, malformed, invalid, or from an untrusted key."""


class IntegrityError(BundleError):
    """A bundle file does not match its manifest entry (hash, size, presence)."""


class ManifestError(BundleError):
    """manifest.json is not a valid manifest (checked only after its signature held)."""


class KeyFileError(EdgeRuntimeError):
    """A key file cannot be read or holds the wrong kind of key."""

    http_status = 400


class BackendUnavailableError(EdgeRuntimeError):
    """An optional dependency is not installed; the message names the pip extra."""

    http_status = 503

    @classmethod
    def missing_module(cls, module: str, extra: str) -> BackendUnavailableError:
        """Build the standard message for a missing optional import."""
        return cls(
            f"the Python module '{module}' is not installed: "
            f"pip install 'edge-runtime[{extra}]'"
        )


class FingerprintMismatchError(EdgeRuntimeError):
    """An engine's target fingerprint does not match this host."""

    http_status = 409


class MemoryBudgetError(EdgeRuntimeError):
    """Loading the model would take the loaded models past the device's memory budget."""

    http_status = 409


class PointerError(EdgeRuntimeError):
    """A model's active-version pointer cannot be read, trusted or written (the server's fault, not the client's).

    At start the repository serves as if there were no pointer; an explicit act that cannot write it fails.
    """

    http_status = 500


class InferenceError(EdgeRuntimeError):
    """A backend failed while running a request that passed validation."""


class RequestError(EdgeRuntimeError):
    """A request is malformed or does not fit the model's inputs."""

    http_status = 400


class RequestTooLargeError(RequestError):
    """The request body exceeds the configured maximum."""

    http_status = 413


class UnsupportedMediaTypeError(RequestError):
    """The request body's content type is not one the endpoint accepts."""

    http_status = 415


class SharedMemoryError(RequestError):
    """A shared-memory region is unknown, unreadable, or too small for the tensor."""


class SharedMemoryNotFoundError(SharedMemoryError):
    """A named shared-memory region is not registered, where Triton answers 404 (CUDA status)."""

    http_status = 404


class UnrepresentableOutputError(RequestError):
    """An output the client asked for as JSON holds a value JSON cannot carry (an infinity).

    A client error (422), not a server one: the model answered, and the client gets it by asking
    for the output in binary (``binary_data: true``) or shared memory. Sending ``null`` instead
    (what orjson writes) would silently turn an infinity into the NaN that clients read back;
    NaN itself travels as ``null`` faithfully.
    """

    http_status = 422


class ModelNotFoundError(EdgeRuntimeError):
    """No such model, or no such version of it."""

    http_status = 404


class ModelNotReadyError(EdgeRuntimeError):
    """The model is known but not serving (loading, unloading, failed)."""

    http_status = 503


class NotStagedError(EdgeRuntimeError):
    """A promote of a version that is not staged and ready: the client's acts are out of order (409, not 503)."""

    http_status = 409


class QueueFullError(EdgeRuntimeError):
    """The model's request queue is full; the client should retry later."""

    http_status = 503


class RequestTimeoutError(EdgeRuntimeError):
    """The request waited past its deadline."""

    http_status = 504


class OutputError(EdgeRuntimeError):
    """A file or directory cannot be written (the device's state, a bundle, an export's output)."""

    http_status = 400
