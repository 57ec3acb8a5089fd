"""The Flask application factory: KServe v2 / Triton-compatible HTTP API over a model repository.

Routes stay thin (transport only): they decode with ``codec``, call the repository or a served
model, and encode. Every error, ours or werkzeug's, leaves as JSON ``{"error": "..."}`` with
its status; an unexpected exception is logged with its traceback and answered as a 500 JSON
without internals.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence, Tuple

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from edge_runtime.config import RuntimeSettings
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.server import routes_health, routes_infer, routes_models, routes_repository, routes_shm
from edge_runtime.server.admission import AdmissionMiddleware
from edge_runtime.server.context import EXTENSION_KEY, ServerContext
from edge_runtime.server.metrics import metrics_blueprint
from edge_runtime.server.responses import error_response
from edge_runtime.server.restricted import RestrictedApiMiddleware, Restriction, load_restrictions
from edge_runtime.serving.repository import ModelRepository

log = logging.getLogger(__name__)
__all__ = ["EXTENSION_KEY", "create_app"]


def create_app(settings: RuntimeSettings, repository: ModelRepository,
               restrictions: Optional[Sequence[Restriction]] = None) -> Flask:
    """Build the app serving ``repository`` under ``settings`` (limits, batching, timeouts, admission).

    ``restrictions``: the restricted API groups with their secrets, as :func:`load_restrictions`
    reads them from ``settings`` (which it does here when they are not given).
    """
    app = Flask("edge_runtime")
    limits = settings.limits
    app.config["MAX_CONTENT_LENGTH"] = limits.max_request_bytes
    app.extensions[EXTENSION_KEY] = ServerContext(repository=repository, settings=settings, limits=limits)
    for module in (routes_health, routes_models, routes_infer, routes_repository, routes_shm):
        app.register_blueprint(module.blueprint)
    app.register_blueprint(metrics_blueprint(repository))
    app.register_error_handler(EdgeRuntimeError, _runtime_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    # Outermost first: a request to a restricted group without its header never takes a slot.
    app.wsgi_app = AdmissionMiddleware(app.wsgi_app, settings.http)  # type: ignore[method-assign]
    rules = load_restrictions(settings) if restrictions is None else restrictions
    if rules:
        app.wsgi_app = RestrictedApiMiddleware(app.wsgi_app, rules)  # type: ignore[method-assign]
    return app


def _runtime_error(exc: EdgeRuntimeError) -> Tuple[Response, int]:
    if exc.http_status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc)
    return error_response(str(exc), exc.http_status), exc.http_status


def _http_error(exc: HTTPException) -> Response:
    """Werkzeug's own errors (404 route, 405 method, ...) as JSON, keeping headers such as ``Allow``."""
    status = exc.code or 500
    response = error_response(exc.description or exc.name, status)
    for key, value in exc.get_headers():
        if key.lower() != "content-type":
            response.headers[key] = value
    return response


def _unexpected_error(exc: Exception) -> Response:
    log.exception("unexpected error while handling a request")
    return error_response(f"internal error ({type(exc).__name__})", 500)
