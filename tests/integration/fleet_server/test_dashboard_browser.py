"""The fleet dashboard in a real headless Chromium (Debian's, driven by playwright) on 127.0.0.1.

The page loads with its vendored uPlot, lists the devices, plots a device's memory and latency
(checked on the canvas's pixels), asks for the operator token once, shows a clear message on a
wrong one (401), and makes no request that leaves 127.0.0.1. Screenshots go to the test's tmp dir
and to test-artifacts/ in the repository.

Against the real server (`edge-fleet migrate / operator-token / enroll / serve` as subprocesses, data
ingested over HTTP with device tokens) and against a stub of the query API, which adds what the
real server will not store: a hostile device id, and devices with missing figures.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple
from urllib.parse import urlsplit

import pytest
from ci_policy import unavailable
from flask import Flask, Response, jsonify, request
from served_in_thread import served_in_thread

from fleet_server.dashboard import create_dashboard_blueprint

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
REPO_ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO_ROOT / "test-artifacts"
OPERATOR_TOKEN = "operator-token-for-the-dashboard-test"
HOSTILE_ID = '<img src=x onerror="window.__injected = 1">'  # the page must show it as text
RSS_STROKE = (0xD6, 0x27, 0x28)  # "process RSS" in dashboard.js
FIRST_MODEL_STROKE = (0x1F, 0x77, 0xB4)  # PALETTE[0] in dashboard.js


# ---- a stub of the fleet server's query API (the contract's JSON), with the real dashboard -----

def _stub_devices(now: float, extra: int) -> List[Dict[str, Any]]:
    models = [
        {"name": "digits", "version": "1", "backend": "onnxruntime", "memory_mb": 13.3, "p50_ms": 2.1, "p99_ms": 5.3},
        {"name": "resnet", "version": "3", "backend": "tensorrt", "memory_mb": 96.0, "p50_ms": 5.6, "p99_ms": 9.8},
    ]
    devices: List[Dict[str, Any]] = [
        {"device_id": "xavier-0001", "last_seen": now - 5, "online": True, "dropped": 0,
         "facts": {"board": "Jetson AGX Xavier", "l4t": "35.4.1", "jetpack": "5.1.2", "runtime_version": "0.1"},
         "rss_mb": 145.2, "mem_available_mb": 20011.0, "nvmap_mb": 812.0, "models": models},
        {"device_id": "orin-0002", "last_seen": now - 7200, "online": False, "dropped": 12,
         "facts": {"board": "Jetson Orin Nano"}, "rss_mb": 120.5, "mem_available_mb": 5100.0, "nvmap_mb": None,
         "models": models[:1]},
        {"device_id": HOSTILE_ID, "last_seen": None, "online": False, "dropped": 0, "facts": {"board": "<b>x</b>"},
         "rss_mb": None, "mem_available_mb": None, "nvmap_mb": None, "models": []},
    ]
    devices.extend({"device_id": f"nano-{n:05d}", "last_seen": now - 1, "online": True, "dropped": 0, "facts": {},
                    "rss_mb": 100.0, "mem_available_mb": 3000.0, "nvmap_mb": 200.0, "models": models[:1]}
                   for n in range(extra))
    return devices


def _stub_rollouts() -> List[Dict[str, Any]]:
    """A paused rollout (its reason is a device's text: shown as text) and an active canary."""
    base = {"bundle_id": 1, "target": "digits-2.tar", "created": 0.0, "updated": 0.0}
    return [
        {**base, "id": 2, "model": "digits", "version": "3", "device_class": "xavier-nx", "canary": [],
         "percent": 100, "state": "paused", "pause_reason": f"xavier-0001: gate_failed: {HOSTILE_ID}"},
        {**base, "id": 1, "model": "digits", "version": "2", "device_class": "xavier-nx", "canary": ["xavier-0001"],
         "percent": 10, "state": "active", "pause_reason": None},
    ]


def _stub_history(device_id: str, since: float, until: float) -> Dict[str, Any]:
    points = []
    for i in range(60):
        t = until - 3600 + i * 60
        if t < since:
            continue
        points.append({
            "time": t, "rss_mb": 140 + 10 * (i % 7), "mem_available_mb": 20000 - 30 * i, "nvmap_mb": 800 + i,
            "gpu_load": 0.4,
            "models": {
                "digits": {"version": "1", "p50_ms": 2 + (i % 5) * 0.2, "p99_ms": 5 + (i % 3), "requests": 100,
                           "memory_mb": 13.3},
                "resnet": {"version": "3", "p50_ms": 5.5, "p99_ms": 9 + (i % 4) * 0.5, "requests": 40,
                           "memory_mb": 96.0},
            },
        })
    return {"device_id": device_id, "resolution": "sample", "points": points}


def _stub_app(extra_devices: int = 0) -> Flask:
    """The dashboard plus the query API's contract JSON for three devices (and ``extra_devices``)."""
    app = Flask("dashboard_stub")
    app.register_blueprint(create_dashboard_blueprint())

    @app.before_request
    def require_operator() -> Any:
        if request.path.startswith("/api/") and request.headers.get("Authorization") != f"Bearer {OPERATOR_TOKEN}":
            return jsonify({"error": "unknown or revoked operator token"}), 401
        return None

    @app.get("/api/v1/devices")
    def devices() -> Response:
        return jsonify(_stub_devices(time.time(), extra_devices))

    @app.get("/api/v1/rollouts")
    def rollouts() -> Response:
        return jsonify(_stub_rollouts())

    @app.get("/api/v1/devices/<device_id>/history")
    def history(device_id: str) -> Response:
        return jsonify(_stub_history(device_id, float(request.args["since"]), float(request.args["until"])))

    return app


@contextlib.contextmanager
def _serve(app: Flask) -> Iterator[str]:
    """``app`` served by werkzeug on 127.0.0.1 (a real socket, as the browser needs)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    with served_in_thread(server) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture()
def stub_url() -> Iterator[str]:
    with _serve(_stub_app()) as url:
        yield url


# ---- the real server: CLI subprocesses, data through the ingest API ------------------------------

@dataclass
class RealFleet:
    """`edge-fleet serve` on 127.0.0.1 with telemetry ingested, and an operator token."""

    url: str
    operator: str


def _fleet_cli(config: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fleet_server.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"edge-fleet {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def _start_fleet(config: Path, log: Path) -> Tuple[subprocess.Popen, str]:
    handle = log.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "fleet_server.cli", "serve", "--port", "0", "--workers", "1", "--threads", "4",
         "--config", str(config)], stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", log.read_text())
        if match:
            return process, match.group(1)
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"edge-fleet serve did not start:\n{log.read_text()}")


def _ingest(url: str, token: str, batch: Dict[str, Any]) -> Dict[str, Any]:
    request_ = urllib.request.Request(url + "/api/v1/ingest", data=json.dumps(batch).encode(), method="POST",
                                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request_, timeout=30) as reply:
        answer: Dict[str, Any] = json.loads(reply.read())
        return answer


def _real_records(now: float) -> List[Dict[str, Any]]:
    """An hour of one-minute samples, two models, figures that move so the plots have shape."""
    from fleet_server.testing import make_record

    records = []
    for i in range(60):
        # coarse history points recompute percentiles from the histograms: make those differ too
        shift = 10 * (i % 3)
        record = make_record(now - 3600 + i * 60 + 30, interval_s=60.0, rss_mb=140.0 + 10 * (i % 7),
                             mem_available_mb=20000.0 - 30 * i, nvmap_mb=800.0 + i,
                             p50_ms=2.0 + 0.2 * (i % 5), p99_ms=5.0 + i % 3,
                             counts=[0, 0, 60 - shift, 39 + shift, 1, 0, 0, 0, 0])
        second = dict(record["models"][0], name="resnet", version="3", backend="tensorrt", p50_ms=5.5,
                      p99_ms=9.0 + 0.5 * (i % 4),
                      histogram={"bounds_ms": record["models"][0]["histogram"]["bounds_ms"],
                                 "counts": [0, 0, 0, 0, 60, 38 - shift // 5, 2 + shift // 5, 0, 0]})
        record["models"].append(second)
        records.append(record)
    return records


@pytest.fixture()
def real_fleet(tmp_path: Path) -> Iterator[RealFleet]:
    if sys.version_info < (3, 10) or importlib.util.find_spec("sqlalchemy") is None:
        pytest.skip("the central server needs Python >= 3.10 and the `fleet` extra")
    from fleet_server.testing import make_batch

    config = tmp_path / "fleet.yaml"
    config.write_text("database_url: sqlite:///fleet.sqlite\nretention: {run_every_s: 0}\n")
    _fleet_cli(config, "migrate")
    operator = _fleet_cli(config, "operator-token", "create", "dashboard-test")
    reporting = _fleet_cli(config, "enroll", "xavier-0001")
    _fleet_cli(config, "enroll", "orin-0002")  # enrolled, never reported: offline
    process, url = _start_fleet(config, tmp_path / "fleet-serve.log")
    try:
        records = _real_records(time.time())
        for start in range(0, len(records), 30):
            answer = _ingest(url, reporting, make_batch("xavier-0001", records[start:start + 30], start + 1))
            assert answer["accepted"] == len(records[start:start + 30])
        yield RealFleet(url, operator)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---- the browser --------------------------------------------------------------------------------

class Browser:
    """A fresh Chromium profile whose requests are confined to 127.0.0.1, with what went wrong recorded."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.off_host: List[str] = []
        self.errors: List[str] = []
        context.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.off_host.append(url)
            route.abort()

    def new_page(self) -> Any:
        page = self.context.new_page()
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        return page


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is absent: install Debian's chromium (scripts/test.sh does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000},
        )
        try:
            yield Browser(context)
        finally:
            context.close()


def _save_screenshot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / name)


_COUNT_STROKE_PIXELS = """([selector, rgb]) => {
  const canvas = document.querySelector(selector);
  const {data} = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let hits = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 128 && Math.abs(data[i] - rgb[0]) < 40 && Math.abs(data[i + 1] - rgb[1]) < 40
        && Math.abs(data[i + 2] - rgb[2]) < 40) hits++;
  }
  return hits;
}"""


def _stroke_pixels(page: Any, selector: str, rgb: Any) -> int:
    return int(page.evaluate(_COUNT_STROKE_PIXELS, [selector, list(rgb)]))


def _sign_in(page: Any, base_url: str, token: str) -> None:
    page.goto(base_url + "/")
    page.wait_for_selector("#token-form:not([hidden])")
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")


def _check_dashboard(browser: Browser, base_url: str, token: str, tmp_path: Path, device_ids: List[str],
                     screenshot: str) -> Any:
    """Sign in, check the table and both plots, save a screenshot, reload; return the page."""
    page = browser.new_page()
    _sign_in(page, base_url, token)
    page.wait_for_selector("body[data-state=ready]")
    rows = page.locator("#devices tbody tr")
    assert sorted(r.get_attribute("data-device-id") or "" for r in rows.all()) == sorted(device_ids)
    first = page.locator(f"#devices tbody tr[data-device-id='{device_ids[0]}']")
    assert first.locator(".badge").inner_text() == "online"
    assert "digits v1 (onnxruntime)" in first.inner_text()
    assert "resnet v3 (tensorrt)" in first.inner_text()
    second = page.locator(f"#devices tbody tr[data-device-id='{device_ids[1]}']")
    assert second.locator(".badge").inner_text() == "offline"

    first.click()
    page.wait_for_selector("#memory-chart[data-points] canvas")
    page.wait_for_selector("#latency-chart[data-points] canvas")
    assert int(page.get_attribute("#memory-chart", "data-points") or 0) > 1
    assert _stroke_pixels(page, "#memory-chart canvas", RSS_STROKE) > 50, "the memory plot drew no RSS line"
    assert _stroke_pixels(page, "#latency-chart canvas", FIRST_MODEL_STROKE) > 50, "the latency plot drew no line"
    _save_screenshot(page, tmp_path, screenshot)

    # the token is asked for once per tab: a reload goes straight to the table
    page.reload()
    page.wait_for_selector("#devices tbody tr")
    assert page.locator("#token-form").is_hidden()

    assert browser.errors == []
    assert browser.off_host == []
    return page


def _check_wrong_token(browser: Browser, base_url: str, tmp_path: Path) -> None:
    page = browser.new_page()
    _sign_in(page, base_url, "not-a-token")
    message = page.locator("#message")
    message.wait_for(state="visible")
    assert "401" in message.inner_text()
    assert "operator token" in message.inner_text()
    assert page.locator("#token-form").is_visible()
    assert page.locator("#main").is_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    _save_screenshot(page, tmp_path, "dashboard-401.png")
    assert browser.off_host == []
    # the one console error allowed: Chromium's own line for the refused fetch
    assert all("401" in line for line in browser.errors), browser.errors


def test_dashboard_lists_devices_and_plots_history(browser: Browser, real_fleet: RealFleet, tmp_path: Path) -> None:
    _check_dashboard(browser, real_fleet.url, real_fleet.operator, tmp_path, ["xavier-0001", "orin-0002"],
                     "dashboard.png")


def test_dashboard_shows_wrong_token(browser: Browser, real_fleet: RealFleet, tmp_path: Path) -> None:
    _check_wrong_token(browser, real_fleet.url, tmp_path)


def test_dashboard_against_stub_shows_hostile_and_missing_figures(browser: Browser, stub_url: str,
                                                                  tmp_path: Path) -> None:
    page = _check_dashboard(browser, stub_url, OPERATOR_TOKEN, tmp_path, ["xavier-0001", "orin-0002", HOSTILE_ID],
                            "dashboard-stub.png")
    hostile = page.locator("#devices tbody tr").nth(2)
    assert hostile.locator("td").first.inner_text() == HOSTILE_ID
    hostile.click()
    assert page.locator("#facts dd").inner_text() == "<b>x</b>"
    rollouts = page.locator("#rollouts tbody tr")
    assert rollouts.count() == 2 and "(2, 1 paused)" in page.locator("#rollout-count").inner_text()
    paused = rollouts.first.locator("td")
    assert paused.nth(5).inner_text() == "paused"
    assert paused.nth(6).inner_text() == f"xavier-0001: gate_failed: {HOSTILE_ID}"
    assert rollouts.nth(1).locator("td").nth(3).inner_text() == "xavier-0001"
    assert page.evaluate("window.__injected") is None
    assert browser.errors == []


def test_off_host_requests_are_caught(browser: Browser, stub_url: str) -> None:
    """Both guards can fail: the page's CSP refuses a script's off-host fetch, and the route records
    and blocks any off-host request that does reach the network layer."""
    page = browser.new_page()
    page.goto(stub_url + "/")
    outcome = page.evaluate("fetch('http://cdn.example.invalid/a.js').then(() => 'sent', () => 'refused')")
    assert outcome == "refused"
    with pytest.raises(Exception, match="ERR_FAILED"):
        page.goto("http://cdn.example.invalid/uPlot.js")
    assert browser.off_host == ["http://cdn.example.invalid/uPlot.js"]


def test_dashboard_caps_rows_and_filters(browser: Browser) -> None:
    """A fleet of thousands renders the first 500 matching rows, and the filter narrows them."""
    with _serve(_stub_app(extra_devices=2000)) as url:
        page = browser.new_page()
        _sign_in(page, url, OPERATOR_TOKEN)
        page.wait_for_selector("body[data-state=ready]")
        assert page.locator("#devices tbody tr").count() == 500
        assert page.locator("#truncated").inner_text() == "Showing 500 of 2003 devices: filter to narrow."
        assert "(2003, 2001 online)" in page.locator("#device-count").inner_text()
        page.fill("#filter", "nano-0199")
        assert page.locator("#devices tbody tr").count() == 10  # nano-01990 .. nano-01999
        assert page.locator("#truncated").is_hidden()
        page.fill("#filter", "resnet")  # a model name matches too
        assert page.locator("#devices tbody tr").get_attribute("data-device-id") == "xavier-0001"
    assert browser.errors == []
    assert browser.off_host == []


# ---- the blueprint's own routes (no browser) ----------------------------------------------------

def test_vendor_files_are_served_and_nothing_else() -> None:
    from fleet_server.dashboard import DEFAULT_ASSETS_DIR

    assert DEFAULT_ASSETS_DIR.is_dir(), "dashboard assets missing: scripts/lib/dashboard_assets.sh installs them"
    client = _stub_app().test_client()
    page = client.get("/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    body = page.get_data(as_text=True)
    assert "/static/vendor/uPlot.iife.min.js" in body
    assert "http" not in body.replace("http-equiv", "")  # no absolute (CDN) URL in the page

    script = client.get("/static/vendor/uPlot.iife.min.js")
    assert script.status_code == 200
    assert b"uPlot" in script.get_data()
    assert client.get("/static/dashboard/dashboard.js").status_code == 200

    other = client.get("/static/vendor/package.json")
    assert other.status_code == 404
    assert "error" in other.get_json()


def test_missing_assets_answer_json_503(tmp_path: Path) -> None:
    app = Flask("dashboard_missing_assets")
    app.register_blueprint(create_dashboard_blueprint(tmp_path / "node_modules"))
    response = app.test_client().get("/static/vendor/uPlot.iife.min.js")
    assert response.status_code == 503
    assert "npm ci" in response.get_json()["error"]
