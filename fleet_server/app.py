"""`create_app(settings)`: the central server's Flask app (the WSGI app gunicorn runs).

Stateless: everything it keeps is in the database (and the shared secret file), so any number of
worker processes and instances behind a load balancer serve the same fleet. Every error, the
transport's own (404, 405, 413) included, is a JSON ``{"error": "..."}``; an unexpected failure is
logged and answered 500 JSON, never an HTML page or a traceback.
"""

from __future__ import annotations

import logging
import time
from typing import Optional, Tuple

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from edge_runtime.errors import EdgeRuntimeError
from fleet_server.context import Clock, FleetContext
from fleet_server.dashboard import create_dashboard_blueprint
from fleet_server.db import make_engine
from fleet_server.errors import OverloadedError
from fleet_server.routes import api
from fleet_server.routes_rollouts import ota_api
from fleet_server.settings import FleetSettings
from fleet_server.tokens import load_or_create_secret

logger = logging.getLogger(__name__)


def create_app(settings: FleetSettings, clock: Optional[Clock] = None) -> Flask:
    """The app for ``settings``; ``clock`` (unix seconds) is injectable for tests."""
    app = Flask("fleet_server", static_folder=None)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # No MAX_CONTENT_LENGTH: Werkzeug's limited stream refuses a chunked body of exactly the cap.
    # Ingest reads at most its cap + 1 bytes itself; the admin routes cap their small bodies (routes.py).
    context = FleetContext(settings=settings, engine=make_engine(settings),
                           secret=load_or_create_secret(settings.resolve(settings.secret_file)),
                           clock=clock or time.time)
    app.extensions["fleet"] = context
    app.register_blueprint(api)
    app.register_blueprint(ota_api)
    app.register_blueprint(create_dashboard_blueprint())
    _register_error_handlers(app, settings.retry_after_s)
    return app


def _register_error_handlers(app: Flask, retry_after_s: int) -> None:
    @app.errorhandler(EdgeRuntimeError)
    def project_error(error: EdgeRuntimeError) -> Tuple[Response, int]:
        response = jsonify({"error": str(error)})
        if isinstance(error, OverloadedError):
            response.headers["Retry-After"] = str(retry_after_s)
        if error.http_status >= 500:
            logger.error("request failed: %s", error, exc_info=error)
        return response, error.http_status

    @app.errorhandler(HTTPException)
    def transport_error(error: HTTPException) -> Tuple[Response, int]:
        status = error.code or 500
        return jsonify({"error": error.description or error.name}), status

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Tuple[Response, int]:
        logger.exception("unexpected error")
        return jsonify({"error": "internal server error"}), 500
