"""The operator's dashboard: one HTML page, its script and style, and the charting library (uPlot).

The page holds no data: its script asks for an operator token and reads the JSON APIs
(`GET /api/v1/devices`, `GET /api/v1/devices/<id>/history`) with it, so the page itself needs no
authentication. uPlot comes from the npm registry, pinned in `dashboard_assets/package-lock.json`
and installed with `npm ci` (scripts/lib/dashboard_assets.sh); the server serves its dist files
itself, so a browser on an isolated network never needs a CDN.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional

from flask import Blueprint, Response, jsonify, render_template, send_from_directory

logger = logging.getLogger(__name__)

DEFAULT_ASSETS_DIR = Path(__file__).resolve().parent / "dashboard_assets" / "node_modules"

# Public name under /static/vendor/ -> path inside node_modules. Nothing else there is served.
VENDOR_FILES: Dict[str, str] = {
    "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
}

# The page loads only its own files and talks only to its own server.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def create_dashboard_blueprint(assets_dir: Optional[Path] = None) -> Blueprint:
    """The dashboard's routes: `GET /` (the page), `/static/dashboard/...` (its files), `/static/vendor/...` (uPlot)."""
    node_modules = Path(assets_dir) if assets_dir is not None else DEFAULT_ASSETS_DIR
    missing = [name for name, rel in VENDOR_FILES.items() if not (node_modules / rel).is_file()]
    if missing:
        logger.warning("dashboard assets missing under %s (%s): run `npm ci --prefix %s`",
                       node_modules, ", ".join(missing), node_modules.parent)
    # /static/dashboard/... and /static/vendor/... are more specific than an app's own
    # /static/<path>, so they win whatever static folder the app itself has.
    blueprint = Blueprint("dashboard", __name__, template_folder="templates",
                          static_folder="static/dashboard", static_url_path="/static/dashboard")

    @blueprint.get("/")
    def page() -> Response:
        response = Response(render_template("dashboard.html"), mimetype="text/html")
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @blueprint.get("/static/vendor/<name>")
    def vendor(name: str) -> Response:
        relative = VENDOR_FILES.get(name)
        if relative is None:
            return _json_error(404, f"no such vendored file: {name}")
        path = node_modules / relative
        if not path.is_file():
            return _json_error(503, f"dashboard assets are not installed: run `npm ci --prefix {node_modules.parent}`")
        response = send_from_directory(path.parent, path.name, max_age=3600)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return blueprint


def _json_error(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response
