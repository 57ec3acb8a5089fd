"""Shared parts of the benchmarks that run `edge-runtime serve` from a chosen source tree.

A tree is a checkout of this repository (the working tree, or a `git worktree` of an older commit).
A server started from it runs with ``PYTHONPATH=<tree>`` and ``cwd=<tree>``, and prints the
``edge_runtime`` module it imported, so a report can show which build answered. Bundles are
written by a tree's own helpers (its tests' tiny model, its serving bench's ResNet-18 export), in
a subprocess, so the bundle format is that tree's.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]

# `python -m edge_runtime.cli ARGS`, after saying which edge_runtime the process imported.
SERVE_WRAPPER = (
    "import runpy, sys, edge_runtime; "
    "print('edge_runtime module:', edge_runtime.__file__, file=sys.stderr, flush=True); "
    "runpy.run_module('edge_runtime.cli', run_name='__main__', alter_sys=True)"
)

# Run in a tree (cwd), with that tree's code: prints the trusted public key's path last.
BUNDLE_WRITERS = {
    "tiny": (
        "import sys; from pathlib import Path; sys.path.insert(0, 'tests/integration')\n"
        "from runtime_support import write_tiny_bundle\n"
        "from edge_runtime.bundle.signing import generate_keypair\n"
        "out = Path(sys.argv[1]); key, pub = generate_keypair(out / 'keys')\n"
        "write_tiny_bundle(out / 'repo' / 'tiny' / '1', key, '1'); print(pub)\n"
    ),
    "resnet18": (
        "import sys; from pathlib import Path; sys.path.insert(0, 'scripts/bench')\n"
        "from serving_bench import _export\n"
        "repo, pub = _export(Path(sys.argv[1])); print(pub)\n"
    ),
}
# Model name in the repository, input name and batch-1 input shape, output name.
MODELS: Dict[str, Tuple[str, Tuple[int, ...], str]] = {
    "tiny": ("input", (1, 4), "output"),
    "resnet18": ("input", (1, 3, 224, 224), "output"),
}


def tree_env(tree: Path, pycache: Optional[Path] = None) -> Dict[str, str]:
    """The environment for a process that must import ``edge_runtime`` (and ``export``) from ``tree``.

    Bytecode is not written into the tree; with ``pycache``, it is written to and read from there instead
    (PYTHONPYCACHEPREFIX), so timed starts of every tree read compiled modules alike.
    """
    if pycache is None:
        return dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=str(pycache))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def write_bundle(tree: Path, model: str, out: Path) -> Tuple[Path, Path]:
    """Write ``model``'s signed bundle under ``out/repo`` with ``tree``'s code; return (repository, public key)."""
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-c", BUNDLE_WRITERS[model], str(out)], cwd=tree, env=tree_env(tree),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"writing the {model} bundle with {tree} failed:\n{result.stderr[-3000:]}")
    return out / "repo", Path(result.stdout.split()[-1])


def write_settings(path: Path, settings: Mapping[str, Any]) -> Path:
    """A runtime settings YAML file holding ``settings``."""
    path.write_text(yaml.safe_dump(dict(settings), sort_keys=False))
    return path


@dataclass
class ServeProcess:
    """An `edge-runtime serve` subprocess on 127.0.0.1, started from one tree."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    module_file: str
    ready_s: float  # from spawn to the first 200 of /v2/health/ready, to within one poll

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """SIGTERM, wait for the drain; SIGKILL past ``timeout``. The exit code (None: it had to be killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


def start_serve(tree: Path, args: List[str], log: Path, timeout: float = 120.0, poll_s: float = 0.1,
                pycache: Optional[Path] = None) -> ServeProcess:
    """Start ``edge-runtime serve ARGS --port 0`` from ``tree``; wait until /v2/health/ready answers 200.

    The log and readiness are checked every ``poll_s``; ``pycache`` as in :func:`tree_env`.
    """
    env = tree_env(tree, pycache)
    with log.open("wb") as handle:
        spawned = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", SERVE_WRAPPER, "serve", *args, "--port", "0"],
                                   cwd=tree, env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        text = log.read_text(errors="replace")
        port = re.search(r"serving on http://127\.0\.0\.1:(\d+)", text)
        module = re.search(r"edge_runtime module: (\S+)", text)
        if port and module and http_status(int(port.group(1)), "/v2/health/ready") == 200:
            return ServeProcess(process, int(port.group(1)), log, module.group(1), time.perf_counter() - spawned)
        time.sleep(poll_s)
    if process.poll() is None:
        process.kill()
        process.wait()
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"edge-runtime serve from {tree} did not become ready:\n{tail}")


def http_status(port: int, path: str, timeout: float = 2.0) -> Optional[int]:
    """The status of GET ``path`` on 127.0.0.1:``port``; None when nothing answered."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def git(*args: str) -> str:
    """Run git in this repository; its stdout."""
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def add_worktree(ref: str, where: Path) -> Tuple[Path, str]:
    """A detached `git worktree` of ``ref`` at ``where``; (its path, the full commit)."""
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    git("worktree", "add", "--detach", str(where), commit)
    return where, commit


def remove_worktree(where: Path) -> None:
    """Remove the worktree and git's record of it, whatever state it is in."""
    try:
        git("worktree", "remove", "--force", str(where))
    except Exception as exc:
        print(f"git worktree remove failed ({exc}); deleting {where}", file=sys.stderr)
        shutil.rmtree(where, ignore_errors=True)
    git("worktree", "prune")


def proc_status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def open_fds(pid: int) -> int:
    """How many file descriptors the process holds now."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def percentiles(values: List[float]) -> Tuple[float, float]:
    """(p50, p99) of ``values``; NaN for an empty list."""
    if not values:
        return float("nan"), float("nan")
    return statistics.median(values), float(np.percentile(values, 99))


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so `finally` blocks clean up as on Ctrl-C."""

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def command_line(script: str) -> str:
    """The command as the user ran it, for a benchmark section's heading line."""
    return " ".join([f"python scripts/bench/{script}", *sys.argv[1:]])


def section_header(title: str, script: str, what: str) -> List[str]:
    """A markdown section's first lines: title, command, date (UTC) and what was run."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return [f"## {title}", "", f"`{command_line(script)}` — {when}, {what}", ""]


def append_markdown(path: Optional[Path], lines: List[str]) -> None:
    """Print ``lines``; append them to ``path`` too when given."""
    text = "\n".join(lines)
    print(text)
    if path is not None:
        with path.open("a") as handle:
            handle.write(text + "\n")


def verdict(met: bool) -> str:
    """'met' or 'NOT met'."""
    return "met" if met else "NOT met"

