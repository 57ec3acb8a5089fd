"""Start a command as systemd would a Type=notify service and wait for its READY=1 (install.sh --upgrade).

usage: wait_ready.py --timeout S [--log FILE] [--user UID:GID] -- COMMAND [ARG...]

The command runs with NOTIFY_SOCKET set to a datagram socket this script listens on (and in its own
session). Exit 0 once it sends READY=1 within S seconds; exit 1 with one line on stderr when it exits
or S passes first. Either way the command is stopped afterwards (SIGTERM to its process group, SIGKILL
10 s later): this is a probe of a release, not a supervisor. --user runs it as that user (as root: the
service user, so files it creates in the state directories belong to it, as under systemd). Standard
library only; Python 3.8+.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable, List, Optional, Tuple

STOP_GRACE_S = 10.0


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the arguments, run the probe, return the exit status."""
    parser = argparse.ArgumentParser(prog="wait_ready.py", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, required=True, metavar="S", help="seconds to wait for READY=1")
    parser.add_argument("--log", metavar="FILE", help="append the command's output here (default: discard)")
    parser.add_argument("--user", metavar="UID:GID", help="run the command as this uid and gid (needs root)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command to run is required after --")
    user = None
    if args.user is not None:
        try:
            uid, gid = (int(part) for part in args.user.split(":"))
        except ValueError:
            parser.error("--user takes UID:GID (numbers)")
        user = (uid, gid)
    problem = probe(command, args.timeout, args.log, user)
    if problem is not None:
        print(f"wait_ready: {problem}", file=sys.stderr)
        return 1
    return 0


def probe(command: List[str], timeout_s: float, log: Optional[str],
          user: Optional[Tuple[int, int]] = None) -> Optional[str]:
    """None when ``command`` (as ``user``: uid, gid) sent READY=1 within ``timeout_s``; else why not (one line)."""
    with tempfile.TemporaryDirectory(prefix="edge-ready-") as tmp:
        path = os.path.join(tmp, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            if user is not None:  # the command, as that user, must reach the socket
                os.chown(tmp, *user)
                os.chown(path, *user)
            env = dict(os.environ, NOTIFY_SOCKET=path)
            with open(log or os.devnull, "ab") as out:
                try:
                    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                               stderr=subprocess.STDOUT, start_new_session=True,
                                               preexec_fn=None if user is None else _become(*user))
                except OSError as exc:
                    return f"cannot start {command[0]}: {exc.strerror or exc}"
                try:
                    return _wait(sock, process, time.monotonic() + timeout_s, timeout_s)
                finally:
                    _stop(process)


def _become(uid: int, gid: int) -> Callable[[], None]:
    """A preexec function that drops to ``uid``/``gid`` with no supplementary groups (Popen's user= is 3.9+)."""
    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return drop


def _wait(sock: socket.socket, process: subprocess.Popen, deadline: float, timeout_s: float) -> Optional[str]:
    """Read notify datagrams until READY=1, the process's exit or the deadline."""
    status = ""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"no READY=1 within {timeout_s:g} s" + (f" (last STATUS: {status})" if status else "")
        readable, _, _ = select.select([sock], [], [], min(left, 0.2))
        if readable:
            for line in sock.recv(65536).decode("utf-8", "replace").splitlines():
                if line == "READY=1":
                    return None
                if line.startswith("STATUS="):
                    status = line[len("STATUS="):]
        elif process.poll() is not None:
            return f"exited with status {process.returncode} before READY=1" + (f" ({status})" if status else "")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period; reap the process."""
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
    _reap_group(process.pid)


def _reap_group(pgid: int) -> None:
    """Kill whatever the command left in its process group (children of a wrapper script)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
