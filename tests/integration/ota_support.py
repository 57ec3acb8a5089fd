"""A device and a slow TUF file server on 127.0.0.1 for the OTA kill test and its benchmark.

The repository is built with ``tuf_repo_tool.py`` (as in test_sync_once.py) and holds tiny 2 and
tiny 3 for x86-cpu. The device's model repository starts with tiny 0 and tiny 1 on disk, 1 active
(no last good), ``keep_versions: 2``: a pass installs 3 (the highest), retention removes 0, and the
fake gate of test_sync_once.py flips the pointer to ``{"active": "3", "last_good": "1"}``.
The file server answers Range requests (206) and sends bundle tars in small chunks with a pause
between them, so that a kill can land in the middle of a download and the next pass resumes it.

:func:`run_kills` SIGKILLs ``edge-runtime sync --once`` (the real CLI in a subprocess) at random
moments, checks after each kill what a restarted runtime relies on, and now and then starts a real
``edge-runtime serve`` and infers once.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from runtime_support import affine, start_server, write_runtime_config, write_tiny_bundle
from test_sync_once import FAKE_GATE_CLI, _tar
from test_tuf_client import TOOL, _server_python

from edge_runtime.bundle.signing import generate_keypair, load_public_key
from edge_runtime.bundle.verify import verify_bundle
from edge_runtime.errors import EdgeRuntimeError, PointerError
from edge_runtime.fleet.retention import on_disk_versions
from edge_runtime.serving.active_version import ActiveVersion, read_pointer, startup_versions, write_pointer

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "device_configs"
FINAL = ActiveVersion("3", "1")
_RANGE = re.compile(r"bytes=(\d+)-$")
# A defective installer, to show the checks can fail: it copies the bundle into place file by file.
TEARING_CLI = """
import shutil, time
from edge_runtime.fleet import install

def copy_in_place(staging, dest, overwrite):
    def slow_copy(source, target):
        time.sleep(0.02)
        return shutil.copy2(source, target)
    shutil.copytree(str(staging), str(dest), copy_function=slow_copy)

install.publish_dir = copy_in_place
""" + FAKE_GATE_CLI


class SlowRangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files; ``Range: bytes=N-`` answered with 206; tars sent in ``chunk`` bytes, ``pause_s`` apart."""

    chunk = 1024
    pause_s = 0.01

    def log_message(self, format: str, *args: object) -> None:
        """Keep the output clean."""

    def do_GET(self) -> None:
        """Bundle tars slowly (and by range); everything else as http.server does."""
        path = Path(self.translate_path(self.path))
        if not path.name.endswith(".tar") or not path.is_file():
            super().do_GET()
            return
        data = path.read_bytes()
        match = _RANGE.match(self.headers.get("Range", "").strip())
        start = int(match.group(1)) if match else 0
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        try:
            for offset in range(start, len(data), self.chunk):
                self.wfile.write(data[offset:offset + self.chunk])
                self.wfile.flush()
                time.sleep(self.pause_s)
        except OSError:
            pass  # the agent was killed mid-download


class _KilledClientsServer(http.server.ThreadingHTTPServer):
    """A threaded file server that does not print a traceback each time a killed agent drops its connection."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients are killed on purpose here."""


class OtaRig:
    """The served TUF repository, the device (model repository, trusted metadata, agent settings)."""

    def __init__(self, base: Path, pause_s: float = 0.01, tearing: bool = False) -> None:
        self.base = base
        self.cli = TEARING_CLI if tearing else FAKE_GATE_CLI
        self.served = base / "tuf-repo"
        handler = type("Handler", (SlowRangeHandler,), {"pause_s": pause_s})
        self.httpd = _KilledClientsServer(("127.0.0.1", 0), functools.partial(handler, directory=str(self.served)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.private, public = generate_keypair(base / "bundle-key")
        self.keys = [load_public_key(public)]
        self._tool("init", str(base / "tuf-root-keys"))
        for version in ("2", "3"):
            self._publish(version)
        self.pristine = base / "pristine"
        for version in ("0", "1"):
            write_tiny_bundle(self.pristine / version, self.private, version)
        self.repo, self.staging = base / "models", base / "staging"
        self.model = self.repo / "tiny"
        shutil.copyfile(self.served / "metadata" / "1.root.json", base / "root.json")
        self.config = base / "agent.yaml"
        self.config.write_text(
            "server_url: http://127.0.0.1:9\ndevice_id: kill-test\ntoken_file: token\nca_bundle: null\n"
            "spool_path: spool.sqlite\nsync:\n"
            f"  metadata_url: {url}/metadata/\n  targets_url: {url}/targets/\n"
            "  metadata_dir: tuf-trusted\n  trusted_root: root.json\n  staging_dir: staging\n"
            f"  repository: models\n  trusted_keys: [{public}]\n"
            f"  device_config: {CONFIGS / 'x86-cpu.yaml'}\n  reserve_bytes: 0\n  keep_versions: 2\n")
        self.runtime_config = write_runtime_config(base / "runtime.yaml", CONFIGS, public)
        self.reset()

    def _tool(self, command: str, *args: str) -> None:
        subprocess.run([_server_python(), str(TOOL), command, str(self.served), str(self.base / "tuf-keys"), *args],
                       check=True, cwd=str(ROOT), timeout=120, capture_output=True)

    def _publish(self, version: str) -> None:
        bundle = self.base / "work" / f"tiny-{version}"
        write_tiny_bundle(bundle, self.private, version)
        (self.base / "work" / "x86-cpu").mkdir(exist_ok=True)
        tar = _tar(bundle, self.base / "work" / "x86-cpu" / f"tiny-{version}.tar")
        self._tool("publish", str(tar), json.dumps({"model": "tiny", "version": version, "device_class": "x86-cpu"}),
                   "kill-test")  # assigned to this device (the director), as the agent settings' device_id

    def reset(self) -> None:
        """Back to the start: tiny 0 and 1 on disk, 1 active; no download under way (trusted metadata kept)."""
        shutil.rmtree(self.repo, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        for version in ("0", "1"):
            shutil.copytree(self.pristine / version, self.model / version)
        write_pointer(self.model, ActiveVersion("1"))

    def start_sync(self) -> subprocess.Popen:
        """``edge-runtime sync --once`` with the promoting fake gate, as a subprocess."""
        return subprocess.Popen([sys.executable, "-c", self.cli, "sync", "--once", "--config", str(self.config)],
                                cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def sync_to_end(self) -> Tuple[int, str]:
        """One whole pass: its exit status and its error output."""
        process = self.start_sync()
        _, err = process.communicate(timeout=120)
        return process.returncode, err

    def close(self) -> None:
        """Stop the file server."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def verifies(self, version: str) -> Optional[str]:
        """None when ``tiny/<version>`` is a whole, verified bundle of that version; else why not."""
        try:
            manifest = verify_bundle(self.model / version, self.keys)
        except (EdgeRuntimeError, OSError) as exc:
            return f"version {version}: {exc}"
        return None if manifest.version == version else f"version {version} holds bundle {manifest.version}"

    def phase(self) -> str:
        """Where the last pass stopped, read from what it left on disk."""
        pointer = _pointer_or_none(self.model)
        names = os.listdir(self.model)
        staged = os.listdir(self.staging) if self.staging.is_dir() else []
        if pointer is not None and pointer.active == "3":
            return "after the switch"
        if "3" in names:
            return "installed, before the switch"
        if any(n.startswith(".deleting-") for n in names):
            return "retention"
        if any(n.startswith(".incoming.tmp-") for n in names):
            return "install (unpack, verify)"
        if any(n.endswith((".tar", ".partial")) for n in staged):
            return "download"
        return "start-up, TUF refresh"

    def invariant_problems(self) -> Tuple[List[str], List[str]]:
        """(torn installs, other violations) of what a restarted runtime relies on."""
        torn = [p for p in (self.verifies(v) for v in on_disk_versions(self.model)) if p]
        problems: List[str] = []
        try:
            pointer = read_pointer(self.model)
        except PointerError as exc:
            return torn, [f"unreadable pointer: {exc}"]
        if pointer is None:
            problems.append("the pointer disappeared")
        else:
            for version in filter(None, (pointer.active, pointer.last_good)):
                problem = self.verifies(version)
                if problem:
                    problems.append(f"the pointer names {version}: {problem}")
        order, note = startup_versions(self.model, on_disk_versions(self.model))
        if not order or self.verifies(order[0]):
            problems.append(f"a restarted runtime would try {order[:1]} first ({note}), which does not verify")
        return torn, problems

    def final_problems(self) -> List[str]:
        """What is wrong after a whole pass: 3 active and verified, 1 the fallback, no leftovers."""
        problems: List[str] = []
        pointer = _pointer_or_none(self.model)
        if pointer != FINAL:
            problems.append(f"after a whole pass the pointer is {pointer}, not {FINAL}")
        problems.extend(p for p in (self.verifies("3"), self.verifies("1")) if p)
        leftovers = [n for n in os.listdir(self.model) if n.startswith((".incoming", ".deleting"))]
        leftovers += [n for n in (os.listdir(self.staging) if self.staging.is_dir() else [])
                      if n.endswith((".tar", ".partial"))]
        if leftovers:
            problems.append(f"leftovers after a whole pass: {sorted(leftovers)}")
        return problems

    def serve_problem(self) -> Optional[str]:
        """Start ``edge-runtime serve`` on the repository, infer once: None when a verified version answered right."""
        try:
            server = start_server(["--repository", str(self.repo), "--config", str(self.runtime_config)],
                                  self.base / "serve.log")
        except RuntimeError as exc:
            return f"the runtime did not start: {str(exc)[-300:]}"
        try:
            with urllib.request.urlopen(f"http://{server.url}/v2/models/tiny", timeout=10) as reply:
                versions = json.loads(reply.read())["versions"]
            x = [[1.0, 2.0, 3.0, 4.0]]
            body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                           "data": x[0]}]}).encode()
            request = urllib.request.Request(f"http://{server.url}/v2/models/tiny/infer", body,
                                             {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as reply:
                output = json.loads(reply.read())["outputs"][0]["data"]
        except (OSError, ValueError, KeyError, IndexError) as exc:
            return f"the runtime did not infer: {exc}"
        finally:
            server.stop()
        expected = [float(v) for v in affine(np.array(x, dtype=np.float32))[0]]
        if any(abs(a - b) > 1e-4 for a, b in zip(output, expected)):
            return f"the runtime answered {output}, expected {expected}"
        problems = [p for p in (self.verifies(str(v)) for v in versions) if p]
        return f"the runtime serves {versions}: {problems}" if problems or not versions else None


def _pointer_or_none(model: Path) -> Optional[ActiveVersion]:
    try:
        return read_pointer(model)
    except PointerError:
        return None


@dataclass
class KillReport:
    """What the kills found."""

    kills: int = 0
    torn_installs: int = 0
    violations: List[str] = field(default_factory=list)
    phases: Dict[str, int] = field(default_factory=dict)
    passes_completed: int = 0  # whole passes (after kills, or one that beat its kill)
    restarts_served: int = 0
    serve_failures: List[str] = field(default_factory=list)
    seconds: float = 0.0


def calibrate(rig: OtaRig) -> Tuple[float, float]:
    """(seconds of a pass with nothing to do, seconds of a whole install pass) from the start state."""
    durations = []
    for _ in range(2):
        rig.reset()
        started = time.monotonic()
        code, err = rig.sync_to_end()
        if code != 0:
            raise RuntimeError(f"a whole sync pass failed: {err[-500:]}")
        durations.append(time.monotonic() - started)
    started = time.monotonic()
    rig.sync_to_end()
    idle = time.monotonic() - started
    rig.reset()
    return idle, max(durations)


def run_kills(rig: OtaRig, kills: int, seed: int, serve_every: int, max_kills_per_round: int = 6) -> KillReport:
    """SIGKILL ``kills`` sync passes at random moments; after each, check; a round ends with a whole pass."""
    rng = random.Random(seed)
    idle, whole = calibrate(rig)
    report = KillReport()
    started = time.monotonic()
    in_round = 0
    while report.kills < kills:
        process = rig.start_sync()
        time.sleep(rng.uniform(idle * 0.7, whole * 1.05))
        beaten = process.poll() is not None
        if not beaten:
            process.send_signal(signal.SIGKILL)
            report.kills += 1
            in_round += 1
        process.communicate(timeout=60)
        phase = rig.phase() if not beaten else "finished before the kill"
        report.phases[phase] = report.phases.get(phase, 0) + 1
        torn, problems = rig.invariant_problems()
        report.torn_installs += len(torn)
        report.violations.extend(f"kill {report.kills} ({phase}): {p}" for p in torn + problems)
        if serve_every and report.kills % serve_every == 0 and not beaten:
            _serve(rig, report)
        if beaten or in_round >= max_kills_per_round or report.kills >= kills:
            _finish_round(rig, report, serve=report.kills >= kills)
            in_round = 0
    report.seconds = time.monotonic() - started
    return report


def _finish_round(rig: OtaRig, report: KillReport, serve: bool) -> None:
    """Let a pass run to its end, check the result (``serve``: serve it too), go back to the start state."""
    code, err = rig.sync_to_end()
    if code != 0:
        report.violations.append(f"kill {report.kills}: the pass after the kills failed: {err.strip()[-300:]}")
    report.violations.extend(f"kill {report.kills}: {p}" for p in rig.final_problems())
    report.passes_completed += 1
    if serve:
        _serve(rig, report)
    rig.reset()


def _serve(rig: OtaRig, report: KillReport) -> None:
    problem = rig.serve_problem()
    if problem:
        report.serve_failures.append(f"kill {report.kills}: {problem}")
    else:
        report.restarts_served += 1
